"""Shared set-up of the SQLite benchmarks: a migrated file, and raw aiosqlite set up
as the engine sets up its connections, with the plain SQL our engine's statements
amount to.

The raw side writes the same rows with the same guarantees (BEGIN IMMEDIATE, the
same PRAGMAs, the same constraints), using aiosqlite's own API: one call handed to
its worker thread per statement. ``one_trip`` sends a whole transaction as one
function instead, as the engine does: the floor for any design on aiosqlite.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import aiosqlite

from allocation.adapters import database, migrations
from allocation.adapters.sqlite.database import BUSY_TIMEOUT_MS
from allocation.adapters.sqlite.session import on_worker

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence
    from pathlib import Path

PRAGMAS = (
    f"busy_timeout={BUSY_TIMEOUT_MS}",
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
)
INSERT_EVENT = (
    "INSERT INTO event_log (message_id, aggregate_type, aggregate_id,"
    " aggregate_version, name, payload, schema_version, occurred_at,"
    " correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A taken value fails on the primary key, as ours refuses it (ours inserts unless
# there and then asks who holds it; that costs no trip when it is free).
INSERT_CLAIM = "INSERT INTO claims (kind, value, owner) VALUES (?, ?, ?)"
UPSERT_USER = (
    "INSERT INTO users_view (user_id, name, email) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email"
)
LATEST_SNAPSHOT = (
    "SELECT version, schema_version, state FROM snapshots"
    " WHERE aggregate_type = ? AND aggregate_id = ?"
)
READ_STREAM = (
    "SELECT aggregate_version, name, payload FROM event_log"
    " WHERE aggregate_type = ? AND aggregate_id = ? AND aggregate_version > ?"
    " ORDER BY aggregate_version"
)
SAVE_SNAPSHOT = (
    "INSERT INTO snapshots (aggregate_type, aggregate_id, version, schema_version,"
    " state, taken_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET"
    " version = excluded.version, schema_version = excluded.schema_version,"
    " state = excluded.state, taken_at = excluded.taken_at"
    " WHERE snapshots.version <= excluded.version"
)
UPSERT_ALLOCATION = (
    "INSERT INTO allocations_view (orderid, sku, qty, batchref, version, allocated)"
    " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (orderid, sku, qty) DO UPDATE SET"
    " batchref = excluded.batchref, version = excluded.version,"
    " allocated = excluded.allocated WHERE allocations_view.version < excluded.version"
)
INSERT_PROCESSED = (
    "INSERT INTO processed_messages (subscriber, message_id) VALUES (?, ?)"
)
INSERT_PROCESSED_UNLESS_THERE = f"{INSERT_PROCESSED} ON CONFLICT DO NOTHING"
# The bus records what handlers without a commit of their own handled, in one
# transaction every this many completions (messagebus._COMPLETIONS_TO_FLUSH).
COMPLETIONS_TO_FLUSH = 1000

Statement = tuple[str, "Sequence[object]"]


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def migrate(url: str) -> None:
    """Bring a fresh database to head, as ``allocation db upgrade`` does."""
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


async def open_raw(path: Path) -> aiosqlite.Connection:
    """One aiosqlite connection set up as the engine sets up its own."""
    # isolation_level=None: BEGIN is ours to say, as it is the engine's.
    connection = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await connection.execute(f"PRAGMA {pragma}")
    return connection


def now_text() -> str:
    """A time as the engine stores it (SQLite keeps times as text)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def transaction(
    connection: aiosqlite.Connection, statements: Sequence[Statement]
) -> None:
    """One write transaction through aiosqlite's API: a trip per statement."""
    await connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, arguments in statements:
            await connection.execute(sql, arguments)
        await connection.commit()
    except BaseException:
        await connection.rollback()
        raise


def _run_all(connection: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, arguments in statements:
            connection.execute(sql, arguments)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


async def one_trip(
    connection: aiosqlite.Connection, statements: Sequence[Statement]
) -> None:
    """The same transaction as one function on aiosqlite's worker thread."""
    await on_worker(connection, _run_all, statements)


class RawCompletions:
    """Records handlers' completions in batches, as the bus does."""

    def __init__(self, connection: aiosqlite.Connection, handlers: Sequence[str]):
        self._connection = connection
        self._handlers = tuple(handlers)
        self._pending: list[str] = []

    async def completed(self, message_id: str, *, in_one_trip: bool) -> None:
        """Every handler handled ``message_id``; flush once enough are pending."""
        self._pending.append(message_id)
        if len(self._pending) * len(self._handlers) >= COMPLETIONS_TO_FLUSH:
            await self.flush(in_one_trip=in_one_trip)

    async def flush(self, *, in_one_trip: bool = True) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        if in_one_trip:
            statements = [
                (INSERT_PROCESSED_UNLESS_THERE, (handler, message_id))
                for handler in self._handlers
                for message_id in pending
            ]
            await one_trip(self._connection, statements)
            return
        await self._connection.execute("BEGIN IMMEDIATE")
        try:
            for handler in self._handlers:
                await self._connection.executemany(
                    INSERT_PROCESSED_UNLESS_THERE,
                    [(handler, message_id) for message_id in pending],
                )
            await self._connection.commit()
        except BaseException:
            await self._connection.rollback()
            raise
