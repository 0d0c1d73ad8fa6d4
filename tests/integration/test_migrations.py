"""Alembic owns the schema: it goes down and up cleanly and matches the mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from allocation import config
from allocation.adapters import database, migrations
from allocation.adapters.exceptions import SchemaOutOfDate
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
