"""Fixtures of the PostgreSQL engine's own tests: a migrated database, a connection
of the test's own beside it, and a ``PostgresDatabase`` on it.

A test module imports the ``*_fixture`` functions; tests ask for them by their
fixture names (``schema``, ``admin``, ``database``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from allocation.adapters import migrations, tables
from allocation.adapters.postgres.database import PostgresDatabase
from allocation.domain import events
from allocation.service_layer.ports import NewEvent
from tests.conftest import service_missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
DSN = URL.replace("+asyncpg", "", 1)
# Concurrent writers in a test, and the pool size that lets them all in at once.
WRITERS = 8


@pytest.fixture(name="schema", scope="module")
async def schema_fixture() -> None:
    """The schema at alembic's head, on a database emptied of everything first."""
    try:
        admin = await asyncpg.connect(DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        service_missing(f"PostgreSQL at {URL} does not answer: {error}")
    try:
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await admin.close()
    engine = create_async_engine(URL, poolclass=NullPool)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(name="admin")
async def admin_fixture(schema: None) -> AsyncIterator[Any]:
    """A connection of the test's own, outside any database object, on empty
    tables whose positions and ids start from 1."""
    connection = await asyncpg.connect(DSN)
    names = ", ".join(table.name for table in tables.metadata.sorted_tables)
    await connection.execute(f"TRUNCATE {names} RESTART IDENTITY")
    try:
        yield connection
    finally:
        await connection.execute(
            "DROP TABLE IF EXISTS allocations_view_shadow, users_view_shadow"
        )
        await connection.close()


@pytest.fixture(name="database")
async def database_fixture(admin: Any) -> AsyncIterator[PostgresDatabase]:
    database = await PostgresDatabase.open(URL, pool_size=WRITERS + 2)
    try:
        yield database
    finally:
        await database.close()


def new_event(stream: str, version: int, kind: str = "user") -> NewEvent:
    event = events.UserRegistered(
        user_id=stream, name="Ivan", email=f"{stream}@example.com"
    )
    return NewEvent(
        event=event, aggregate_type=kind, aggregate_id=stream, aggregate_version=version
    )


async def waiting_on_advisory_locks(admin: Any, count: int) -> None:
    """Return once ``count`` sessions wait for an advisory lock."""
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with anyio.fail_after(10):
        while True:
            if await admin.fetchval(query) >= count:
                return
            await anyio.sleep(0.01)
