"""Driver errors by cause: a refused value is DataRefused, a dead server DatabaseUnavailable.

Issue 8: a value PostgreSQL refused was reported as "database unavailable" (and so
retried forever by the consumer), and SQLite raised a bare OverflowError.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from allocation.adapters import database, database_errors, orm
from allocation.adapters.exceptions import DatabaseDirectoryMissing
from allocation.service_layer.exceptions import DatabaseUnavailable, DataRefused

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.sql.expression import Executable

    from allocation.service_layer.unit_of_work import SqlAlchemyUnitOfWork

PASSWORD = "planted-secret-7f3a"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_position_beyond_64_bits_is_a_refused_value(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    with pytest.raises(DataRefused):
        async with uow_factory() as uow:
            await uow.event_log.read(after=10**23)


async def test_a_lone_surrogate_is_a_refused_value(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    with pytest.raises(DataRefused):
        async with uow_factory() as uow:
            await uow.event_log.read(after=0, names=["\udcff"])


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        pytest.param(
            orm.dead_letters.insert(),
            {"subscriber": "s" * 101, "message_id": "m", "error": "e", "attempts": 1},
            id="too long",
        ),
        pytest.param(
            orm.dead_letters.insert(),
            {"subscriber": "s", "message_id": "m", "error": "e", "attempts": 2**31},
            id="beyond its integer",
        ),
        pytest.param(
            text("SELECT CAST(:qty AS INTEGER) + 1"),
            {"qty": 2**31 - 1},
            id="numeric out of range",
        ),
        pytest.param(
            orm.dead_letters.insert(),
            {"subscriber": "a\x00b", "message_id": "m", "error": "e", "attempts": 1},
            id="NUL",
        ),
    ],
)
async def test_a_value_postgresql_refuses_is_a_refused_value(
    engine: AsyncEngine,
    database_url: str,
    statement: Executable,
    parameters: dict[str, object],
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores these: it checks no length or range, allows NUL")
    with pytest.raises(DataRefused) as refused:
        await _execute(engine, database_url, statement, parameters)

    assert str(refused.value).startswith("the database refused a value: ")


async def _execute(
    engine: AsyncEngine, url: str, statement: Executable, parameters: dict[str, object]
) -> None:
    with database_errors.translated_errors(url):
        async with engine.begin() as connection:
            await connection.execute(statement, parameters)


def _dead(database_url: str, tmp_path: Path) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'allocation.db'}"
    dead = url.set(port=_closed_port(), password=PASSWORD)
    return dead.render_as_string(hide_password=False)


async def test_a_dead_server_is_unavailable(database_url: str, tmp_path: Path) -> None:
    dead = _dead(database_url, tmp_path)
    if database_url.startswith("sqlite"):
        # A file in a missing directory is named as such before any connection.
        with pytest.raises(DatabaseDirectoryMissing) as unavailable:
            database.create_engine(dead)
        assert PASSWORD not in str(unavailable.value)
        return
    engine = database.create_engine(dead)
    try:
        with pytest.raises(DatabaseUnavailable) as unavailable:
            await _execute(engine, dead, text("SELECT 1"), {})
    finally:
        await engine.dispose()

    assert PASSWORD not in str(unavailable.value)
