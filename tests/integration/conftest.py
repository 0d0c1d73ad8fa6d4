"""Real databases: every test here runs against a SQLite file and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as redis
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allocation import config
from allocation.adapters import database, engines, migrations, tables
from allocation.bootstrap import bootstrap
from allocation.testing import FakeConsole, FakeNotifications
from tests.conftest import service_missing
from tests.integration.store_fixtures import store, store_engine  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

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
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "allocation.db"
        return f"sqlite+aiosqlite:///{path}"
    url = database.normalise_database_url(
        os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    await _probe(url)
    return url


async def _probe(url: str) -> None:
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
    """A SQLAlchemy engine on a freshly migrated database, shared by the session
    (migrations and direct table access run through it)."""
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
        shadows = await connection.run_sync(
            lambda sync: [
                name
                for name in inspect(sync).get_table_names()
                if name.endswith("_shadow")
            ]
        )
        for name in shadows:
            await connection.execute(text(f"DROP TABLE {name}"))


@pytest.fixture(scope="session")
async def opened_database(
    engine: AsyncEngine, database_url: str
) -> AsyncIterator[engines.Database]:
    """The engine's own adapters on the migrated database, shared by the session."""
    opened = await engines.open_database(database_url, pool_size=5, read_only=False)
    yield opened
    await opened.close()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@pytest.fixture
def uow_factory(
    opened_database: engines.Database,
) -> Callable[[], AbstractUnitOfWork]:
    return opened_database.unit_of_work


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
