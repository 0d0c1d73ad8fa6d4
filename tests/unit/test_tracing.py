"""Traces through OpenTelemetry, recorded by the SDK's in-memory exporter: one trace
from a command through its event handlers, through the log to catch-up, and from
a sender's ``traceparent`` through the broker consumer."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import ProxyTracerProvider, get_tracer_provider

from allocation import config
from allocation.adapters import tracing
from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.service_layer import catchup, consumer, services
from allocation.service_layer.channels import Entry
from allocation.service_layer.ports import NewEvent
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork
from tests.unit.test_observability import OneEntryStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from opentelemetry.sdk.trace import ReadableSpan

    from allocation.service_layer.messagebus import MessageBus

# A sender's trace: version 00, trace id, parent span id, sampled.
SENDER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN_ID = "00f067aa0ba902b7"
SENDER = f"00-{SENDER_TRACE_ID}-{SENDER_SPAN_ID}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def observer(exporter: InMemorySpanExporter) -> tracing.OpenTelemetryObserver:
    # A provider of the test's own: the global one can be set once per process.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.OpenTelemetryObserver(provider)


@pytest.fixture
async def traced(
    observer: tracing.OpenTelemetryObserver,
) -> AsyncIterator[tuple[MessageBus, FakeUnitOfWork]]:
    uow = FakeUnitOfWork()
    async with bootstrap(
        uow=uow,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(retry_delay=0),
        observer=observer,
    ) as bus:
        yield bus, uow


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


async def test_a_command_and_all_its_event_handlers_make_one_trace(
    traced: tuple[MessageBus, FakeUnitOfWork], exporter: InMemorySpanExporter
) -> None:
    bus, _ = traced
    await services.register_user(bus, "Ann", "ann@example.com")
    spans = by_name(exporter)
    command = spans["command register_user"]
    assert command.parent is None
    assert set(spans) == {
        "command register_user",
        "handler register_user",
        "handler send_welcome_email",
        "handler log_registration",
        "handler send_coupon",
    }
    assert {trace_id(span) for span in spans.values()} == {trace_id(command)}
    for name, span in spans.items():
        if span is not command:
            assert parent_of(span) == span_id(command), name
    coupon = dict(spans["handler send_coupon"].attributes or {})
    assert coupon.pop("messaging.message.id") != ""
    assert coupon == {
        # The chain of messages starts with the command.
        "messaging.message.conversation_id": dict(command.attributes or {})[
            "messaging.message.id"
        ],
        "allocation.message.name": "user_registered",
        "allocation.subscriber": "send_coupon",
    }


async def test_a_logged_event_carries_the_traceparent_of_its_handler_span(
    traced: tuple[MessageBus, FakeUnitOfWork], exporter: InMemorySpanExporter
) -> None:
    bus, uow = traced
    await services.register_user(bus, "Ann", "ann@example.com")
    handler = by_name(exporter)["handler register_user"]
    [logged] = uow.event_log.logged
    assert logged.trace_context is not None
    # Version, trace id, parent id, then the flags (sampled, at least).
    version, trace, parent, _ = logged.trace_context.split("-")
    assert (version, trace, parent) == ("00", trace_id(handler), span_id(handler))


async def test_a_failing_handler_span_records_the_error(
    traced: tuple[MessageBus, FakeUnitOfWork], exporter: InMemorySpanExporter
) -> None:
    bus, _ = traced

    async def broken(event: events.UserRegistered) -> None:
        raise RuntimeError("smtp down")

    bus.subscribe(events.UserRegistered, broken)
    await services.register_user(bus, "Ann", "ann@example.com")
    failed = [
        span for span in exporter.get_finished_spans() if span.name == "handler broken"
    ]
    assert len(failed) == 3  # every attempt
    assert {span.status.status_code.name for span in failed} == {"ERROR"}


async def test_catch_up_continues_the_trace_of_a_logged_event(
    traced: tuple[MessageBus, FakeUnitOfWork], exporter: InMemorySpanExporter
) -> None:
    bus, uow = traced
    await catchup.catch_up(bus)  # every subscriber gets its checkpoint
    registered = events.UserRegistered(user_id="u1", name="Ann", email="a@example.com")
    async with uow:
        await uow.event_log.append(
            [NewEvent(registered, "user", "u1", 1, trace_context=SENDER)]
        )
        await uow.commit()

    assert await catchup.catch_up(bus) == 3
    spans = exporter.get_finished_spans()
    assert sorted(span.name for span in spans) == [
        "handler log_registration",
        "handler send_coupon",
        "handler send_welcome_email",
    ]
    assert {trace_id(span) for span in spans} == {SENDER_TRACE_ID}
    assert {parent_of(span) for span in spans} == {SENDER_SPAN_ID}


async def test_a_command_from_the_broker_continues_the_senders_trace(
    traced: tuple[MessageBus, FakeUnitOfWork], exporter: InMemorySpanExporter
) -> None:
    bus, uow = traced
    fields = {
        "name": "create_batch",
        "message_id": str(uuid.uuid4()),
        "payload": json.dumps({"ref": "b1", "sku": "LAMP", "qty": 5}),
        "traceparent": SENDER,
    }
    assert await consumer.consume_once(bus, OneEntryStream(Entry("1-0", fields))) == [
        "handled"
    ]
    spans = by_name(exporter)
    assert parent_of(spans["command create_batch"]) == SENDER_SPAN_ID
    assert {trace_id(span) for span in spans.values()} == {SENDER_TRACE_ID}
    [logged] = uow.event_log.logged
    assert logged.trace_context is not None
    assert logged.trace_context.split("-")[1] == SENDER_TRACE_ID


@pytest.mark.parametrize("malformed", [None, "", "00-not-a-trace-01"])
async def test_nothing_to_continue_leaves_the_current_trace(
    observer: tracing.OpenTelemetryObserver,
    exporter: InMemorySpanExporter,
    malformed: str | None,
) -> None:
    with observer.span("outer", {}):
        outer = observer.trace_context()
        with observer.continued(malformed):
            assert observer.trace_context() == outer
    assert observer.trace_context() is None


def test_no_exporter_means_no_tracing() -> None:
    assert tracing.from_exporters("none") is None


def test_another_exporter_without_a_provider_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isinstance(get_tracer_provider(), ProxyTracerProvider)
    with caplog.at_level(logging.WARNING):
        observer = tracing.from_exporters("otlp")
    assert isinstance(observer, tracing.OpenTelemetryObserver)
    assert "no tracer provider is installed" in caplog.text
    with observer.span("unrecorded", {}):
        assert observer.trace_context() is None
