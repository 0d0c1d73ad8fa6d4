"""What each subscriber has handled: one component for the bus, the unit of work,
catch-up and the broker's inbox.

Three records say that subscriber S has handled message M:

- the **tracking row** (``processed_messages``), written in the same transaction as
  the handler's database effects when it commits through its unit of work (or, for
  a command from a broker, the inbox name as S): exactly once;
- a **completion**, for a handler that commits nothing (an email): kept here and
  written in batches (``Tracker.flush``), at least once;
- a **dead letter**, for a message given up on.

And one says who delivers M at all: a **claim** on an event this process committed
and is dispatching itself, which catch-up leaves to it. The bus opens a
``Handling`` for every handler call (a context variable, so concurrent handlers
each see their own); the unit of work reads it when it commits.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from allocation.domain import events, messages
    from allocation.service_layer.observability import Observer
    from allocation.service_layer.ports import AbstractEventStore
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


logger = logging.getLogger(__name__)

# Past this many unrecorded completions, the bus records them without waiting for
# the next catch-up pass.
COMPLETIONS_TO_FLUSH = 1000


@dataclasses.dataclass(slots=True)
class Handling:
    """What the current handler call is doing, for the units of work it opens.

    Attributes:
        message: the message being handled; events committed meanwhile are
            caused by it.
        subscriber: the name under which the message counts as handled (an event
            handler's subscriber name, or a broker inbox for a command): the
            commit then records it in the same transaction as the effects, which
            makes them exactly-once.
        owner: the tracker's set of claimed event ids: new events are added to it
            just before their commit, so catch-up leaves them to the fast path.
        tracked: set once a commit has recorded the message as processed.
        observer: the bus's observer while it records traces (None otherwise):
            new events are stamped with its trace context.
    """

    message: messages.Message
    subscriber: str | None = None
    owner: set[str] | None = None
    tracked: bool = False
    claimed: list[str] = dataclasses.field(default_factory=list)
    observer: Observer | None = None

    def claim(self, message_ids: Iterable[str]) -> None:
        """Mark new events as this process's to dispatch."""
        if self.owner is not None:
            fresh = list(message_ids)
            self.claimed.extend(fresh)
            self.owner.update(fresh)

    def trace_context(self) -> str | None:
        """The trace the events committed now belong to, if one is recorded."""
        return None if self.observer is None else self.observer.trace_context()

    def tracking_row(self) -> tuple[str, str] | None:
        """The (subscriber, message id) a commit must record, if it must."""
        if self.subscriber is None or self.tracked:
            return None
        return self.subscriber, self.message.message_id

    def release_uncommitted(self, committed: Iterable[events.Event]) -> None:
        """Give up claims on events whose commit failed: they will never exist."""
        if self.owner is not None and self.claimed:
            done = {event.message_id for event in committed}
            self.owner.difference_update(mid for mid in self.claimed if mid not in done)


handling: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "allocation_handling", default=None
)


class Tracker:
    """One bus's record of what it claimed and what its handlers completed."""

    def __init__(self) -> None:
        # Ids of events this process committed and is dispatching itself.
        self.claimed: set[str] = set()
        # (subscriber, message id) handled by handlers whose commit did not record
        # it; written in batches by flush().
        self._completed: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def handling(
        self, current: Handling, raised: Sequence[events.Event]
    ) -> Iterator[Handling]:
        """Make ``current`` the handler call that units of work opened inside see;
        on the way out, drop the claims of events that were never committed."""
        current.owner = self.claimed
        token = handling.set(current)
        try:
            yield current
        finally:
            handling.reset(token)
            current.release_uncommitted(raised)

    def completed(self, current: Handling) -> None:
        """A handler call succeeded: record it unless its commit already did."""
        if not current.tracked and current.subscriber is not None:
            self._completed.append((current.subscriber, current.message.message_id))

    def dispatched(self, round_: Iterable[events.Event]) -> None:
        """A dispatch round is over: its events are no longer this process's."""
        self.claimed.difference_update(event.message_id for event in round_)

    @property
    def due(self) -> bool:
        """Whether enough completions wait to be written now."""
        return len(self._completed) >= COMPLETIONS_TO_FLUSH

    async def flush(self, uow_factory: Callable[[], AbstractUnitOfWork]) -> None:
        """Record, in one transaction, what handlers without a commit have handled."""
        if not self._completed:
            return
        pending, self._completed = self._completed, []
        by_subscriber: dict[str, list[str]] = {}
        for subscriber, message_id in pending:
            by_subscriber.setdefault(subscriber, []).append(message_id)
        try:
            async with uow_factory() as uow:
                for subscriber, message_ids in by_subscriber.items():
                    await uow.event_log.mark_processed(
                        subscriber, message_ids, exactly_once=False
                    )
                await uow.commit()
        except BaseException as error:
            # Kept for the next flush, cancelled ones too: a stop cancels a pass
            # mid-flush and then flushes once more (recording twice is harmless).
            # If the process dies first, catch-up hands these messages over again
            # (at-least-once).
            self._completed[:0] = pending
            if isinstance(error, Exception):
                logger.warning("could not record %d handled messages yet", len(pending))
            raise

    async def undelivered(
        self,
        store: AbstractEventStore,
        subscriber: str,
        batch: Sequence[tuple[int, events.Event]],
    ) -> tuple[list[tuple[int, events.Event]], int | None]:
        """The (position, event) pairs of ``batch`` the subscriber has neither
        handled nor given up on, and, if one is this process's own to dispatch, the
        position catch-up must stop before (it is in hand; later ones wait for it)."""
        ids = [event.message_id for _, event in batch]
        done = await store.processed_among(subscriber, ids)
        done |= await store.dead_message_ids(subscriber, ids)
        claimed = self.claimed
        if not done and claimed.isdisjoint(ids):
            return list(batch), None  # the usual case, decided without a loop
        todo: list[tuple[int, events.Event]] = []
        for position, event in batch:
            if event.message_id in done:
                continue
            if event.message_id in claimed:
                return todo, position
            todo.append((position, event))
        return todo, None
