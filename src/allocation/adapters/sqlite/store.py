"""The event store in a SQLite file: streams, the log, snapshots, claims and the
subscribers' bookkeeping, on the unit of work's session (asyncio only).

Positions are the log's rowid, handed out as max + 1 under the file's write lock:
in commit order, without gaps, so a reader that saw head H sees every event up to H.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

from allocation.adapters import log_rows
from allocation.adapters.sqlite import sql
from allocation.adapters.sqlite.idempotency import SqliteIdempotencyKeys
from allocation.adapters.sqlite.session import Write
from allocation.service_layer.exceptions import ClaimTaken
from allocation.service_layer.ports import AbstractEventStore, Claim, Snapshot

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Collection, Iterable, Sequence

    from allocation.adapters.sqlite.session import SqliteSession
    from allocation.domain import events
    from allocation.service_layer.ports import DeadLetter, LoggedEvent, NewEvent


class _ClaimWrite(Write):
    """Claims, each kept unless another owner holds its value."""

    __slots__ = ("claims",)

    def __init__(self, claims: Sequence[Claim]) -> None:
        super().__init__(sql.CLAIM, many=True)
        self.claims = claims
        self.arguments = claims

    def run(self, connection: sqlite3.Connection) -> None:
        for claim in self.claims:
            key = (claim.kind, claim.value)
            if connection.execute(sql.CLAIM, (*key, claim.owner)).rowcount == 1:
                continue
            # Held already: by the same owner is fine (claiming again).
            owner = connection.execute(sql.CLAIM_OWNER, key).fetchone()
            if owner is None or owner[0] != claim.owner:
                raise ClaimTaken(claim)


# The APPEND statement's parameters, in its order: every column but the position.
_APPEND_COLUMNS = log_rows.LOG_COLUMNS[1:]


class SqliteEventStore(SqliteIdempotencyKeys, AbstractEventStore):
    """The event store in the tables of ``adapters.tables``."""

    def __init__(self, session: SqliteSession) -> None:
        self._session = session

    # ---- streams

    async def append(self, new_events: Sequence[NewEvent]) -> int | None:
        if not new_events:
            return None
        now = log_rows.utc_now()
        # The time as SQLite stores it, converted once for the whole append.
        stored_now = sql.timestamp(now)
        rows = [
            tuple(
                stored_now if column == "occurred_at" else row[column]
                for column in _APPEND_COLUMNS
            )
            for row in (log_rows.log_row(new, now) for new in new_events)
        ]
        write = Write(sql.APPEND, rows, many=True, subject=new_events[0].aggregate_type)
        await self._session.write(write)
        # In a commit the write waits for the COMMIT's trip (see session): the
        # positions are not drawn yet.
        return None

    async def read_stream(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
    ) -> list[LoggedEvent]:
        if up_to_version is None:
            rows = await self._session.fetch_all(
                sql.READ_STREAM, (aggregate_type, aggregate_id, after_version)
            )
        else:
            rows = await self._session.fetch_all(
                sql.READ_STREAM_UP_TO,
                (aggregate_type, aggregate_id, after_version, up_to_version),
            )
        return [_logged(row) for row in rows]

    async def lock_stream(self, aggregate_type: str, aggregate_id: str) -> None:
        # SQLite has one writer at a time: the write transaction locks every stream.
        await self._session.lock()

    async def lock_log(self) -> None:
        await self._session.lock()

    async def stream_ids(self, aggregate_type: str) -> list[str]:
        rows = await self._session.fetch_all(sql.STREAM_IDS, (aggregate_type,))
        return sorted(row[0] for row in rows)

    async def latest_snapshot(
        self, aggregate_type: str, aggregate_id: str
    ) -> Snapshot | None:
        row = await self._session.fetch_one(
            sql.LATEST_SNAPSHOT, (aggregate_type, aggregate_id)
        )
        if row is None:
            return None
        version, schema_version, state = row
        return Snapshot(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            schema_version=schema_version,
            state_json=state,
        )

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        taken_at = sql.timestamp(log_rows.utc_now())
        self._session.queue(
            Write(
                sql.SAVE_SNAPSHOT,
                (
                    snapshot.aggregate_type,
                    snapshot.aggregate_id,
                    snapshot.version,
                    snapshot.schema_version,
                    snapshot.state_json,
                    taken_at,
                ),
            )
        )

    async def claim(self, claims: Sequence[Claim]) -> None:
        if claims:
            await self._session.write(_ClaimWrite(claims))

    async def claim_owner(self, kind: str, value: str) -> str | None:
        row = await self._session.fetch_one(sql.CLAIM_OWNER, (kind, value))
        return None if row is None else str(row[0])

    async def claims(self) -> list[Claim]:
        rows = await self._session.fetch_all(sql.ALL_CLAIMS)
        return [Claim(kind, value, owner) for kind, value, owner in rows]

    async def read_one_snapshot(self) -> None:
        self._session.read_one_snapshot()

    # ---- the whole log

    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        if names is None:
            rows = await self._session.fetch_all(sql.READ_LOG, (after, limit, 0))
        else:
            rows = await self._session.fetch_all(
                sql.READ_LOG_NAMED, (after, _json_list(names), limit, 0)
            )
        return [_logged(row) for row in rows]

    async def read_events(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[tuple[int, events.Event]]:
        if names is None:
            rows = await self._session.fetch_all(sql.READ_EVENTS, (after, limit))
        else:
            rows = await self._session.fetch_all(
                sql.READ_EVENTS_NAMED, (after, _json_list(names), limit)
            )
        return log_rows.positioned_events(rows)

    async def get(self, message_id: str) -> LoggedEvent | None:
        row = await self._session.fetch_one(sql.GET, (message_id,))
        return None if row is None else _logged(row)

    async def last_position(self) -> int:
        row = await self._session.fetch_one(sql.LAST_POSITION)
        return int(row[0])

    # ---- the subscribers' bookkeeping

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        rows = [(subscriber, message_id) for message_id in message_ids]
        if not rows:
            return
        # Both go with the next trip (a batch's commit, in catch-up): a message
        # recorded already then fails that trip, and the commit, with
        # AlreadyProcessed.
        statement = (
            sql.MARK_PROCESSED if exactly_once else sql.MARK_PROCESSED_UNLESS_THERE
        )
        self._session.queue(Write(statement, rows, many=True))

    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        rows = await self._session.fetch_all(
            sql.PROCESSED_AMONG, (subscriber, _json_list(message_ids))
        )
        return {row[0] for row in rows}

    async def checkpoint(self, subscriber: str) -> int | None:
        row = await self._session.fetch_one(sql.CHECKPOINT, (subscriber,))
        return None if row is None else int(row[0])

    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        self._session.queue(Write(sql.SET_CHECKPOINT, (subscriber, position)))

    async def forget(self, subscriber: str) -> None:
        self._session.queue(*(Write(delete, (subscriber,)) for delete in sql.FORGET))

    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        last_tried = sql.timestamp(log_rows.utc_now())
        self._session.queue(
            Write(
                sql.ADD_DEAD_LETTER,
                (subscriber, message_id, error, attempts, last_tried),
            )
        )

    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        if subscriber is None:
            rows = await self._session.fetch_all(sql.DEAD_LETTERS, (limit, 0))
        else:
            rows = await self._session.fetch_all(
                sql.DEAD_LETTERS_OF, (subscriber, limit, 0)
            )
        return [_dead_letter(row) for row in rows]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        row = await self._session.fetch_one(sql.DEAD_LETTER, (dead_letter_id,))
        return None if row is None else _dead_letter(row)

    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        self._session.queue(Write(sql.REMOVE_DEAD_LETTER, (dead_letter_id,)))

    async def dead_message_ids(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        if not message_ids:
            return set()
        rows = await self._session.fetch_all(
            sql.DEAD_MESSAGE_IDS, (subscriber, _json_list(message_ids))
        )
        return {row[0] for row in rows}

    # ---- figures for status and metrics

    async def all_checkpoints(self) -> dict[str, int]:
        rows = await self._session.fetch_all(sql.CHECKPOINTS)
        return {subscriber: int(position) for subscriber, position in rows}

    async def count_unhandled(
        self, subscriber: str, *, after: int, names: Collection[str] | None = None
    ) -> int:
        if names is None:
            row = await self._session.fetch_one(
                sql.COUNT_UNHANDLED, (after, subscriber, subscriber)
            )
        else:
            row = await self._session.fetch_one(
                sql.COUNT_UNHANDLED_NAMED,
                (after, subscriber, subscriber, _json_list(names)),
            )
        return int(row[0])

    async def dead_letter_counts(self) -> dict[str, int]:
        rows = await self._session.fetch_all(sql.DEAD_LETTER_COUNTS)
        return {subscriber: int(count) for subscriber, count in rows}


def _json_list(values: Iterable[str]) -> str:
    # Not ASCII-escaped: a value SQLite cannot store (a lone surrogate) is refused
    # by the driver, as it would be anywhere else, instead of matching nothing.
    return json.dumps(list(values), ensure_ascii=False)


def _logged(row: Sequence[Any]) -> LoggedEvent:
    record = dict(zip(log_rows.LOG_COLUMNS, row, strict=True))
    # Stored as SQLAlchemy's SQLite dialect writes times: UTC, without the zone.
    record["occurred_at"] = datetime.datetime.fromisoformat(record["occurred_at"])
    return log_rows.logged_event(record)


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    record = dict(zip(sql.DEAD_LETTER_COLUMNS, row, strict=True))
    record["last_tried"] = datetime.datetime.fromisoformat(record["last_tried"])
    return log_rows.dead_letter(record)
