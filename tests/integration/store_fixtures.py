"""Fixtures of the store contract suite: one database per engine, fake included.

``store`` is a database object (``FakeDatabase``, ``SqliteDatabase``,
``PostgresDatabase``) whose ``unit_of_work()`` the contract tests use; the SQL
ones are migrated once per session and emptied after every test.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from allocation.adapters import migrations, tables
from allocation.domain import events
from allocation.service_layer.ports import NewEvent, Snapshot
from allocation.testing import FakeDatabase
from tests.conftest import service_missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.ports import AbstractEventStore
    from allocation.service_layer.projections import Projection
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SHADOW_TABLES = ("allocations_view_shadow", "users_view_shadow")

# Each engine's database class, imported only when its variant runs, so the fake
# runs on a checkout where an engine is not there yet.
_ENGINES = {
    "sqlite": ("allocation.adapters.sqlite.database", "SqliteDatabase"),
    "postgres": ("allocation.adapters.postgres.database", "PostgresDatabase"),
}


class StoreDatabase(Protocol):
    """What the contract tests need of a database object."""

    def unit_of_work(
        self,
        *,
        snapshot_every: int = ...,
        inline_projections: Sequence[Projection] | None = ...,
    ) -> AbstractUnitOfWork: ...

    async def close(self) -> None: ...


@pytest.fixture(
    scope="session",
    params=[
        "fake",
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
async def store_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, AsyncEngine | None, Any]]:
    """(engine name, a SQLAlchemy engine to reset the tables with, the database)."""
    name: str = request.param
    if name == "fake":
        yield name, None, None
        return
    module_name, class_name = _ENGINES[name]
    try:
        database_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as error:
        pytest.skip(f"the {name} engine is not built yet: {error}")
    if name == "sqlite":
        path = tmp_path_factory.mktemp("contract") / "allocation.db"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_async_engine(url)
    try:
        await _fresh_schema(engine)
        database = await database_class.open(url, pool_size=5, read_only=False)
        try:
            yield name, engine, database
        finally:
            await database.close()
    finally:
        await engine.dispose()


async def _fresh_schema(engine: AsyncEngine) -> None:
    if engine.dialect.name == "postgresql":
        try:
            async with engine.begin() as connection:
                await connection.execute(text("DROP SCHEMA public CASCADE"))
                await connection.execute(text("CREATE SCHEMA public"))
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
            service_missing(f"PostgreSQL at {engine.url} does not answer: {error}")
    await migrations.upgrade(engine)


@pytest.fixture
async def store(
    store_engine: tuple[str, AsyncEngine | None, Any],
) -> AsyncIterator[StoreDatabase]:
    """A database of the engine, empty: every test starts from nothing."""
    _, engine, database = store_engine
    if engine is None:
        yield FakeDatabase()
        return
    try:
        yield database
    finally:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # DELETE would leave the sequences where they were: positions
                # and ids start from 1 again only when they are restarted.
                names = ", ".join(t.name for t in tables.metadata.sorted_tables)
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
            else:
                for table in reversed(tables.metadata.sorted_tables):
                    await connection.execute(table.delete())
            for shadow in SHADOW_TABLES:
                await connection.execute(text(f"DROP TABLE IF EXISTS {shadow}"))


# ---- builders


def user_registered(user_id: str, version: int = 1) -> NewEvent:
    """A new event of a user's stream at ``version``, stamped as a commit stamps it."""
    event = events.UserRegistered(
        user_id=user_id, name="Ann", email=f"{user_id}@example.com"
    )
    return NewEvent(
        event=event.stamped(aggregate_version=version),
        aggregate_type="user",
        aggregate_id=user_id,
        aggregate_version=version,
    )


def batch_created(sku: str, version: int, ref: str | None = None) -> NewEvent:
    """A new event of a product's stream at ``version``."""
    event = events.BatchCreated(
        ref=ref or f"{sku}-b{version}", sku=sku, purchased_quantity=10
    )
    return NewEvent(
        event=event.stamped(aggregate_version=version),
        aggregate_type="product",
        aggregate_id=sku,
        aggregate_version=version,
    )


def snapshot(aggregate_id: str, version: int, schema_version: int = 1) -> Snapshot:
    return Snapshot(
        aggregate_type="product",
        aggregate_id=aggregate_id,
        version=version,
        schema_version=schema_version,
        state_json=f'{{"version": {version}}}',
    )


# ---- units of work


@contextlib.asynccontextmanager
async def committing(store: StoreDatabase) -> AsyncIterator[AbstractEventStore]:
    """The store of a unit of work that commits when the block ends."""
    async with store.unit_of_work() as uow:
        yield uow.event_log
        await uow.commit()


@contextlib.asynccontextmanager
async def reading(store: StoreDatabase) -> AsyncIterator[AbstractEventStore]:
    """The store of a unit of work that commits nothing."""
    async with store.unit_of_work() as uow:
        yield uow.event_log


async def append(store: StoreDatabase, *new_events: NewEvent) -> None:
    async with committing(store) as log:
        await log.append(new_events)
