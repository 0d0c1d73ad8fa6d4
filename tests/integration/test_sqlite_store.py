"""What only the SQLite engine does: a commit in one trip to aiosqlite's worker
thread, writes queued for the next trip, and two processes (or two database
objects) writing one file without losing or half-writing anything.

The behaviour every store shares is in the contract suite.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
import threading
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest

from allocation.adapters.sqlite.database import SqliteDatabase
from allocation.adapters.sqlite.session import on_worker
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.domain.users import User
from allocation.service_layer.exceptions import ClaimTaken, DatabaseUnavailable
from allocation.service_layer.ports import Claim
from tests.integration import sqlite_fixtures
from tests.integration.sqlite_fixtures import connection_of, registered, rows

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.sqlite
# The fixtures each test takes, from the module they are defined in once.
migrated_file = sqlite_fixtures.migrated_file
opened = sqlite_fixtures.opened
path = sqlite_fixtures.path
url = sqlite_fixtures.url
trips = sqlite_fixtures.trips


# ---- trips and transactions


async def test_a_command_commits_in_one_trip(
    opened: SqliteDatabase, trips: list[str]
) -> None:
    async with opened.unit_of_work() as uow:
        uow.users.add(User.register(str(uuid.uuid4()), "Ivan", "ivan@example.com"))
        trips.clear()
        await uow.commit()
        # The claim, the inline users view and the event, then COMMIT.
        assert trips == ["_run_trip"]
    async with opened.unit_of_work() as uow:
        assert await uow.users_view.by_email("ivan@example.com") is not None
        assert await uow.event_log.claim_owner("email", "ivan@example.com")


async def test_a_read_sees_the_writes_queued_before_it_and_rollback_drops_them(
    opened: SqliteDatabase,
) -> None:
    async with opened.unit_of_work() as uow:
        await uow.users_view.add("u1", "Ivan", "ivan@example.com")
        assert await uow.users_view.by_id("u1") is not None
    async with opened.unit_of_work() as uow:
        assert await uow.users_view.by_id("u1") is None


async def test_a_taken_claim_claims_nothing_and_keeps_the_earlier_writes(
    opened: SqliteDatabase,
) -> None:
    async with opened.unit_of_work() as uow:
        await uow.event_log.claim([Claim("email", "taken@example.com", "u1")])
        await uow.commit()
    async with opened.unit_of_work() as uow:
        await uow.users_view.add("u2", "Olga", "olga@example.com")
        free, taken = (
            Claim("email", "free@example.com", "u2"),
            Claim("email", "taken@example.com", "u2"),
        )
        with pytest.raises(ClaimTaken) as refused:
            await uow.event_log.claim([free, taken])
        assert refused.value.claim == taken
        assert await uow.event_log.claim_owner("email", "free@example.com") is None
        await uow.commit()
    async with opened.unit_of_work() as uow:
        assert await uow.users_view.by_id("u2") is not None


async def test_an_append_that_conflicts_appends_nothing_of_it(
    opened: SqliteDatabase,
) -> None:
    first = registered()
    async with opened.unit_of_work() as uow:
        await uow.event_log.append([first])
        await uow.commit()
    async with opened.unit_of_work() as uow:
        fresh = registered()
        again = registered(1, first.aggregate_id)
        with pytest.raises(ConcurrencyConflict, match="concurrent change to user"):
            await uow.event_log.append([fresh, again])
        assert await uow.event_log.last_position() == 1
        await uow.commit()
    async with opened.unit_of_work() as uow:
        assert [e.event.message_id for e in await uow.event_log.read(after=0)] == [
            first.event.message_id
        ]


async def test_locking_twice_before_any_statement_waits_for_nobody(
    opened: SqliteDatabase,
) -> None:
    async with opened.unit_of_work() as uow:
        await uow.event_log.lock_stream("user", "u1")
        await uow.event_log.lock_log()  # the same transaction's lock: held
        await uow.event_log.append([registered()])
        await uow.commit()
    async with opened.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1


async def test_a_cancelled_commit_leaves_the_connection_usable(url: str) -> None:
    one_connection = await SqliteDatabase.open(url, pool_size=1)
    try:
        with anyio.CancelScope() as scope:
            async with one_connection.unit_of_work() as uow:
                await uow.event_log.append([registered()])
                scope.cancel()
                await uow.commit()
        async with one_connection.unit_of_work() as uow:
            await uow.event_log.append([registered()])
            await uow.commit()
        async with one_connection.unit_of_work() as uow:
            head = await uow.event_log.last_position()
    finally:
        await one_connection.close()
    # Whether the cancelled commit got through is the worker thread's race;
    # either way the next one commits and nothing is left half done.
    assert head in {1, 2}


# ---- two writers of one file


async def test_two_databases_on_one_file_serialise_their_writers(url: str) -> None:
    first, second = [await SqliteDatabase.open(url) for _ in range(2)]
    early, late = registered(), registered()
    waiting = threading.Event()

    def tell_when_waiting(statement: str) -> None:
        if statement.startswith("BEGIN"):
            waiting.set()

    try:
        async with first.unit_of_work() as holder:
            await holder.event_log.lock_log()
            await holder.event_log.last_position()  # the file's write lock: taken

            async def write_late() -> None:
                async with second.unit_of_work() as uow:
                    await uow.event_log.last_position()
                    # Told on its worker thread as its BEGIN starts (and waits).
                    await on_worker(
                        connection_of(uow),
                        sqlite3.Connection.set_trace_callback,
                        tell_when_waiting,
                    )
                    await uow.event_log.append([late])
                    await uow.commit()

            async with anyio.create_task_group() as group:
                group.start_soon(write_late)
                await anyio.to_thread.run_sync(waiting.wait)
                await holder.event_log.append([early])
                await holder.commit()
        async with second.unit_of_work() as uow:
            logged = await uow.event_log.read(after=0)
    finally:
        await first.close()
        await second.close()
    assert [entry.event.message_id for entry in logged] == [
        early.event.message_id,
        late.event.message_id,
    ]


async def test_concurrent_writers_of_two_databases_lose_nothing(
    url: str, path: Path
) -> None:
    databases = [await SqliteDatabase.open(url, pool_size=4) for _ in range(2)]
    commits_per_writer, writers_per_database = 15, 4

    async def write(db: SqliteDatabase) -> None:
        for _ in range(commits_per_writer):
            async with db.unit_of_work() as uow:
                user = User.register(str(uuid.uuid4()), "Ivan", f"{uuid.uuid4()}@x.io")
                uow.users.add(user)
                await uow.commit()

    try:
        async with anyio.create_task_group() as group:
            for db in databases:
                for _ in range(writers_per_database):
                    group.start_soon(write, db)
    finally:
        for db in databases:
            await db.close()
    total = commits_per_writer * writers_per_database * len(databases)
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert rows(
        path, "SELECT count(*), min(position), max(position) FROM event_log"
    ) == [(total, 1, total)]
    assert rows(path, "SELECT count(*) FROM claims") == [(total,)]
    assert rows(path, "SELECT count(*) FROM users_view") == [(total,)]


# ---- crashes


async def test_a_connection_lost_before_commit_leaves_nothing_and_is_dropped(
    opened: SqliteDatabase, path: Path
) -> None:
    async with opened.unit_of_work() as uow:
        await uow.event_log.claim([Claim("email", "lost@example.com", "u1")])
        await uow.event_log.append([registered()])  # written: not committed
        # The connection dies under the open transaction (a crash, in effect).
        await on_worker(connection_of(uow), sqlite3.Connection.close)
        with pytest.raises(DatabaseUnavailable):
            await uow.commit()
    async with opened.unit_of_work() as uow:
        await uow.event_log.append([registered()])
        await uow.commit()
    assert rows(path, "SELECT count(*) FROM event_log") == [(1,)]
    assert rows(path, "SELECT count(*) FROM claims") == [(0,)]


_KILLED_MID_TRANSACTION = """
    import os, signal, anyio, uuid
    from allocation.adapters.sqlite.database import SqliteDatabase
    from allocation.domain import events
    from allocation.service_layer.ports import Claim, NewEvent

    async def main(url):
        db = await SqliteDatabase.open(url)
        async with db.unit_of_work() as uow:
            await uow.event_log.claim([Claim("email", "dead@example.com", "u1")])
            for version in (1, 2, 3):
                event = events.UserRegistered(
                    user_id="u1", name="Ivan", email="dead@example.com"
                )
                await uow.event_log.append([NewEvent(event, "user", "u1", version)])
            print("written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    anyio.run(main, {url!r}, backend="asyncio")
"""


async def test_a_process_killed_mid_transaction_leaves_nothing_half_written(
    url: str, path: Path
) -> None:
    script = textwrap.dedent(_KILLED_MID_TRANSACTION.format(url=url))
    killed = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert (killed.returncode, killed.stdout) == (-9, b"written\n"), killed.stderr
    survivor = await SqliteDatabase.open(url)
    try:
        async with survivor.unit_of_work() as uow:
            assert await uow.event_log.last_position() == 0
            assert await uow.event_log.claim_owner("email", "dead@example.com") is None
            await uow.event_log.append([registered()])
            await uow.commit()
    finally:
        await survivor.close()
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
