"""The message bus: one handler per command, every handler of an event concurrently.

Events are dispatched only after the commit that recorded them, breadth first: all
handlers of one round finish before the events they raised are dispatched.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from allocation.domain import commands, events
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer.exceptions import UnknownMessage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

logger = logging.getLogger(__name__)

Message = commands.Command | events.Event


class UowFactory(Protocol):
    """A zero-argument callable returning a fresh unit of work."""

    def __call__(self) -> AbstractUnitOfWork: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the bus tries before it gives up on a handler.

    Attributes:
        attempts: calls of a failing event handler before it is given up on.
        first_delay: seconds before the second call; each later wait doubles.
        conflict_retries: reruns of a handler that lost an optimistic-concurrency
            race, after short random (jittered) waits.
    """

    attempts: int = 3
    first_delay: float = 0.1
    conflict_retries: int = 10


@dataclasses.dataclass(frozen=True, slots=True)
class _Subscriber:
    name: str
    call: Callable[..., Awaitable[Any]]
    wants_uow: bool


class MessageBus:
    """Routes commands and events to their handlers inside units of work.

    Handlers name what they need as parameters after the message (``uow``,
    ``notifications``, ``console``, ...). The dependencies are bound once, when a
    handler is registered; ``uow`` is a fresh unit of work for every call.
    """

    def __init__(
        self,
        *,
        uow_factory: UowFactory,
        command_handlers: Mapping[
            type[commands.Command], Callable[..., Awaitable[Any]]
        ],
        event_handlers: Mapping[
            type[events.Event], list[Callable[..., Awaitable[Any]]]
        ],
        dependencies: Mapping[str, object] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self._dependencies = dict(dependencies or {})
        self._retry = retry or RetryPolicy()
        self._command_handlers = {
            kind: self._bind(handler) for kind, handler in command_handlers.items()
        }
        self._event_handlers: dict[type[events.Event], list[_Subscriber]] = {}
        for kind, handlers in event_handlers.items():
            for handler in handlers:
                self.subscribe(kind, handler)

    def subscribe(
        self, event_type: type[events.Event], handler: Callable[..., Awaitable[Any]]
    ) -> None:
        """Add ``handler`` for ``event_type``; it runs beside the others, isolated."""
        if not (isinstance(event_type, type) and issubclass(event_type, events.Event)):
            raise TypeError(f"{event_type!r} is not an event class")
        self._event_handlers.setdefault(event_type, []).append(self._bind(handler))

    async def handle(self, message: Message) -> Any:
        """Handle ``message`` and every event it leads to; return the command's result.

        A command handler's exception reaches the caller. Event handlers never fail
        the caller: each is retried, then logged and given up on.
        """
        if isinstance(message, commands.Command):
            subscriber = self._command_handlers.get(type(message))
            if subscriber is None:
                raise UnknownMessage(message)
            raised: list[events.Event] = []
            try:
                result = await self._call(subscriber, message, raised)
            except Exception:
                # What the handler committed before failing is real and is published.
                await self._dispatch(raised)
                raise
            await self._dispatch(raised)
            return result
        if isinstance(message, events.Event):
            await self._dispatch([message])
            return None
        raise UnknownMessage(message)

    def _bind(self, handler: Callable[..., Awaitable[Any]]) -> _Subscriber:
        if not callable(handler):
            raise TypeError(f"{handler!r} is not callable")
        parameters = list(inspect.signature(handler).parameters.values())[1:]
        bound: dict[str, object] = {}
        wants_uow = False
        for parameter in parameters:
            if parameter.name == "uow":
                wants_uow = True
            elif parameter.name in self._dependencies:
                bound[parameter.name] = self._dependencies[parameter.name]
            elif (
                parameter.default is inspect.Parameter.empty
                and parameter.kind
                not in (
                    inspect.Parameter.VAR_POSITIONAL,
                    inspect.Parameter.VAR_KEYWORD,
                )
            ):
                raise TypeError(
                    f"handler {_name_of(handler)} needs {parameter.name!r}, "
                    "which bootstrap does not provide"
                )
        call = handler
        if bound:

            def call(message: Any, **extra: Any) -> Awaitable[Any]:
                return handler(message, **bound, **extra)

        return _Subscriber(name=_name_of(handler), call=call, wants_uow=wants_uow)

    async def _call(
        self, subscriber: _Subscriber, message: Message, raised: list[events.Event]
    ) -> Any:
        """Run one handler, rerunning it when it loses a concurrency race."""
        conflicts = 0
        while True:
            if not subscriber.wants_uow:
                return await subscriber.call(message)
            uow = self.uow_factory()
            try:
                return await subscriber.call(message, uow=uow)
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts > self._retry.conflict_retries:
                    raise
                logger.debug("%s lost a race, rerun %d", subscriber.name, conflicts)
                # Jittered and growing, so racing writers spread out.
                await anyio.sleep(random.uniform(0, 0.002 * 2 ** min(conflicts, 7)))
            finally:
                raised.extend(uow.collect_new_events())

    async def _deliver(
        self, subscriber: _Subscriber, event: events.Event, raised: list[events.Event]
    ) -> None:
        """Run one event handler, isolated: retried with back-off, never raising."""
        delay = self._retry.first_delay
        attempts = max(1, self._retry.attempts)
        for attempt in range(1, attempts + 1):
            try:
                await self._call(subscriber, event, raised)
            except Exception as error:
                if attempt == attempts:
                    logger.error(
                        "handler %s gave up on %s after %d attempts: %s",
                        subscriber.name,
                        event.TYPE,
                        attempt,
                        error,
                        exc_info=error,
                    )
                    return
                logger.warning(
                    "handler %s failed on %s (attempt %d of %d), retrying in %.3fs: %s",
                    subscriber.name,
                    event.TYPE,
                    attempt,
                    attempts,
                    delay,
                    error,
                )
                await anyio.sleep(delay)
                delay *= 2
            else:
                return

    async def _dispatch(self, pending: list[events.Event]) -> None:
        while pending:
            jobs = [
                (subscriber, event)
                for event in pending
                for subscriber in self._event_handlers.get(type(event), ())
            ]
            pending = []
            if len(jobs) == 1:
                subscriber, event = jobs[0]
                await self._deliver(subscriber, event, pending)
            elif jobs:
                await self._deliver_concurrently(jobs, pending)

    async def _deliver_concurrently(
        self,
        jobs: list[tuple[_Subscriber, events.Event]],
        raised: list[events.Event],
    ) -> None:
        """Start every job eagerly; a task is created only once a handler suspends.

        Each handler is stepped in the caller until its first suspension. One that
        finishes without suspending needed no task at all. The first one that
        suspends stays hosted by the caller (so its cancel scopes belong to this
        task, as they must) and every job after it gets a real task. Each handler
        runs in its own copy of the context, exactly as a task would.
        """
        async with anyio.create_task_group() as task_group:
            hosted: _Hosted | None = None
            for subscriber, event in jobs:
                if hosted is not None:
                    task_group.start_soon(self._deliver, subscriber, event, raised)
                    continue
                coroutine = self._deliver(subscriber, event, raised)
                context = contextvars.copy_context()
                try:
                    yielded = context.run(coroutine.send, None)
                except StopIteration:
                    continue
                hosted = _Hosted(coroutine, yielded, context)
            if hosted is not None:
                await hosted


class _Hosted:
    """Awaitable that goes on driving a coroutine the caller already started.

    It forwards what the coroutine yields to the event loop and what the loop sends
    or throws back, running every step in the coroutine's own context.
    """

    __slots__ = ("_context", "_coroutine", "_first")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, None],
        first: Any,
        context: contextvars.Context,
    ) -> None:
        self._coroutine = coroutine
        self._first = first
        self._context = context

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, context, outgoing = self._coroutine, self._context, self._first
        while True:
            try:
                incoming = yield outgoing
            except BaseException as thrown:  # noqa: BLE001 - thrown into the coroutine
                try:
                    outgoing = context.run(coroutine.throw, thrown)
                except StopIteration:
                    return
            else:
                try:
                    outgoing = context.run(coroutine.send, incoming)
                except StopIteration:
                    return


def _name_of(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "?"
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}"
