"""The message bus: routing, isolation, retries, concurrency and breadth-first order."""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation.bootstrap import bootstrap
from allocation.domain import commands, events, users
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer import catchup
from allocation.service_layer.exceptions import DatabaseUnavailable, UnknownMessage
from allocation.service_layer.messagebus import MessageBus, RetryPolicy
from allocation.testing import FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

NO_WAIT = RetryPolicy(attempts=3, first_delay=0, conflict_retries=3)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


class Ping(events.Event):
    TYPE = "test_ping"
    n: int = 0


class Pong(events.Event):
    TYPE = "test_pong"
    n: int = 0


class DoThing(commands.Command):
    TYPE = "test_do_thing"
    value: str = ""


def make_bus(
    command_handler: Callable[..., Awaitable[Any]] | None = None,
    retry: RetryPolicy = NO_WAIT,
    uow: FakeUnitOfWork | None = None,
) -> MessageBus:
    shared = uow or FakeUnitOfWork()
    handlers: dict[type[commands.Command], Callable[..., Awaitable[Any]]] = (
        {DoThing: command_handler} if command_handler else {}
    )
    return MessageBus(
        uow_factory=lambda: shared,
        command_handlers=handlers,
        event_handlers={},
        retry=retry,
    )


async def register_and_record(
    command: DoThing, uow: AbstractUnitOfWork, extra: list[events.Event]
) -> str:
    """A command handler that commits a user, then records extra events."""
    async with uow:
        user = users.User.register(command.value, "Ann", f"{command.value}@example.com")
        user.events.extend(extra)
        uow.users.add(user)
        await uow.commit()
    return f"done {command.value}"


async def test_a_command_goes_to_its_handler_and_returns_its_result() -> None:
    async def handler(command: DoThing) -> str:
        return command.value.upper()

    assert await make_bus(handler).handle(DoThing(value="abc")) == "ABC"


async def test_a_command_without_handler_is_an_unknown_message() -> None:
    with pytest.raises(UnknownMessage, match="DoThing"):
        await make_bus().handle(DoThing())


async def test_something_that_is_not_a_message_is_refused() -> None:
    with pytest.raises(UnknownMessage):
        await make_bus().handle("register_user")  # type: ignore[arg-type]  # on purpose


async def test_a_command_handler_error_reaches_the_caller_as_itself() -> None:
    async def handler(command: DoThing) -> None:
        raise LookupError("nope")

    with pytest.raises(LookupError, match="nope"):
        await make_bus(handler).handle(DoThing())


async def test_events_of_a_rolled_back_unit_of_work_are_not_dispatched() -> None:
    seen: list[events.Event] = []

    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> None:
        async with uow:
            uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
            raise ValueError("before commit")

    async def listener(event: events.UserRegistered) -> None:
        seen.append(event)

    bus = make_bus(handler)
    bus.subscribe(events.UserRegistered, listener)
    with pytest.raises(ValueError, match="before commit"):
        await bus.handle(DoThing())
    assert seen == []


async def test_committed_events_reach_every_subscriber() -> None:
    received: list[tuple[str, events.Event]] = []

    async def first(event: events.UserRegistered) -> None:
        received.append(("first", event))

    async def second(event: events.UserRegistered) -> None:
        received.append(("second", event))

    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> str:
        return await register_and_record(command, uow, [])

    bus = make_bus(handler)
    bus.subscribe(events.UserRegistered, first)
    bus.subscribe(events.UserRegistered, second)
    assert await bus.handle(DoThing(value="u1")) == "done u1"
    expected = events.UserRegistered(user_id="u1", name="Ann", email="u1@example.com")
    assert sorted(received, key=lambda pair: pair[0]) == [
        ("first", expected),
        ("second", expected),
    ]


async def test_event_handlers_run_concurrently() -> None:
    """Each handler waits for the other: run one after the other, they never finish."""
    first_started, second_started = anyio.Event(), anyio.Event()

    async def first(event: Ping) -> None:
        first_started.set()
        await second_started.wait()

    async def second(event: Ping) -> None:
        second_started.set()
        await first_started.wait()

    bus = make_bus()
    bus.subscribe(Ping, first)
    bus.subscribe(Ping, second)
    with anyio.fail_after(5):  # a deadlock guard, not a timing assertion
        await bus.handle(Ping())
    assert first_started.is_set()
    assert second_started.is_set()


async def test_a_failing_handler_is_retried_then_given_up_without_failing_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = {"broken": 0, "healthy": 0}

    async def broken(event: Ping) -> None:
        calls["broken"] += 1
        raise RuntimeError("smtp down")

    async def healthy(event: Ping) -> None:
        calls["healthy"] += 1

    bus = make_bus(retry=RetryPolicy(attempts=3, first_delay=0))
    bus.subscribe(Ping, broken)
    bus.subscribe(Ping, healthy)
    with caplog.at_level(logging.WARNING):
        await bus.handle(Ping())
    assert calls == {"broken": 3, "healthy": 1}
    gave_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(gave_up) == 1
    assert "smtp down" in gave_up[0].getMessage()


async def test_a_handler_that_fails_after_suspending_is_retried() -> None:
    attempts: list[int] = []

    async def flaky(event: Ping) -> None:
        attempts.append(len(attempts) + 1)
        await anyio.lowlevel.checkpoint()
        if len(attempts) < 2:
            raise ConnectionError("first try fails")

    async def other(event: Ping) -> None:
        await anyio.lowlevel.checkpoint()

    bus = make_bus()
    bus.subscribe(Ping, flaky)
    bus.subscribe(Ping, other)
    await bus.handle(Ping())
    assert attempts == [1, 2]


async def test_event_handler_failure_never_fails_the_command() -> None:
    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> str:
        return await register_and_record(command, uow, [])

    async def broken(event: events.UserRegistered) -> None:
        raise RuntimeError("boom")

    bus = make_bus(handler)
    bus.subscribe(events.UserRegistered, broken)
    assert await bus.handle(DoThing(value="u1")) == "done u1"


async def test_events_raised_by_handlers_are_dispatched_breadth_first() -> None:
    order: list[str] = []
    slow_may_finish = anyio.Event()

    async def raise_pong(event: Ping, uow: AbstractUnitOfWork) -> None:
        async with uow:
            user = users.User.register("u9", "Ann", "u9@example.com")
            user.events.append(Pong(n=1))
            uow.users.add(user)
            await uow.commit()
        order.append("ping handled, pong raised")
        slow_may_finish.set()

    async def slow_ping_handler(event: Ping) -> None:
        await slow_may_finish.wait()
        await anyio.lowlevel.checkpoint()
        order.append("slow ping handler done")

    async def on_pong(event: Pong) -> None:
        order.append("pong handled")

    bus = make_bus()
    bus.subscribe(Ping, slow_ping_handler)
    bus.subscribe(Ping, raise_pong)
    bus.subscribe(Pong, on_pong)
    await bus.handle(Ping())
    assert order == [
        "ping handled, pong raised",
        "slow ping handler done",
        "pong handled",
    ]


async def test_handle_returns_once_every_resulting_event_is_handled() -> None:
    done: list[str] = []

    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> str:
        return await register_and_record(command, uow, [Ping(n=1)])

    async def on_ping(event: Ping) -> None:
        await anyio.lowlevel.checkpoint()
        done.append("ping")

    bus = make_bus(handler)
    bus.subscribe(Ping, on_ping)
    await bus.handle(DoThing(value="u2"))
    assert done == ["ping"]


async def test_subscribe_injects_named_dependencies() -> None:
    received: list[tuple[Ping, str]] = []
    bus = MessageBus(
        uow_factory=FakeUnitOfWork,
        command_handlers={},
        event_handlers={},
        dependencies={"greeting": "hello"},
    )

    async def handler(event: Ping, greeting: str) -> None:
        received.append((event, greeting))

    bus.subscribe(Ping, handler)
    await bus.handle(Ping(n=3))
    assert received == [(Ping(n=3), "hello")]


def test_subscribing_a_handler_with_an_unknown_dependency_fails_at_once() -> None:
    async def handler(event: Ping, mailer: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="mailer"):
        make_bus().subscribe(Ping, handler)


def test_subscribing_to_something_that_is_not_an_event_fails() -> None:
    async def handler(event: Ping) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="not an event"):
        make_bus().subscribe(DoThing, handler)  # type: ignore[arg-type]  # on purpose


async def test_a_concurrency_conflict_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []

    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrencyConflict("product")
        return "won"

    assert await make_bus(handler).handle(DoThing()) == "won"
    assert len(calls) == 3


async def test_a_conflict_that_never_clears_reaches_the_caller() -> None:
    calls: list[int] = []

    async def handler(command: DoThing, uow: AbstractUnitOfWork) -> None:
        calls.append(1)
        raise ConcurrencyConflict("product")

    with pytest.raises(ConcurrencyConflict):
        await make_bus(handler, retry=RetryPolicy(conflict_retries=2)).handle(DoThing())
    assert len(calls) == 3


async def test_handlers_do_not_leak_context_variables() -> None:
    seen_by_second: list[str | None] = []
    request_id.set("caller")

    async def first(event: Ping) -> None:
        request_id.set("first")  # in its own context copy, like a task
        await anyio.lowlevel.checkpoint()
        assert request_id.get() == "first"

    async def second(event: Ping) -> None:
        seen_by_second.append(request_id.get(None))

    bus = make_bus()
    bus.subscribe(Ping, first)
    bus.subscribe(Ping, second)
    await bus.handle(Ping())
    assert request_id.get() == "caller"
    assert seen_by_second == ["caller"]


async def test_handlers_may_use_cancel_scopes_across_suspensions() -> None:
    """An eagerly started handler keeps its cancel scopes in one task."""
    finished: list[str] = []

    async def with_timeout(event: Ping) -> None:
        with anyio.move_on_after(10):
            await anyio.sleep(0.001)
        finished.append("timeout")

    async def with_task_group(event: Ping) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
        finished.append("group")

    async def sleeper(event: Ping) -> None:
        await anyio.sleep(0.001)
        finished.append("sleep")

    bus = make_bus()
    for handler in (with_timeout, with_task_group, sleeper):
        bus.subscribe(Ping, handler)
    await bus.handle(Ping())
    assert sorted(finished) == ["group", "sleep", "timeout"]


async def test_cancelling_the_caller_cancels_suspended_handlers_cleanly() -> None:
    both_waiting = [anyio.Event(), anyio.Event()]
    cleaned_up: list[int] = []

    def waiting_handler(index: int) -> Callable[[Ping], Awaitable[None]]:
        async def handler(event: Ping) -> None:
            try:
                both_waiting[index].set()
                await anyio.sleep_forever()
            finally:
                cleaned_up.append(index)

        return handler

    bus = make_bus()
    bus.subscribe(Ping, waiting_handler(0), name="first")
    bus.subscribe(Ping, waiting_handler(1), name="second")
    async with anyio.create_task_group() as group:
        group.start_soon(bus.handle, Ping())
        await both_waiting[0].wait()
        await both_waiting[1].wait()
        group.cancel_scope.cancel()
    assert sorted(cleaned_up) == [0, 1]


async def test_an_error_inside_bootstrap_leaves_as_itself() -> None:
    with pytest.raises(KeyError, match="plain"):
        async with bootstrap(uow=FakeUnitOfWork()):
            raise KeyError("plain")


async def test_bootstrap_with_a_uow_instance_shares_it_with_every_handler() -> None:
    uow = FakeUnitOfWork()
    async with bootstrap(uow=uow) as bus:
        assert bus.uow_factory() is uow


def test_one_name_cannot_subscribe_twice_to_one_event() -> None:
    """Two handlers under one name would share one record of what is handled."""

    async def handler(event: Ping) -> None:
        raise AssertionError("never called")

    bus = make_bus()
    bus.subscribe(Ping, handler)
    with pytest.raises(ValueError, match="already handles"):
        bus.subscribe(Ping, handler)
    bus.subscribe(Ping, handler, name="handler-again")


async def test_a_dead_letter_never_records_a_password_from_the_error() -> None:
    uow = FakeUnitOfWork()
    bus = make_bus(uow=uow)

    async def leaky(event: Ping) -> None:
        raise RuntimeError("cannot reach postgresql://app:s3cretpw@db.internal/app")

    bus.subscribe(Ping, leaky)
    await bus.handle(Ping(n=1))

    [letter] = uow.event_log.letters.values()
    assert "s3cretpw" not in letter.error
    assert "postgresql://app:" in letter.error


@pytest.mark.parametrize(
    "outage",
    [
        DatabaseUnavailable("sqlite:///x.db", "all 20 connections stayed in use"),
        ConcurrencyConflict("database", "another unit of work held the write lock"),
    ],
)
async def test_a_database_outage_is_left_for_catch_up_not_dead_lettered(
    outage: Exception,
) -> None:
    """Regression: a read model's handler that met a passing database error was
    dead-lettered, so catch-up skipped the event and the read model missed it."""
    uow = FakeUnitOfWork()

    async def log_a_ping(command: DoThing, uow: AbstractUnitOfWork) -> str:
        return await register_and_record(command, uow, [Ping(n=7)])

    bus = make_bus(log_a_ping, uow=uow)
    delivered: list[int] = []
    down = True

    async def projection(event: Ping) -> None:
        if down:
            raise outage
        delivered.append(event.n)

    bus.subscribe(Ping, projection)
    await catchup.catch_up(bus)  # the subscriber's checkpoint: the log's start
    await bus.handle(DoThing(value="u1"))

    assert uow.event_log.letters == {}
    assert delivered == []
    down = False
    await catchup.catch_up(bus)
    assert delivered == [7]
