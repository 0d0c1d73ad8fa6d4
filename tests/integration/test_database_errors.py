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

from allocation.adapters import database_errors, engines
from allocation.adapters.exceptions import DatabaseDirectoryMissing
from allocation.service_layer.exceptions import DatabaseUnavailable, DataRefused

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

PASSWORD = "planted-secret-7f3a"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_position_beyond_64_bits_is_a_refused_value(
    uow_factory: Callable[[], AbstractUnitOfWork],
) -> None:
    with pytest.raises(DataRefused):
        async with uow_factory() as uow:
            await uow.event_log.read(after=10**23)


async def test_a_lone_surrogate_is_a_refused_value(
    uow_factory: Callable[[], AbstractUnitOfWork],
) -> None:
    with pytest.raises(DataRefused):
        async with uow_factory() as uow:
            await uow.event_log.read(after=0, names=["\udcff"])


@pytest.mark.parametrize(
    ("subscriber", "attempts"),
    [
        pytest.param("s" * 101, 1, id="too long"),
        pytest.param("s", 2**31, id="beyond its integer"),
        pytest.param("a\x00b", 1, id="NUL"),
    ],
)
async def test_a_value_postgresql_refuses_is_a_refused_value(
    database_url: str,
    uow_factory: Callable[[], AbstractUnitOfWork],
    subscriber: str,
    attempts: int,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores these: it checks no length or range, allows NUL")

    async def record() -> None:
        async with uow_factory() as uow:
            await uow.event_log.add_dead_letter(subscriber, "m", "e", attempts)
            await uow.commit()

    with pytest.raises(DataRefused) as refused:
        await record()

    assert str(refused.value).startswith("the database refused a value: ")


async def test_a_value_refused_through_sqlalchemy_is_a_refused_value(
    engine: AsyncEngine, database_url: str
) -> None:
    """Migrations and the schema check run through SQLAlchemy: the same rule."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite checks no integer range")
    with pytest.raises(DataRefused), database_errors.translated_errors(database_url):
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT CAST(:qty AS INTEGER) + 1"), {"qty": 2**31 - 1}
            )


def _dead(database_url: str, tmp_path: Path) -> str:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'allocation.db'}"
    dead = url.set(port=_closed_port(), password=PASSWORD)
    return dead.render_as_string(hide_password=False)


async def test_a_dead_server_is_unavailable(database_url: str, tmp_path: Path) -> None:
    dead = _dead(database_url, tmp_path)
    expected = (
        # A file in a missing directory is named as such before any connection.
        DatabaseDirectoryMissing
        if database_url.startswith("sqlite")
        else DatabaseUnavailable
    )
    with pytest.raises(expected) as unavailable:
        await engines.open_database(dead, pool_size=1, read_only=False)

    assert PASSWORD not in str(unavailable.value)


async def test_a_database_of_another_kind_is_named_as_unusable() -> None:
    """Issue 9 review: a mysql:// URL was reported as "not a sqlite:// URL"."""
    with pytest.raises(DatabaseUnavailable) as refused:
        await engines.open_database(
            f"mysql://u:{PASSWORD}@127.0.0.1/db", pool_size=1, read_only=False
        )

    assert "a sqlite:// or postgresql:// URL is needed" in str(refused.value)
    assert PASSWORD not in str(refused.value)
