"""A registered user committed through the SQLite engine's unit of work, against raw
aiosqlite doing the same durable writes in one transaction.

Ours: ``User.register(...)``, ``uow.users.add(user)``, ``await uow.commit()`` on a
``SqliteDatabase`` (the email claim, the inline users view and the event in the
log, in one transaction). Raw: one aiosqlite connection with the same PRAGMAs
(WAL, synchronous=NORMAL, foreign keys, busy timeout) and aiosqlite's own API:
BEGIN IMMEDIATE, INSERT event_log, INSERT claims, INSERT users_view, COMMIT (five
trips). "Raw, one trip" sends the same transaction as one function to the worker
thread, as the engine does: the floor for any design on aiosqlite. All write to
the same migrated file, in alternating blocks; a "trip" is one call handed to
aiosqlite's worker thread (a thread hand-off and a wake-up of the event loop).

Run: .venv/bin/python benchmarks/register_user_sqlite_store.py [--quick]
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite
import anyio
from _harness import Variant, count_trips, interleave, parse_args, ratio, report

from allocation.adapters import database, migrations
from allocation.adapters.sqlite.database import BUSY_TIMEOUT_MS, SqliteDatabase
from allocation.adapters.sqlite.session import on_worker
from allocation.domain.users import User

if TYPE_CHECKING:
    import sqlite3

PRAGMAS = (
    f"busy_timeout={BUSY_TIMEOUT_MS}",
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
)
_INSERT_EVENT = (
    "INSERT INTO event_log (message_id, aggregate_type, aggregate_id,"
    " aggregate_version, name, payload, schema_version, occurred_at,"
    " correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CLAIM = "INSERT INTO claims (kind, value, owner) VALUES (?, ?, ?)"
_INSERT_USER = "INSERT INTO users_view (user_id, name, email) VALUES (?, ?, ?)"
_STATEMENTS = (_INSERT_EVENT, _INSERT_CLAIM, _INSERT_USER)


async def migrate(url: str) -> None:
    """Bring a fresh database to head, as ``allocation db upgrade`` does."""
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


def _raw_variant(connection: aiosqlite.Connection) -> Variant:
    numbers = itertools.count()

    async def register() -> None:
        user_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
        name, email = "Ivan", f"raw{next(numbers)}@example.com"
        payload = json.dumps({"user_id": user_id, "name": name, "email": email})
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        await connection.execute("BEGIN IMMEDIATE")
        try:
            event = (message_id, "user", user_id, 1, "user_registered", payload)
            await connection.execute(_INSERT_EVENT, (*event, 1, now, None, None))
            await connection.execute(_INSERT_CLAIM, ("email", email, user_id))
            await connection.execute(_INSERT_USER, (user_id, name, email))
            await connection.commit()
        except BaseException:
            await connection.rollback()
            raise

    async def run(n: int) -> None:
        for _ in range(n):
            await register()

    return Variant("raw aiosqlite, 3 inserts", run)


def _one_trip(
    connection: sqlite3.Connection, rows: tuple[tuple[object, ...], ...]
) -> None:
    """The same transaction as one function on aiosqlite's worker thread."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, arguments in zip(_STATEMENTS, rows, strict=True):
            connection.execute(sql, arguments)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


def _raw_one_trip_variant(connection: aiosqlite.Connection) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            user_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
            name, email = "Ivan", f"trip{next(numbers)}@example.com"
            payload = json.dumps({"user_id": user_id, "name": name, "email": email})
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            event = (message_id, "user", user_id, 1, "user_registered", payload)
            rows = (
                (*event, 1, now, None, None),
                ("email", email, user_id),
                (user_id, name, email),
            )
            await on_worker(connection, _one_trip, rows)

    return Variant("raw, one trip (the floor)", run)


def _our_variant(opened: SqliteDatabase) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            user = User.register(
                str(uuid.uuid4()), "Ivan", f"ours{next(numbers)}@example.com"
            )
            async with opened.unit_of_work() as uow:
                uow.users.add(user)
                await uow.commit()

    return Variant("ours: uow commit of a User", run)


async def _main(blocks: int, ops: int, trip_ops: int) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            opened = await SqliteDatabase.open(url, pool_size=5)
            stack.push_async_callback(opened.close)
            # isolation_level=None: BEGIN is ours to say, as the engine's is.
            connection = await aiosqlite.connect(path, isolation_level=None)
            stack.push_async_callback(connection.close)
            for pragma in PRAGMAS:
                await connection.execute(f"PRAGMA {pragma}")
            ours, raw = _our_variant(opened), _raw_variant(connection)
            floor = _raw_one_trip_variant(connection)
            variants = [ours, raw, floor]
            await interleave(variants, blocks, ops)
            report(variants)
            print(
                f"tx/s: ours {1e6 / ours.median_us():,.0f}, raw {1e6 / raw.median_us():,.0f};"
                f" ours/raw throughput (raw µs / our µs): {ratio(raw, ours):.3f}"
                " (target >= 0.5, aim 0.7)"
            )
            print(
                "ours/raw in one trip (what the engine's design allows at best):"
                f" {ratio(floor, ours):.3f}"
            )
            print(f"trips (calls handed to aiosqlite's thread), over {trip_ops} ops:")
            await count_trips(ours.name, ours.run, trip_ops)
            await count_trips(raw.name, raw.run, trip_ops)
            await count_trips(floor.name, floor.run, trip_ops)


def main() -> None:
    args = parse_args(__doc__ or "", blocks=20, ops=500)
    print(
        f"python {sys.version.split()[0]}, aiosqlite {aiosqlite.__version__},"
        f" sqlite {aiosqlite.sqlite_version}, {args.blocks} blocks x {args.ops} ops,"
        " medians over blocks"
    )
    start = time.perf_counter()
    anyio.run(_main, args.blocks, args.ops, 200, backend="asyncio")
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
