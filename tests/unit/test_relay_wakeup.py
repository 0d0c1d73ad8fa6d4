"""The relay's wake-ups with fakes: rings coalesce, the poll stays, listeners retry."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation.service_layer import relay, services
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.service_layer.locks import SubscriberLocks
from allocation.testing import (
    FakePublisher,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from allocation.adapters.eventlog import LoggedEvent

    from allocation.service_layer.messagebus import MessageBus

# Longer than any test: a pass that happens came from a ring, never from the poll.
NEVER = 3600.0


class CountingLocks(SubscriberLocks):
    """Counts how often the relay asks for its lock."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    @contextlib.asynccontextmanager
    async def hold(self, subscriber: str) -> AsyncIterator[bool]:
        self.asked += 1
        async with super().hold(subscriber) as held:
            yield held


class SignallingPublisher(FakePublisher):
    """Says when it has published; can be told to stall its next publish."""

    def __init__(self) -> None:
        super().__init__()
        self.published_any = anyio.Event()
        self.stalled = anyio.Event()
        self.go_on: anyio.Event | None = None

    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        if self.go_on is not None:
            self.stalled.set()
            await self.go_on.wait()
            self.go_on = None
        await super().publish(batch)
        self.published_any.set()


@pytest.fixture
def bus(bus: MessageBus) -> MessageBus:
    """The fakes' bus (conftest), counting how often the relay asks for its lock."""
    bus.locks = CountingLocks()
    return bus


def _lock_requests(bus: MessageBus) -> int:
    assert isinstance(bus.locks, CountingLocks)
    return bus.locks.asked


def _count_passes(bus: MessageBus, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the relay's passes: each reads the log once (a batch is plenty here)."""
    uow = bus.uow_factory()
    real_read = uow.event_log.read
    passes = [0]

    async def counted_read(**kwargs: Any) -> list[LoggedEvent]:
        passes[0] += 1
        return await real_read(**kwargs)

    monkeypatch.setattr(uow.event_log, "read", counted_read)
    return passes


async def test_rings_between_two_waits_count_once() -> None:
    wake_up = relay.WakeUp()
    for _ in range(100):
        wake_up.ring()

    with anyio.fail_after(5):
        assert await wake_up.rung_within(NEVER)
    assert not await wake_up.rung_within(0)


async def test_a_ring_starts_a_pass_long_before_the_poll(bus: MessageBus) -> None:
    publisher = SignallingPublisher()
    wake_up = relay.WakeUp()
    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: relay.keep_relaying(bus, publisher, interval=NEVER, wake_up=wake_up)
        )
        await anyio.wait_all_tasks_blocked()  # the first pass found nothing
        await services.add_batch(bus, "b1", "LAMP", 10)
        wake_up.ring()
        with anyio.fail_after(5):
            await publisher.published_any.wait()
        group.cancel_scope.cancel()
    assert [logged.event.TYPE for logged in publisher.published] == ["batch_created"]


async def test_many_rings_during_a_pass_cause_one_more_pass(
    bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = _count_passes(bus, monkeypatch)
    publisher = SignallingPublisher()
    publisher.go_on = anyio.Event()
    wake_up = relay.WakeUp()
    await services.add_batch(bus, "b1", "LAMP", 10)
    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: relay.keep_relaying(bus, publisher, interval=NEVER, wake_up=wake_up)
        )
        with anyio.fail_after(5):
            await publisher.stalled.wait()
        await services.add_batch(bus, "b2", "LAMP", 10)
        for _ in range(100):
            wake_up.ring()
        publisher.go_on.set()
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert passes == [2]
    assert _lock_requests(bus) == 1  # the second pass kept the lock of the first
    assert [logged.event.TYPE for logged in publisher.published] == [
        "batch_created",
        "batch_created",
    ]


async def test_a_relay_on_standby_polls_instead_of_answering_rings(
    bus: MessageBus,
) -> None:
    """Rings must not send a standby worker to the relay lock on every commit."""
    wake_up = relay.WakeUp()
    async with bus.locks.hold(relay.RELAY), anyio.create_task_group() as group:
        group.start_soon(
            lambda: relay.keep_relaying(
                bus, FakePublisher(), interval=NEVER, wake_up=wake_up
            )
        )
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            wake_up.ring()
            await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert _lock_requests(bus) == 1 + 1  # the test's own, and the relay's first try


class FlakyListener:
    """Fails ``failures`` times to listen, then hears once and listens forever."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def listen(self, heard: Callable[[], None]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise DatabaseUnavailable("fake://db", "down on purpose")
        heard()
        await anyio.sleep_forever()


async def test_a_lost_listener_is_retried_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = FlakyListener(failures=3)
    wake_up = relay.WakeUp()
    with caplog.at_level(logging.WARNING, logger="allocation.service_layer.relay"):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: relay.keep_listening(
                    listener, wake_up, first_backoff=0.001, max_backoff=0.002
                )
            )
            with anyio.fail_after(5):
                assert await wake_up.rung_within(NEVER)
            group.cancel_scope.cancel()
    assert listener.attempts == 4
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "relay wake-ups paused, will retry",
        "relay wake-ups resumed",
    ]
