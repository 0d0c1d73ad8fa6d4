"""The observer port: what the bus reports as it works, for metrics and traces.

The bus, catch-up and the broker consumer call an ``Observer``; this one does
nothing, and the bus does not even time its handlers while it is the one in use.
Adapters implement it (``adapters.metrics`` for Prometheus, ``adapters.tracing``
for OpenTelemetry); nothing here imports either library.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, TypeVar

from allocation.domain import commands
from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from allocation.domain import messages

T = TypeVar("T")

# How a handler call ended, as observers hear it.
OK = "ok"
ERROR = "error"
CONFLICT = "conflict"  # lost the optimistic-concurrency race, every rerun too
DUPLICATE = "duplicate"  # handled before: its effects were committed already
CANCELLED = "cancelled"

_NOTHING = contextlib.nullcontext()


class Observer:
    """Hears what the bus does; every method here does nothing.

    Subclasses override what they measure or trace. Every method is called on
    the event loop, from the task doing the work, and must not block.
    """

    def command_handled(self, name: str, seconds: float, outcome: str) -> None:
        """A command's handler finished (its events are dispatched after).

        Args:
            name: the command's TYPE.
            seconds: how long the handler ran, optimistic-concurrency reruns
                included.
            outcome: OK, ERROR, CONFLICT, DUPLICATE or CANCELLED.
        """

    def event_handled(
        self, subscriber: str, event_name: str, seconds: float, outcome: str
    ) -> None:
        """One attempt of an event handler finished (a retry is another call)."""

    def retried(self, subscriber: str) -> None:
        """An event handler failed and will be called again after a back-off."""

    def dead_lettered(self, subscriber: str) -> None:
        """An event handler failed its last attempt: the event is a dead letter."""

    def span(
        self, name: str, attributes: Mapping[str, str]
    ) -> AbstractContextManager[None]:
        """A unit of traced work, current while the block runs."""
        return _NOTHING

    def trace_context(self) -> str | None:
        """The current trace as a W3C ``traceparent``, if a trace is recorded.

        The unit of work stores it with each event it logs (up to 512 characters).
        """
        return None

    def continued(self, trace_context: str | None) -> AbstractContextManager[None]:
        """Make a stored ``traceparent`` current while the block runs, so the work
        in it joins that trace (None or a malformed one: nothing to continue)."""
        return _NOTHING


class CompositeObserver(Observer):
    """Several observers heard as one, e.g. metrics and traces together."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def command_handled(self, name: str, seconds: float, outcome: str) -> None:
        for observer in self.observers:
            observer.command_handled(name, seconds, outcome)

    def event_handled(
        self, subscriber: str, event_name: str, seconds: float, outcome: str
    ) -> None:
        for observer in self.observers:
            observer.event_handled(subscriber, event_name, seconds, outcome)

    def retried(self, subscriber: str) -> None:
        for observer in self.observers:
            observer.retried(subscriber)

    def dead_lettered(self, subscriber: str) -> None:
        for observer in self.observers:
            observer.dead_lettered(subscriber)

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, str]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer.span(name, attributes))
            yield

    def trace_context(self) -> str | None:
        for observer in self.observers:
            found = observer.trace_context()
            if found is not None:
                return found
        return None

    @contextlib.contextmanager
    def continued(self, trace_context: str | None) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(observer.continued(trace_context))
            yield


def is_silent(observer: Observer) -> bool:
    """Whether ``observer`` is the one that does nothing: the bus then skips the
    clock reads and spans around every handler call."""
    return type(observer) is Observer


def outcome_of(error: BaseException) -> str:
    """The outcome a handler call that raised ``error`` is reported with."""
    if isinstance(error, AlreadyProcessed):
        return DUPLICATE
    if isinstance(error, ConcurrencyConflict):
        return CONFLICT
    if isinstance(error, Exception):
        return ERROR
    return CANCELLED


def message_span(
    observer: Observer, message: messages.Message
) -> AbstractContextManager[None]:
    """The span of handling ``message`` and everything it leads to."""
    kind = "command" if isinstance(message, commands.Command) else "event"
    return observer.span(f"{kind} {message.TYPE}", attributes_of(message))


async def observe_handler(
    observer: Observer,
    subscriber: str,
    message: messages.Message,
    run: Callable[[], Awaitable[T]],
) -> T:
    """Run one handler call in a span of its own; report its time and outcome."""
    outcome = OK
    started = time.perf_counter()
    try:
        with observer.span(f"handler {subscriber}", attributes_of(message, subscriber)):
            return await run()
    except BaseException as error:
        outcome = outcome_of(error)
        raise
    finally:
        seconds = time.perf_counter() - started
        if isinstance(message, commands.Command):
            observer.command_handled(message.TYPE, seconds, outcome)
        else:
            observer.event_handled(subscriber, message.TYPE, seconds, outcome)


def attributes_of(
    message: messages.Message, subscriber: str | None = None
) -> dict[str, str]:
    """A span's attributes for handling ``message`` (by ``subscriber``)."""
    found = {
        "messaging.message.id": message.message_id,
        "messaging.message.conversation_id": message.chain_id,
        "allocation.message.name": message.TYPE,
    }
    if subscriber is not None:
        found["allocation.subscriber"] = subscriber
    return found
