"""Fixtures of the SQLite engine's own tests: a fresh migrated file per test.

Each test gets a copy of a file migrated once per module, and needs no other
fixture of the integration suite.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from typing import TYPE_CHECKING

import aiosqlite
import aiosqlite.core
import pytest

from allocation.adapters import database, migrations
from allocation.adapters.sqlite.database import SqliteDatabase
from allocation.domain import events
from allocation.service_layer.ports import NewEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    from allocation.adapters.sqlite.unit_of_work import SqliteUnitOfWork


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


def registered(version: int = 1, user_id: str | None = None) -> NewEvent:
    user_id = user_id or str(uuid.uuid4())
    event = events.UserRegistered(
        user_id=user_id, name="Ivan", email=f"{user_id}@example.com"
    )
    return NewEvent(event.stamped(aggregate_version=version), "user", user_id, version)


def connection_of(uow: SqliteUnitOfWork) -> aiosqlite.Connection:
    """The connection a unit of work holds (taken at its first statement)."""
    connection = uow.session._connection
    assert connection is not None
    return connection


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
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
