"""Alembic driven from code: upgrade, downgrade and the schema check (asyncio only).

The migrations are the top-level ``alembic/`` folder of the repository, shipped in
the wheel as ``allocation/migrations``, so they are found from any directory.
"""

from __future__ import annotations

import dataclasses
import functools
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import func, inspect, select, table

from allocation.adapters import database_errors
from allocation.adapters.exceptions import (
    DataWouldBeLost,
    MigrationFailed,
    SchemaOutOfDate,
    SchemaTooNew,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def script_location() -> Path:
    """Return the folder holding ``env.py`` and ``versions/``."""
    for candidate in (
        _PACKAGE_DIR / "migrations",  # installed from a wheel
        _PACKAGE_DIR.parent.parent / "alembic",  # a checkout (editable install)
    ):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the alembic migrations are missing from this install")


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config pointing at our migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision the code knows."""
    head = _scripts().get_current_head()
    if head is None:
        raise FileNotFoundError("no migrations found")
    return head


async def _run(engine: AsyncEngine, action: Callable[[Config], None]) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with database_errors.translated_errors(url):
        async with engine.begin() as connection:

            def run(sync_connection: Connection) -> None:
                config = alembic_config(url)
                # env.py migrates this open connection instead of making its own.
                config.attributes["connection"] = sync_connection
                try:
                    action(config)
                except CommandError as error:
                    raise MigrationFailed(str(error)) from error

            await connection.run_sync(run)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    await _run(engine, lambda config: command.upgrade(config, revision))


async def downgrade(
    engine: AsyncEngine, revision: str, *, allow_data_loss: bool = False
) -> None:
    """Migrate the database down to ``revision`` (``base`` empties it).

    The downgrade runs in one transaction; unless ``allow_data_loss``, it is
    rolled back if it dropped a table or column that held rows, or deleted rows.

    Raises:
        DataWouldBeLost: what would have been lost, when not allowed.
        MigrationFailed: alembic refused, e.g. an unknown revision.
    """

    def downgrade_checked(config: Config) -> None:
        connection: Connection = config.attributes["connection"]
        before = _holdings(connection)
        command.downgrade(config, revision)
        lost = _losses(before, _holdings(connection))
        if lost and not allow_data_loss:
            raise DataWouldBeLost(revision, lost)  # rolls the downgrade back

    await _run(engine, downgrade_checked)


@dataclasses.dataclass(frozen=True)
class _Holding:
    rows: int
    columns: frozenset[str]


def _holdings(connection: Connection) -> dict[str, _Holding]:
    """Every table but alembic's, with its row count and columns."""
    inspector = inspect(connection)
    holdings = {}
    for name in inspector.get_table_names():
        if name == "alembic_version":
            continue
        rows = connection.execute(select(func.count()).select_from(table(name)))
        columns = frozenset(column["name"] for column in inspector.get_columns(name))
        holdings[name] = _Holding(rows.scalar_one(), columns)
    return holdings


def _losses(before: dict[str, _Holding], after: dict[str, _Holding]) -> list[str]:
    lost = []
    for name, held in sorted(before.items()):
        if not held.rows:
            continue
        kept = after.get(name)
        if kept is None:
            lost.append(f"table {name} ({_rows(held.rows)})")
            continue
        lost += [
            f"column {name}.{column} ({_rows(held.rows)})"
            for column in sorted(held.columns - kept.columns)
        ]
        if kept.rows < held.rows:
            lost.append(f"{_rows(held.rows - kept.rows)} of {name}")
    return lost


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


async def check(engine: AsyncEngine) -> None:
    """Raise if the mapping and the migrations disagree (alembic's ``check``)."""
    await _run(engine, command.check)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, None when it has no schema."""
    url = engine.url.render_as_string(hide_password=False)
    with database_errors.translated_errors(url):
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )


async def ensure_up_to_date(engine: AsyncEngine) -> None:
    """Raise SchemaOutOfDate, naming the fix, unless the database is at head."""
    expected = head_revision()
    if _is_missing_sqlite_file(engine):
        # Connecting would create an empty file the user never asked for.
        raise SchemaOutOfDate(None, expected)
    current = await current_revision(engine)
    if current == expected:
        return
    if current is not None and not _is_known(current):
        raise SchemaTooNew(current, expected)
    raise SchemaOutOfDate(current, expected)


def _is_known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _is_missing_sqlite_file(engine: AsyncEngine) -> bool:
    name = engine.url.database
    if engine.dialect.name != "sqlite" or not name or name == ":memory:":
        return False
    if name.startswith("file:"):  # a URI (a read-only opening): its path part
        name = urllib.parse.unquote(name.removeprefix("file:").split("?", 1)[0])
    return not Path(name).exists()
