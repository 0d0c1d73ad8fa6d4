"""Alembic owns the schema: it goes down and up cleanly and matches the mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from allocation import config
from allocation.adapters import database, migrations
from allocation.adapters.exceptions import (
    DataWouldBeLost,
    MigrationFailed,
    SchemaOutOfDate,
    SchemaTooNew,
)
from allocation.bootstrap import bootstrap
from tests.integration import old_rows

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
    await migrations.upgrade(engine, "0002")
    async with engine.connect() as connection:
        version = (
            await connection.execute(text("SELECT version_number FROM users"))
        ).scalar()
        logged = (
            await connection.execute(
                text("SELECT name, aggregate_id, aggregate_version FROM event_log")
            )
        ).all()
    await migrations.upgrade(engine)
    assert version == 1
    assert [tuple(row) for row in logged] == [("user_registered", "u1", 1)]


async def test_the_allocations_view_is_rebuilt_by_line_from_the_log(
    engine: AsyncEngine,
) -> None:
    """Regression (issue 8): keyed by (orderid, sku), the view had lost lines."""
    await migrations.downgrade(engine, "base")
    await migrations.upgrade(engine, "0003")
    line = {"orderid": "ox", "sku": "CHAIR"}
    async with engine.begin() as connection:
        await connection.execute(
            old_rows.LOG.insert(),
            [
                old_rows.product_event(2, "allocated", **line, qty=3, batchref="s1"),
                old_rows.product_event(3, "allocated", **line, qty=50, batchref="s2"),
                old_rows.product_event(4, "deallocated", **line, qty=50, batchref="s2"),
                old_rows.product_event(5, "allocated", **line, qty=50, batchref="s3"),
                old_rows.product_event(6, "allocated", **line, qty=7, batchref="s3"),
                old_rows.product_event(7, "deallocated", **line, qty=7, batchref="s3"),
            ],
        )
        # What the old view held: the last line of (ox, CHAIR) only; and a row
        # from before the log, whose line only the allocations table knows.
        for statement in (
            (
                "INSERT INTO allocations_view (orderid, sku, batchref, version, allocated)"
                " VALUES ('ox', 'CHAIR', 's3', 7, false), ('o0', 'LAMP', 'b0', 0, true)"
            ),
            "INSERT INTO products (sku) VALUES ('LAMP')",
            (
                "INSERT INTO batches (id, reference, sku, purchased_quantity)"
                " VALUES (1, 'b0', 'LAMP', 10)"
            ),
            (
                "INSERT INTO allocations (batch_id, orderid, sku, qty)"
                " VALUES (1, 'o0', 'LAMP', 4)"
            ),
        ):
            await connection.execute(text(statement))

    await migrations.upgrade(engine, "0004")

    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT orderid, sku, qty, batchref, version, allocated"
                " FROM allocations_view ORDER BY orderid, qty"
            )
        )
        assert [tuple(row) for row in rows] == [
            ("o0", "LAMP", 4, "b0", 0, True),
            ("ox", "CHAIR", 3, "s1", 2, True),
            ("ox", "CHAIR", 7, "s3", 7, False),
            ("ox", "CHAIR", 50, "s3", 5, True),
        ]
    await migrations.upgrade(engine)


async def test_the_allocations_view_goes_back_to_one_row_per_sku(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO allocations_view"
                " (orderid, sku, qty, batchref, version, allocated) VALUES"
                " ('ox', 'CHAIR', 3, 's1', 2, true), ('ox', 'CHAIR', 50, 's2', 3, true)"
            )
        )

    await migrations.downgrade(engine, "0003", allow_data_loss=True)

    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT orderid, sku, batchref, version FROM allocations_view")
        )
        assert [tuple(row) for row in rows] == [("ox", "CHAIR", "s2", 3)]
    await migrations.upgrade(engine)


_A_CLAIM = text(
    "INSERT INTO claims (kind, value, owner) VALUES ('batch', 'b1', 'LAMP')"
)


async def test_a_downgrade_that_would_drop_rows_is_refused_and_changes_nothing(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(_A_CLAIM)

    with pytest.raises(DataWouldBeLost) as refused:
        await migrations.downgrade(engine, "base")

    assert "table claims (1 row)" in str(refused.value)
    assert "event_log" not in str(refused.value)  # empty: nothing to lose there
    assert await migrations.current_revision(engine) == migrations.head_revision()
    async with engine.connect() as connection:
        count = await connection.execute(text("SELECT count(*) FROM claims"))
        assert count.scalar() == 1


async def test_a_downgrade_dropping_a_column_that_holds_rows_names_it(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO allocations_view"
                " (orderid, sku, qty, batchref, version, allocated) VALUES"
                " ('ox', 'CHAIR', 3, 's1', 2, true), ('ox', 'CHAIR', 50, 's2', 3, true)"
            )
        )

    with pytest.raises(DataWouldBeLost) as refused:
        await migrations.downgrade(engine, "0003")

    assert str(refused.value) == (
        "downgrading to '0003' would lose data: column allocations_view.qty"
        " (2 rows), 1 row of allocations_view"
    )
    assert await migrations.current_revision(engine) == migrations.head_revision()


async def test_a_downgrade_allowed_to_lose_data_goes_ahead(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(_A_CLAIM)

    await migrations.downgrade(engine, "base", allow_data_loss=True)

    assert await migrations.current_revision(engine) is None
    await migrations.upgrade(engine)
