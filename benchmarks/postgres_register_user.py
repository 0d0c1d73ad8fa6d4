"""register_user on PostgreSQL at concurrency 1, 8 and 32: ours, ours without the
append lock, and raw asyncpg issuing the same statements, in alternating blocks.

Ours: ``services.register_user`` through ``bootstrap`` (catch-up off, a pool of N
connections: ``ALLOCATION_DATABASE_POOL_SIZE``) on a freshly migrated
``allocation_bench_<pid>`` database, welcome email, log line and coupon going to fakes. N
tasks in a task group share each block's operations. Every op is two transactions:

1. BEGIN; INSERT users (the ORM's flush); the event-log append: one statement that
   takes the advisory lock ordering appenders, notifies the relay's channel and
   inserts the JSON payload (``postgres_driver.APPEND``); COMMIT
2. BEGIN; INSERT users_view ... ON CONFLICT DO UPDATE; INSERT processed_messages;
   COMMIT

plus, every 1,000 completions, one batch of ``processed_messages`` rows for the three
handlers that write nothing themselves.

"ours, no append lock": the same path with the append statement swapped (for its own
blocks only) for one without the advisory lock that queues appenders until commit:
what that lock costs. Raw: an asyncpg pool of N connections issuing the statements
above, the append being our very statement ("raw asyncpg + lock") or a plain INSERT
("raw asyncpg").

Run: .venv/bin/python benchmarks/postgres_register_user.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
from _harness import Variant, interleave, parse_args, profile, ratio, report
from _postgres import DSN, drop_database, fresh_database

from allocation import config
from allocation.adapters import postgres_driver
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from allocation.service_layer.messagebus import MessageBus

CONCURRENCIES = (1, 8, 32)
TARGET_AT_32 = 0.5
_INSERT_USER = (
    "INSERT INTO users (id, name, email, version_number) VALUES ($1, $2, $3, $4)"
)
_INSERT_EVENT = (
    "INSERT INTO event_log (message_id, aggregate_type, aggregate_id,"
    " aggregate_version, name, payload, schema_version, occurred_at, correlation_id,"
    " causation_id)"
    " VALUES ($1, $2, $3, $4, $5, $6::json, 1, $7, $8, $9) RETURNING position"
)
_UPSERT_USERS_VIEW = (
    "INSERT INTO users_view (user_id, name, email) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email"
)
_INSERT_PROCESSED = (
    "INSERT INTO processed_messages (subscriber, message_id) VALUES ($1, $2)"
)
_INSERT_PROCESSED_UNLESS_THERE = f"{_INSERT_PROCESSED} ON CONFLICT DO NOTHING"
_APPEND_UNLOCKED = postgres_driver.APPEND.replace(
    f"pg_advisory_xact_lock({postgres_driver.APPEND_LOCK_KEY})", "1"
)
_UNTRACKED_HANDLERS = ("send_welcome_email", "log_registration", "send_coupon")
_COMPLETIONS_TO_FLUSH = 1000


async def spread(n: int, tasks: int, op: Callable[[], Awaitable[None]]) -> None:
    """Run ``n`` calls of ``op`` over ``tasks`` concurrent tasks, each in a loop."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await op()

    async with anyio.create_task_group() as task_group:
        for i in range(tasks):
            count = n // tasks + (1 if i < n % tasks else 0)
            if count:
                task_group.start_soon(worker, count)


class _Raw:
    """register_user's statements on an asyncpg pool, nothing else."""

    def __init__(self, pool: asyncpg.Pool, *, lock: bool) -> None:
        self._pool = pool
        self._lock = lock
        self._numbers = itertools.count()
        self._completed: list[str] = []

    async def register(self) -> None:
        user_id, message_id, command_id = (str(uuid.uuid4()) for _ in range(3))
        prefix = f"{'rawlock' if self._lock else 'raw'}{id(self._pool)}-"
        name, email = "Ivan", f"{prefix}{next(self._numbers)}@example.com"
        payload = json.dumps({"user_id": user_id, "name": name, "email": email})
        now = datetime.datetime.now(datetime.UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_INSERT_USER, user_id, name, email, 1)
            if self._lock:
                await connection.execute(
                    postgres_driver.APPEND,
                    [message_id],
                    ["user"],
                    [user_id],
                    [1],
                    ["user_registered"],
                    [payload],
                    [1],  # the schema version
                    [now],
                    [command_id],
                    [command_id],
                )
            else:
                await connection.fetchval(
                    _INSERT_EVENT,
                    message_id,
                    "user",
                    user_id,
                    1,
                    "user_registered",
                    payload,
                    now,
                    command_id,
                    command_id,
                )
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_UPSERT_USERS_VIEW, user_id, name, email)
            await connection.execute(_INSERT_PROCESSED, "users_view", message_id)
        self._completed.append(message_id)
        if len(self._completed) * len(_UNTRACKED_HANDLERS) >= _COMPLETIONS_TO_FLUSH:
            await self.flush()

    async def flush(self) -> None:
        """Record the pending completions in one transaction, as the bus does."""
        pending, self._completed = self._completed, []
        if not pending:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                _INSERT_PROCESSED_UNLESS_THERE,
                [(s, mid) for s in _UNTRACKED_HANDLERS for mid in pending],
            )


@contextlib.contextmanager
def append_lock_skipped() -> Iterator[None]:
    """Our append without its advisory lock (its notification and insert kept)."""
    locked = postgres_driver.APPEND
    postgres_driver.APPEND = _APPEND_UNLOCKED
    try:
        yield
    finally:
        postgres_driver.APPEND = locked


def _variants(
    bus: MessageBus, raw: _Raw, raw_locked: _Raw, tasks: int
) -> list[Variant]:
    numbers = itertools.count()

    async def register() -> None:
        await services.register_user(
            bus, "Ivan", f"ours{tasks}-{next(numbers)}@example.com"
        )

    async def ours(n: int) -> None:
        await spread(n, tasks, register)

    async def ours_unlocked(n: int) -> None:
        with append_lock_skipped():
            await spread(n, tasks, register)

    async def raw_run(n: int) -> None:
        await spread(n, tasks, raw.register)

    async def raw_locked_run(n: int) -> None:
        await spread(n, tasks, raw_locked.register)

    return [
        Variant("ours: register_user", ours),
        Variant("ours, no append lock", ours_unlocked),
        Variant("raw asyncpg", raw_run),
        Variant("raw asyncpg + lock", raw_locked_run),
    ]


async def _main(blocks: int, ops: int, profiling: bool) -> None:
    url = await fresh_database()
    summary: list[str] = []
    try:
        for tasks in CONCURRENCIES:
            async with bootstrap(
                settings=config.Settings(
                    database_url=url, catch_up_interval=0, database_pool_size=tasks
                ),
                notifications=FakeNotifications(),
                console=FakeConsole(),
                catch_up=False,
            ) as bus:
                pool: Any = await asyncpg.create_pool(
                    DSN, min_size=tasks, max_size=tasks
                )
                try:
                    raw, raw_locked = _Raw(pool, lock=False), _Raw(pool, lock=True)
                    variants = _variants(bus, raw, raw_locked, tasks)
                    if profiling:
                        await profile(variants[0], blocks * ops)
                        continue
                    # More work per block with more tasks: each task still loops.
                    block_ops = ops * (1 if tasks == 1 else 2)
                    await interleave(variants, blocks, block_ops)
                    await raw.flush()
                    await raw_locked.flush()
                finally:
                    await pool.close()
                label = f"c={tasks}"
                report(variants, label)
                ours, unlocked, plain, locked = variants
                lock_cost = ours.median_us() - unlocked.median_us()
                line = (
                    f"[{label}] ours/raw {ratio(plain, ours):.3f};"
                    f" ours/(raw + lock) {ratio(locked, ours):.3f};"
                    f" ours-no-lock/raw {ratio(plain, unlocked):.3f};"
                    f" the append lock costs ours {lock_cost:.0f} µs/op"
                    f" ({ratio(unlocked, ours):.3f} of the unlocked throughput kept)"
                )
                if tasks == CONCURRENCIES[-1]:
                    verdict = (
                        "meets" if ratio(plain, ours) >= TARGET_AT_32 else "misses"
                    )
                    line += f"; {verdict} the >= {TARGET_AT_32} target"
                print(line)
                summary.append(line)
    finally:
        await drop_database()
    if summary:
        print("summary:")
        for line in summary:
            print(f"  {line}")


def main() -> None:
    args = parse_args(__doc__ or "", blocks=6, ops=200)
    print(
        f"python {sys.version.split()[0]}, asyncpg {asyncpg.__version__},"
        f" {args.blocks} blocks x {args.ops} ops (x2 at c>1), medians over blocks;"
        " µs/op is wall time per op of the whole group, so ops/s is throughput"
    )
    start = time.perf_counter()
    anyio.run(_main, args.blocks, args.ops, args.profile, backend="asyncio")
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
