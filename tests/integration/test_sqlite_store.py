"""What only the SQLite engine has: its file, its settings, its one-trip commit, and
two processes (or two database objects) writing one file.

The behaviour every store shares is in the contract suite; these tests open their
own file (a copy of one migrated per module), so they need no other fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import textwrap
import threading
import uuid
from typing import TYPE_CHECKING

import aiosqlite
import aiosqlite.core
import anyio
import pytest

from allocation.adapters import database, migrations
from allocation.adapters.exceptions import DatabaseDirectoryMissing, DatabaseReadOnly
from allocation.adapters.sqlite.database import SqliteDatabase
from allocation.adapters.sqlite.session import on_worker
from allocation.domain import events
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.domain.users import User
from allocation.service_layer.exceptions import (
    ClaimTaken,
    DatabaseUnavailable,
)
from allocation.service_layer.ports import Claim, NewEvent
from tests.conftest import service_missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    from allocation.adapters.sqlite.unit_of_work import SqliteUnitOfWork

pytestmark = pytest.mark.sqlite


async def _migrate(url: str) -> None:
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def migrated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated file each test starts from a copy of."""
    path = tmp_path_factory.mktemp("template") / "allocation.db"
    await _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def path(migrated_file: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "allocation.db"
    shutil.copyfile(migrated_file, copy)
    return copy


@pytest.fixture
def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def opened(url: str) -> AsyncIterator[SqliteDatabase]:
    db = await SqliteDatabase.open(url, pool_size=3, read_only=False)
    yield db
    await db.close()


def _registered(version: int = 1, user_id: str | None = None) -> NewEvent:
    user_id = user_id or str(uuid.uuid4())
    event = events.UserRegistered(
        user_id=user_id, name="Ivan", email=f"{user_id}@example.com"
    )
    return NewEvent(event.stamped(aggregate_version=version), "user", user_id, version)


def _connection(uow: SqliteUnitOfWork) -> aiosqlite.Connection:
    """The connection a unit of work holds (taken at its first statement)."""
    connection = uow.session._connection
    assert connection is not None
    return connection


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


@pytest.fixture
def trips() -> Iterator[list[str]]:
    """The names of the functions handed to aiosqlite's worker thread meanwhile."""
    handed: list[str] = []
    original: Callable[..., Awaitable[object]] = aiosqlite.core.Connection._execute

    async def counting(self: object, fn: object, *args: object) -> object:
        handed.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args)

    aiosqlite.core.Connection._execute = counting  # type: ignore[method-assign]  # counted
    try:
        yield handed
    finally:
        aiosqlite.core.Connection._execute = original  # type: ignore[method-assign,assignment]  # restored


# ---- the file


async def test_a_file_in_a_missing_directory_is_named_and_not_created(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DatabaseDirectoryMissing, match="does not exist"):
        await SqliteDatabase.open(f"sqlite:///{missing / 'a.db'}")
    assert not missing.exists()


async def test_a_file_that_is_no_database_is_unavailable(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_bytes(b"not a database, just some notes " * 64)
    with pytest.raises(DatabaseUnavailable, match="not a database"):
        await SqliteDatabase.open(f"sqlite:///{garbage}")


async def test_a_url_with_options_is_refused(path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="'timeout' is not accepted"):
        await SqliteDatabase.open(f"sqlite:///{path}?timeout=3")


async def test_connections_use_wal_a_busy_timeout_and_foreign_keys(
    opened: SqliteDatabase,
) -> None:
    async with opened.unit_of_work() as uow:
        settings = [
            (await uow.session.fetch_one(f"PRAGMA {name}"))[0]
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        ]
    # synchronous=1 is NORMAL: in WAL mode a killed process loses nothing.
    assert settings == ["wal", 15_000, 1, 1]


async def _unprivileged(code: str) -> str:
    """Run ``code`` in a Python whom file modes bind (root overrides them otherwise)."""
    launcher: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            service_missing("root ignores file modes, and setpriv is missing")
        drop = "-dac_override,-dac_read_search,-fowner"
        launcher = [str(setpriv), "--bounding-set", drop]
    finished = await anyio.run_process(
        [*launcher, sys.executable, "-c", textwrap.dedent(code)]
    )
    return finished.stdout.decode().strip()


@contextlib.contextmanager
def _write_protected(target: Path) -> Iterator[None]:
    """Take write permission on ``target`` away for the block."""
    mode = target.stat().st_mode & 0o777
    target.chmod(mode & ~0o222)
    try:
        yield
    finally:
        target.chmod(mode)


_OPEN_AND_REPORT = """
    import anyio
    from allocation.adapters.sqlite.database import SqliteDatabase

    async def main(url, read_only):
        try:
            db = await SqliteDatabase.open(url, read_only=read_only)
        except Exception as error:
            print(type(error).__name__, error)
            return
        async with db.unit_of_work() as uow:
            print("read", await uow.event_log.last_position())
        await db.close()

    anyio.run(main, {url!r}, {read_only!r}, backend="asyncio")
"""


async def test_a_read_only_file_is_refused_for_writing_and_opens_for_reading(
    path: Path, url: str
) -> None:
    with _write_protected(path):
        writer = await _unprivileged(_OPEN_AND_REPORT.format(url=url, read_only=False))
        reader = await _unprivileged(_OPEN_AND_REPORT.format(url=url, read_only=True))
    assert writer.startswith("DatabaseReadOnly ")
    assert "the file is not writable" in writer
    assert reader == "read 0"


async def test_a_file_in_a_read_only_directory_is_read_as_it_is(
    path: Path, url: str
) -> None:
    with _write_protected(path.parent):
        reader = await _unprivileged(_OPEN_AND_REPORT.format(url=url, read_only=True))
        left = sorted(entry.name for entry in path.parent.iterdir())
    assert reader == "read 0"
    assert left == ["allocation.db"]


async def test_a_read_only_database_refuses_writes_and_reads(
    url: str, path: Path
) -> None:
    reader = await SqliteDatabase.open(url, read_only=True)
    try:
        async with reader.unit_of_work() as uow:
            await uow.event_log.lock_stream("user", "u1")  # nothing to lock
            assert await uow.event_log.read(after=0) == []
            with pytest.raises(DatabaseReadOnly, match="opened for reading only"):
                await uow.users_view.add("u1", "Ivan", "ivan@example.com")
            with pytest.raises(DatabaseReadOnly):
                await uow.event_log.append([_registered()])
    finally:
        await reader.close()
    assert _rows(path, "SELECT count(*) FROM users_view") == [(0,)]


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
    first = _registered()
    async with opened.unit_of_work() as uow:
        await uow.event_log.append([first])
        await uow.commit()
    async with opened.unit_of_work() as uow:
        fresh = _registered()
        again = _registered(1, first.aggregate_id)
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
        await uow.event_log.append([_registered()])
        await uow.commit()
    async with opened.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1


async def test_a_cancelled_commit_leaves_the_connection_usable(url: str) -> None:
    one_connection = await SqliteDatabase.open(url, pool_size=1)
    try:
        with anyio.CancelScope() as scope:
            async with one_connection.unit_of_work() as uow:
                await uow.event_log.append([_registered()])
                scope.cancel()
                await uow.commit()
        async with one_connection.unit_of_work() as uow:
            await uow.event_log.append([_registered()])
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
    early, late = _registered(), _registered()
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
                        _connection(uow),
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
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(
        path, "SELECT count(*), min(position), max(position) FROM event_log"
    ) == [(total, 1, total)]
    assert _rows(path, "SELECT count(*) FROM claims") == [(total,)]
    assert _rows(path, "SELECT count(*) FROM users_view") == [(total,)]


# ---- crashes


async def test_a_connection_lost_before_commit_leaves_nothing_and_is_dropped(
    opened: SqliteDatabase, path: Path
) -> None:
    async with opened.unit_of_work() as uow:
        await uow.event_log.claim([Claim("email", "lost@example.com", "u1")])
        await uow.event_log.append([_registered()])  # written: not committed
        # The connection dies under the open transaction (a crash, in effect).
        await on_worker(_connection(uow), sqlite3.Connection.close)
        with pytest.raises(DatabaseUnavailable):
            await uow.commit()
    async with opened.unit_of_work() as uow:
        await uow.event_log.append([_registered()])
        await uow.commit()
    assert _rows(path, "SELECT count(*) FROM event_log") == [(1,)]
    assert _rows(path, "SELECT count(*) FROM claims") == [(0,)]


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
            await uow.event_log.append([_registered()])
            await uow.commit()
    finally:
        await survivor.close()
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]
