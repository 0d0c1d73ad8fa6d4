"""The event store in PostgreSQL, on the unit of work's asyncpg session (asyncio only).

Streams, the whole log, snapshots, claims, and the subscribers' tracking,
checkpoints and dead letters, in the tables of ``adapters.tables``. Every call
joins the unit of work's transaction (see ``session``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from allocation.adapters import log_rows
from allocation.adapters.log_rows import (
    dead_letter,
    log_row,
    logged_event,
    positioned_events,
    utc_now,
)
from allocation.adapters.postgres import sql
from allocation.adapters.postgres.idempotency import PostgresIdempotencyKeys
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer.exceptions import ClaimTaken
from allocation.service_layer.ports import AbstractEventStore, Claim, Snapshot

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from allocation.adapters.postgres.session import Session
    from allocation.domain import events
    from allocation.service_layer.ports import DeadLetter, LoggedEvent, NewEvent

# The APPEND statement's arrays, in its order: one per column of the new rows
# (every column of the log but the position, which the database hands out).
_APPEND_COLUMNS = log_rows.LOG_COLUMNS[1:]


def stream_lock_key(aggregate_type: str, aggregate_id: str) -> tuple[int, int]:
    """A stable 64-bit hash of the stream, as the two signed 32-bit halves of
    ``pg_advisory_xact_lock(int, int)``.

    The two-key form is a key space of its own: no stream can share a lock with
    the append lock or a subscriber's lock, which use the one-key form.
    """
    digest = hashlib.blake2b(
        f"{aggregate_type}\x00{aggregate_id}".encode(), digest_size=8
    ).digest()
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:], "big", signed=True),
    )


class PostgresEventStore(PostgresIdempotencyKeys, AbstractEventStore):
    """The event store's tables, through one unit of work's session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # ---- streams

    async def append(self, new_events: Sequence[NewEvent]) -> int | None:
        if not new_events:
            return None
        now = utc_now()
        rows = [log_row(new, now) for new in new_events]
        # One statement whatever the number of events: a column array each.
        positions = await self._session.write_fetch(
            sql.APPEND, *([row[column] for row in rows] for column in _APPEND_COLUMNS)
        )
        return max(int(record[0]) for record in positions)

    async def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
    ) -> list[LoggedEvent]:
        records = await self._session.fetch(
            sql.READ_STREAM,
            aggregate_type,
            aggregate_id,
            after_version,
            sql.MAX_VERSION if up_to_version is None else up_to_version,
        )
        return [logged_event(record) for record in records]

    async def lock_stream(self, aggregate_type: str, aggregate_id: str) -> None:
        # Held until the transaction ends; a reader of a read-only database
        # writes nothing, so has nobody to queue behind.
        if self._session.read_only:
            return
        await self._session.execute(
            sql.LOCK_STREAM, *stream_lock_key(aggregate_type, aggregate_id)
        )

    async def lock_log(self) -> None:
        # The appenders' own lock (see sql.APPEND), held until the transaction ends.
        if self._session.read_only:
            return
        await self._session.execute(sql.LOCK_LOG)

    async def stream_ids(self, aggregate_type: str) -> list[str]:
        records = await self._session.fetch(sql.STREAM_IDS, aggregate_type)
        # Sorted here, not by the database: its collation may differ from the
        # code-point order every other store uses.
        return sorted(record[0] for record in records)

    async def latest_snapshot(
        self, aggregate_type: str, aggregate_id: str
    ) -> Snapshot | None:
        record = await self._session.fetch_row(
            sql.LATEST_SNAPSHOT, aggregate_type, aggregate_id
        )
        if record is None:
            return None
        return Snapshot(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=record["version"],
            schema_version=record["schema_version"],
            state_json=record["state"],
        )

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._session.execute(
            sql.SAVE_SNAPSHOT,
            snapshot.aggregate_type,
            snapshot.aggregate_id,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state_json,
            utc_now(),
        )

    async def claim(self, claims: Sequence[Claim]) -> None:
        wanted: dict[tuple[str, str], Claim] = {}
        for claim in claims:
            held = wanted.setdefault((claim.kind, claim.value), claim)
            if held.owner != claim.owner:
                raise ClaimTaken(claim)
        if not wanted:
            return
        kinds = [kind for kind, _ in wanted]
        values = [value for _, value in wanted]
        inserted = await self._session.write_fetch(
            sql.CLAIM, kinds, values, [claim.owner for claim in wanted.values()]
        )
        if len(inserted) == len(wanted):
            return  # the usual case: every value was free
        fresh = [(record[0], record[1]) for record in inserted]
        await self._settle_held(wanted, fresh)

    async def _settle_held(
        self, wanted: dict[tuple[str, str], Claim], fresh: list[tuple[str, str]]
    ) -> None:
        """Values held already: fine if by their owner; otherwise take back the
        fresh claims, so nothing is claimed, and say which value is taken."""
        newly = set(fresh)
        held = [key for key in wanted if key not in newly]
        records = await self._session.fetch(
            sql.CLAIM_OWNERS, [kind for kind, _ in held], [value for _, value in held]
        )
        owners = {(record[0], record[1]): record[2] for record in records}
        refused = next(
            (wanted[key] for key in held if owners.get(key) != wanted[key].owner), None
        )
        if refused is None:
            return
        if fresh:
            await self._session.execute(
                sql.UNCLAIM, [kind for kind, _ in fresh], [value for _, value in fresh]
            )
        if (refused.kind, refused.value) not in owners:
            # Held a moment ago by a transaction that then rolled back: the
            # value is free, and running the command again gets it.
            raise ConcurrencyConflict("claims", f"{refused.kind} changed hands")
        raise ClaimTaken(refused)

    async def claim_owner(self, kind: str, value: str) -> str | None:
        owner: str | None = await self._session.fetch_value(
            sql.CLAIM_OWNER, kind, value
        )
        return owner

    async def claims(self) -> list[Claim]:
        rows = await self._session.fetch(sql.ALL_CLAIMS)
        # Sorted here too: collations differ between engines, code points do not.
        return sorted(
            (Claim(row[0], row[1], row[2]) for row in rows),
            key=lambda claim: (claim.kind, claim.value),
        )

    async def read_one_snapshot(self) -> None:
        await self._session.read_one_snapshot()

    # ---- the whole log

    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        if names is None:
            records = await self._session.fetch(sql.READ_LOG, after, limit)
        else:
            records = await self._session.fetch(
                sql.READ_LOG_NAMED, after, list(names), limit
            )
        return [logged_event(record) for record in records]

    async def read_events(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[tuple[int, events.Event]]:
        if names is None:
            records = await self._session.fetch(sql.READ_EVENTS, after, limit)
        else:
            records = await self._session.fetch(
                sql.READ_EVENTS_NAMED, after, list(names), limit
            )
        return positioned_events(records)

    async def get(self, message_id: str) -> LoggedEvent | None:
        record = await self._session.fetch_row(sql.GET_EVENT, message_id)
        return None if record is None else logged_event(record)

    async def last_position(self) -> int:
        return int(await self._session.fetch_value(sql.LAST_POSITION))

    # ---- tracking, checkpoints, dead letters

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        ids = list(message_ids)
        if not ids:
            return
        # Exactly once, a row already there fails the statement (and so the
        # commit): AlreadyProcessed, through errors.translate.
        statement = (
            sql.MARK_PROCESSED if exactly_once else sql.MARK_PROCESSED_UNLESS_THERE
        )
        await self._session.execute(statement, subscriber, ids)

    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        records = await self._session.fetch(
            sql.PROCESSED_AMONG, subscriber, list(message_ids)
        )
        return {record[0] for record in records}

    async def checkpoint(self, subscriber: str) -> int | None:
        position = await self._session.fetch_value(sql.CHECKPOINT, subscriber)
        return None if position is None else int(position)

    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        await self._session.execute(sql.SET_CHECKPOINT, subscriber, position)

    async def forget(self, subscriber: str) -> None:
        for statement in sql.FORGET:
            await self._session.execute(statement, subscriber)

    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        await self._session.execute(
            sql.ADD_DEAD_LETTER, subscriber, message_id, error, attempts, utc_now()
        )

    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        if subscriber is None:
            records = await self._session.fetch(sql.DEAD_LETTERS, limit)
        else:
            records = await self._session.fetch(sql.DEAD_LETTERS_OF, subscriber, limit)
        return [dead_letter(record) for record in records]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        record = await self._session.fetch_row(sql.DEAD_LETTER, dead_letter_id)
        return None if record is None else dead_letter(record)

    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        await self._session.execute(sql.REMOVE_DEAD_LETTER, dead_letter_id)

    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        records = await self._session.fetch(
            sql.DEAD_MESSAGE_IDS, subscriber, list(message_ids)
        )
        return {record[0] for record in records}

    # ---- figures for status and metrics

    async def all_checkpoints(self) -> dict[str, int]:
        records = await self._session.fetch(sql.CHECKPOINTS)
        return {record[0]: int(record[1]) for record in records}

    async def count_unhandled(
        self, subscriber: str, *, after: int, names: Collection[str] | None = None
    ) -> int:
        if names is None:
            count = await self._session.fetch_value(
                sql.COUNT_UNHANDLED, after, subscriber
            )
        else:
            count = await self._session.fetch_value(
                sql.COUNT_UNHANDLED_NAMED, after, subscriber, list(names)
            )
        return int(count)

    async def dead_letter_counts(self) -> dict[str, int]:
        records = await self._session.fetch(sql.DEAD_LETTER_COUNTS)
        return {record[0]: int(record[1]) for record in records}
