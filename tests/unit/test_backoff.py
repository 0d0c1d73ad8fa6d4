"""Background loops say why they paused, once, and that they resumed, once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from allocation.adapters.broker import AbstractCommandStream, Entry
from allocation.service_layer import consumer
from allocation.service_layer.backoff import Outage
from allocation.service_layer.exceptions import BrokerUnavailable

if TYPE_CHECKING:
    import pytest

    from allocation.service_layer.messagebus import MessageBus

LOGGER = "allocation.service_layer.consumer"


class FailingStream(AbstractCommandStream):
    """Fails ``failures`` reads with ``error``, then reads nothing; says when a pass
    after the failures has ended (the next one reads)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.reads = 0
        self.passed_after_failures = anyio.Event()

    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        if self.reads > self.failures + 1:
            self.passed_after_failures.set()
        await anyio.lowlevel.checkpoint()
        return []

    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        return []

    async def ack(self, entry_id: str) -> None:
        raise AssertionError("nothing was read")

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        raise AssertionError("nothing was read")


async def _consume_through(stream: FailingStream, bus: MessageBus) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: consumer.keep_consuming(bus, stream, max_backoff=0.002)
        )
        with anyio.fail_after(5):
            await stream.passed_after_failures.wait()
        group.cancel_scope.cancel()


async def test_an_unforeseen_failure_is_logged_once_with_its_cause_and_traceback(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a key of the wrong type logged "consumer pass failed" per retry,
    without saying why."""
    error = RuntimeError("WRONGTYPE at redis://app:s3cret@h/0")
    stream = FailingStream(5, error)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await _consume_through(stream, bus)

    assert stream.reads > 5
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == [
        "consumer paused, will retry: RuntimeError: WRONGTYPE at redis://app:***@h/0",
        "consumer resumed",
    ]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is error


async def test_a_foreseen_outage_is_logged_once_by_its_message_alone(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    stream = FailingStream(3, BrokerUnavailable("redis://h/0", "refused"))

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await _consume_through(stream, bus)

    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == [
        f"consumer paused, will retry: {stream.error}",
        "consumer resumed",
    ]
    assert records[0].exc_info is None


def test_an_outage_logs_nothing_per_retry(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.backoff")
    outage = Outage(logger, "thing", first=1, longest=4)

    with caplog.at_level(logging.DEBUG, logger="tests.backoff"):
        waits = [outage.failed(ValueError("bad")) for _ in range(4)]
        outage.succeeded()
        outage.succeeded()

    assert waits == [2, 4, 4, 4]
    assert [r.getMessage() for r in caplog.records] == [
        "thing paused, will retry: ValueError: bad",
        "thing resumed",
    ]
