"""What the bus tells its observer: outcomes, times, retries, dead letters, spans
and the trace context that travels with the events it logs."""

from __future__ import annotations

import contextlib
import contextvars
import json
import uuid
from typing import TYPE_CHECKING

import pytest

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain import commands, events, users
from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict
from allocation.service_layer import catchup, consumer, observability, services
from allocation.service_layer.channels import AbstractCommandStream, Entry
from allocation.service_layer.messagebus import MessageBus, RetryPolicy
from allocation.service_layer.observability import CompositeObserver, Observer
from allocation.service_layer.ports import NewEvent
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

NO_WAIT = RetryPolicy(attempts=3, first_delay=0, conflict_retries=2)


class Ping(events.Event):
    TYPE = "test_observed_ping"


class DoThing(commands.Command):
    TYPE = "test_observed_do_thing"


class RecordingObserver(Observer):
    """Records every call; its trace context is the path of the open spans."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.spans: list[tuple[str, ...]] = []
        # The spans open in the current context, outermost first.
        self._open: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
            f"open_spans_{id(self)}", default=()
        )

    def command_handled(self, name: str, seconds: float, outcome: str) -> None:
        assert seconds >= 0
        self.calls.append(("command", name, outcome))

    def event_handled(
        self, subscriber: str, event_name: str, seconds: float, outcome: str
    ) -> None:
        assert seconds >= 0
        self.calls.append(("event", subscriber, event_name, outcome))

    def retried(self, subscriber: str) -> None:
        self.calls.append(("retried", subscriber))

    def dead_lettered(self, subscriber: str) -> None:
        self.calls.append(("dead_lettered", subscriber))

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, str]) -> Iterator[None]:
        token = self._open.set((*self._open.get(), name))
        self.spans.append(self._open.get())
        try:
            yield
        finally:
            self._open.reset(token)

    def trace_context(self) -> str | None:
        return "/".join(self._open.get()) or None

    @contextlib.contextmanager
    def continued(self, trace_context: str | None) -> Iterator[None]:
        token = self._open.set(tuple(trace_context.split("/")) if trace_context else ())
        try:
            yield
        finally:
            self._open.reset(token)


def observed_bus(
    observer: Observer,
    command_handler: object = None,
    uow: FakeUnitOfWork | None = None,
) -> MessageBus:
    shared = uow or FakeUnitOfWork()
    return MessageBus(
        uow_factory=lambda: shared,
        command_handlers={DoThing: command_handler} if command_handler else {},  # type: ignore[dict-item]  # a test's handler
        event_handlers={},
        retry=NO_WAIT,
        observer=observer,
    )


@pytest.fixture
async def traced() -> AsyncIterator[
    tuple[MessageBus, RecordingObserver, FakeUnitOfWork]
]:
    observer, uow = RecordingObserver(), FakeUnitOfWork()
    async with bootstrap(
        uow=uow,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(retry_delay=0),
        observer=observer,
    ) as bus:
        yield bus, observer, uow


async def test_a_handled_command_is_reported_ok() -> None:
    async def handler(command: DoThing) -> str:
        return "done"

    observer = RecordingObserver()
    assert await observed_bus(observer, handler).handle(DoThing()) == "done"
    assert observer.calls == [("command", "test_observed_do_thing", "ok")]


async def test_a_failing_command_is_reported_as_an_error_and_still_raises() -> None:
    async def handler(command: DoThing) -> None:
        raise LookupError("nope")

    observer = RecordingObserver()
    with pytest.raises(LookupError):
        await observed_bus(observer, handler).handle(DoThing())
    assert observer.calls == [("command", "test_observed_do_thing", "error")]


async def test_a_command_that_loses_every_race_is_reported_as_a_conflict() -> None:
    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> None:
        raise ConcurrencyConflict("user", "taken")

    observer = RecordingObserver()
    with pytest.raises(ConcurrencyConflict):
        await observed_bus(observer, handler).handle(DoThing())
    assert observer.calls == [("command", "test_observed_do_thing", "conflict")]


async def test_a_command_redelivered_to_its_inbox_is_reported_as_a_duplicate() -> None:
    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> None:
        async with uow:
            user_id = str(uuid.uuid4())
            uow.users.add(users.User.register(user_id, "Ann", f"{user_id}@example.com"))
            await uow.commit()

    observer = RecordingObserver()
    bus = observed_bus(observer, handler)
    command = DoThing()
    await bus.handle(command, inbox="inbox:test")
    with pytest.raises(AlreadyProcessed):
        await bus.handle(command, inbox="inbox:test")
    assert [call[-1] for call in observer.calls] == ["ok", "duplicate"]


async def test_each_event_handler_call_is_reported_under_its_subscriber() -> None:
    async def first(event: Ping) -> None:
        pass

    async def second(event: Ping) -> None:
        pass

    observer = RecordingObserver()
    bus = observed_bus(observer)
    bus.subscribe(Ping, first)
    bus.subscribe(Ping, second, name="the_second")
    await bus.handle(Ping())
    assert sorted(observer.calls) == [
        ("event", "first", "test_observed_ping", "ok"),
        ("event", "the_second", "test_observed_ping", "ok"),
    ]


async def test_a_retried_handler_reports_each_attempt_and_the_retry() -> None:
    attempts: list[int] = []

    async def flaky(event: Ping) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first try fails")

    observer = RecordingObserver()
    bus = observed_bus(observer)
    bus.subscribe(Ping, flaky)
    await bus.handle(Ping())
    assert observer.calls == [
        ("event", "flaky", "test_observed_ping", "error"),
        ("retried", "flaky"),
        ("event", "flaky", "test_observed_ping", "ok"),
    ]


async def test_a_handler_given_up_on_is_reported_dead_lettered() -> None:
    async def broken(event: Ping) -> None:
        raise RuntimeError("smtp down")

    observer = RecordingObserver()
    bus = observed_bus(observer)
    bus.subscribe(Ping, broken)
    await bus.handle(Ping())
    failed = ("event", "broken", "test_observed_ping", "error")
    assert observer.calls == [
        failed,
        ("retried", "broken"),
        failed,
        ("retried", "broken"),
        failed,
        ("dead_lettered", "broken"),
    ]


async def test_a_bus_observes_nothing_by_default() -> None:
    bus = MessageBus(uow_factory=FakeUnitOfWork, command_handlers={}, event_handlers={})
    assert type(bus.observer) is Observer
    assert observability.is_silent(bus.observer)
    assert not observability.is_silent(RecordingObserver())


async def test_a_composite_observer_tells_every_part() -> None:
    parts = RecordingObserver(), RecordingObserver()
    composite = CompositeObserver(*parts)
    composite.command_handled("allocate", 0.5, "ok")
    composite.event_handled("send_coupon", "user_registered", 0.5, "error")
    composite.retried("send_coupon")
    composite.dead_lettered("send_coupon")
    with composite.continued("outer"), composite.span("inner", {}):
        context = composite.trace_context()
    # Both entered the span; the first part's context is the one reported.
    assert context == "outer/inner"
    for part in parts:
        assert part.calls == [
            ("command", "allocate", "ok"),
            ("event", "send_coupon", "user_registered", "error"),
            ("retried", "send_coupon"),
            ("dead_lettered", "send_coupon"),
        ]
        assert part.spans == [("outer", "inner")]


# ---- spans and the trace context of logged events


async def test_a_commands_handlers_all_run_inside_its_span(
    traced: tuple[MessageBus, RecordingObserver, FakeUnitOfWork],
) -> None:
    bus, observer, _ = traced
    await services.register_user(bus, "Ann", "ann@example.com")
    command = ("command register_user",)
    assert sorted(observer.spans) == sorted(
        [
            command,
            (*command, "handler register_user"),
            (*command, "handler send_welcome_email"),
            (*command, "handler log_registration"),
            (*command, "handler send_coupon"),
        ]
    )


async def test_logged_events_carry_the_trace_of_the_handler_that_committed_them(
    traced: tuple[MessageBus, RecordingObserver, FakeUnitOfWork],
) -> None:
    bus, _, uow = traced
    await services.register_user(bus, "Ann", "ann@example.com")
    [logged] = uow.event_log.logged
    assert logged.trace_context == "command register_user/handler register_user"


async def test_events_logged_without_an_observer_carry_no_trace() -> None:
    uow = FakeUnitOfWork()
    async with bootstrap(
        uow=uow, notifications=FakeNotifications(), console=FakeConsole()
    ) as bus:
        await services.register_user(bus, "Ann", "ann@example.com")
    [logged] = uow.event_log.logged
    assert logged.trace_context is None


async def test_catch_up_continues_the_trace_a_logged_event_was_written_in(
    traced: tuple[MessageBus, RecordingObserver, FakeUnitOfWork],
) -> None:
    bus, observer, uow = traced
    await catchup.catch_up(bus)  # every subscriber gets its checkpoint
    registered = events.UserRegistered(user_id="u1", name="Ann", email="a@example.com")
    async with uow:
        await uow.event_log.append(
            [NewEvent(registered, "user", "u1", 1, trace_context="elsewhere")]
        )
        await uow.commit()

    assert await catchup.catch_up(bus) == 3
    assert sorted(observer.spans) == [
        ("elsewhere", "handler log_registration"),
        ("elsewhere", "handler send_coupon"),
        ("elsewhere", "handler send_welcome_email"),
    ]


class OneEntryStream(AbstractCommandStream):
    """Hands out one entry, once, and records what becomes of it."""

    def __init__(self, entry: Entry) -> None:
        self.entries = [entry]
        self.acked: list[str] = []

    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        entries, self.entries = self.entries, []
        return entries

    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        return []

    async def ack(self, entry_id: str) -> None:
        self.acked.append(entry_id)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        raise AssertionError(f"dead-lettered: {reason}")


async def test_a_command_from_the_broker_continues_the_senders_trace(
    traced: tuple[MessageBus, RecordingObserver, FakeUnitOfWork],
) -> None:
    bus, observer, uow = traced
    fields = {
        "name": "create_batch",
        "message_id": str(uuid.uuid4()),
        "payload": json.dumps({"ref": "b1", "sku": "LAMP", "qty": 5}),
        "traceparent": "sender",
    }
    stream = OneEntryStream(Entry("1-0", fields))
    assert await consumer.consume_once(bus, stream) == ["handled"]
    assert observer.spans[:2] == [
        ("sender", "command create_batch"),
        ("sender", "command create_batch", "handler add_batch"),
    ]
    [logged] = uow.event_log.logged
    assert logged.trace_context == "sender/command create_batch/handler add_batch"
