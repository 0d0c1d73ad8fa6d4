"""Status figures and traces on a real database and a real Redis: one trace from a
command through the relay to another service's command, consumed here."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from allocation import config
from allocation.adapters.broker import RedisCommandStream, RedisStreamsPublisher
from allocation.adapters.tracing import OpenTelemetryObserver
from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.service_layer import catchup, consumer, relay, services
from allocation.service_layer.status import RelayStatus, status
from allocation.testing import FakeConsole, FakeNotifications
from tests.conftest import random_batchref, random_sku
from tests.integration.conftest import REDIS_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus


@pytest.fixture
async def streams(redis_client: redis.Redis) -> AsyncIterator[tuple[str, str]]:
    """(events stream, command stream) of the test's own."""
    tag = uuid.uuid4().hex[:8]
    names = f"test:events:{tag}", f"test:commands:{tag}"
    try:
        yield names
    finally:
        await redis_client.delete(*names, f"{names[1]}:dead")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_bus(
    engine: AsyncEngine, database_url: str, exporter: InMemorySpanExporter
) -> AsyncIterator[MessageBus]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = config.Settings(database_url=database_url, catch_up_interval=0)
    async with bootstrap(
        settings=settings,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        observer=OpenTelemetryObserver(provider),
    ) as bus:
        yield bus


async def test_status_shows_each_subscribers_lag_and_dead_letters(
    bus: MessageBus,
) -> None:
    async def broken(event: events.UserRegistered) -> None:
        raise RuntimeError("smtp down")

    bus.subscribe(events.UserRegistered, broken)
    await catchup.catch_up(bus)  # every subscriber gets its checkpoint
    await services.register_user(bus, "Ann", "ann@example.com")
    await services.add_batch(bus, random_batchref(), random_sku(), 10)

    figures = {
        subscriber.name: subscriber for subscriber in (await status(bus)).subscribers
    }
    assert (figures["broken"].lag, figures["broken"].dead_letters) == (0, 1)
    # Handled, but recorded at the next catch-up pass (or batch of them).
    assert figures["send_coupon"].lag == 1
    assert figures["send_coupon"].checkpoint == 0

    await catchup.catch_up(bus)
    after = await status(bus)
    figures = {subscriber.name: subscriber for subscriber in after.subscribers}
    assert figures["send_coupon"].lag == 0
    assert figures["send_coupon"].checkpoint == after.head
    assert figures["allocations_view"].projection


async def test_status_shows_how_far_the_relay_has_published(
    bus: MessageBus, streams: tuple[str, str]
) -> None:
    events_stream, _ = streams
    await services.register_user(bus, "Ann", "ann@example.com")
    await services.register_user(bus, "Bob", "bob@example.com")
    before = await status(bus, destinations=[events_stream])
    # Counted, not head minus position: PostgreSQL's positions may have gaps.
    assert before.relays == (RelayStatus(events_stream, None, 2),)

    publisher = RedisStreamsPublisher(REDIS_URL, events_stream)
    try:
        await relay.relay_once(bus, publisher)
    finally:
        await publisher.aclose()
    await services.register_user(bus, "Cid", "cid@example.com")
    # Found by its checkpoint, named or not.
    assert (await status(bus)).relays == (RelayStatus(events_stream, before.head, 1),)


async def test_one_trace_runs_from_a_command_through_the_relay_to_the_consumer(
    traced_bus: MessageBus,
    streams: tuple[str, str],
    redis_client: redis.Redis,
    exporter: InMemorySpanExporter,
) -> None:
    events_stream, commands_stream = streams
    ref = random_batchref()
    await services.add_batch(traced_bus, ref, random_sku(), 10)
    [added] = [
        s for s in exporter.get_finished_spans() if s.name == "handler add_batch"
    ]
    assert added.context is not None
    trace_id = f"{added.context.trace_id:032x}"

    publisher = RedisStreamsPublisher(REDIS_URL, events_stream)
    try:
        assert await relay.relay_once(traced_bus, publisher) == 1
    finally:
        await publisher.aclose()
    entries: Any = await redis_client.xrange(events_stream)
    [(_, published)] = entries
    assert published["traceparent"].split("-")[1:3] == [
        trace_id,
        f"{added.context.span_id:016x}",
    ]

    # Another service reacts to the event with a command, in the same trace.
    await redis_client.xadd(
        commands_stream,
        {
            "name": "change_batch_quantity",
            "message_id": str(uuid.uuid4()),
            "payload": json.dumps({"ref": ref, "qty": 5}),
            "traceparent": published["traceparent"],
        },
    )
    stream = RedisCommandStream(REDIS_URL, commands_stream, "allocation", "c1")
    try:
        assert await consumer.consume_once(traced_bus, stream, block_ms=100) == [
            "handled"
        ]
    finally:
        await stream.aclose()
    [changed] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "command change_batch_quantity"
    ]
    assert changed.context is not None
    assert changed.parent is not None
    assert f"{changed.context.trace_id:032x}" == trace_id
    assert changed.parent.span_id == added.context.span_id
