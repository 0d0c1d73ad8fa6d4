"""Who may catch a subscriber up: one pass at a time in a process (every engine),
one worker process at a time on PostgreSQL (session advisory locks)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import pytest

from allocation.adapters.postgres import locks as postgres_locks
from allocation.adapters.postgres.database import PostgresDatabase
from allocation.adapters.sqlite.database import SqliteDatabase
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.service_layer.locks import SubscriberLocks
from tests.conftest import service_missing
from tests.integration.postgres_fixtures import (  # noqa: F401 - fixtures
    DSN,
    URL,
    admin_fixture,
    database_fixture,
    schema_fixture,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

_ADVISORY_LOCKS_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
)


@pytest.fixture(
    params=[
        "core",
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def locks(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SubscriberLocks]:
    """The locks the core builds, or those each engine's database hands out."""
    if request.param == "core":
        yield SubscriberLocks()
        return
    opened: SqliteDatabase | PostgresDatabase
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'allocation.db'}"
        opened = await SqliteDatabase.open(url, pool_size=1)
    else:
        try:  # no schema needed: advisory locks live outside every table
            opened = await PostgresDatabase.open(URL, pool_size=1)
        except DatabaseUnavailable as error:
            service_missing(str(error))
    try:
        yield opened.subscriber_locks()
    finally:
        await opened.close()


async def test_one_pass_at_a_time_within_a_process(locks: SubscriberLocks) -> None:
    async with locks.hold("send_coupon") as first, locks.hold("send_coupon") as second:
        assert (first, second) == (True, False)
    async with locks.hold("send_coupon") as after_release:
        assert after_release


@pytest.mark.postgres
async def test_one_worker_at_a_time_holds_a_subscriber(
    database: PostgresDatabase,
) -> None:
    other_worker = await PostgresDatabase.open(URL, pool_size=1)
    try:
        mine, theirs = database.subscriber_locks(), other_worker.subscriber_locks()
        async with mine.hold("send_coupon") as held:
            assert held
            async with theirs.hold("send_coupon") as also_held:
                assert not also_held
            async with theirs.hold("users_view") as other_subscriber:
                assert other_subscriber
        async with theirs.hold("send_coupon") as held_after_release:
            assert held_after_release
    finally:
        await other_worker.close()


_HOLDER = """
import sys, anyio
from allocation.adapters.postgres.database import PostgresDatabase

async def main():
    database = await PostgresDatabase.open(sys.argv[1], pool_size=1)
    async with database.subscriber_locks().hold("reallocate") as held:
        print("held" if held else "refused", flush=True)
        await anyio.sleep(60)

anyio.run(main, backend="asyncio")
"""


@pytest.mark.postgres
async def test_a_killed_worker_releases_its_subscribers(
    database: PostgresDatabase,
) -> None:
    """The server drops a session's advisory locks when its process dies."""
    async with await anyio.open_process([sys.executable, "-c", _HOLDER, URL]) as worker:
        assert worker.stdout is not None
        assert (await worker.stdout.receive()).strip() == b"held"
        async with database.subscriber_locks().hold("reallocate") as held:
            assert not held
        worker.kill()
        await worker.wait()
    with anyio.fail_after(10):  # the server notices the closed socket at once
        while True:
            async with database.subscriber_locks().hold("reallocate") as held:
                if held:
                    break
            await anyio.sleep(0.05)


@pytest.mark.postgres
async def test_a_lock_whose_release_fails_does_not_stay_held_in_the_pool(
    database: PostgresDatabase,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the unlock cannot run, the connection is discarded, never pooled with the
    lock still held (which would block every worker for good)."""
    single = await PostgresDatabase.open(URL, pool_size=1)
    try:
        pid_before = await _backend_pid(single)
        with monkeypatch.context() as patched, caplog.at_level(logging.WARNING):
            _refuse_to_unlock(patched)
            async with single.subscriber_locks().hold("relay:broker") as held:
                assert held
        assert "could not release the advisory lock" in caplog.text
        # The lock goes when the server sees the closed connection, not before.
        with anyio.fail_after(10):
            while True:
                if not await admin.fetchval(_ADVISORY_LOCKS_HELD):
                    break
                await anyio.sleep(0.01)
        async with database.subscriber_locks().hold("relay:broker") as held:
            assert held
        assert await _backend_pid(single) != pid_before
    finally:
        await single.close()


def _refuse_to_unlock(patched: pytest.MonkeyPatch) -> None:
    """Make the unlock statement fail at the driver, as a broken connection would."""
    original = asyncpg.Connection.execute

    async def refusing(
        self: asyncpg.Connection[Any], query: str, *args: Any, **options: Any
    ) -> str:
        if query == postgres_locks._UNLOCK:
            raise asyncpg.InterfaceError("the fault injected")
        status: str = await original(self, query, *args, **options)
        return status

    patched.setattr(asyncpg.Connection, "execute", refusing)


@pytest.mark.postgres
async def test_a_lock_on_a_dead_pooled_connection_fails_once_then_works(
    schema: None,  # the server answers
) -> None:
    single = await PostgresDatabase.open(URL, pool_size=1)
    try:
        _terminate_unnoticed(await _backend_pid(single))
        locks = single.subscriber_locks()
        with pytest.raises(DatabaseUnavailable):
            async with locks.hold("relay:broker"):
                pass
        async with locks.hold("relay:broker") as held:
            assert held
    finally:
        await single.close()


def _terminate_unnoticed(pid: int) -> None:
    """End backend ``pid`` while this event loop is blocked, so the pool still
    thinks its connection alive (as after a network cut): the loop would
    otherwise see the closed socket first and the pool reconnect by itself."""

    async def terminate() -> None:
        other = await asyncpg.connect(DSN)
        try:
            await other.execute("SELECT pg_terminate_backend($1)", pid)
            query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
            while True:
                if not await other.fetchval(query, pid):
                    break
                await asyncio.sleep(0.01)
        finally:
            await other.close()

    thread = threading.Thread(target=asyncio.run, args=(terminate(),))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the backend did not end"


async def _backend_pid(database: PostgresDatabase) -> int:
    async with database.pool.acquire() as connection:
        pid: int = await connection.fetchval("SELECT pg_backend_pid()")
        return pid
