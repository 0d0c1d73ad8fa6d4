"""register_user on PostgreSQL at concurrency 32: our unit of work against raw asyncpg
issuing the same writes, in alternating blocks of one run.

Ours: the register_user handler's body on ``PostgresDatabase.unit_of_work()``
(register the user, add it to the unit of work, commit): BEGIN; the email claim;
the users view, an inline projection; the event-log append, which takes the
advisory lock ordering appenders and notifies the relay's channel; COMMIT.
Raw: an asyncpg pool issuing those statements as plain SQL strings, the append
being the very same statement. Both pools hold 32 connections and skip asyncpg's
reset-on-release round trip (ours never needs it); "raw, asyncpg's default pool"
shows what that round trip costs a plain asyncpg user. 32 tasks in a task group
share each block's operations.

The database ``pgstore_bench_<pid>`` is created at the start on the server of
``BENCH_POSTGRES`` (default: trust auth as postgres on 127.0.0.1:5432), migrated
to alembic's head, and dropped at the end.

Run: .venv/bin/python benchmarks/postgres_store.py [--quick] [--profile]
"""

from __future__ import annotations

import datetime
import itertools
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
from _harness import Variant, interleave, parse_args, profile, ratio, report
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from allocation.adapters import migrations
from allocation.adapters.postgres import sql
from allocation.adapters.postgres.database import PostgresDatabase
from allocation.domain import events, users

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TASKS = 32
TARGET = 0.8
SERVER = os.environ.get("BENCH_POSTGRES", "postgres@127.0.0.1:5432")
DATABASE = f"pgstore_bench_{os.getpid()}"
URL = f"postgresql+asyncpg://{SERVER}/{DATABASE}"
DSN = f"postgresql://{SERVER}/{DATABASE}"

_CLAIM = "INSERT INTO claims (kind, value, owner) VALUES ($1, $2, $3)"
_UPSERT_USER = (
    "INSERT INTO users_view (user_id, name, email) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, email = excluded.email"
)


async def spread(n: int, op: Callable[[], Awaitable[None]]) -> None:
    """Run ``n`` calls of ``op`` over TASKS concurrent tasks, each in a loop."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await op()

    async with anyio.create_task_group() as task_group:
        for i in range(TASKS):
            count = n // TASKS + (1 if i < n % TASKS else 0)
            if count:
                task_group.start_soon(worker, count)


class Ours:
    """What the register_user handler does, on our unit of work."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._numbers = itertools.count()

    async def register(self) -> None:
        user = users.User.register(
            str(uuid.uuid4()), "Ivan", f"ours-{next(self._numbers)}@example.com"
        )
        async with self._database.unit_of_work() as uow:
            uow.users.add(user)
            await uow.commit()


class Raw:
    """The same writes, as plain SQL on an asyncpg pool, nothing else."""

    def __init__(self, pool: Any, label: str) -> None:
        self._pool = pool
        self._label = label
        self._numbers = itertools.count()

    async def register(self) -> None:
        user_id = str(uuid.uuid4())
        name, email = "Ivan", f"{self._label}-{next(self._numbers)}@example.com"
        # Built as ours is: the event and its JSON by the message library.
        event = events.UserRegistered(user_id=user_id, name=name, email=email)
        now = datetime.datetime.now(datetime.UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_CLAIM, "email", email, user_id)
            await connection.execute(_UPSERT_USER, user_id, name, email)
            await connection.execute(
                sql.APPEND,
                [event.message_id],
                ["user"],
                [user_id],
                [1],
                [event.TYPE],
                [event.payload_json()],
                [event.SCHEMA_VERSION],
                [now],
                [event.correlation_id],
                [event.causation_id],
            )


async def _as_admin(statement: str) -> None:
    admin = await asyncpg.connect(f"postgresql://{SERVER}/postgres")
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _fresh_database() -> None:
    await _as_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    await _as_admin(f"CREATE DATABASE {DATABASE}")
    engine = create_async_engine(URL, poolclass=NullPool)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


async def _no_reset(_connection: Any) -> None:
    return None


async def _main(blocks: int, ops: int, profiling: bool) -> None:
    await _fresh_database()
    database = await PostgresDatabase.open(URL, pool_size=TASKS)
    raw_pool = await asyncpg.create_pool(
        DSN, min_size=TASKS, max_size=TASKS, reset=_no_reset
    )
    default_pool = await asyncpg.create_pool(DSN, min_size=TASKS, max_size=TASKS)
    try:
        ours, raw = Ours(database), Raw(raw_pool, "raw")
        plain = Raw(default_pool, "plain")

        async def run_ours(n: int) -> None:
            await spread(n, ours.register)

        async def run_raw(n: int) -> None:
            await spread(n, raw.register)

        async def run_plain(n: int) -> None:
            await spread(n, plain.register)

        variants = [
            Variant("ours: register_user", run_ours),
            Variant("raw asyncpg", run_raw),
            Variant("raw, asyncpg's default pool", run_plain),
        ]
        if profiling:
            await profile(variants[0], blocks * ops)
            return
        await interleave(variants, blocks, ops)
    finally:
        await default_pool.close()
        await raw_pool.close()
        await database.close()
        await _as_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    report(variants, f"c={TASKS}")
    ours_variant, raw_variant, plain_variant = variants
    achieved = ratio(raw_variant, ours_variant)
    verdict = "meets" if achieved >= TARGET else "misses"
    print(
        f"[c={TASKS}] ours/raw {achieved:.3f} ({verdict} the >= {TARGET} target);"
        f" ours/(raw on asyncpg's default pool) {ratio(plain_variant, ours_variant):.3f}"
    )


def main() -> None:
    args = parse_args(__doc__ or "", blocks=8, ops=800)
    print(
        f"python {sys.version.split()[0]}, asyncpg {asyncpg.__version__},"
        f" {args.blocks} blocks x {args.ops} ops at concurrency {TASKS},"
        " medians over blocks; µs/op is wall time per op of the whole group,"
        " so ops/s is throughput"
    )
    start = time.perf_counter()
    anyio.run(_main, args.blocks, args.ops, args.profile, backend="asyncio")
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
