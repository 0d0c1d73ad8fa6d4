"""The outbox relay with fakes: log order, checkpoints, outages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation.service_layer import relay, services
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.testing import (
    FakePublisher,
    FakeUnitOfWork,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from allocation.adapters.eventlog import LoggedEvent

    from allocation.service_layer.messagebus import MessageBus


async def test_the_relay_publishes_the_log_in_order_once(bus: MessageBus) -> None:
    publisher = FakePublisher()
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    await services.register_user(bus, "Ann", "ann@example.com")

    assert await relay.relay_once(bus, publisher, batch_size=2) == 3
    assert await relay.relay_once(bus, publisher) == 0

    names = [logged.event.TYPE for logged in publisher.published]
    assert names == ["batch_created", "allocated", "user_registered"]
    positions = [logged.position for logged in publisher.published]
    assert positions == sorted(positions)


async def test_a_failed_publish_is_published_again(bus: MessageBus) -> None:
    """At-least-once: the checkpoint moves only after the broker took the batch."""
    publisher = FakePublisher()
    await services.add_batch(bus, "b1", "LAMP", 10)
    publisher.fail_next = 1
    with pytest.raises(Exception, match="down on purpose"):
        await relay.relay_once(bus, publisher)
    assert await relay.relay_once(bus, publisher) == 1


async def test_an_outage_is_logged_once_and_the_relay_resumes(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    published = anyio.Event()

    class SignallingPublisher(FakePublisher):
        async def publish(self, batch: Sequence[LoggedEvent]) -> None:
            await super().publish(batch)
            published.set()

    publisher = SignallingPublisher()
    publisher.fail_next = 4
    await services.add_batch(bus, "b1", "LAMP", 10)
    with caplog.at_level(logging.WARNING, logger="allocation.service_layer.relay"):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: relay.keep_relaying(
                    bus, publisher, interval=0.001, max_backoff=0.002
                )
            )
            with anyio.fail_after(5):
                await published.wait()
            group.cancel_scope.cancel()
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "relay paused, will retry",
        "relay resumed",
    ]
    assert [logged.event.TYPE for logged in publisher.published] == ["batch_created"]


async def test_the_relay_outlives_a_database_outage(
    bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 4): a database outage ended the worker's relay task."""
    published = anyio.Event()

    class SignallingPublisher(FakePublisher):
        async def publish(self, batch: Sequence[LoggedEvent]) -> None:
            await super().publish(batch)
            published.set()

    await services.add_batch(bus, "b1", "LAMP", 10)
    uow = bus.uow_factory()
    assert isinstance(uow, FakeUnitOfWork)
    real_read = uow.event_log.read
    failures = iter([DatabaseUnavailable("fake://db", "down"), RuntimeError("odd")])

    async def flaky_read(**kwargs: Any) -> list[LoggedEvent]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await real_read(**kwargs)

    monkeypatch.setattr(uow.event_log, "read", flaky_read)
    publisher = SignallingPublisher()
    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: relay.keep_relaying(
                bus, publisher, interval=0.001, max_backoff=0.002
            )
        )
        with anyio.fail_after(5):
            await published.wait()
        group.cancel_scope.cancel()
    assert [logged.event.TYPE for logged in publisher.published] == ["batch_created"]
