"""The in-memory event store: streams, the log, snapshots, claims and tracking.

It behaves as the SQL stores do (the contract suite runs against all three): a
unit of work's writes are staged and seen by it alone until it commits, then all
become visible at once; a rollback leaves no trace. Appenders take one lock each
until their transaction ends, so positions are handed out in commit order,
without gaps. Runs on asyncio and trio (AnyIO).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import itertools
import sys
from typing import TYPE_CHECKING

from allocation.domain.exceptions import AlreadyProcessed, ConcurrencyConflict
from allocation.memory.idempotency import FakeIdempotencyKeys, KeyData
from allocation.memory.transaction import Bound, LockTable
from allocation.service_layer.exceptions import ClaimTaken
from allocation.service_layer.ports import (
    AbstractEventStore,
    Claim,
    DeadLetter,
    LoggedEvent,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from allocation.memory.transaction import Transaction
    from allocation.service_layer.ports import NewEvent, Snapshot

StreamKey = tuple[str, str]
Pair = tuple[str, str]  # (subscriber, message id)

# The key of the lock every appender holds until its transaction ends.
_APPEND_LOCK = ("append",)


def _version(logged: LoggedEvent) -> int:
    return logged.aggregate_version


class _LogData:
    """The committed state of one store, shared by every handle on it."""

    def __init__(self) -> None:
        self.logged: list[LoggedEvent] = []  # position p is logged[p - 1]
        self.by_id: dict[str, LoggedEvent] = {}
        self.streams: dict[StreamKey, list[LoggedEvent]] = {}  # by version
        self.stream_ids: dict[str, set[str]] = {}
        self.versions: set[tuple[str, str, int]] = set()
        self.claims: dict[Pair, str] = {}  # (kind, value) -> owner
        self.snapshots: dict[StreamKey, Snapshot] = {}
        self.processed: set[Pair] = set()
        self.checkpoints: dict[str, int] = {}
        self.letters: dict[int, DeadLetter] = {}
        self.letter_ids: dict[Pair, int] = {}
        self.next_letter = 1
        self.locks = LockTable()


@dataclasses.dataclass(slots=True)
class _LogChanges:
    """One transaction's writes to one store."""

    data: _LogData
    events: list[LoggedEvent] = dataclasses.field(default_factory=list)
    streams: dict[StreamKey, list[LoggedEvent]] = dataclasses.field(
        default_factory=dict
    )
    versions: set[tuple[str, str, int]] = dataclasses.field(default_factory=set)
    message_ids: set[str] = dataclasses.field(default_factory=set)
    claims: dict[Pair, str] = dataclasses.field(default_factory=dict)
    snapshots: dict[StreamKey, Snapshot] = dataclasses.field(default_factory=dict)
    processed: set[Pair] = dataclasses.field(default_factory=set)
    # Recorded exactly once: another commit of the same pair meanwhile fails ours.
    once: set[Pair] = dataclasses.field(default_factory=set)
    # Subscribers whose committed tracking, checkpoint and letters are deleted.
    forgotten: set[str] = dataclasses.field(default_factory=set)
    checkpoints: dict[str, int] = dataclasses.field(default_factory=dict)
    letters: dict[int, DeadLetter | None] = dataclasses.field(default_factory=dict)
    letter_ids: dict[Pair, int] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        # Another transaction may have committed the same unique value since it
        # was staged: the unique constraint fails this commit, as in SQL.
        data = self.data
        for (kind, value), owner in self.claims.items():
            holder = data.claims.get((kind, value))
            if holder is not None and holder != owner:
                raise ClaimTaken(Claim(kind, value, owner))
        for pair in self.once:
            if pair in data.processed and pair[0] not in self.forgotten:
                raise AlreadyProcessed(" ".join(pair))

    def apply(self) -> None:
        data = self.data
        for subscriber in self.forgotten:
            _delete_subscriber(data, subscriber)
        for logged in self.events:
            key = (logged.aggregate_type, logged.aggregate_id)
            data.logged.append(logged)
            data.by_id[logged.event.message_id] = logged
            bisect.insort(data.streams.setdefault(key, []), logged, key=_version)
            data.stream_ids.setdefault(key[0], set()).add(key[1])
        data.versions |= self.versions
        data.claims.update(self.claims)
        for key, snapshot in self.snapshots.items():
            kept = data.snapshots.get(key)
            if kept is None or snapshot.version >= kept.version:
                data.snapshots[key] = snapshot
        data.processed |= self.processed
        for subscriber, position in self.checkpoints.items():
            data.checkpoints[subscriber] = max(
                position, data.checkpoints.get(subscriber, position)
            )
        for letter_id, letter in self.letters.items():
            _apply_letter(data, letter_id, letter)


def _delete_subscriber(data: _LogData, subscriber: str) -> None:
    data.processed = {pair for pair in data.processed if pair[0] != subscriber}
    data.checkpoints.pop(subscriber, None)
    for letter in [
        each for each in data.letters.values() if each.subscriber == subscriber
    ]:
        del data.letters[letter.id]
        del data.letter_ids[letter.subscriber, letter.message_id]


def _apply_letter(data: _LogData, letter_id: int, letter: DeadLetter | None) -> None:
    if letter is None:
        removed = data.letters.pop(letter_id, None)
        if removed is not None:
            del data.letter_ids[removed.subscriber, removed.message_id]
        return
    pair = (letter.subscriber, letter.message_id)
    # Another transaction may have buried the same message meanwhile: refresh its
    # letter, as the unique (subscriber, message id) keeps one.
    letter_id = data.letter_ids.setdefault(pair, letter_id)
    data.letters[letter_id] = dataclasses.replace(letter, id=letter_id)


class FakeEventStore(FakeIdempotencyKeys, Bound, AbstractEventStore):
    """The event store in memory, staging each unit of work's writes until commit.

    ``logged``, ``processed``, ``checkpoints`` and ``letters`` show the committed
    state, for tests to look at.
    """

    def __init__(self) -> None:
        self._data = _LogData()
        self._keys = KeyData()

    @property
    def logged(self) -> list[LoggedEvent]:
        return self._data.logged

    @property
    def processed(self) -> set[Pair]:
        return self._data.processed

    @property
    def checkpoints(self) -> dict[str, int]:
        return self._data.checkpoints

    @property
    def letters(self) -> dict[int, DeadLetter]:
        return self._data.letters

    def _staged(self) -> _LogChanges | None:
        transaction = self._reading()
        if transaction is None:
            return None
        return transaction.staged(self._data)  # type: ignore[return-value]  # ours

    def _changes(self, transaction: Transaction) -> _LogChanges:
        return transaction.changes(self._data, lambda: _LogChanges(self._data))

    # ---- streams

    async def append(self, new_events: Sequence[NewEvent]) -> int | None:
        if not new_events:
            return None
        data = self._data
        with self._writing() as transaction:
            # Held until the transaction ends: positions follow commit order.
            await data.locks.acquire(_APPEND_LOCK, transaction)
            changes = self._changes(transaction)
            versions = [
                (new.aggregate_type, new.aggregate_id, new.aggregate_version)
                for new in new_events
            ]
            # Checked set by set: a union would copy the whole log's versions on
            # every append, and the fakes must stay O(1) per command.
            if (
                len(set(versions)) < len(versions)
                or not data.versions.isdisjoint(versions)
                or not changes.versions.isdisjoint(versions)
            ):
                raise ConcurrencyConflict(
                    new_events[0].aggregate_type, "version already logged"
                )
            # A message id is unique in the log too: the same event logged twice.
            message_ids = [new.event.message_id for new in new_events]
            if len(set(message_ids)) < len(message_ids) or any(
                mid in data.by_id or mid in changes.message_ids for mid in message_ids
            ):
                raise ConcurrencyConflict(
                    new_events[0].aggregate_type, "event already logged"
                )
            now = datetime.datetime.now(datetime.UTC)
            first = len(data.logged) + len(changes.events) + 1
            for position, new in enumerate(new_events, first):
                logged = LoggedEvent(
                    position=position,
                    event=new.event,
                    aggregate_type=new.aggregate_type,
                    aggregate_id=new.aggregate_id,
                    aggregate_version=new.aggregate_version,
                    occurred_at=now,
                    schema_version=new.event.SCHEMA_VERSION,
                    trace_context=new.trace_context,
                )
                changes.events.append(logged)
                stream = changes.streams.setdefault(
                    (new.aggregate_type, new.aggregate_id), []
                )
                bisect.insort(stream, logged, key=_version)
            changes.versions.update(versions)
            changes.message_ids.update(message_ids)
        return first + len(new_events) - 1

    async def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
    ) -> list[LoggedEvent]:
        key = (aggregate_type, aggregate_id)
        found = _versions_between(
            self._data.streams.get(key, []), after_version, up_to_version
        )
        changes = self._staged()
        if changes is not None and key in changes.streams:
            found += _versions_between(
                changes.streams[key], after_version, up_to_version
            )
            found.sort(key=_version)
        return found

    async def stream_ids(self, aggregate_type: str) -> list[str]:
        ids = set(self._data.stream_ids.get(aggregate_type, ()))
        changes = self._staged()
        if changes is not None:
            ids.update(key[1] for key in changes.streams if key[0] == aggregate_type)
        return sorted(ids)

    async def lock_stream(self, aggregate_type: str, aggregate_id: str) -> None:
        transaction = self._reading()
        if transaction is not None:  # outside a transaction there is nothing to hold
            key = ("stream", aggregate_type, aggregate_id)
            await self._data.locks.acquire(key, transaction)

    async def lock_log(self) -> None:
        transaction = self._reading()
        if transaction is not None:
            # The appenders' own lock: theirs wait until this transaction ends.
            await self._data.locks.acquire(_APPEND_LOCK, transaction)

    async def latest_snapshot(
        self, aggregate_type: str, aggregate_id: str
    ) -> Snapshot | None:
        key = (aggregate_type, aggregate_id)
        changes = self._staged()
        if changes is not None and key in changes.snapshots:
            return changes.snapshots[key]
        return self._data.snapshots.get(key)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        key = (snapshot.aggregate_type, snapshot.aggregate_id)
        with self._writing() as transaction:
            kept = await self.latest_snapshot(*key)
            # The same version may come again in a newer shape; an older never wins.
            if kept is None or snapshot.version >= kept.version:
                self._changes(transaction).snapshots[key] = snapshot

    async def claim(self, claims: Sequence[Claim]) -> None:
        with self._writing() as transaction:
            changes = self._changes(transaction)
            wanted: dict[Pair, str] = {}
            for claim in claims:
                key = (claim.kind, claim.value)
                holder = wanted.get(key, changes.claims.get(key))
                if holder is None:
                    holder = self._data.claims.get(key)
                if holder is not None and holder != claim.owner:
                    raise ClaimTaken(claim)
                wanted[key] = claim.owner
            changes.claims.update(wanted)

    async def claim_owner(self, kind: str, value: str) -> str | None:
        changes = self._staged()
        if changes is not None and (kind, value) in changes.claims:
            return changes.claims[kind, value]
        return self._data.claims.get((kind, value))

    async def claims(self) -> list[Claim]:
        held = dict(self._data.claims)
        changes = self._staged()
        if changes is not None:
            held.update(changes.claims)
        return [
            Claim(kind, value, owner) for (kind, value), owner in sorted(held.items())
        ]

    # ---- the whole log

    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        changes = self._staged()
        # Position p is the p-th entry, so the scan starts right after ``after``.
        entries = itertools.chain(
            itertools.islice(self._data.logged, max(after, 0), None),
            () if changes is None else changes.events,
        )
        found: list[LoggedEvent] = []
        if limit <= 0:
            return found
        for logged in entries:
            if logged.position > after and (
                names is None or logged.event.TYPE in names
            ):
                found.append(logged)
                if len(found) == limit:
                    break
        return found

    async def get(self, message_id: str) -> LoggedEvent | None:
        found = self._data.by_id.get(message_id)
        changes = self._staged()
        if found is None and changes is not None:
            found = next(
                (e for e in changes.events if e.event.message_id == message_id), None
            )
        return found

    async def last_position(self) -> int:
        changes = self._staged()
        return len(self._data.logged) + (0 if changes is None else len(changes.events))

    async def last_position_of(self, message_ids: Sequence[str]) -> int | None:
        positions = [
            logged.position
            for logged in [await self.get(message_id) for message_id in message_ids]
            if logged is not None
        ]
        return max(positions, default=None)

    # ---- tracking

    def _is_processed(self, pair: Pair, changes: _LogChanges | None) -> bool:
        if changes is None:
            return pair in self._data.processed
        if pair in changes.processed:
            return True
        return pair[0] not in changes.forgotten and pair in self._data.processed

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        pairs = [(subscriber, message_id) for message_id in message_ids]
        if not pairs:
            return
        with self._writing() as transaction:
            changes = self._changes(transaction)
            if exactly_once:
                for number, pair in enumerate(pairs):
                    if pair in pairs[:number] or self._is_processed(pair, changes):
                        raise AlreadyProcessed(" ".join(pair))
                changes.once.update(pairs)
            changes.processed.update(pairs)

    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        changes = self._staged()
        return {
            message_id
            for message_id in message_ids
            if self._is_processed((subscriber, message_id), changes)
        }

    async def checkpoint(self, subscriber: str) -> int | None:
        changes = self._staged()
        if changes is not None:
            if subscriber in changes.checkpoints:
                return changes.checkpoints[subscriber]
            if subscriber in changes.forgotten:
                return None
        return self._data.checkpoints.get(subscriber)

    async def all_checkpoints(self) -> dict[str, int]:
        names = set(self._data.checkpoints)
        changes = self._staged()
        if changes is not None:
            names.update(changes.checkpoints)
        found = {name: await self.checkpoint(name) for name in sorted(names)}
        return {
            name: position for name, position in found.items() if position is not None
        }

    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        with self._writing() as transaction:
            current = await self.checkpoint(subscriber)
            changes = self._changes(transaction)
            changes.checkpoints[subscriber] = (
                position if current is None else max(position, current)
            )

    async def forget(self, subscriber: str) -> None:
        with self._writing() as transaction:
            changes = self._changes(transaction)
            changes.forgotten.add(subscriber)
            changes.processed = {p for p in changes.processed if p[0] != subscriber}
            changes.once = {p for p in changes.once if p[0] != subscriber}
            changes.checkpoints.pop(subscriber, None)
            for pair in [p for p in changes.letter_ids if p[0] == subscriber]:
                del changes.letters[changes.letter_ids.pop(pair)]

    # ---- dead letters

    def _letter(self, letter_id: int, changes: _LogChanges | None) -> DeadLetter | None:
        if changes is not None and letter_id in changes.letters:
            return changes.letters[letter_id]
        letter = self._data.letters.get(letter_id)
        forgotten = (
            changes is not None
            and letter is not None
            and (letter.subscriber in changes.forgotten)
        )
        return None if forgotten else letter

    def _letter_id(self, pair: Pair, changes: _LogChanges | None) -> int | None:
        if changes is not None and pair in changes.letter_ids:
            return changes.letter_ids[pair]
        letter_id = self._data.letter_ids.get(pair)
        if letter_id is None or self._letter(letter_id, changes) is None:
            return None
        return letter_id

    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        pair = (subscriber, message_id)
        with self._writing() as transaction:
            changes = self._changes(transaction)
            letter_id = self._letter_id(pair, changes)
            if letter_id is None:
                # Numbered when written, as a sequence does: a rollback leaves a gap.
                letter_id = self._data.next_letter
                self._data.next_letter += 1
            changes.letter_ids[pair] = letter_id
            changes.letters[letter_id] = DeadLetter(
                id=letter_id,
                subscriber=subscriber,
                message_id=message_id,
                error=error,
                attempts=attempts,
                last_tried=datetime.datetime.now(datetime.UTC),
            )

    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        changes = self._staged()
        ids = set(self._data.letters)
        if changes is not None:
            ids.update(changes.letters)
        letters = [
            letter
            for letter in map(self._letter, sorted(ids), itertools.repeat(changes))
            if letter is not None
            and (subscriber is None or letter.subscriber == subscriber)
        ]
        return letters[: max(limit, 0)]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        return self._letter(dead_letter_id, self._staged())

    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        with self._writing() as transaction:
            changes = self._changes(transaction)
            letter = self._letter(dead_letter_id, changes)
            if letter is None:
                return
            changes.letters[dead_letter_id] = None
            changes.letter_ids.pop((letter.subscriber, letter.message_id), None)

    async def count_unhandled(
        self, subscriber: str, *, after: int, names: Collection[str] | None = None
    ) -> int:
        pending = await self.read(after=after, names=names, limit=sys.maxsize)
        ids = [logged.event.message_id for logged in pending]
        done = await self.processed_among(subscriber, ids)
        return len(ids) - len(done | await self.dead_message_ids(subscriber, ids))

    async def dead_letter_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for letter in await self.dead_letters(limit=sys.maxsize):
            counts[letter.subscriber] = counts.get(letter.subscriber, 0) + 1
        return counts

    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        changes = self._staged()
        return {
            message_id
            for message_id in message_ids
            if self._letter_id((subscriber, message_id), changes) is not None
        }


def _versions_between(
    stream: list[LoggedEvent], after: int, up_to: int | None
) -> list[LoggedEvent]:
    start = bisect.bisect_right(stream, after, key=_version)
    end = (
        len(stream)
        if up_to is None
        else bisect.bisect_right(stream, up_to, key=_version)
    )
    return stream[start:end]
