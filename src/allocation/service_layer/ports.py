"""Ports for storage: the event store and the read models, with their value types.

The service layer is written against these; each engine's package in ``adapters``
implements them once (``adapters.sqlite``, ``adapters.postgres``) and
``allocation.testing`` holds in-memory ones that pass the same contract tests. No
driver is imported here.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, NamedTuple, TypedDict

if TYPE_CHECKING:
    import datetime
    from collections.abc import Collection, Iterable, Sequence

    from allocation.domain import events
    from allocation.service_layer.idempotency import KeyRecord, StoredResponse


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended, with the aggregate version it brings about."""

    event: events.Event
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    # The W3C traceparent of the work that recorded it, while traces are recorded.
    trace_context: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as the log holds it."""

    position: int
    event: events.Event
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime.datetime
    # The payload's JSON as stored, and the schema version it was written with:
    # the relay publishes both as they are.
    payload_json: str | None = None
    schema_version: int = 1
    # The trace it was written under (a W3C traceparent): whoever handles or
    # publishes it later continues that trace.
    trace_context: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at ``version``, as the JSON text of its snapshot_state().

    ``schema_version`` is the aggregate class's SNAPSHOT_VERSION when it was taken:
    a snapshot of another shape is ignored and the aggregate rebuilt from events.
    """

    aggregate_type: str
    aggregate_id: str
    version: int
    schema_version: int
    state_json: str


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A unique value (an email, a batch reference) held by one aggregate.

    Written in the transaction that appends the event making the claim, so two
    aggregates can never hold one value, and the owner can be found by the value.
    """

    kind: str
    value: str
    owner: str


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a subscriber still failed on after all its retries."""

    id: int
    subscriber: str
    message_id: str
    error: str
    attempts: int
    last_tried: datetime.datetime


class AbstractEventStore(abc.ABC):
    """Port for the event store: the aggregates' streams, the whole log, snapshots,
    claims, and the subscribers' bookkeeping. Every call joins the unit of work's
    transaction.
    """

    # ---- streams: the truth about every aggregate

    @abc.abstractmethod
    async def append(self, new_events: Sequence[NewEvent]) -> int | None:
        """Append events (the unit of work does this on commit).

        Returns:
            The log position of the last of them, where the engine draws it at
            once; None for no events, or where it is drawn only at the commit
            (SQLite writes a commit's statements in the COMMIT's own trip).

        Raises:
            ConcurrencyConflict: one of the (aggregate type, id, version) is already
                in the log: another writer got there first. Nothing is appended.
        """

    @abc.abstractmethod
    async def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
    ) -> list[LoggedEvent]:
        """One aggregate's events past ``after_version`` (up to ``up_to_version``),
        by version."""

    async def lock_stream(self, aggregate_type: str, aggregate_id: str) -> None:  # noqa: B027 - most engines have nothing to do
        """Make this transaction the only writer of the stream until it ends.

        Writers of one aggregate then queue instead of losing the version race;
        an engine whose write transactions are serialised anyway has nothing to do.
        """

    async def lock_log(self) -> None:  # noqa: B027 - most engines have nothing to do
        """Hold back every other append until this transaction ends (a replay's
        final step: nothing may commit between its last read and its swap)."""

    @abc.abstractmethod
    async def stream_ids(self, aggregate_type: str) -> list[str]:
        """The id of every stream of the type, sorted."""

    @abc.abstractmethod
    async def latest_snapshot(
        self, aggregate_type: str, aggregate_id: str
    ) -> Snapshot | None:
        """The newest snapshot of the aggregate, if any."""

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the aggregate's newest, replacing an older one."""

    @abc.abstractmethod
    async def claim(self, claims: Sequence[Claim]) -> None:
        """Record unique values for their owners.

        Raises:
            ClaimTaken: a value is already held by another owner. Nothing is
                claimed.
        """

    @abc.abstractmethod
    async def claim_owner(self, kind: str, value: str) -> str | None:
        """The aggregate id that holds ``value``, if any."""

    @abc.abstractmethod
    async def claims(self) -> list[Claim]:
        """Every claim, by kind then value (for verification)."""

    async def read_one_snapshot(self) -> None:  # noqa: B027 - an engine without concurrent writers has nothing to do
        """Make every later read of this unit of work see the database as of one
        moment, however many statements it takes (``verify`` reads the log and
        the state it compares in many); call it before the first read."""

    # ---- the whole log, in commit order

    @abc.abstractmethod
    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        """Events past position ``after``, oldest first, of the given names only."""

    async def read_events(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[tuple[int, events.Event]]:
        """(position, event) of the events ``read`` gives: for readers that need
        nothing else of a row (catch-up, replay), which an engine may read and
        decode for less."""
        batch = await self.read(after=after, names=names, limit=limit)
        return [(logged.position, logged.event) for logged in batch]

    @abc.abstractmethod
    async def get(self, message_id: str) -> LoggedEvent | None:
        """The logged event with this id, if any."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The position of the newest event (0 for an empty log)."""

    @abc.abstractmethod
    async def last_position_of(self, message_ids: Sequence[str]) -> int | None:
        """The highest position among these events (None if none is logged)."""

    # ---- HTTP idempotency keys (see service_layer.idempotency)

    @abc.abstractmethod
    async def claim_request(
        self,
        key: str,
        fingerprint: str,
        token: str,
        now: datetime.datetime,
        lease_until: datetime.datetime,
    ) -> KeyRecord | None:
        """Hold ``key`` for ``token`` until ``lease_until`` if it is free or its
        expiry (or lease) ended by ``now`` (None); else its record. Of concurrent
        claims of one key, one wins."""

    @abc.abstractmethod
    async def complete_request(
        self,
        key: str,
        token: str,
        response: StoredResponse,
        expires_at: datetime.datetime,
    ) -> None:
        """Store ``token``'s response, kept until ``expires_at``; IdempotencyKeyLost
        (here or at the commit) if the key is no longer in flight for ``token``."""

    @abc.abstractmethod
    async def release_request(self, key: str, token: str) -> None:
        """Delete the key if it is in flight for ``token``."""

    @abc.abstractmethod
    async def purge_requests(self, now: datetime.datetime) -> int:
        """Delete the keys whose expiry or lease ended by ``now``; how many."""

    # ---- what each subscriber has handled

    @abc.abstractmethod
    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        """Record handled messages.

        With ``exactly_once`` a message already recorded fails the commit (the
        caller's effects roll back with it: AlreadyProcessed); otherwise it is
        quietly skipped.
        """

    @abc.abstractmethod
    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        """Which of ``message_ids`` the subscriber has handled."""

    @abc.abstractmethod
    async def checkpoint(self, subscriber: str) -> int | None:
        """The position up to which the subscriber has handled everything.

        None for a subscriber the log has never seen.
        """

    @abc.abstractmethod
    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        """Move the subscriber's checkpoint forward (never back), creating it if new."""

    @abc.abstractmethod
    async def forget(self, subscriber: str) -> None:
        """Drop the subscriber's tracking, checkpoint and dead letters (for a replay)."""

    @abc.abstractmethod
    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        """Record (or refresh) a dead letter."""

    @abc.abstractmethod
    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    @abc.abstractmethod
    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter by its id."""

    @abc.abstractmethod
    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        """Delete a dead letter."""

    @abc.abstractmethod
    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        """Which of ``message_ids`` are dead letters of the subscriber."""

    # ---- figures for status and metrics

    @abc.abstractmethod
    async def all_checkpoints(self) -> dict[str, int]:
        """Every subscriber's checkpoint (the relay's per destination included)."""

    @abc.abstractmethod
    async def count_unhandled(
        self, subscriber: str, *, after: int, names: Collection[str] | None = None
    ) -> int:
        """How many events past position ``after`` (of ``names`` only, if given)
        the subscriber has neither recorded as handled nor given up on."""

    @abc.abstractmethod
    async def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters each subscriber that has any holds."""


# ---- read models


class AllocationRow(TypedDict):
    """One allocated order line as the read model shows it."""

    sku: str
    batchref: str


class LineState(NamedTuple):
    """Where an order line (orderid, sku, qty) stands as of product ``version``.

    An order may hold several lines of one sku (in one batch or in several), and
    a line is in at most one batch at a time: the line is the read model's key.
    """

    orderid: str
    sku: str
    qty: int
    batchref: str
    version: int | None
    allocated: bool


# An order line's key in the allocations read model: (orderid, sku, qty).
LineKey = tuple[str, str, int]


class UserRow(TypedDict):
    """A registered user as readers see it."""

    id: str
    name: str
    email: str


class AbstractAllocationsView(abc.ABC):
    """Port for the allocations read model: one row per order line.

    Each row keeps the product version of the last event applied to it and whether
    the line is allocated now (a deallocated line stays, marked so), which lets
    events arrive in any order, or twice.
    """

    async def add(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        """Record the batch an order line is allocated to, as of product ``version``.

        A row already at that version or a later one is left alone, so events may
        arrive in any order. ``version`` None applies unconditionally.
        """
        await self.write_many(
            [LineState(orderid, sku, qty, batchref, version, allocated=True)]
        )

    async def remove(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        """Record that an order line left ``batchref`` as of product ``version``."""
        await self.write_many(
            [LineState(orderid, sku, qty, batchref, version, allocated=False)]
        )

    @abc.abstractmethod
    async def write_many(self, lines: Sequence[LineState]) -> None:
        """Apply line states in order (one event, or a catch-up or replay batch)."""

    @abc.abstractmethod
    async def for_order(self, orderid: str) -> list[AllocationRow]:
        """One entry per allocated line of an order, by sku, batch, then quantity."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget every row (a replay rebuilds them)."""

    @abc.abstractmethod
    async def lines(
        self, *, after: LineKey | None = None, limit: int | None = None
    ) -> list[LineState]:
        """Rows, deallocated lines and versions included, by their key (orderid,
        sku, qty) ascending, strings in code-point order (Python's, on every
        engine): the first ``limit`` past the key ``after`` (all by default).

        What ``verify`` and a replay compare with a rebuild from the log, a page
        at a time.
        """


class AbstractUsersView(abc.ABC):
    """Port for the users read model."""

    @abc.abstractmethod
    async def add(self, user_id: str, name: str, email: str) -> None:
        """Record (or overwrite) a user."""

    @abc.abstractmethod
    async def by_id(self, user_id: str) -> UserRow | None:
        """The user with this id, if any."""

    @abc.abstractmethod
    async def by_email(self, email: str) -> UserRow | None:
        """The user with this (normalised) email, if any."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget every row (a replay rebuilds them)."""

    @abc.abstractmethod
    async def all_rows(self) -> list[UserRow]:
        """Every user, sorted by email (then id)."""

    @abc.abstractmethod
    async def page(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[UserRow]:
        """Users by id ascending in code-point order (Python's, on every engine):
        the first ``limit`` past the id ``after`` (all by default).

        What ``verify`` and a replay compare with a rebuild from the log.
        """
