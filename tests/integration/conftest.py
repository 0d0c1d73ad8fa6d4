"""Real databases: every test here runs against a SQLite file and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allocation import config
from allocation.adapters import migrations, tables
from allocation.service_layer import unit_of_work
from allocation.testing import FakeConsole, FakeNotifications
from tests.conftest import service_missing
from tests.integration.store_fixtures import store, store_engine  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # SQLAlchemy's async drivers (aiosqlite, asyncpg) run on asyncio only; the
    # session scope lets the database fixtures below live for the whole run.
    return "asyncio"


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    from allocation.adapters import database  # not importable on core yet

    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "allocation.db"
        return f"sqlite+aiosqlite:///{path}"
    url = database.normalise_database_url(
        os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    await _probe(url)
    return url


async def _probe(url: str) -> None:
    from allocation.adapters import database  # not importable on core yet

    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        service_missing(f"PostgreSQL at {url} does not answer: {error}")
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a freshly migrated database, shared by the whole session."""
    from allocation.adapters import database  # not importable on core yet

    engine = database.create_engine(database_url)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    await migrations.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def _empty_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After each test, delete every row: real commits stay real, tests stay apart."""
    yield
    if "engine" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    async with engine.begin() as connection:
        for table in reversed(tables.metadata.sorted_tables):
            await connection.execute(table.delete())


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@pytest.fixture
def uow_factory(
    session_factory: async_sessionmaker[AsyncSession],
) -> Callable[[], unit_of_work.SqlAlchemyUnitOfWork]:
    return lambda: unit_of_work.SqlAlchemyUnitOfWork(session_factory)


@pytest.fixture
def notifications() -> FakeNotifications:
    return FakeNotifications()


@pytest.fixture
def console() -> FakeConsole:
    return FakeConsole()


@pytest.fixture
async def bus(
    engine: AsyncEngine,
    database_url: str,
    notifications: FakeNotifications,
    console: FakeConsole,
) -> AsyncIterator[MessageBus]:
    from allocation.bootstrap import bootstrap  # not importable on core yet

    settings = config.Settings(database_url=database_url, retry_delay=0.01)
    async with bootstrap(
        settings=settings, notifications=notifications, console=console
    ) as bus:
        yield bus


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    """A client of the test Redis (``TEST_REDIS_URL``), answering in str."""
    async with _redis(decode_responses=True) as client:
        yield client


@pytest.fixture
async def raw_redis_client() -> AsyncIterator[redis.Redis]:
    """A client of the test Redis answering in bytes, as they are."""
    async with _redis(decode_responses=False) as client:
        yield client


@contextlib.asynccontextmanager
async def _redis(*, decode_responses: bool) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=decode_responses)
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as error:
        await client.aclose()
        service_missing(f"Redis at {REDIS_URL} does not answer: {error}")
    try:
        yield client
    finally:
        await client.aclose()
