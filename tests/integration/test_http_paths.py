"""Ids holding "/" reach their routes, on a SQLite file and PostgreSQL, in process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.integration.http_fixtures import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def client(
    engine: AsyncEngine, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(database_url) as (client, _app):
        yield client


async def test_a_batch_reference_with_a_slash_can_be_changed(
    client: httpx.AsyncClient,
) -> None:
    """Regression: PATCH /batches/a%2Fb was a 404 not-found."""
    await client.post("/batches", json={"ref": "a/b", "sku": "LAMP", "qty": 10})

    changed = await client.patch("/batches/a%2Fb", json={"qty": 4})

    assert changed.status_code == 200, changed.text
    assert changed.json() == {"ref": "a/b", "qty": 4}


async def test_an_order_id_with_slashes_can_be_read(client: httpx.AsyncClient) -> None:
    """Regression: GET /allocations/o%2F1 was a 404 not-found."""
    await client.post("/batches", json={"ref": "b1", "sku": "LAMP", "qty": 10})
    allocated = await client.post(
        "/allocations", json={"orderid": "o/1/", "sku": "LAMP", "qty": 1}
    )

    shown = await client.get(
        "/allocations/o%2F1%2F",
        params={"min_position": allocated.headers["Log-Position"]},
    )

    assert shown.status_code == 200, shown.text
    assert shown.json() == [{"sku": "LAMP", "batchref": "b1"}]


async def test_a_user_id_with_a_slash_is_looked_up(client: httpx.AsyncClient) -> None:
    answer = await client.get("/users/a%2Fb")

    assert answer.status_code == 404, answer.text
    assert answer.json()["type"] == "/problems/user-not-found"
