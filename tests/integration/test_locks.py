"""Catch-up ownership across worker processes (PostgreSQL advisory locks)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from allocation.adapters.locks import PostgresSubscriberLocks, SubscriberLocks
from sqlalchemy import text

from allocation.adapters import database
from allocation.adapters import locks as locks_module
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.mark.postgres
async def test_one_worker_at_a_time_holds_a_subscriber(
    engine: AsyncEngine, database_url: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite serves one process")
    other_process = database.create_engine(database_url)  # its own connections
    try:
        mine, theirs = (
            PostgresSubscriberLocks(engine),
            PostgresSubscriberLocks(other_process),
        )
        async with mine.hold("send_coupon") as held:
            assert held
            async with theirs.hold("send_coupon") as also_held:
                assert not also_held
            async with theirs.hold("users_view") as other_subscriber:
                assert other_subscriber
        async with theirs.hold("send_coupon") as held_after_release:
            assert held_after_release
    finally:
        await other_process.dispose()


_HOLDER = """
import sys, anyio
from allocation.adapters import database
from allocation.adapters import locks as locks_module
from allocation.adapters.locks import PostgresSubscriberLocks

async def main():
    engine = database.create_engine(sys.argv[1])
    async with PostgresSubscriberLocks(engine).hold("reallocate") as held:
        print("held" if held else "refused", flush=True)
        await anyio.sleep(60)

anyio.run(main, backend="asyncio")
"""


@pytest.mark.postgres
async def test_a_killed_worker_releases_its_subscribers(
    engine: AsyncEngine, database_url: str
) -> None:
    """The server drops a session's advisory locks when its process dies."""
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite serves one process")
    async with await anyio.open_process(
        [sys.executable, "-c", _HOLDER, database_url]
    ) as worker:
        assert worker.stdout is not None
        assert (await worker.stdout.receive()).strip() == b"held"
        async with PostgresSubscriberLocks(engine).hold("reallocate") as held:
            assert not held
        worker.kill()
        await worker.wait()
    with anyio.fail_after(10):  # the server notices the closed socket at once
        while True:
            async with PostgresSubscriberLocks(engine).hold("reallocate") as held:
                if held:
                    break
            await anyio.sleep(0.05)


async def test_one_pass_at_a_time_within_a_process() -> None:
    locks = SubscriberLocks()
    async with locks.hold("send_coupon") as first, locks.hold("send_coupon") as second:
        assert (first, second) == (True, False)


@pytest.mark.postgres
async def test_a_lock_whose_release_fails_does_not_stay_held_in_the_pool(
    engine: AsyncEngine, database_url: str
) -> None:
    """If the unlock cannot run, the connection is discarded, never pooled with the
    lock still held (which would block every worker for good)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite serves one process")
    single = database.create_engine(database_url, pool_size=1)
    original_unlock = locks_module._unlock

    async def refusing_unlock(driver: object, key: int) -> bool:
        return False  # as when the unlock statement itself failed

    try:
        locks_module._unlock = refusing_unlock  # type: ignore[assignment]  # the fault injected
        async with PostgresSubscriberLocks(single).hold("relay:broker") as held:
            assert held
        locks_module._unlock = original_unlock  # type: ignore[assignment]  # restored
        async with PostgresSubscriberLocks(engine).hold("relay:broker") as held:
            assert held
    finally:
        locks_module._unlock = original_unlock  # type: ignore[assignment]  # restored
        await single.dispose()


@pytest.mark.postgres
async def test_a_lock_on_a_dead_pooled_connection_fails_once_then_works(
    engine: AsyncEngine, database_url: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite serves one process")
    single = database.create_engine(database_url, pool_size=1)
    try:
        async with single.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        locks = PostgresSubscriberLocks(single)
        with pytest.raises(DatabaseUnavailable):
            async with locks.hold("relay:broker"):
                pass
        async with locks.hold("relay:broker") as held:
            assert held
    finally:
        await single.dispose()
