"""register_user on PostgreSQL at concurrency 32: ours through the public API against
raw asyncpg issuing the same writes, in alternating blocks of one run.

Ours: ``services.register_user`` through ``bootstrap`` (catch-up off, a pool of N
connections: ``ALLOCATION_DATABASE_POOL_SIZE``) on a freshly migrated
``allocation_bench_<pid>`` database, welcome email, log line and coupon going to
fakes. One transaction: BEGIN; the email claim; the users view (an inline
projection); the event-log append, one statement that takes the advisory lock
ordering appenders, notifies the relay's channel and inserts the row; COMMIT;
plus, every 1,000 completions, one batch of ``processed_messages`` rows for the
three handlers that write nothing themselves. "ours: uow commit" is the handler's
body alone on a unit of work from ``bus.uow_factory()`` (``User.register``,
``uow.users.add``, ``commit``): the same transaction without the bus.

Raw: an asyncpg pool of N connections, without asyncpg's reset round trip on
release (ours skips it too), issuing BEGIN, INSERT claims, the users-view upsert,
the very same append statement, COMMIT, and the batched completions; the JSON is
built by ``json.dumps`` (no validation). "raw, asyncpg's default pool" is the
same on a pool with asyncpg's reset: what that round trip costs a plain user.
N tasks in a task group share each block's operations.

The server is ``BENCH_POSTGRES`` (default: trust auth as postgres on
127.0.0.1:5432); the database (``BENCH_DATABASE`` or ``allocation_bench_<pid>``) is
dropped and created at the start and dropped at the end.

Run: .venv/bin/python benchmarks/postgres_register_user.py [--quick] [--profile]
     [--concurrency N ...]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
from _harness import Variant, interleave, profile, quiet_bus, ratio, report
from _postgres import DSN, drop_database, fresh_database, no_reset, spread

from allocation.adapters.postgres import sql
from allocation.domain import events
from allocation.domain.users import User
from allocation.service_layer import handlers, services

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

TARGET = 0.8
_CLAIM = "INSERT INTO claims (kind, value, owner) VALUES ($1, $2, $3)"
_UPSERT_USER = (
    "INSERT INTO users_view (user_id, name, email) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email"
)
_INSERT_PROCESSED_UNLESS_THERE = (
    "INSERT INTO processed_messages (subscriber, message_id) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING"
)
# The handlers of UserRegistered, whose completions the bus records in batches.
_UNTRACKED = tuple(
    handler.__name__ for handler in handlers.EVENT_HANDLERS[events.UserRegistered]
)
_COMPLETIONS_TO_FLUSH = 1000


class _Raw:
    """register_user's writes on an asyncpg pool, nothing else."""

    def __init__(self, pool: Any, label: str) -> None:
        self._pool = pool
        self._label = label
        self._numbers = itertools.count()
        self._completed: list[str] = []

    async def register(self) -> None:
        user_id, message_id, command_id = (str(uuid.uuid4()) for _ in range(3))
        name, email = "Ivan", f"{self._label}-{next(self._numbers)}@example.com"
        payload = json.dumps({"user_id": user_id, "name": name, "email": email})
        now = datetime.datetime.now(datetime.UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_CLAIM, "email", email, user_id)
            await connection.execute(_UPSERT_USER, user_id, name, email)
            await connection.execute(
                sql.APPEND,
                [message_id],
                ["user"],
                [user_id],
                [1],
                [events.UserRegistered.TYPE],
                [payload],
                [events.UserRegistered.SCHEMA_VERSION],
                [now],
                [command_id],
                [command_id],
            )
        self._completed.append(message_id)
        if len(self._completed) * len(_UNTRACKED) >= _COMPLETIONS_TO_FLUSH:
            await self.flush()

    async def flush(self) -> None:
        """Record the pending completions in one transaction, as the bus does."""
        pending, self._completed = self._completed, []
        if not pending:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                _INSERT_PROCESSED_UNLESS_THERE,
                [(handler, mid) for handler in _UNTRACKED for mid in pending],
            )


def _variants(bus: MessageBus, raw: _Raw, plain: _Raw, tasks: int) -> list[Variant]:
    numbers = itertools.count()

    async def register() -> None:
        email = f"ours{tasks}-{next(numbers)}@example.com"
        await services.register_user(bus, "Ivan", email)

    async def commit_a_user() -> None:
        email = f"uow{tasks}-{next(numbers)}@example.com"
        user = User.register(str(uuid.uuid4()), "Ivan", email)
        async with bus.uow_factory() as uow:
            uow.users.add(user)
            await uow.commit()

    def spread_over_tasks(op: Any) -> Any:
        async def run(n: int) -> None:
            await spread(n, tasks, op)

        return run

    return [
        Variant("ours: register_user", spread_over_tasks(register)),
        Variant("ours: uow commit of a User", spread_over_tasks(commit_a_user)),
        Variant("raw asyncpg, same writes", spread_over_tasks(raw.register)),
        Variant("raw, asyncpg's default pool", spread_over_tasks(plain.register)),
    ]


async def _one_concurrency(
    url: str, tasks: int, blocks: int, ops: int, profiling: bool
) -> str | None:
    async with quiet_bus(url, catch_up=False, database_pool_size=tasks) as bus:
        pool: Any = await asyncpg.create_pool(
            DSN, min_size=tasks, max_size=tasks, reset=no_reset
        )
        default_pool: Any = await asyncpg.create_pool(
            DSN, min_size=tasks, max_size=tasks
        )
        try:
            raw, plain = _Raw(pool, f"raw{tasks}"), _Raw(default_pool, f"plain{tasks}")
            variants = _variants(bus, raw, plain, tasks)
            if profiling:
                await profile(variants[0], blocks * ops)
                return None
            await interleave(variants, blocks, ops)
            await raw.flush()
            await plain.flush()
        finally:
            await default_pool.close()
            await pool.close()
    label = f"c={tasks}"
    report(variants, label)
    ours, uow, raw_variant, plain_variant = variants
    achieved = ratio(raw_variant, ours)
    verdict = "meets" if achieved >= TARGET else "misses"
    return (
        f"[{label}] ours/raw {achieved:.3f} ({verdict} the >= {TARGET} target);"
        f" uow/raw {ratio(raw_variant, uow):.3f};"
        f" ours/(raw on asyncpg's default pool) {ratio(plain_variant, ours):.3f}"
    )


async def _main(
    concurrencies: list[int], blocks: int, ops: int, profiling: bool
) -> None:
    url = await fresh_database()
    summary: list[str] = []
    try:
        for tasks in concurrencies:
            line = await _one_concurrency(url, tasks, blocks, ops, profiling)
            if line is not None:
                print(line)
                summary.append(line)
    finally:
        await drop_database()
    if len(summary) > 1:
        print("summary:")
        for line in summary:
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--blocks", type=int, default=None, help="timed blocks")
    parser.add_argument("--ops", type=int, default=None, help="operations per block")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[32], help="tasks (each a run)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile ours with pyinstrument"
    )
    args = parser.parse_args()
    blocks = args.blocks or (4 if args.quick else 8)
    ops = args.ops or (400 if args.quick else 800)
    print(
        f"python {sys.version.split()[0]}, asyncpg {asyncpg.__version__},"
        f" {blocks} blocks x {ops} ops at concurrency {args.concurrency}, medians"
        " over blocks; µs/op is wall time per op of the whole group, so ops/s is"
        " throughput"
    )
    start = time.perf_counter()
    anyio.run(_main, args.concurrency, blocks, ops, args.profile, backend="asyncio")
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
