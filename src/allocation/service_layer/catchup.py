"""Catch-up: deliver from the event log what subscribers have not handled.

The bus delivers events right after their commit (the fast path). Whatever that
missed (the process died, a handler was dead-lettered and retried) is found here by reading the log from each subscriber's checkpoint, in log
order and in batches, so memory does not grow with the log.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import anyio

from allocation.domain.exceptions import AlreadyProcessed
from allocation.service_layer.backoff import Outage
from allocation.service_layer.exceptions import (
    UnknownDeadLetter,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from allocation.domain import events
    from allocation.service_layer.messagebus import MessageBus, Subscriber
    from allocation.service_layer.ports import DeadLetter, LoggedEvent
    from allocation.service_layer.projections import Projection

logger = logging.getLogger(__name__)


async def catch_up(
    bus: MessageBus,
    *,
    batch_size: int = 500,
    subscribers: Collection[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """One pass over every subscriber (or those named); returns events delivered.

    ``progress(subscriber, position, last)``, when given, is called as a subscriber
    starts and after each of its batches, with the log position it has reached and
    the log's last position.
    """
    await bus.flush_completions()
    delivered = 0
    for name, handlers in bus.subscriptions().items():
        if subscribers is not None and name not in subscribers:
            continue
        async with bus.locks.hold(name) as held:
            if not held:
                continue  # another pass (here or in another worker) has it in hand
            shown = None if progress is None else functools.partial(progress, name)
            projection = bus.projections.get(name)
            if projection is not None:
                delivered += await _catch_up_projection(
                    bus, projection, batch_size, shown
                )
            else:
                delivered += await _catch_up_handler(
                    bus, name, handlers, batch_size, shown
                )
    return delivered


async def keep_catching_up(
    bus: MessageBus, interval: float, batch_size: int, *, max_backoff: float = 5.0
) -> None:
    """Run a catch-up pass every ``interval`` seconds until cancelled.

    A failing pass is tried again, with a back-off of up to ``max_backoff`` seconds
    (never less than ``interval``); the outage is logged once each way.
    """
    outage = Outage(
        logger, "catch-up", first=interval, longest=max(interval, max_backoff)
    )
    wait = interval
    while True:
        await anyio.sleep(wait)
        try:
            delivered = await catch_up(bus, batch_size=batch_size)
        except Exception as error:  # noqa: BLE001 - a background loop's boundary: the outage logs it
            wait = outage.failed(error)
        else:
            outage.succeeded()
            wait = interval
            if delivered:
                logger.info("catch-up delivered %d events", delivered)


async def retry_dead_letter(bus: MessageBus, dead_letter_id: int) -> DeadLetter | None:
    """Deliver a dead letter's message again; None once handled, else the new letter."""
    letter, logged = await _dead_letter_and_event(bus, dead_letter_id)
    with bus.observer.continued(logged.trace_context):
        handled = await bus.deliver(letter.subscriber, logged.event)
    if not handled:
        async with bus.uow_factory() as uow:
            return await uow.event_log.dead_letter(dead_letter_id)
    await bus.flush_completions()
    async with bus.uow_factory() as uow:
        await uow.event_log.remove_dead_letter(dead_letter_id)
        await uow.commit()
    return None


async def discard_dead_letter(bus: MessageBus, dead_letter_id: int) -> DeadLetter:
    """Give up on a dead letter for good: its message counts as handled."""
    letter, _ = await _dead_letter_and_event(bus, dead_letter_id)
    async with bus.uow_factory() as uow:
        await uow.event_log.mark_processed(
            letter.subscriber, [letter.message_id], exactly_once=False
        )
        await uow.event_log.remove_dead_letter(dead_letter_id)
        await uow.commit()
    return letter


async def _dead_letter_and_event(
    bus: MessageBus, dead_letter_id: int
) -> tuple[DeadLetter, LoggedEvent]:
    async with bus.uow_factory() as uow:
        letter = await uow.event_log.dead_letter(dead_letter_id)
        logged = None if letter is None else await uow.event_log.get(letter.message_id)
    if letter is None or logged is None:
        raise UnknownDeadLetter(dead_letter_id)
    return letter, logged


async def _start_position(
    bus: MessageBus, name: str, *, from_start: bool
) -> int | None:
    async with bus.uow_factory() as uow:
        position = await uow.event_log.checkpoint(name)
        if position is not None:
            return position
        # A subscriber seen for the first time: a projection must hold the whole
        # history; any other handler starts from now (a new email handler does not
        # write to every past customer).
        start = 0 if from_start else await uow.event_log.last_position()
        await uow.event_log.set_checkpoint(name, start)
        await uow.commit()
    return start if from_start else None


async def _pending(
    bus: MessageBus,
    name: str,
    names: frozenset[str],
    after: int,
    batch_size: int,
    *,
    with_traces: bool = False,
) -> tuple[list[tuple[int, events.Event]], int, bool, dict[int, str | None]]:
    """The next batch's undelivered (position, event) pairs, the checkpoint they
    lead to, and more? With ``with_traces``, also each position's trace context
    (a handler continues it; a projection, applying batches, does not)."""
    traces: dict[int, str | None] = {}
    async with bus.uow_factory() as uow:
        # Positions are handed out in commit order, so everything up to the head
        # read first is committed and visible to the read below.
        head = await uow.event_log.last_position()
        if with_traces:
            logged = await uow.event_log.read(
                after=after, names=names, limit=batch_size
            )
            batch = [(each.position, each.event) for each in logged]
            traces = {each.position: each.trace_context for each in logged}
        else:
            batch = await uow.event_log.read_events(
                after=after, names=names, limit=batch_size
            )
        todo, in_hand = await bus.tracker.undelivered(uow.event_log, name, batch)
    if in_hand is not None:
        # The fast path of this process has it in hand: stop short of it.
        return todo, in_hand - 1, False, traces
    more = len(batch) == batch_size
    last_read = batch[-1][0] if batch else after
    # With nothing more of its names, the subscriber is done up to the head: the
    # next pass does not read the other subscribers' events again.
    checkpoint = last_read if more else max(last_read, head)
    return todo, checkpoint, more, traces


async def _catch_up_handler(
    bus: MessageBus,
    name: str,
    handlers: dict[str, Subscriber],
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    checkpoint = await _start_position(bus, name, from_start=False)
    if checkpoint is None:
        return 0
    show = await _progress_shower(bus, checkpoint, progress)
    delivered = 0
    names = frozenset(handlers)
    while True:
        todo, reached, more, traces = await _pending(
            bus, name, names, checkpoint, batch_size, with_traces=True
        )
        for position, event in todo:
            # Delivered in the trace that wrote it.
            with bus.observer.continued(traces.get(position)):
                await bus.deliver(name, event)  # handled, or dead-lettered
            delivered += 1
        await bus.flush_completions()
        if reached != checkpoint:
            async with bus.uow_factory() as uow:
                await uow.event_log.set_checkpoint(name, reached)
                await uow.commit()
            checkpoint = reached
        show(checkpoint, more)
        if not more:
            return delivered


async def _catch_up_projection(
    bus: MessageBus,
    projection: Projection,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    name = projection.name
    checkpoint = await _start_position(bus, name, from_start=True) or 0
    show = await _progress_shower(bus, checkpoint, progress)
    applied = 0
    while True:
        todo, reached, more, _ = await _pending(
            bus, name, projection.event_names, checkpoint, batch_size
        )
        try:
            # One transaction per batch: the changes, what they handled, and the
            # checkpoint, all or nothing.
            async with bus.uow_factory() as uow:
                batch = [event for _, event in todo]
                await projection.apply_many(batch, uow)
                await uow.event_log.mark_processed(
                    name, [event.message_id for event in batch], exactly_once=True
                )
                await uow.event_log.set_checkpoint(name, reached)
                await uow.commit()
        except AlreadyProcessed:
            continue  # the fast path got there meanwhile: read the batch again
        applied += len(todo)
        checkpoint = reached
        show(checkpoint, more)
        if not more:
            return applied


async def _progress_shower(
    bus: MessageBus, start: int, progress: Callable[[int, int], None] | None
) -> Callable[[int, bool], None]:
    """Report ``start`` to ``progress``; return what reports each batch's end."""
    if progress is None:
        return _show_nothing
    async with bus.uow_factory() as uow:
        total = max(await uow.event_log.last_position(), start)
    progress(start, total)

    def show(position: int, more: bool) -> None:
        # The last events of the log may be of other names: done means done.
        progress(position if more else max(total, position), max(total, position))

    return show


def _show_nothing(position: int, more: bool) -> None:
    pass
