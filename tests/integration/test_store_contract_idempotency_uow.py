"""A request's response is stored by its command's commit, on every engine: with
the events or not at all, and a repeat of the request never has a second effect."""

from __future__ import annotations

import contextlib
import datetime
import json
from typing import TYPE_CHECKING

import anyio
import pytest

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain import events, model
from allocation.domain.exceptions import BatchAlreadyExists, ConcurrencyConflict
from allocation.service_layer import idempotency, services
from allocation.service_layer.exceptions import IdempotencyKeyLost
from allocation.service_layer.idempotency import KeyRecord, PendingRequest
from allocation.testing import FakeConsole, FakeNotifications
from tests import idempotent_requests
from tests.integration.store_fixtures import committing, reading

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from allocation.service_layer.messagebus import MessageBus
    from tests.integration.store_fixtures import StoreDatabase


async def claimed(store: StoreDatabase, key: str = "k1") -> PendingRequest:
    """The key claimed, as a request about to run its command holds it."""
    outcome = await idempotency.claim(store.unit_of_work, key, "f1", lease=60)
    assert isinstance(outcome, idempotency.Claimed)
    return PendingRequest(
        key=key,
        fingerprint="f1",
        token=outcome.token,
        render=idempotent_requests.render,
        ttl=60,
    )


@contextlib.contextmanager
def pending(request: PendingRequest) -> Iterator[PendingRequest]:
    reset = idempotency.current.set(request)
    try:
        yield request
    finally:
        idempotency.current.reset(reset)


async def record_of(store: StoreDatabase, key: str = "k1") -> KeyRecord:
    now = datetime.datetime.now(datetime.UTC)
    async with reading(store) as log:
        record = await log.claim_request(key, "probe", "probe", now, now)
    assert record is not None, "the key was free"
    return record


async def add_product(store: StoreDatabase, sku: str, ref: str) -> None:
    async with store.unit_of_work() as uow:
        product = model.Product(sku)
        product.add_batch(model.Batch(ref, sku, 10))
        uow.products.add(product)
        await uow.commit()


async def add_batch_to(store: StoreDatabase, sku: str, ref: str) -> None:
    async with store.unit_of_work() as uow:
        product = await uow.products.get(sku)
        assert product is not None
        product.add_batch(model.Batch(ref, sku, 10))
        await uow.commit()


# ---- the unit of work


async def test_a_commit_stores_the_response_with_its_events(
    store: StoreDatabase,
) -> None:
    with pending(await claimed(store)) as request:
        await add_product(store, "sku1", "b1")

    async with reading(store) as log:
        [logged] = await log.read(after=0)
        assert request.response is not None
        assert request.response.message_ids == (logged.event.message_id,)
        assert await log.last_position_of(request.response.message_ids) == 1
    assert request.response.status_code == 201
    assert json.loads(request.response.body) == {"events": ["batch_created"]}
    record = await record_of(store)
    assert record.state == "done"
    assert record.response == request.response


async def test_a_failed_commit_leaves_the_key_in_flight_without_a_response(
    store: StoreDatabase,
) -> None:
    await add_product(store, "sku1", "b1")

    with pending(await claimed(store)) as request, pytest.raises(BatchAlreadyExists):
        await add_product(store, "sku2", "b1")

    assert request.response is None
    record = await record_of(store)
    assert record.state == "in_flight"
    assert record.response is None


async def test_a_commit_rerun_after_a_conflict_stores_the_response(
    store: StoreDatabase,
) -> None:
    await add_product(store, "sku1", "b1")
    request = await claimed(store)

    with pending(request), pytest.raises(ConcurrencyConflict):
        # Written as if sku1 were new: its version 1 is taken, as by a racer.
        await add_product(store, "sku1", "b2")
    assert request.response is None
    assert (await record_of(store)).state == "in_flight"

    with pending(request):
        await add_batch_to(store, "sku1", "b2")

    assert request.response is not None
    assert (await record_of(store)).response == request.response


async def test_a_commit_for_a_key_taken_over_appends_nothing(
    store: StoreDatabase,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    async with committing(store) as log:
        # The holder's lease ended an hour ago, and another request took the key.
        an_hour_ago = now - datetime.timedelta(hours=1)
        await log.claim_request("k1", "f1", "old", an_hour_ago, an_hour_ago)
        await log.claim_request("k1", "f1", "new", now, now + datetime.timedelta(60))
    request = PendingRequest("k1", "f1", "old", idempotent_requests.render, 60)

    with pending(request), pytest.raises(IdempotencyKeyLost):
        await add_product(store, "sku1", "b1")

    async with reading(store) as log:
        assert await log.last_position() == 0
    assert request.response is None


async def test_a_commit_of_nothing_leaves_the_key_to_be_released(
    store: StoreDatabase,
) -> None:
    with pending(await claimed(store)) as request:
        async with store.unit_of_work() as uow:
            await uow.commit()

    assert request.response is None
    assert (await record_of(store)).state == "in_flight"


async def test_a_later_commit_of_the_request_leaves_its_response(
    store: StoreDatabase,
) -> None:
    with pending(await claimed(store)) as request:
        await add_product(store, "sku1", "b1")
        stored = request.response
        await add_product(store, "sku2", "b2")

    assert request.response == stored
    assert (await record_of(store)).response == stored


# ---- through the bus


@pytest.fixture
async def bus(store: StoreDatabase) -> AsyncIterator[MessageBus]:
    async with bootstrap(
        uow=store.unit_of_work,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(retry_delay=0),
        catch_up=False,
    ) as bus:
        yield bus


async def out_of_stock_events(bus: MessageBus) -> int:
    async with bus.uow_factory() as uow:
        logged = await uow.event_log.read(after=0, names=[events.OutOfStock.TYPE])
    return len(logged)


async def test_a_repeated_request_gets_the_stored_response_and_no_second_effect(
    bus: MessageBus,
) -> None:
    await services.add_batch(bus, "b1", "sku1", 1)

    first = await idempotent_requests.allocate(bus, "k1", "o1", "sku1", 5)
    again = await idempotent_requests.allocate(bus, "k1", "o1", "sku1", 5)

    assert first == again == (201, json.dumps({"events": ["out_of_stock"]}))
    assert await out_of_stock_events(bus) == 1


async def test_a_concurrent_repeat_has_one_effect(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "sku1", 1)
    answers: list[tuple[int, str]] = []

    async def send() -> None:
        answers.append(await idempotent_requests.allocate(bus, "k1", "o1", "sku1", 5))

    async with anyio.create_task_group() as group:
        group.start_soon(send)
        group.start_soon(send)

    stored = (201, json.dumps({"events": ["out_of_stock"]}))
    assert stored in answers
    assert set(answers) <= {stored, idempotent_requests.CONFLICT}
    assert await out_of_stock_events(bus) == 1
