"""Idempotency-Key and read-your-writes over HTTP, on a SQLite file and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation.domain import commands, events, model
from allocation.entrypoints.api import command_routes
from allocation.service_layer import idempotency
from tests.integration.http_fixtures import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import fastapi
    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

ALLOCATE = {"orderid": "o1", "sku": "LAMP", "qty": 3}


@pytest.fixture
async def served(
    engine: AsyncEngine, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, fastapi.FastAPI]]:
    async with serving(database_url) as running:
        yield running


@pytest.fixture
def client(served: tuple[httpx.AsyncClient, fastapi.FastAPI]) -> httpx.AsyncClient:
    return served[0]


async def _stocked(client: httpx.AsyncClient, qty: int = 100) -> None:
    answer = await client.post(
        "/batches", json={"ref": "b1", "sku": "LAMP", "qty": qty, "eta": None}
    )
    assert answer.status_code == 201, answer.text


async def _allocated_events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    page = await client.get("/events", params={"name": "allocated"})
    events_seen: list[dict[str, Any]] = page.json()["events"]
    return events_seen


async def test_a_repeat_gets_the_first_response_and_no_second_effect(
    client: httpx.AsyncClient,
) -> None:
    await _stocked(client)
    key = {"Idempotency-Key": '"order-o1-attempt"'}

    first = await client.post("/allocations", json=ALLOCATE, headers=key)
    again = await client.post("/allocations", json=ALLOCATE, headers=key)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Log-Position"] == first.headers["Log-Position"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(await _allocated_events(client)) == 1


async def test_the_same_key_for_another_request_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await _stocked(client)
    key = {"Idempotency-Key": "k1"}
    await client.post("/allocations", json=ALLOCATE, headers=key)

    other = await client.post("/allocations", json={**ALLOCATE, "qty": 4}, headers=key)

    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert len(await _allocated_events(client)) == 1


async def test_a_repeat_while_the_first_is_in_flight_is_a_conflict(
    served: tuple[httpx.AsyncClient, fastapi.FastAPI],
) -> None:
    client, app = served
    await _stocked(client)
    body = b'{"orderid":"o1","sku":"LAMP","qty":3}'
    held = await idempotency.claim(
        app.state.bus.uow_factory,
        "k1",
        idempotency.fingerprint("POST", "/allocations", body),
        lease=60,
    )
    assert isinstance(held, idempotency.Claimed)

    answer = await client.post(
        "/allocations",
        content=body,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )

    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/idempotency-key-in-use"
    assert answer.headers["Retry-After"] == "1"
    assert await _allocated_events(client) == []


async def test_concurrent_repeats_of_one_key_have_one_effect(
    client: httpx.AsyncClient,
) -> None:
    await _stocked(client)
    answers: list[httpx.Response] = []

    async def send() -> None:
        answers.append(
            await client.post(
                "/allocations", json=ALLOCATE, headers={"Idempotency-Key": "k1"}
            )
        )

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(send)

    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    assert len(await _allocated_events(client)) == 1


async def test_a_crash_between_effect_and_answer_still_answers_the_repeat(
    served: tuple[httpx.AsyncClient, fastapi.FastAPI],
) -> None:
    client, app = served
    await _stocked(client)
    bus = app.state.bus
    body = b'{"orderid":"o1","sku":"LAMP","qty":3}'
    fingerprint = idempotency.fingerprint("POST", "/allocations", body)
    claimed = await idempotency.claim(bus.uow_factory, "k1", fingerprint, lease=60)
    assert isinstance(claimed, idempotency.Claimed)
    # The first request's command commits; its process dies before it answers.
    pending = idempotency.PendingRequest(
        key="k1",
        fingerprint=fingerprint,
        token=claimed.token,
        render=command_routes.render_allocation,
        ttl=3600,
    )
    entered = idempotency.current.set(pending)
    try:
        await bus.handle(commands.Allocate(orderid="o1", sku="LAMP", qty=3))
    finally:
        idempotency.current.reset(entered)

    repeat = await client.post(
        "/allocations",
        content=body,
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )

    assert repeat.status_code == 201
    assert repeat.json()["batchref"] == "b1"
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert len(await _allocated_events(client)) == 1


async def test_a_failed_request_lets_its_key_go(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "k1"}
    refused = await client.post("/allocations", json=ALLOCATE, headers=key)
    await _stocked(client)

    retried = await client.post("/allocations", json=ALLOCATE, headers=key)

    assert refused.status_code == 422
    assert retried.status_code == 201


async def test_a_bad_key_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/allocations", json=ALLOCATE, headers={"Idempotency-Key": "x" * 300}
    )

    assert answer.status_code == 400
    assert answer.json()["type"] == "/problems/invalid-idempotency-key"


async def test_a_query_waits_for_an_asynchronous_projection_to_catch_up(
    engine: AsyncEngine, database_url: str
) -> None:
    async with serving(database_url, catch_up_interval=0.05) as (client, app):
        await _stocked(client)
        position = await _logged_behind_the_bus(app)

        shown = await client.get("/allocations/o9", params={"min_position": position})

    assert shown.status_code == 200
    assert shown.json() == [{"sku": "LAMP", "batchref": "b1"}]


async def test_a_query_that_cannot_be_fresh_in_time_says_when_to_ask_again(
    engine: AsyncEngine, database_url: str
) -> None:
    async with serving(database_url, catch_up_interval=0, read_wait=0.2) as (
        client,
        app,
    ):
        await _stocked(client)
        position = await _logged_behind_the_bus(app)

        stale = await client.get("/allocations/o9", params={"min_position": position})
        beyond = await client.get("/users/x", params={"min_position": position + 5})

    assert stale.status_code == 504
    assert stale.json()["type"] == "/problems/not-yet-projected"
    assert stale.headers["Retry-After"] == "1"
    assert beyond.status_code == 422
    assert beyond.json()["type"] == "/problems/unknown-position"


async def _logged_behind_the_bus(app: fastapi.FastAPI) -> int:
    """Append an allocation straight to the store, as another process would: only
    catch-up brings it into this process's read model. Returns its position."""
    bus = app.state.bus
    async with bus.uow_factory() as uow:
        product = await uow.products.get("LAMP")
        assert product is not None
        product.allocate(model.OrderLine("o9", "LAMP", 2))
        await uow.commit()
        recorded = uow.collect_new_events()
    assert any(isinstance(event, events.Allocated) for event in recorded)
    async with bus.uow_factory() as uow:
        return await uow.event_log.last_position()
