"""The unit of work: one atomic change, appended to the event store in one transaction.

The service layer's half: what a commit writes (the new events, the claims they
make, the inline projections, snapshots, the tracking row) and in which order.
Each engine's package supplies the transaction and the ports
(``adapters.sqlite``, ``adapters.postgres``); ``allocation.testing`` an in-memory one.
"""

from __future__ import annotations

import abc
import datetime
import importlib
from typing import TYPE_CHECKING, Any, Self

import anyio

from allocation.service_layer import idempotency, repository, tracking
from allocation.service_layer.exceptions import ClaimTaken
from allocation.service_layer.ports import NewEvent

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from allocation.domain import events, messages
    from allocation.domain.aggregate import Aggregate
    from allocation.service_layer.ports import (
        AbstractAllocationsView,
        AbstractEventStore,
        AbstractUsersView,
        Claim,
    )
    from allocation.service_layer.projections import Projection

# Every this many events an aggregate's state is saved as a snapshot, so loading
# it reads at most this many events (ALLOCATION_SNAPSHOT_EVERY overrides it).
DEFAULT_SNAPSHOT_EVERY = 100


class AbstractUnitOfWork(abc.ABC):
    """Port for a transaction over the event store, the repositories and read models.

    ``async with uow:`` opens it; leaving without ``commit()`` (or with an exception)
    rolls back. The events recorded by the aggregates it handed out are appended by
    ``commit()``, in the same transaction as the claims they make, the inline
    projections and the tracking row, and become available from
    ``collect_new_events()`` only once that commit succeeded.

    Attributes:
        snapshot_every: an aggregate's state is saved as a snapshot each time its
            version crosses a multiple of this (0: never).
        inline_projections: read models written in the commit's own transaction.
    """

    event_log: AbstractEventStore
    allocations_view: AbstractAllocationsView
    users_view: AbstractUsersView
    products: repository.ProductRepository
    users: repository.UserRepository

    def __init__(
        self,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        inline_projections: Sequence[Projection] | None = None,
    ) -> None:
        self._committed_events: list[events.Event] = []
        self.snapshot_every = snapshot_every
        if inline_projections is None:
            from allocation.service_layer import projections

            inline_projections = projections.INLINE_PROJECTIONS
        self.inline_projections = tuple(inline_projections)
        self._live_views: dict[str, object] = {}
        # Inside `async with`: the repositories of this entry exist. Kept as a
        # state of its own, not read off which attributes happen to be set.
        self._entered = False

    async def __aenter__(self) -> Self:
        await self._start()
        self.products = repository.ProductRepository(self.event_log)
        self.users = repository.UserRepository(self.event_log)
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled caller must still hand its connection back clean.
        with anyio.CancelScope(shield=True):
            try:
                await self.rollback()
            finally:
                self._entered = False
                self.restore_live_views()
                await self._close()

    async def commit(self) -> None:
        """Make the changes and their events durable, atomically.

        Raises:
            ConcurrencyConflict: another transaction appended the same aggregate
                version first (the bus reruns the handler).
            EmailAlreadyRegistered, BatchAlreadyExists: a claim is held already.
            AlreadyProcessed: this subscriber had already handled the message.
            IdempotencyKeyLost: the HTTP request's key was taken over.
        """
        current = tracking.handling.get()
        cause = None if current is None else current.message
        new_events, claims, snapshots = self._take_changes(cause)
        if current is not None and new_events:
            current.claim(new.event.message_id for new in new_events)
        tracking_row = None if current is None else current.tracking_row()
        request = idempotency.completion(new_events)
        store = self.event_log
        position = None
        try:
            if request is not None:
                await self._complete_request(*request)
            if claims:
                # First: a taken email fails before the append lock is taken.
                await store.claim(claims)
            if new_events:
                for projection in self.inline_projections:
                    wanted = [
                        new.event
                        for new in new_events
                        if type(new.event) in projection.appliers
                    ]
                    if wanted:
                        await projection.apply_many(wanted, self)
                for snapshot in snapshots:
                    await store.save_snapshot(snapshot)
            if tracking_row is not None:
                subscriber, message_id = tracking_row
                await store.mark_processed(subscriber, [message_id], exactly_once=True)
            if new_events:
                # Last: appending orders commits, so its lock is held the least.
                position = await store.append(new_events)
            await self._commit()
        except ClaimTaken as taken:
            raise self._claim_error(taken) from taken
        if tracking_row is not None and current is not None:
            current.tracked = True
        if request is not None:
            # Only now: a commit rerun after a conflict stores it again.
            request[0].response = request[1]
            request[0].position = position
        self._committed_events.extend(new.event for new in new_events)

    async def _complete_request(
        self, pending: idempotency.PendingRequest, response: idempotency.StoredResponse
    ) -> None:
        if pending.key is None or pending.token is None:
            return  # a request without a key: its response is only rendered
        # First of the writes: a request whose key was taken over fails before the
        # others take their locks.
        expires_at = idempotency.utc_now() + datetime.timedelta(seconds=pending.ttl)
        await self.event_log.complete_request(
            pending.key, pending.token, response, expires_at
        )

    async def rollback(self) -> None:
        """Undo what is not committed; the events it recorded are dropped."""
        for seen in (self.products.seen, self.users.seen) if self._opened else ():
            for aggregate in seen.values():
                aggregate.events.clear()
            seen.clear()
        await self._rollback()

    def collect_new_events(self) -> list[events.Event]:
        """Hand over, once, the events of every successful commit so far."""
        collected, self._committed_events = self._committed_events, []
        return collected

    async def use_shadow(self, projection: Projection, *, empty: bool = False) -> None:
        """Point this unit of work's read model of ``projection`` at its shadow
        table (created if missing; emptied with ``empty``), for a rebuild."""
        attribute = projection.view_attribute
        self._live_views.setdefault(attribute, getattr(self, attribute))
        shadow = await self._shadow_view(attribute)
        setattr(self, attribute, shadow)
        if empty:
            await projection.clear(self)

    async def swap_in_shadow(self, projection: Projection) -> None:
        """Replace the live read model with its shadow, in this transaction, and
        drop the shadow."""
        await self._swap_shadow(projection.view_attribute)

    async def drop_shadow(self, projection: Projection) -> None:
        """Drop the shadow of ``projection``'s read model, if there is one."""
        await self._drop_shadow(projection.view_attribute)

    @property
    def _opened(self) -> bool:
        """Whether this unit of work is inside its ``async with`` block."""
        return self._entered

    def restore_live_views(self) -> None:
        """Point the read-model attributes back at the live tables."""
        for attribute, view in self._live_views.items():
            setattr(self, attribute, view)
        self._live_views.clear()

    def _claim_error(self, taken: ClaimTaken) -> Exception:
        for repo in (self.products, self.users):
            error = repo.claim_taken(taken.claim)
            if error is not None:
                return error
        return taken

    def _take_changes(
        self, cause: messages.Message | None
    ) -> tuple[list[NewEvent], list[Claim], list[Any]]:
        """Pop the aggregates' new events, stamped with their version, cause and
        trace, with the claims they make and the snapshots now due."""
        current = tracking.handling.get()
        trace_context = None if current is None else current.trace_context()
        new_events: list[NewEvent] = []
        claims: list[Claim] = []
        snapshots: list[Any] = []
        every = self.snapshot_every
        for repo in (self.products, self.users):
            if not repo.seen:
                continue
            for aggregate in repo.seen.values():
                if not aggregate.events:
                    continue
                self._stage(aggregate, repo, cause, trace_context, new_events, claims)
                if every > 0:
                    before = aggregate.version_number - len(aggregate.events)
                    if aggregate.version_number // every > before // every:
                        snapshots.append(repository.snapshot_of(aggregate))
                aggregate.events.clear()
        return new_events, claims, snapshots

    @staticmethod
    def _stage(
        aggregate: Aggregate,
        repo: repository.Repository[Any],
        cause: messages.Message | None,
        trace_context: str | None,
        new_events: list[NewEvent],
        claims: list[Claim],
    ) -> None:
        # The last event brings the aggregate to its current version.
        first_version = aggregate.version_number - len(aggregate.events) + 1
        for version, event in enumerate(aggregate.events, first_version):
            stamped = event.stamped(
                aggregate_version=version,
                correlation_id=cause.chain_id if cause else event.correlation_id,
                causation_id=cause.message_id if cause else event.causation_id,
            )
            new_events.append(
                NewEvent(
                    event=stamped,
                    aggregate_type=aggregate.AGGREGATE_TYPE,
                    aggregate_id=aggregate.aggregate_id,
                    aggregate_version=version,
                    trace_context=trace_context,
                )
            )
            claims.extend(repo.claims_of(aggregate.aggregate_id, stamped))

    @abc.abstractmethod
    async def _start(self) -> None:
        """Set ``event_log``, ``allocations_view`` and ``users_view`` for this unit
        of work (the transaction may begin lazily, at the first statement)."""

    @abc.abstractmethod
    async def _commit(self) -> None:
        """Commit the transaction (nothing to do if none began)."""

    @abc.abstractmethod
    async def _rollback(self) -> None:
        """Roll back the transaction, if one is open."""

    async def _close(self) -> None:  # noqa: B027 - an in-memory one holds nothing
        """Release what ``_start`` took (a pooled connection)."""

    @abc.abstractmethod
    async def _shadow_view(self, attribute: str) -> Any:
        """The read-model port of ``attribute`` on its shadow table, created if
        missing, in this transaction."""

    @abc.abstractmethod
    async def _swap_shadow(self, attribute: str) -> None:
        """Live rows := shadow rows, then drop the shadow, in this transaction."""

    @abc.abstractmethod
    async def _drop_shadow(self, attribute: str) -> None:
        """Drop the shadow table of ``attribute`` if it exists."""


def __getattr__(name: str) -> Any:
    # ARCHITECTURE keeps SqlAlchemyUnitOfWork importable from here, and also wants
    # this module free of drivers: it is looked up only when asked for.
    if name == "SqlAlchemyUnitOfWork":
        module = importlib.import_module("allocation.adapters.sqlalchemy_uow")
        return module.SqlAlchemyUnitOfWork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
