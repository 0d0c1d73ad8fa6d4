"""The message bus: one handler per command, every handler of an event concurrently.

Events are dispatched only after the commit that logged them, breadth first: all
handlers of one round finish before the events they raised are dispatched. Every
event handler is a subscriber with a stable name, under which the event log tracks
what it has handled; catch-up (``catchup.py``) delivers whatever the fast path here
did not finish, for instance because the process died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from allocation.domain import commands, events, messages
from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict
from allocation.service_layer import eager, masking, observability, tracking
from allocation.service_layer.exceptions import (
    DatabaseUnavailable,
    UnknownMessage,
    UnknownSubscriber,
)
from allocation.service_layer.locks import SubscriberLocks

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from allocation.service_layer.projections import Projection
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
        attempts: calls of a failing event handler before it is dead-lettered.
        first_delay: seconds before the second call; each later wait doubles.
        conflict_retries: reruns of a handler that lost an optimistic-concurrency
            race, after short random (jittered) waits.
    """

    attempts: int = 3
    first_delay: float = 0.1
    conflict_retries: int = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Subscriber:
    """An event handler with its dependencies bound, under its stable name."""

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
        projections: Iterable[Projection] = (),
        locks: SubscriberLocks | None = None,
        observer: observability.Observer | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        # Fixed for the bus's life: with the silent one, handler calls go
        # unobserved, without even a clock read.
        self.observer = observability.Observer() if observer is None else observer
        self._observed = (
            None if observability.is_silent(self.observer) else self.observer
        )
        self._call = self._run if self._observed is None else self._observed_run
        # Which catch-up pass owns which subscriber (see service_layer/locks.py).
        self.locks = locks or SubscriberLocks()
        self._dependencies = dict(dependencies or {})
        self._retry = retry or RetryPolicy()
        self._command_handlers = {
            kind: self._bind(handler, name=None)
            for kind, handler in command_handlers.items()
        }
        self._event_handlers: dict[type[events.Event], list[Subscriber]] = {}
        self._subscriptions: dict[str, dict[str, Subscriber]] | None = None
        self.projections: dict[str, Projection] = {}
        # What this bus claimed and what its handlers completed (see tracking.py).
        self.tracker = tracking.Tracker()
        for kind, handlers in event_handlers.items():
            for handler in handlers:
                self.subscribe(kind, handler)
        for projection in projections:
            self.add_projection(projection)

    def subscribe(
        self,
        event_type: type[events.Event] | str,
        handler: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
    ) -> None:
        """Add ``handler`` for ``event_type``; it runs beside the others, isolated.

        ``event_type`` is an event class or its ``TYPE`` (``"user_registered"``, as
        the article subscribes). ``name`` (by default the function's name) is the
        subscriber's stable identity in the event log's tracking: renaming it makes
        a new subscriber, which starts from the end of the log.
        """
        if isinstance(event_type, str):
            event_type = _event_class(event_type)
        if not (isinstance(event_type, type) and issubclass(event_type, events.Event)):
            raise TypeError(f"{event_type!r} is not an event class")
        subscriber = self._bind(handler, name=name)
        if event_type.TYPE in self.subscriptions().get(subscriber.name, {}):
            # Two handlers under one name would share one record of what is handled.
            raise ValueError(
                f"a subscriber named {subscriber.name!r} already handles "
                f"{event_type.TYPE}: pass another name="
            )
        self._event_handlers.setdefault(event_type, []).append(subscriber)
        self._subscriptions = None

    def add_projection(self, projection: Projection) -> None:
        """Add a read model: replay (and verify) build it from the whole log.

        An asynchronous one is also subscribed, and catch-up keeps it current; an
        inline one is the units of work's to write, in each command's commit.
        """
        self.projections[projection.name] = projection
        if projection.inline:
            return
        for event_type in projection.appliers:
            self.subscribe(
                event_type, projection.handler(event_type), name=projection.name
            )

    def subscriptions(self) -> dict[str, dict[str, Subscriber]]:
        """Every subscriber name, with its handler for each event TYPE it takes."""
        if self._subscriptions is None:
            found: dict[str, dict[str, Subscriber]] = {}
            for event_type, subscribers in self._event_handlers.items():
                for subscriber in subscribers:
                    found.setdefault(subscriber.name, {})[event_type.TYPE] = subscriber
            self._subscriptions = found
        return self._subscriptions

    async def handle(self, message: Message, *, inbox: str | None = None) -> Any:
        """Handle ``message`` and every event it leads to; return the command's result.

        A command handler's exception reaches the caller. Event handlers never fail
        the caller: each is retried, then dead-lettered. With ``inbox`` (a command
        from a broker), the command's commit also records its message id under that
        name, so a redelivered command raises AlreadyProcessed and changes nothing.
        """
        if isinstance(message, commands.Command):
            subscriber = self._command_handlers.get(type(message))
            if subscriber is None:
                raise UnknownMessage(message)
            if self._observed is None:
                return await self._command(subscriber, message, inbox)
            with observability.message_span(self._observed, message):
                return await self._command(subscriber, message, inbox)
        if isinstance(message, events.Event):
            if self._observed is None:
                await self._dispatch([message])
            else:
                with observability.message_span(self._observed, message):
                    await self._dispatch([message])
            return None
        raise UnknownMessage(message)

    async def _command(
        self, subscriber: Subscriber, command: commands.Command, inbox: str | None
    ) -> Any:
        raised: list[events.Event] = []
        current = tracking.Handling(command, inbox, observer=self._observed)
        try:
            result = await self._call(subscriber, current, raised)
        except Exception:
            # What the handler committed before failing is real and is published.
            await self._dispatch(raised)
            raise
        await self._dispatch(raised)
        return result

    async def deliver(self, subscriber_name: str, event: events.Event) -> bool:
        """Hand a logged event to one subscriber (catch-up, dead-letter retry).

        Returns whether it was handled; the events it raised are dispatched too.
        """
        subscriber = self.subscriptions().get(subscriber_name, {}).get(event.TYPE)
        if subscriber is None:
            raise UnknownSubscriber(subscriber_name, event.TYPE)
        raised: list[events.Event] = []
        handled = await self._deliver(subscriber, event, raised)
        await self._dispatch(raised)
        return handled

    async def flush_completions(self) -> None:
        """Record, in one transaction, what handlers without a commit have handled."""
        await self.tracker.flush(self.uow_factory)

    @property
    def claimed(self) -> set[str]:
        """Ids of events this process committed and is dispatching itself."""
        return self.tracker.claimed

    def _bind(
        self, handler: Callable[..., Awaitable[Any]], *, name: str | None
    ) -> Subscriber:
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
        call = functools.partial(handler, **bound) if bound else handler
        return Subscriber(
            name=name or _name_of(handler), call=call, wants_uow=wants_uow
        )

    async def _observed_run(
        self,
        subscriber: Subscriber,
        current: tracking.Handling,
        raised: list[events.Event],
    ) -> Any:
        assert self._observed is not None  # chosen as _call only with an observer
        return await observability.observe_handler(
            self._observed,
            subscriber.name,
            current.message,
            functools.partial(self._run, subscriber, current, raised),
        )

    async def _run(
        self,
        subscriber: Subscriber,
        current: tracking.Handling,
        raised: list[events.Event],
    ) -> Any:
        """Run one handler, rerunning it when it loses a concurrency race."""
        with self.tracker.handling(current, raised):
            conflicts = 0
            while True:
                if not subscriber.wants_uow:
                    return await subscriber.call(current.message)
                uow = self.uow_factory()
                try:
                    return await subscriber.call(current.message, uow=uow)
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
        self, subscriber: Subscriber, event: events.Event, raised: list[events.Event]
    ) -> bool:
        """Run one event handler, isolated: retried with back-off, never raising."""
        delay = self._retry.first_delay
        attempts = max(1, self._retry.attempts)
        for attempt in range(1, attempts + 1):
            current = tracking.Handling(event, subscriber.name, observer=self._observed)
            try:
                await self._call(subscriber, current, raised)
            except AlreadyProcessed:
                return True  # a redelivery: its effects are already committed
            except Exception as error:  # noqa: BLE001 - the per-handler isolation boundary
                if attempt == attempts:
                    if isinstance(error, _PASSING_ERRORS):
                        # Not the event's fault: a dead letter would keep it from
                        # catch-up, and a read model would miss it for good.
                        logger.warning(
                            "handler %s could not handle %s %s now, catch-up will"
                            " deliver it: %s",
                            subscriber.name,
                            event.TYPE,
                            event.message_id,
                            error,
                        )
                        return False
                    await self._bury(subscriber.name, event, error, attempts)
                    return False
                logger.warning(
                    "handler %s failed on %s (attempt %d of %d), retrying in %.3fs: %s",
                    subscriber.name,
                    event.TYPE,
                    attempt,
                    attempts,
                    delay,
                    error,
                )
                self.observer.retried(subscriber.name)
                await anyio.sleep(delay)
                delay *= 2
            else:
                self.tracker.completed(current)
                return True
        return False  # pragma: no cover - the loop always returns

    async def _bury(
        self, subscriber: str, event: events.Event, error: Exception, attempts: int
    ) -> None:
        logger.error(
            "handler %s gave up on %s %s after %d attempts: %s",
            subscriber,
            event.TYPE,
            event.message_id,
            attempts,
            error,
            exc_info=error,
        )
        try:
            async with self.uow_factory() as uow:
                await uow.event_log.add_dead_letter(
                    subscriber,
                    event.message_id,
                    # Not our error, it may quote a URL with its password.
                    masking.mask_secrets(f"{type(error).__name__}: {error}"),
                    attempts,
                )
                await uow.commit()
        except Exception as failure:  # noqa: BLE001 - isolation boundary: log, never raise
            logger.error(
                "could not record the dead letter of %s for %s: %s",
                subscriber,
                event.message_id,
                failure,
            )
        self.observer.dead_lettered(subscriber)

    async def _dispatch(self, pending: list[events.Event]) -> None:
        while pending:
            round_ = pending
            raised_next: list[events.Event] = []
            jobs = [
                functools.partial(self._deliver, subscriber, event, raised_next)
                for event in round_
                for subscriber in self._event_handlers.get(type(event), ())
            ]
            pending = raised_next
            try:
                if jobs:
                    await eager.run_concurrently(jobs)  # type: ignore[arg-type]  # partials of coroutines
            finally:
                self.tracker.dispatched(round_)
        if self.tracker.due:
            with contextlib.suppress(Exception):  # kept and retried by the next flush
                await self.flush_completions()


# Failures of the database rather than of the event: left undelivered, for catch-up.
_PASSING_ERRORS = (DatabaseUnavailable, ConcurrencyConflict)


def _event_class(type_name: str) -> type[events.Event]:
    kind = messages.message_classes().get(type_name)
    if kind is None or not issubclass(kind, events.Event):
        known = ", ".join(
            name
            for name, cls in messages.message_classes().items()
            if issubclass(cls, events.Event)
        )
        raise ValueError(f"{type_name!r} names no event; the events are: {known}")
    return kind


def _name_of(handler: Callable[..., Any]) -> str:
    name = getattr(handler, "__name__", None)
    return name if isinstance(name, str) else repr(handler)
