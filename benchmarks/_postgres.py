"""Shared helpers for the PostgreSQL benchmarks: a fresh migrated ``allocation_bench_*``,
and operations spread over concurrent tasks.

The server is the one in ``BENCH_POSTGRES`` (default: trust auth as ``postgres`` on
127.0.0.1:5432). The database is dropped and created again at the start of each run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.ext.asyncio import create_async_engine

from allocation.adapters import database, migrations

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SERVER = os.environ.get("BENCH_POSTGRES", "postgres@127.0.0.1:5432")
# One database per benchmark process: two benchmarks run at once must not drop each
# other's (BENCH_DATABASE names it otherwise).
DATABASE = os.environ.get("BENCH_DATABASE", f"allocation_bench_{os.getpid()}")
URL = f"postgresql+asyncpg://{SERVER}/{DATABASE}"
# What asyncpg itself takes: the same server and database, no driver suffix.
DSN = f"postgresql://{SERVER}/{DATABASE}"


async def fresh_database() -> str:
    """Drop and create this process's database, bring it to head; return its URL."""
    await _as_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    await _as_admin(f"CREATE DATABASE {DATABASE}")
    engine = database.create_engine(URL)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    return URL


async def drop_database() -> None:
    """Remove this process's database (the end of a run)."""
    await _as_admin(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


async def _as_admin(statement: str) -> None:
    """Run one statement on the server's ``postgres`` database, outside a transaction."""
    admin = create_async_engine(
        f"postgresql+asyncpg://{SERVER}/postgres", isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await admin.dispose()


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


async def no_reset(_connection: Any) -> None:
    """An asyncpg pool's reset that does nothing, as our engine's pool does (it
    saves a round trip per checkout; see adapters/postgres/database.py)."""
