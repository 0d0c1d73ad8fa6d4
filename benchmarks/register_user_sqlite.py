"""register_user end to end on a SQLite file (WAL): with the event log, without, and raw.

Ours: ``services.register_user`` through ``bootstrap`` on a migrated file, with the
welcome email, log line and coupon going to fakes. Every op is two transactions: the
user and its UserRegistered event in ``event_log``, then the ``users_view``
projection with its ``processed_messages`` row; the three handlers without a database
write are recorded in ``processed_messages`` in one batch every 1,000 completions.

"log off" is the same path with ``SqlAlchemyEventLog.append`` patched to a no-op for
its own blocks only: what the log costs the write path. Raw: one aiosqlite connection
with the same PRAGMAs (WAL, synchronous=NORMAL, foreign keys, busy timeout) issuing
the statements ours issues (the trip counter lists them), with the same guarantees:
BEGIN IMMEDIATE, INSERT users, INSERT event_log (JSON payload), COMMIT; BEGIN
IMMEDIATE, upsert users_view, INSERT processed_messages, COMMIT; and the batched
completions. All three write to the same file, in alternating blocks. Background
catch-up is off during the blocks (they measure the write path); one pass over
everything written is timed at the end, which is what the background loop costs per
logged event. A "trip" is one call handed to aiosqlite's worker thread (a thread
hand-off and a wake-up of the event loop).

Run: .venv/bin/python benchmarks/register_user_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import statistics
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
from allocation.adapters import database, migrations, sql_eventlog
from allocation.bootstrap import bootstrap
from allocation.service_layer import catchup, services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from allocation.adapters.eventlog import NewEvent

    from allocation.service_layer.messagebus import MessageBus

PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"busy_timeout={database.SQLITE_BUSY_TIMEOUT_MS}",
)
# What the bus does with handlers that commit nothing (messagebus._COMPLETIONS_TO_FLUSH).
_UNTRACKED_HANDLERS = ("send_welcome_email", "log_registration", "send_coupon")
_COMPLETIONS_TO_FLUSH = 1000
# The statements ours sends, as the trip counter shows them.
_INSERT_USER = "INSERT INTO users (id, name, email, version_number) VALUES (?, ?, ?, ?)"
_INSERT_EVENT = (
    "INSERT INTO event_log (message_id, aggregate_type, aggregate_id,"
    " aggregate_version, name, payload, occurred_at, correlation_id, causation_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_USERS_VIEW = (
    "INSERT INTO users_view (user_id, name, email) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email"
)
_INSERT_PROCESSED = (
    "INSERT INTO processed_messages (subscriber, message_id) VALUES (?, ?)"
)
_INSERT_PROCESSED_UNLESS_THERE = f"{_INSERT_PROCESSED} ON CONFLICT DO NOTHING"


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


class _RawRegistration:
    """register_user's statements on one aiosqlite connection, nothing else."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._numbers = itertools.count()
        self._completed: list[str] = []

    async def _transaction(self, *statements: tuple[str, Sequence[object]]) -> None:
        await self._connection.execute("BEGIN IMMEDIATE")
        try:
            for sql, parameters in statements:
                await self._connection.execute(sql, parameters)
            await self._connection.commit()
        except BaseException:
            await self._connection.rollback()
            raise

    async def register(self) -> None:
        user_id, message_id, command_id = (str(uuid.uuid4()) for _ in range(3))
        name, email = "Ivan", f"raw{next(self._numbers)}@example.com"
        now = datetime.datetime.now(datetime.UTC)
        payload = json.dumps({"user_id": user_id, "name": name, "email": email})
        await self._transaction(
            (
                _INSERT_USER,
                (user_id, name, email, 1),
            ),
            (
                _INSERT_EVENT,
                (
                    message_id,
                    "user",
                    user_id,
                    1,
                    "user_registered",
                    payload,
                    now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    command_id,
                    command_id,
                ),
            ),
        )
        await self._transaction(
            (
                _UPSERT_USERS_VIEW,
                (user_id, name, email),
            ),
            (
                _INSERT_PROCESSED,
                ("users_view", message_id),
            ),
        )
        self._completed.append(message_id)
        if len(self._completed) * len(_UNTRACKED_HANDLERS) >= _COMPLETIONS_TO_FLUSH:
            await self.flush()

    async def flush(self) -> None:
        """Record the pending completions, as the bus does every 1,000."""
        pending, self._completed = self._completed, []
        await self._connection.execute("BEGIN IMMEDIATE")
        try:
            for subscriber in _UNTRACKED_HANDLERS:
                await self._connection.executemany(
                    _INSERT_PROCESSED_UNLESS_THERE,
                    [(subscriber, message_id) for message_id in pending],
                )
            await self._connection.commit()
        except BaseException:
            await self._connection.rollback()
            raise


def _raw_variant(raw: _RawRegistration) -> Variant:
    async def run(n: int) -> None:
        for _ in range(n):
            await raw.register()

    return Variant("raw aiosqlite, same stmts", run)


async def _skip_append(
    _log: sql_eventlog.SqlAlchemyEventLog, _new_events: Sequence[NewEvent]
) -> None:
    """The no-op that stands in for the log in the "log off" variant."""


@contextlib.contextmanager
def log_switched_off() -> Iterator[None]:
    """Patch ``SqlAlchemyEventLog.append`` to a no-op; restore it on the way out."""
    original = sql_eventlog.SqlAlchemyEventLog.append
    sql_eventlog.SqlAlchemyEventLog.append = _skip_append  # type: ignore[method-assign,assignment]  # the variant's point
    try:
        yield
    finally:
        sql_eventlog.SqlAlchemyEventLog.append = original  # type: ignore[method-assign]  # restored


def _our_variants(bus: MessageBus) -> tuple[Variant, Variant]:
    numbers = itertools.count()

    async def with_log(n: int) -> None:
        for _ in range(n):
            email = f"ours{next(numbers)}@example.com"
            await services.register_user(bus, "Ivan", email)

    async def without_log(n: int) -> None:
        with log_switched_off():
            await with_log(n)

    return (
        Variant("ours: register_user", with_log),
        Variant("ours, log off", without_log),
    )


async def _time_catch_up_pass(bus: MessageBus) -> None:
    """One catch-up pass over what the blocks logged (all of it already handled)."""
    async with bus.uow_factory() as uow:
        logged = await uow.event_log.last_position()
    start = time.perf_counter()
    delivered = await catchup.catch_up(bus)
    took = time.perf_counter() - start
    print(
        f"background catch-up, one pass over {logged} logged events, all handled:"
        f" {took * 1e3:.0f} ms ({took / logged * 1e6:.1f} µs per logged event,"
        f" {delivered} redelivered)"
    )


async def _main(blocks: int, ops: int, trip_ops: int, profiling: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(
                bootstrap(
                    # No background passes inside the timed blocks (see above).
                    settings=config.Settings(database_url=url, catch_up_interval=0),
                    notifications=FakeNotifications(),
                    console=FakeConsole(),
                )
            )
            raw_connection = await open_raw(path)
            stack.push_async_callback(raw_connection.close)
            ours, log_off = _our_variants(bus)
            raw_registration = _RawRegistration(raw_connection)
            raw = _raw_variant(raw_registration)
            if profiling:
                await profile(ours, blocks * ops)
                return
            variants = [ours, log_off, raw]
            await interleave(variants, blocks, ops)
            report(variants)
            with_without = ratio(log_off, ours)
            print(
                "throughput with the log / without it (log-off µs / our µs):"
                f" {with_without:.3f} (target >= 0.8); the log costs"
                f" {ours.median_us() - log_off.median_us():.1f} µs/op"
            )
            print(
                "ours/raw throughput (raw µs / our µs, higher is better):"
                f" {ratio(raw, ours):.3f}; log off/raw {ratio(raw, log_off):.3f};"
                f" our extra cost {ours.median_us() - raw.median_us():.1f} µs/op"
            )
            cpu_log = statistics.median(ours.loop_cpu_per_op) - statistics.median(
                log_off.loop_cpu_per_op
            )
            print(f"the log's event-loop-thread CPU: {cpu_log * 1e6:.0f} µs/op")
            print(f"trips (calls handed to aiosqlite's thread), over {trip_ops} ops:")
            our_trips = await count_trips(ours.name, ours.run, trip_ops)
            await count_trips(log_off.name, log_off.run, trip_ops)
            raw_trips = await count_trips(raw.name, raw.run, trip_ops)
            explain_gap(ours, our_trips, raw, raw_trips)
            # Raw's events are in the log too, so their completions must be as well.
            await raw_registration.flush()
            await _time_catch_up_pass(bus)


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
        # A multiple of 334 ops includes the batched completions as they come.
        334 if args.quick else 668,
        args.profile,
        backend="asyncio",
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
