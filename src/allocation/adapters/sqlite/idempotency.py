"""HTTP idempotency keys in a SQLite file, and the log position of a request's
events (asyncio only).

Write transactions are serialised (they begin IMMEDIATE), so of two claims of one
key the second runs after the first committed, and finds it held.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.sqlite import insert as upsert

from allocation.adapters import idempotency_rows, statements, tables
from allocation.adapters.sqlite import sql
from allocation.adapters.sqlite.session import Write
from allocation.service_layer.exceptions import IdempotencyKeyLost

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    from sqlalchemy.sql.expression import ClauseElement

    from allocation.adapters.sqlite.session import SqliteSession
    from allocation.service_layer.idempotency import KeyRecord, StoredResponse

# Times are passed as SQLite stores them, converted by ``sql.timestamp``.
_TIMES = frozenset({"created_at", "expires_at", "now"})


def _sql(statement: ClauseElement, *names: str) -> str:
    """The SQL of ``statement``, whose parameters must be exactly ``names``."""
    compiled = statements.compile_for(statement, sql.DIALECT)
    if compiled.names != names:
        raise RuntimeError(f"parameters {compiled.names} are not {names}: {statement}")
    for name, process in zip(compiled.names, compiled.processors, strict=True):
        if process is not None and name not in _TIMES:
            raise RuntimeError(f"parameter {name} needs a conversion: {statement}")
    return compiled.sql


CLAIM = _sql(
    idempotency_rows.claim(upsert),
    "key",
    "fingerprint",
    "token",
    "created_at",
    "expires_at",
)
RECORD = _sql(idempotency_rows.RECORD, "key")
COMPLETE = _sql(
    idempotency_rows.COMPLETE,
    "status_code",
    "response",
    "message_ids",
    "expires_at",
    "key",
    "token",
)
RELEASE = _sql(idempotency_rows.RELEASE, "key", "token")
PURGE = _sql(idempotency_rows.PURGE, "now")
_log = tables.event_log
LAST_POSITION_OF = _sql(
    select(func.max(_log.c.position)).where(
        _log.c.message_id.in_(
            # Any number of ids in one statement: they travel as a JSON array.
            select(
                func.json_each(bindparam("message_ids")).table_valued("value").c.value
            )
        )
    ),
    "message_ids",
)


class _Claim(Write):
    """The claim, and in the same trip the record of a key it could not take."""

    __slots__ = ("row",)

    def __init__(self, arguments: Sequence[Any]) -> None:
        super().__init__(CLAIM, arguments)
        self.row: Any = None

    def run(self, connection: sqlite3.Connection) -> None:
        if connection.execute(CLAIM, self.arguments).fetchall():
            return
        self.row = connection.execute(RECORD, self.arguments[:1]).fetchone()


class _Complete(Write):
    """The response stored, or IdempotencyKeyLost (failing its trip)."""

    __slots__ = ("key",)

    def __init__(self, key: str, arguments: Sequence[Any]) -> None:
        super().__init__(COMPLETE, arguments)
        self.key = key

    def run(self, connection: sqlite3.Connection) -> None:
        if connection.execute(self.sql, self.arguments).rowcount != 1:
            raise IdempotencyKeyLost(self.key)


class _Purge(Write):
    """The deletion of expired keys, counting them."""

    __slots__ = ("count",)

    def __init__(self, now: str) -> None:
        super().__init__(PURGE, (now,))
        self.count = 0

    def run(self, connection: sqlite3.Connection) -> None:
        self.count = connection.execute(self.sql, self.arguments).rowcount


class SqliteIdempotencyKeys:
    """The event store's idempotency-key methods (mixed into SqliteEventStore)."""

    _session: SqliteSession

    async def claim_request(
        self,
        key: str,
        fingerprint: str,
        token: str,
        now: datetime.datetime,
        lease_until: datetime.datetime,
    ) -> KeyRecord | None:
        claim = _Claim((key, fingerprint, token, _stored(now), _stored(lease_until)))
        # Never deferred: a claim is its own transaction, not part of a commit.
        await self._session.write(claim)
        if claim.row is None:
            return None
        expires_at = _read_time(claim.row[-1])
        return idempotency_rows.key_record(claim.row, expires_at)

    async def complete_request(
        self,
        key: str,
        token: str,
        response: StoredResponse,
        expires_at: datetime.datetime,
    ) -> None:
        arguments = (
            response.status_code,
            response.body,
            idempotency_rows.message_ids_json(response),
            _stored(expires_at),
            key,
            token,
        )
        # While the unit of work commits, this goes with the COMMIT's trip,
        # which it then fails.
        await self._session.write(_Complete(key, arguments))

    async def release_request(self, key: str, token: str) -> None:
        self._session.queue(Write(RELEASE, (key, token)))

    async def purge_requests(self, now: datetime.datetime) -> int:
        purge = _Purge(_stored(now))
        await self._session.write(purge)
        return purge.count

    async def last_position_of(self, message_ids: Sequence[str]) -> int | None:
        if not message_ids:
            return None
        row = await self._session.fetch_one(
            LAST_POSITION_OF, (json.dumps(list(message_ids)),)
        )
        return None if row[0] is None else int(row[0])


def _stored(moment: datetime.datetime) -> str:
    # Stored as text, which compares as time only in one zone: UTC.
    return sql.timestamp(moment.astimezone(datetime.UTC))


def _read_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
