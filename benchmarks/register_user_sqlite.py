"""register_user end to end on a SQLite file (WAL), beside raw aiosqlite doing the same.

Ours: ``services.register_user`` through ``bootstrap`` on a migrated file, with the
welcome email, log line and coupon going to fakes. Raw: one aiosqlite connection with
the same PRAGMAs (WAL, synchronous=NORMAL, foreign keys, busy timeout) and the same
guarantees: BEGIN IMMEDIATE, INSERT INTO users, COMMIT, one user after another. Both
write to the same file, in alternating blocks. A "trip" is one call handed to
aiosqlite's worker thread (a thread hand-off and a wake-up of the event loop).

Run: .venv/bin/python benchmarks/register_user_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite
import anyio
from _harness import (
    Variant,
    count_trips,
    explain_gap,
    interleave,
    parse_args,
    profile,
    ratio,
    report,
)

from allocation import config
from allocation.adapters import database, migrations
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"busy_timeout={database.SQLITE_BUSY_TIMEOUT_MS}",
)


async def migrate(url: str) -> None:
    """Bring a fresh database to head, as ``allocation db upgrade`` does."""
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


async def open_raw(path: Path) -> aiosqlite.Connection:
    """One aiosqlite connection set up as our engine sets up its connections."""
    # isolation_level=None: we emit BEGIN ourselves, as the engine does.
    connection = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await connection.execute(f"PRAGMA {pragma}")
    return connection


def _raw_variant(connection: aiosqlite.Connection) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            user_id = str(uuid.uuid4())
            email = f"raw{next(numbers)}@example.com"
            await connection.execute("BEGIN IMMEDIATE")
            try:
                await connection.execute(
                    "INSERT INTO users (id, name, email) VALUES (?, ?, ?)",
                    (user_id, "Ivan", email),
                )
                await connection.commit()
            except BaseException:
                await connection.rollback()
                raise

    return Variant("raw aiosqlite", run)


def _our_variant(bus: MessageBus) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            email = f"ours{next(numbers)}@example.com"
            await services.register_user(bus, "Ivan", email)

    return Variant("ours: services.register_user", run)


async def _main(blocks: int, ops: int, trip_ops: int, profiling: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(
                bootstrap(
                    settings=config.Settings(database_url=url),
                    notifications=FakeNotifications(),
                    console=FakeConsole(),
                )
            )
            raw_connection = await open_raw(path)
            stack.push_async_callback(raw_connection.close)
            ours, raw = _our_variant(bus), _raw_variant(raw_connection)
            if profiling:
                await profile(ours, blocks * ops)
                return
            variants = [ours, raw]
            await interleave(variants, blocks, ops)
            report(variants)
            print(
                "ours/raw throughput (raw µs / our µs, higher is better):"
                f" {ratio(raw, ours):.3f}; our extra cost"
                f" {ours.median_us() - raw.median_us():.1f} µs/op"
            )
            print(f"trips (calls handed to aiosqlite's thread), over {trip_ops} ops:")
            our_trips = await count_trips(ours.name, ours.run, trip_ops)
            raw_trips = await count_trips(raw.name, raw.run, trip_ops)
            explain_gap(ours, our_trips, raw, raw_trips)


def main() -> None:
    args = parse_args(__doc__ or "", blocks=20, ops=400)
    print(
        f"python {sys.version.split()[0]}, aiosqlite {aiosqlite.__version__},"
        f" {args.blocks} blocks x {args.ops} ops, medians over blocks"
    )
    start = time.perf_counter()
    anyio.run(
        _main,
        args.blocks,
        args.ops,
        min(args.ops, 200),
        args.profile,
        backend="asyncio",
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
