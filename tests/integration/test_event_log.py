"""The durable event log on real databases: atomic appends, tracking, catch-up, replay."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import text

from allocation.domain import events, model, users
from allocation.domain.exceptions import ConcurrencyConflict, EmailAlreadyRegistered
from allocation.service_layer import catchup, rebuild, services
from allocation.service_layer.ports import NewEvent
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork
from tests.conftest import random_batchref, random_sku

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.unit_of_work import (
        AbstractUnitOfWork,
    )
    from allocation.testing import FakeNotifications


async def _scalar(engine: AsyncEngine, sql: str, **params: object) -> object:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar()


async def _register_without_dispatch(bus: MessageBus, email: str) -> str:
    """Commit a registration the way a process that died right after would leave it."""
    user = users.User.register(str(uuid.uuid4()), "Ann", email)
    async with bus.uow_factory() as uow:
        uow.users.add(user)
        await uow.commit()
    return user.id


async def test_the_log_row_is_written_with_the_state(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    user_id = await services.register_user(bus, "Ann", "ann@example.com")
    row = await _scalar(
        engine,
        "SELECT aggregate_version FROM event_log WHERE name = 'user_registered'"
        " AND aggregate_id = :id",
        id=user_id,
    )
    assert row == 1


async def test_a_refused_commit_leaves_neither_state_nor_log_row(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    with pytest.raises(EmailAlreadyRegistered):
        await services.register_user(bus, "Ann again", "ann@example.com")
    assert await _scalar(engine, "SELECT count(*) FROM claims") == 1
    assert await _scalar(engine, "SELECT count(*) FROM users_view") == 1
    assert await _scalar(engine, "SELECT count(*) FROM event_log") == 1


async def test_a_version_written_twice_fails_and_writes_nothing(
    uow_factory: Callable[[], AbstractUnitOfWork], engine: AsyncEngine
) -> None:
    sku = random_sku()
    async with uow_factory() as uow:
        await uow.event_log.append(
            [
                NewEvent(
                    events.OutOfStock(sku=sku, orderid="o", qty=1), "product", sku, 1
                )
            ]
        )
        await uow.commit()

    async def log_version_one_again() -> None:
        async with uow_factory() as uow:
            await uow.event_log.append(
                [
                    NewEvent(
                        events.OutOfStock(sku=sku, orderid="p", qty=2),
                        "product",
                        sku,
                        1,
                    )
                ]
            )
            await uow.commit()

    with pytest.raises(ConcurrencyConflict):
        await log_version_one_again()
    assert await _scalar(engine, "SELECT count(*) FROM event_log") == 1


async def test_duplicate_delivery_to_a_tracked_handler_has_one_effect(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    async def create_a_product(
        event: events.UserRegistered, uow: AbstractUnitOfWork
    ) -> None:
        async with uow:  # not idempotent by itself: every run adds a product
            sku = f"effect-{uuid.uuid4().hex[:8]}"
            product = model.Product(sku)
            product.add_batch(model.Batch(f"{sku}-b", sku, 1))
            uow.products.add(product)
            await uow.commit()

    bus.subscribe(events.UserRegistered, create_a_product, name="effects")
    event = events.UserRegistered(user_id="u1", name="Ann", email="ann@example.com")
    assert await bus.deliver("effects", event)
    assert await bus.deliver("effects", event)  # a redelivery is fine...
    products = await _scalar(
        engine,
        "SELECT count(DISTINCT aggregate_id) FROM event_log"
        " WHERE aggregate_type = 'product'",
    )
    assert products == 1  # ...and has no second effect


async def test_catch_up_delivers_what_was_never_dispatched(
    bus: MessageBus, notifications: FakeNotifications, engine: AsyncEngine
) -> None:
    user_id = await _register_without_dispatch(bus, "lost@example.com")
    assert notifications.sent == {}

    delivered = await catchup.catch_up(bus)

    assert delivered == 3  # welcome email, log line, coupon (the view is inline)
    assert [m.subject for m in notifications.sent["lost@example.com"]] == [
        "Добро пожаловать!",
        "Ваш купон",
    ]
    assert await _scalar(engine, "SELECT user_id FROM users_view") == user_id
    assert await catchup.catch_up(bus) == 0  # and nothing twice


async def test_a_dead_letter_does_not_block_later_events(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    calls: list[str] = []

    async def fragile(event: events.UserRegistered) -> None:
        calls.append(event.email)
        if event.email.startswith("bad"):
            raise RuntimeError("cannot handle this one")

    bus.subscribe(events.UserRegistered, fragile)
    await catchup.catch_up(bus)  # a new subscriber starts from the end of the log
    for email in ("one@example.com", "bad@example.com", "two@example.com"):
        await _register_without_dispatch(bus, email)

    await catchup.catch_up(bus)
    calls_after_first_pass = list(calls)
    await catchup.catch_up(bus)

    attempts = bus._retry.attempts
    assert calls_after_first_pass == [
        "one@example.com",
        *["bad@example.com"] * attempts,
        "two@example.com",
    ]
    assert calls == calls_after_first_pass  # no spinning on the dead letter
    assert await _scalar(engine, "SELECT count(*) FROM dead_letters") == 1
    async with bus.uow_factory() as uow:
        [letter] = await uow.event_log.dead_letters("fragile")
    assert letter.attempts == attempts
    assert "cannot handle this one" in letter.error


async def test_a_dead_letter_can_be_retried_and_discarded(bus: MessageBus) -> None:
    failing = {"on": True}

    async def flaky(event: events.UserRegistered) -> None:
        if failing["on"]:
            raise RuntimeError("down")

    bus.subscribe(events.UserRegistered, flaky)
    await catchup.catch_up(bus)
    await _register_without_dispatch(bus, "a@example.com")
    await _register_without_dispatch(bus, "b@example.com")
    await catchup.catch_up(bus)
    async with bus.uow_factory() as uow:
        first, second = await uow.event_log.dead_letters("flaky")

    assert await catchup.retry_dead_letter(bus, first.id) is not None  # still down
    failing["on"] = False
    assert await catchup.retry_dead_letter(bus, first.id) is None
    discarded = await catchup.discard_dead_letter(bus, second.id)

    async with bus.uow_factory() as uow:
        assert await uow.event_log.dead_letters("flaky") == []
        handled = await uow.event_log.processed_among(
            "flaky", [first.message_id, discarded.message_id]
        )
    assert handled == {first.message_id, second.message_id}


async def _append_allocations(bus: MessageBus, count: int) -> None:
    """Log ``count`` Allocated and Deallocated events, as a busy shop would."""
    versions: dict[str, int] = {}
    batch: list[NewEvent] = []
    for index in range(count):
        sku = f"sku-{index % 97}"
        versions[sku] = versions.get(sku, 0) + 1
        kind = events.Deallocated if index % 10 == 9 else events.Allocated
        event = kind(
            orderid=f"order-{index // 10}", sku=sku, qty=1, batchref=f"b-{index}"
        )
        batch.append(NewEvent(event, "product", sku, versions[sku]))
        if len(batch) == 1000:
            async with bus.uow_factory() as uow:
                await uow.event_log.append(batch)
                await uow.commit()
            batch = []


async def _allocations_view(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT orderid, sku, batchref FROM allocations_view"
                " WHERE allocated ORDER BY 1, 2, 3"
            )
        )
        return [tuple(row) for row in rows]


async def test_replay_of_10000_events_rebuilds_an_identical_read_model(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _append_allocations(bus, 10_000)
    await catchup.catch_up(bus, subscribers=["allocations_view"])
    built = await _allocations_view(engine)
    assert len(built) == 9_000

    replayed = await rebuild.replay(bus, "allocations_view", batch_size=700)

    assert replayed.applied == 10_000
    assert replayed.differences == []
    assert await _allocations_view(engine) == built


async def test_an_interrupted_replay_can_be_run_again(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _append_allocations(bus, 3_000)
    await catchup.catch_up(bus, subscribers=["allocations_view"])
    built = await _allocations_view(engine)

    def stop_midway(position: int, total: int) -> None:
        if 0 < position < total:  # 0: the call before the first batch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rebuild.replay(
            bus, "allocations_view", batch_size=500, progress=stop_midway
        )
    # The rebuild went to the shadow table: the live read model never changed.
    assert await _allocations_view(engine) == built

    replayed = await rebuild.replay(bus, "allocations_view")
    assert replayed.applied == 3_000
    assert await _allocations_view(engine) == built


async def test_events_carry_their_cause(bus: MessageBus, engine: AsyncEngine) -> None:
    sku, first, second = random_sku(), random_batchref("a"), random_batchref("b")
    await services.add_batch(bus, first, sku, 10)
    await services.add_batch(bus, second, sku, 10)
    await services.allocate(bus, "o1", sku, 5)
    await services.change_batch_quantity(bus, first, 1)  # deallocates, reallocates
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT name, message_id, correlation_id, causation_id FROM event_log"
                    " WHERE aggregate_id = :sku ORDER BY position"
                ),
                {"sku": sku},
            )
        ).all()
    names = [row.name for row in rows]
    assert names[-3:] == ["batch_quantity_changed", "deallocated", "allocated"]
    changed, deallocated, reallocated = rows[-3:]
    assert deallocated.causation_id == changed.causation_id  # the same command
    assert reallocated.causation_id == deallocated.message_id  # caused by the event
    assert reallocated.correlation_id == deallocated.correlation_id


async def test_the_allocations_view_does_not_depend_on_event_order(
    bus: MessageBus,
) -> None:
    """Regression (issue 3): a late, older event erased or revived a line."""
    line = {"orderid": "o1", "sku": "LAMP", "qty": 1}
    history = [
        events.Allocated(**line, batchref="b1", aggregate_version=2),
        events.Deallocated(**line, batchref="b1", aggregate_version=3),
        events.Allocated(**line, batchref="b2", aggregate_version=4),
    ]
    for event in (history[2], history[0], history[1]):
        assert await bus.deliver("allocations_view", event)
    async with bus.uow_factory() as uow:
        assert await uow.allocations_view.for_order("o1") == [
            {"sku": "LAMP", "batchref": "b2"}
        ]


async def test_catch_up_after_a_lost_dispatch_leaves_the_views_right(
    bus: MessageBus,
) -> None:
    """Regression (issue 3): reallocation's Allocated overtook the older Deallocated."""
    sku, first, second = random_sku(), random_batchref("a"), random_batchref("b")
    await services.add_batch(bus, first, sku, 10)
    await services.add_batch(bus, second, sku, 10)
    await services.allocate(bus, "o1", sku, 5)
    # Committed, but the process died before dispatching: o1 is off the first batch,
    # and the first batch has grown back, so reallocation puts o1 on it again.
    for quantity in (1, 10):
        async with bus.uow_factory() as uow:
            product = await uow.products.get(sku)
            assert product is not None
            product.change_batch_quantity(first, quantity)
            await uow.commit()

    await catchup.catch_up(bus)

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == []
    async with bus.uow_factory() as uow:
        assert await uow.allocations_view.for_order("o1") == [
            {"sku": sku, "batchref": first}
        ]


@pytest.mark.postgres
async def test_a_reader_never_skips_an_event_committed_late(
    bus: MessageBus,
    uow_factory: Callable[[], AbstractUnitOfWork],
    engine: AsyncEngine,
) -> None:
    """Positions follow commit order: a slow appender holds back the faster one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: commits cannot overlap there")

    def logged(orderid: str, version: int) -> list[NewEvent]:
        event = events.OutOfStock(sku="LAMP", orderid=orderid, qty=1)
        return [NewEvent(event, "product", f"p-{orderid}", version)]

    order: list[str] = []
    async with anyio.create_task_group() as group:
        slow = uow_factory()
        async with slow:
            await slow.event_log.append(logged("slow", 1))  # first to append...

            async def fast_writer() -> None:
                async with uow_factory() as fast:
                    await fast.event_log.append(logged("fast", 1))  # ...waits here
                    await fast.commit()
                order.append("fast committed")

            group.start_soon(fast_writer)
            async with uow_factory() as reader:  # a catch-up reading meanwhile
                assert await reader.event_log.last_position() == 0
            await slow.commit()  # ...and the last to commit would be skipped if
            order.append("slow committed")  # positions ignored commit order
    async with uow_factory() as reader:
        positions = {
            logged.event.orderid: logged.position  # type: ignore[attr-defined]
            for logged in await reader.event_log.read(after=0)
        }
    assert order == ["slow committed", "fast committed"]
    assert positions["slow"] < positions["fast"]


async def test_a_unit_of_work_reads_its_own_appends_and_nothing_of_a_rollback(
    uow_factory: Callable[[], AbstractUnitOfWork],
) -> None:
    # On PostgreSQL, reads before the first write run without a transaction: the
    # reads after it must still run inside it.
    sku = random_sku()
    async with uow_factory() as uow:
        assert await uow.event_log.read(after=0) == []
        await uow.event_log.append(
            [
                NewEvent(
                    events.OutOfStock(sku=sku, orderid="o", qty=1), "product", sku, 1
                )
            ]
        )
        mine = await uow.event_log.read(after=0)
        assert [entry.aggregate_id for entry in mine] == [sku]
        # Leaving without a commit.
    async with uow_factory() as uow:
        assert await uow.event_log.read(after=0) == []
        assert await uow.event_log.checkpoint("relay:broker") is None
