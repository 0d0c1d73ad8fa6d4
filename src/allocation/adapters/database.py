"""Engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and driver-error translation.

Asyncio only, like the drivers underneath.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm.exc import StaleDataError

from allocation.adapters import postgres_driver, sqlite_driver
from allocation.adapters.exceptions import DatabaseUnavailable
from allocation.domain.exceptions import (
    AlreadyProcessed,
    ConcurrencyConflict,
    EmailAlreadyRegistered,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from sqlalchemy.engine import URL, Connection
    from sqlalchemy.pool import PoolResetState

# Execution option that makes a SQLite transaction begin DEFERRED (a reader that does
# not hold the write lock); every other transaction begins IMMEDIATE.
READ_ONLY = "allocation_read_only"
SQLITE_BUSY_TIMEOUT_MS = 15_000
# SQLSTATEs that mean "try again": serialization failure and deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def normalise_database_url(url: str) -> str:
    """Add the async driver to plain ``sqlite://`` and ``postgresql://`` URLs."""
    for plain, with_driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return with_driver + url[len(plain) :]
    return url


def create_engine(url: str, *, pool_size: int | None = None) -> AsyncEngine:
    """Build the engine for ``url``; SQLite files get WAL, a busy timeout, foreign keys.

    Plain ``sqlite://`` and ``postgresql://`` URLs get their async drivers. SQLite
    runs through our one-trip aiosqlite adapter (see ``sqlite_driver``); PostgreSQL
    holds at most ``pool_size`` connections (SQLAlchemy's 5 + 10 overflow without).
    """
    url = normalise_database_url(url)
    options: dict[str, Any] = {}
    if url.startswith("sqlite+aiosqlite:"):
        # Our UoW always ends its transaction, so the pool's unconditional
        # rollback on return is replaced by one that runs only when needed.
        options = {"module": sqlite_driver.dbapi(), "pool_reset_on_return": None}
    elif url.startswith("postgresql+asyncpg:"):
        # The transactions are begun on the driver by postgres_driver's hooks.
        options = {"isolation_level": "AUTOCOMMIT"}
        if pool_size is not None:
            # A fixed pool: tasks beyond it wait for a connection instead of
            # opening and closing overflow connections under load.
            options.update(pool_size=pool_size, max_overflow=0)
    try:
        engine = create_async_engine(url, **options)
    except (
        exc.ArgumentError,
        exc.NoSuchModuleError,
        exc.InvalidRequestError,
        ImportError,
        ValueError,
    ) as error:
        raise DatabaseUnavailable(url, f"unusable URL ({error})") from error
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _prepare_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        if options:
            event.listen(engine.sync_engine, "reset", _reset_sqlite_connection)
    elif options:
        postgres_driver.install(engine)
    return engine


def _prepare_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    # Take BEGIN away from the sqlite3 module, which would defer it and so turn
    # every writer into a reader that later fails to upgrade; we emit our own.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # synchronous=NORMAL in WAL mode loses nothing when a process dies; only a power
    # cut can drop the last commits, the usual trade for WAL's speed.
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front, so concurrent writers queue on the
    # busy timeout instead of failing halfway with SQLITE_BUSY.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    mode = "DEFERRED" if read_only else "IMMEDIATE"
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
        dbapi_connection.begin(mode)
    else:
        connection.exec_driver_sql(f"BEGIN {mode}")


def _reset_sqlite_connection(
    dbapi_connection: Any, _record: object, reset_state: PoolResetState
) -> None:
    if not reset_state.terminate_only and dbapi_connection.in_transaction:
        dbapi_connection.rollback()


# What the raw asyncpg statements of postgres_driver raise, unwrapped by SQLAlchemy.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@contextlib.contextmanager
def translated_errors(url: str | URL, new_emails: Iterable[str] = ()) -> Iterator[None]:
    """Re-raise driver errors as ours; ``new_emails`` name a duplicate-email failure."""
    try:
        yield
    except (exc.SQLAlchemyError, OSError, *_DRIVER_ERRORS) as error:
        ours = translate(error, str(url), new_emails)
        if ours is error:
            raise
        raise ours from error


def translate(
    error: BaseException, url: str, new_emails: Iterable[str] = ()
) -> BaseException:
    """Return the AllocationError that ``error`` means, or ``error`` itself."""
    if isinstance(error, StaleDataError):
        return ConcurrencyConflict("product", "it changed since it was read")
    # SQLAlchemy wraps the driver's error; postgres_driver's statements raise it bare.
    cause = error.orig if isinstance(error, exc.DBAPIError) else error
    if isinstance(
        error, (exc.IntegrityError, asyncpg.IntegrityConstraintViolationError)
    ):
        text = str(cause)
        if "users.email" in text or "uq_users_email" in text:
            return EmailAlreadyRegistered(next(iter(new_emails), "?"))
        if "processed_messages" in text:
            return AlreadyProcessed(text)
        # Another transaction created the same key first: running the command again
        # sees that row and gives the precise answer (or succeeds).
        return ConcurrencyConflict("database row", text)
    if isinstance(error, (exc.DBAPIError, asyncpg.PostgresError)):
        if _is_retryable(cause):
            return ConcurrencyConflict("database", str(cause))
        return DatabaseUnavailable(_safe(url), _first_line(cause))
    if isinstance(
        error, (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    ):
        return DatabaseUnavailable(_safe(url), str(error) or type(error).__name__)
    return error


def _is_retryable(cause: object) -> bool:
    text = str(cause).lower()
    if "database is locked" in text or "database is busy" in text:
        return True
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return sqlstate in _RETRYABLE_SQLSTATES


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable url>"
