"""The SQLite engine's file: where it must be, how it is opened, its settings.

Opened read-only, it works on a file (or in a directory) this process may not
write; opened to write, such a file is refused up front, by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest

from allocation.adapters.exceptions import DatabaseDirectoryMissing, DatabaseReadOnly
from allocation.adapters.sqlite.database import SqliteDatabase
from allocation.service_layer.exceptions import DatabaseUnavailable
from tests.conftest import service_missing
from tests.integration import sqlite_fixtures
from tests.integration.sqlite_fixtures import registered, rows

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.sqlite
# The fixtures each test takes, from the module they are defined in once.
migrated_file = sqlite_fixtures.migrated_file
opened = sqlite_fixtures.opened
path = sqlite_fixtures.path
url = sqlite_fixtures.url


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
                await uow.event_log.append([registered()])
    finally:
        await reader.close()
    assert rows(path, "SELECT count(*) FROM users_view") == [(0,)]
