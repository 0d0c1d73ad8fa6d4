"""Alembic owns the schema: it goes down and up cleanly and matches the mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from allocation import config
from allocation.adapters import database, migrations
from allocation.adapters.exceptions import (
    MigrationFailed,
    SchemaOutOfDate,
    SchemaTooNew,
)
from allocation.bootstrap import bootstrap

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine


async def test_migrations_go_down_and_up_without_drift(engine: AsyncEngine) -> None:
    await migrations.downgrade(engine, "base")
    assert await migrations.current_revision(engine) is None
    await migrations.upgrade(engine)
    assert await migrations.current_revision(engine) == migrations.head_revision()
    await migrations.check(engine)  # raises when the mapping and migrations differ


@pytest.mark.sqlite
async def test_bootstrap_refuses_a_database_without_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(SchemaOutOfDate, match="allocation db upgrade"):
        async with bootstrap(settings=config.Settings(database_url=url)):
            pass


@pytest.mark.sqlite
async def test_bootstrap_refuses_a_database_behind_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
        await migrations.downgrade(engine, "base")
    finally:
        await engine.dispose()
    with pytest.raises(SchemaOutOfDate) as raised:
        async with bootstrap(settings=config.Settings(database_url=url)):
            pass
    assert raised.value.expected == migrations.head_revision()


@pytest.mark.sqlite
async def test_bootstrap_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(SchemaOutOfDate):
        async with bootstrap(
            settings=config.Settings(database_url=f"sqlite:///{path}")
        ):
            pass
    assert not path.exists()


@pytest.mark.sqlite
async def test_a_database_from_a_newer_version_is_named_as_such(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = 'f00'")
            )
    finally:
        await engine.dispose()
    with pytest.raises(SchemaTooNew, match="newer version"):
        async with bootstrap(settings=config.Settings(database_url=url)):
            pass


@pytest.mark.sqlite
async def test_an_unknown_revision_is_a_clear_migration_error(tmp_path: Path) -> None:
    engine = database.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(MigrationFailed, match="zzz"):
            await migrations.downgrade(engine, "zzz")
    finally:
        await engine.dispose()


async def test_users_from_before_the_log_get_their_registration_logged(
    engine: AsyncEngine,
) -> None:
    await migrations.downgrade(engine, "base")
    await migrations.upgrade(engine, "0001")
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO users (id, name, email) VALUES ('u1', 'Ann', 'a@x.io')")
        )
    await migrations.upgrade(engine)
    async with engine.connect() as connection:
        version = (
            await connection.execute(text("SELECT version_number FROM users"))
        ).scalar()
        logged = (
            await connection.execute(
                text("SELECT name, aggregate_id, aggregate_version FROM event_log")
            )
        ).all()
    assert version == 1
    assert [tuple(row) for row in logged] == [("user_registered", "u1", 1)]
