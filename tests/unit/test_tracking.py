"""What the bus records about deliveries, with fakes: tracking, claims, causes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain import events, users
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer import catchup, services
from allocation.service_layer.ports import NewEvent
from allocation.service_layer.tracking import Tracker
from allocation.testing import (
    FakeConsole,
    FakeEventStore,
    FakeNotifications,
    FakeUnitOfWork,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


def processed_by(uow: FakeUnitOfWork, subscriber: str) -> set[str]:
    return {mid for name, mid in uow.event_log.processed if name == subscriber}


async def test_every_committed_event_is_logged_with_its_version(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    logged = [
        (e.event.TYPE, e.aggregate_id, e.aggregate_version)
        for e in uow.event_log.logged
    ]
    assert logged == [("batch_created", "LAMP", 1), ("allocated", "LAMP", 2)]


async def test_an_asynchronous_projection_records_the_event_in_its_own_commit(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    allocated = uow.event_log.logged[-1]
    assert processed_by(uow, "allocations_view") == {allocated.event.message_id}


async def test_an_inline_projection_is_written_by_the_commands_own_commit(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    commits = uow.commits
    await services.register_user(bus, "Ann", "ann@example.com")
    async with uow:
        assert await uow.users_view.by_email("ann@example.com") is not None
    # One commit for the registration; the three article handlers commit nothing.
    assert uow.commits == commits + 1
    assert processed_by(uow, "users_view") == set()


async def test_handlers_without_a_commit_are_recorded_when_flushed(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    [registered] = uow.event_log.logged
    assert processed_by(uow, "send_welcome_email") == set()

    await bus.flush_completions()

    for subscriber in ("send_welcome_email", "log_registration", "send_coupon"):
        assert processed_by(uow, subscriber) == {registered.event.message_id}


class _StallingEventLog(FakeEventStore):
    """Stalls the first recording of handled messages until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = anyio.Event()

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        ids = list(message_ids)
        if ids and not exactly_once and not self.stalled.is_set():
            self.stalled.set()
            await anyio.sleep_forever()
        await super().mark_processed(subscriber, ids, exactly_once=exactly_once)


async def test_a_stop_during_a_flush_still_records_what_was_handled() -> None:
    """Issue 8 item 11: a stop that cut a flush short lost what it was recording."""
    uow = FakeUnitOfWork()
    uow.event_log = log = _StallingEventLog()
    notifications = FakeNotifications()
    async with bootstrap(
        uow=uow,
        notifications=notifications,
        console=FakeConsole(),
        settings=config.Settings(catch_up_interval=0.001),
        catch_up=True,  # every subscriber gets a checkpoint, then passes run behind
    ):
        async with uow:
            uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
            await uow.commit()
        uow.collect_new_events()  # the dispatch that never happened
        # A background pass delivered the welcome email and is recording it now.
        await log.stalled.wait()
    [registered] = log.logged
    assert len(notifications.sent["ann@example.com"]) == 1
    assert processed_by(uow, "send_welcome_email") == {registered.event.message_id}


class _Fatal(BaseException):
    """Not an Exception: nothing on the way catches it."""


async def _register_until_background_work_dies(
    uow: FakeUnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def die(*args: object, **kwargs: object) -> int:
        raise _Fatal

    async with bootstrap(
        uow=uow,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(catch_up_interval=0.001),
        catch_up=True,
    ) as bus:
        await services.register_user(bus, "Ann", "ann@example.com")
        monkeypatch.setattr(catchup, "catch_up", die)
        await anyio.sleep_forever()  # the next background pass dies


async def test_what_was_handled_is_recorded_even_when_background_work_dies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(BaseExceptionGroup):
        await _register_until_background_work_dies(uow, monkeypatch)

    [registered] = uow.event_log.logged
    assert processed_by(uow, "send_welcome_email") == {registered.event.message_id}


async def test_nothing_stays_claimed_once_handled(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    assert bus.claimed == set()


async def test_a_failed_command_claims_nothing(bus: MessageBus) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    with pytest.raises(Exception, match="already registered"):
        await services.register_user(bus, "Ann", "ANN@example.com")
    assert bus.claimed == set()


async def test_a_tracked_handler_runs_its_effect_once_per_message(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    effects: list[str] = []

    async def remember(event: events.UserRegistered, uow: AbstractUnitOfWork) -> None:
        async with uow:
            effects.append(event.email)
            await uow.commit()

    bus.subscribe(events.UserRegistered, remember)
    event = events.UserRegistered(user_id="u1", name="Ann", email="ann@example.com")
    assert await bus.deliver("remember", event)
    assert await bus.deliver("remember", event)
    assert processed_by(uow, "remember") == {event.message_id}
    # The fake applies effects at once; the second commit is refused, and a real
    # database rolls the effect back with it (tests/integration proves that).
    assert len(effects) == 2


async def test_events_are_stamped_with_the_command_that_caused_them(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    [registered] = uow.event_log.logged
    event = registered.event
    assert event.causation_id is not None
    assert event.correlation_id == event.causation_id


async def test_catch_up_with_fakes_delivers_what_was_not_dispatched(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await catchup.catch_up(bus)  # every subscriber gets a checkpoint
    async with uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        await uow.commit()
    uow.collect_new_events()  # the dispatch that never happened

    assert (
        await catchup.catch_up(bus) == 3
    )  # the article's handlers; the view is inline
    async with uow:
        assert await uow.users_view.by_email("ann@example.com") is not None
    assert await catchup.catch_up(bus) == 0


async def test_a_refused_append_leaves_the_fake_log_unchanged() -> None:
    """The fake refuses a batch whole, as the database's unique constraint does."""
    log = FakeUnitOfWork().event_log
    first = events.OutOfStock(sku="LAMP", orderid="o1", qty=1)
    await log.append([NewEvent(first, "product", "LAMP", 1)])
    again = events.OutOfStock(sku="LAMP", orderid="o2", qty=1)
    later = events.OutOfStock(sku="LAMP", orderid="o3", qty=1)
    with pytest.raises(ConcurrencyConflict):
        await log.append(
            [
                NewEvent(later, "product", "LAMP", 2),
                NewEvent(again, "product", "LAMP", 1),
            ]
        )
    assert [logged.event for logged in log.logged] == [first]


async def test_catch_up_skips_what_was_handled_or_buried_and_stops_at_a_claim() -> None:
    tracker = Tracker()
    uow = FakeUnitOfWork()
    batch = [
        (n, events.OutOfStock(sku="LAMP", orderid=f"o{n}", qty=1)) for n in range(1, 6)
    ]
    ids = [event.message_id for _, event in batch]
    async with uow:
        assert await tracker.undelivered(uow.event_log, "s", batch) == (batch, None)
        await uow.event_log.mark_processed("s", [ids[0]], exactly_once=True)
        await uow.event_log.add_dead_letter("s", ids[1], "boom", attempts=3)
        await uow.commit()
    tracker.claimed.add(ids[3])  # this process is dispatching it itself

    async with uow:
        todo, in_hand = await tracker.undelivered(uow.event_log, "s", batch)

    assert (todo, in_hand) == ([batch[2]], 4)
