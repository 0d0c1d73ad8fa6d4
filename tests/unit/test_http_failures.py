"""The HTTP API on the fakes: a database that stops answering is a 503, not a 500
(nor the book's 400), and an open event stream ends without a traceback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from tests.unit.http_fakes import UnreachableUnitOfWork, serving_fakes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and httpx's ASGI transport run the app on asyncio


@pytest.fixture
async def served(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, UnreachableUnitOfWork]]:
    async with serving_fakes(tmp_path) as served:
        yield served


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/allocations", {"orderid": "o1", "sku": "LAMP", "qty": 1}),
        ("POST", "/users", {"name": "Ann", "email": "ann@example.com"}),
        ("GET", "/allocations/o1", None),
        ("GET", "/events", None),
        ("GET", "/events/stream", None),
        ("POST", "/allocate", {"orderid": "o1", "sku": "LAMP", "qty": 1}),
        ("POST", "/add_batch", {"ref": "b1", "sku": "LAMP", "qty": 1}),
    ],
)
async def test_an_unreachable_database_is_a_503_with_retry_after(
    served: tuple[httpx.AsyncClient, UnreachableUnitOfWork],
    method: str,
    path: str,
    body: object,
) -> None:
    client, uow = served
    uow.down = True

    answer = await client.request(method, path, json=body)

    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/database-unavailable"
    assert "db.example" in answer.json()["detail"]
    assert answer.headers["Retry-After"] == "5"


async def test_an_open_event_stream_ends_in_one_warning_when_the_database_drops(
    served: tuple[httpx.AsyncClient, UnreachableUnitOfWork],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, uow = served
    await client.post("/batches", json={"ref": "b1", "sku": "LAMP", "qty": 1})
    uow.answers_left = 1  # the read before the stream starts

    with caplog.at_level(logging.WARNING):
        answer = await client.get("/events/stream")

    assert answer.status_code == 200
    assert "event: batch_created" in answer.text
    [warning] = [line for line in caplog.records if line.name.endswith("event_stream")]
    assert warning.levelno == logging.WARNING
    assert not [line for line in caplog.records if line.levelno >= logging.ERROR]
    assert warning.exc_info is None
    assert "db.example" in warning.getMessage()
