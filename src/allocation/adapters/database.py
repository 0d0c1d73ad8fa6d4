"""Engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and driver-error translation.

Asyncio only, like the drivers underneath.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm.exc import StaleDataError

from allocation.adapters import postgres_driver, sqlite_driver
from allocation.adapters.exceptions import (
    DatabaseDirectoryMissing,
    DatabaseFileUnusable,
    DatabaseReadOnly,
    DatabaseUnavailable,
    DataRefused,
)
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
# What a PostgreSQL URL's query may say, in libpq's words. SQLAlchemy hands every
# query key to asyncpg.connect() as a keyword, which knows none of libpq's, so they
# are translated here (postgres_connect_options) and anything else is refused.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
POSTGRES_URL_OPTIONS = ("sslmode", "ssl", "application_name")
ACCEPTED_POSTGRES_OPTIONS = (
    f"sslmode (or ssl) = {', '.join(SSL_MODES)}; application_name"
)


def normalise_database_url(url: str) -> str:
    """Add the async driver to plain ``sqlite://`` and ``postgresql://`` URLs.

    ``postgres://`` (Heroku's and libpq's spelling) means ``postgresql://``.
    """
    for plain, with_driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgres+asyncpg://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return with_driver + url[len(plain) :]
    return url


def postgres_connect_options(url: str | URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without its query, and the asyncpg.connect() arguments its query meant.

    ``sslmode`` (or asyncpg's own ``ssl``) becomes ``ssl``, ``application_name`` a
    server setting.

    Raises:
        ValueError: an option not in POSTGRES_URL_OPTIONS, an option given twice,
            or an SSL mode not in SSL_MODES; the message names it.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    unknown = sorted(set(parsed.query) - set(POSTGRES_URL_OPTIONS))
    if unknown:
        raise ValueError(f"query option {unknown[0]!r} is not accepted")
    query = dict(parsed.query)
    repeated = [key for key, value in query.items() if isinstance(value, tuple)]
    if repeated:
        raise ValueError(f"query option {repeated[0]!r} is given more than once")
    if "ssl" in query and "sslmode" in query:
        raise ValueError("query options 'ssl' and 'sslmode' are both given")
    arguments: dict[str, Any] = {}
    mode = query.get("sslmode", query.get("ssl"))
    if mode is not None:
        if mode not in SSL_MODES:
            raise ValueError(f"SSL mode {mode!r} is not accepted")
        arguments["ssl"] = mode
    if "application_name" in query:
        arguments["server_settings"] = {"application_name": query["application_name"]}
    return parsed.set(query={}), arguments


def create_engine(
    url: str, *, pool_size: int | None = None, read_only: bool = False
) -> AsyncEngine:
    """Build the engine for ``url``; SQLite files get WAL, a busy timeout, foreign keys.

    Plain ``sqlite://`` and ``postgresql://`` URLs get their async drivers. SQLite
    runs through our one-trip aiosqlite adapter (see ``sqlite_driver``); PostgreSQL
    holds at most ``pool_size`` connections (SQLAlchemy's 5 + 10 overflow without).

    ``read_only`` opens the database for reading only (SQLite ``mode=ro``,
    PostgreSQL read-only transactions), which works on a file the process may not
    write. A read-write engine on a SQLite file it may not write is refused here,
    before anything is tried, as is a file in a directory that does not exist.

    Raises:
        DatabaseUnavailable: the URL is unusable.
        DatabaseDirectoryMissing: the SQLite file's directory does not exist.
        DatabaseReadOnly: a read-write engine on a SQLite file that is read-only.
        DatabaseFileUnusable: a SQLite file that cannot even be read.
    """
    url = normalise_database_url(url)
    options: dict[str, Any] = {}
    target: str | URL = url
    try:
        if url.startswith("sqlite+aiosqlite:"):
            open_options = _sqlite_open_options(make_url(url).database, read_only)
            # Our UoW always ends its transaction, so the pool's unconditional
            # rollback on return is replaced by one that runs only when needed.
            options = {
                "module": sqlite_driver.dbapi(open_options),
                "pool_reset_on_return": None,
            }
        elif url.startswith("postgresql+asyncpg:"):
            # The transactions are begun on the driver by postgres_driver's hooks.
            options = {"isolation_level": "AUTOCOMMIT"}
            target, connect_args = postgres_connect_options(url)
            if read_only:
                connect_args["server_settings"] = {
                    **connect_args.get("server_settings", {}),
                    "default_transaction_read_only": "on",
                }
            options["connect_args"] = connect_args
            if pool_size is not None:
                # A fixed pool: tasks beyond it wait for a connection instead of
                # opening and closing overflow connections under load.
                options.update(pool_size=pool_size, max_overflow=0)
        if read_only:
            options["execution_options"] = {READ_ONLY: True}
        engine = create_async_engine(target, **options)
    except (
        exc.ArgumentError,
        exc.NoSuchModuleError,
        exc.InvalidRequestError,
        ImportError,
        ValueError,
    ) as error:
        # Only the first line: SQLAlchemy's SQLite error goes on to list examples.
        reason = f"unusable URL ({_first_line(error)})"
        raise DatabaseUnavailable(url, reason) from error
    if engine.dialect.name == "sqlite":
        prepare = (
            _prepare_read_only_sqlite_connection
            if read_only
            else _prepare_sqlite_connection
        )
        event.listen(engine.sync_engine, "connect", prepare)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        if "module" in options:
            event.listen(engine.sync_engine, "reset", _reset_sqlite_connection)
    elif "isolation_level" in options:
        postgres_driver.install(engine)
    return engine


def _sqlite_open_options(database: str | None, read_only: bool) -> dict[str, str]:
    """How to open a SQLite file (URI parameters), once it is known to be usable."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return {}  # in memory, or a URI the user wrote: opened as it says
    path = Path(database).absolute()
    try:
        return _file_open_options(path, read_only=read_only)
    except OSError as error:  # e.g. a parent directory this user may not enter
        raise DatabaseFileUnusable(str(path), error.strerror or str(error)) from error


def _file_open_options(path: Path, *, read_only: bool) -> dict[str, str]:
    directory = path.parent
    if not directory.is_dir():
        raise DatabaseDirectoryMissing(str(path), str(directory))
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    may_write = _writable(directory) and (not path.exists() or _writable(path))
    if not read_only:
        if path.exists() and not _writable(path):
            raise DatabaseReadOnly(str(path), "the file is not writable")
        if not _writable(directory) and not (wal.exists() and shm.exists()):
            # SQLite creates the file, its -wal and its -shm next to it.
            raise DatabaseReadOnly(str(path), "its directory is not writable")
        return {}
    if not wal.exists() and not shm.exists() and not may_write:
        # Nothing is waiting in a -wal file and no connection is open (it would
        # have made these files), and this process could create neither the -shm
        # file a WAL reader needs nor anything else: the file alone is the
        # database, read as it is, with nothing created next to it.
        return {"mode": "ro", "immutable": "1"}
    if not shm.exists() and not _writable(directory):
        raise DatabaseFileUnusable(
            str(path),
            "its -wal file holds changes SQLite can read only through a -shm file,"
            " which it cannot create: the directory is read-only",
        )
    return {"mode": "ro"}


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


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


def _prepare_read_only_sqlite_connection(
    dbapi_connection: Any, _record: object
) -> None:
    # A reader changes no setting of the file (the journal mode is the writers'),
    # and refuses any write, whatever the file's permissions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("query_only=ON", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
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
# SQLSTATEs that mean "try again": serialization failure and deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# SQLSTATE class 22, "data exception": a value out of range, too long, not valid
# for its type, a NUL byte; asyncpg also gives 22000 to an argument it cannot encode.
_DATA_SQLSTATE_CLASS = "22"
# The database cannot be reached or used, whatever the statement: connection
# exception (08), insufficient resources such as too many connections (53),
# operator intervention such as a shutdown (57), system error (58), refused
# credentials (28), no such database (3D); read-only and permission denied stop
# every write alike.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "28", "3D"})
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "42501"})
# SQLite's primary result codes: a value too big or of the wrong type; and a file
# that cannot be opened, read, written or trusted, or memory that ran out.
_SQLITE_DATA_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH})
_SQLITE_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_AUTH,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOLFS,
    }
)


@contextlib.contextmanager
def translated_errors(url: str | URL, new_emails: Iterable[str] = ()) -> Iterator[None]:
    """Re-raise driver errors as ours; ``new_emails`` name a duplicate-email failure."""
    try:
        yield
    except (exc.SQLAlchemyError, OSError, *_DRIVER_ERRORS) as error:
        ours = translate(error, _plain(url), new_emails)
        if ours is error:
            raise
        raise ours from error


def translate(
    error: BaseException, url: str, new_emails: Iterable[str] = ()
) -> BaseException:
    """Return the AllocationError that ``error`` means, or ``error`` itself.

    By cause: a lost race is a ConcurrencyConflict (rerun), a value the database
    refuses is DataRefused (the input's fault), a database that cannot be reached or
    used is DatabaseUnavailable (try later). What fits none of them, a bug such as
    a syntax error, is left as it is.
    """
    if isinstance(error, StaleDataError):
        return ConcurrencyConflict("product", "it changed since it was read")
    driver_error = _driver_error(error)
    if isinstance(
        error, (exc.IntegrityError, asyncpg.IntegrityConstraintViolationError)
    ):
        text = str(driver_error)
        if "users.email" in text or "uq_users_email" in text:
            return EmailAlreadyRegistered(next(iter(new_emails), "?"))
        if "processed_messages" in text:
            return AlreadyProcessed(text)
        # Another transaction created the same key first: running the command again
        # sees that row and gives the precise answer (or succeeds).
        return ConcurrencyConflict("database row", text)
    if _is_retryable(driver_error):
        return ConcurrencyConflict("database", str(driver_error))
    if _is_refused_value(error, driver_error):
        return DataRefused(_first_line(driver_error))
    if _is_unavailable(error, driver_error):
        return DatabaseUnavailable(url, _first_line(driver_error))
    return error


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers."""
    # A StatementError (DBAPIError included) holds what was raised underneath.
    cause: BaseException | None = (
        error.orig if isinstance(error, exc.StatementError) else error
    )
    # SQLAlchemy's asyncpg adapter raises its own class from asyncpg's.
    underneath = cause.__cause__ if cause is not None else None
    found: BaseException = error if cause is None else cause
    if isinstance(underneath, _DRIVER_ERRORS):
        found = underneath
    return found


def _sqlstate(driver_error: BaseException) -> str:
    return str(getattr(driver_error, "sqlstate", None) or "")


def _is_retryable(driver_error: BaseException) -> bool:
    text = str(driver_error).lower()
    if "database is locked" in text or "database is busy" in text:
        return True
    return _sqlstate(driver_error) in _RETRYABLE_SQLSTATES


def _is_refused_value(error: BaseException, driver_error: BaseException) -> bool:
    if isinstance(error, exc.DataError) or isinstance(driver_error, sqlite3.DataError):
        return True
    if _sqlstate(driver_error).startswith(_DATA_SQLSTATE_CLASS):
        return True
    if isinstance(driver_error, sqlite3.Error):
        return _sqlite_code(driver_error) in _SQLITE_DATA_CODES
    # asyncpg's client-side "invalid input" of older versions: an InterfaceError.
    if isinstance(driver_error, asyncpg.InterfaceError) and isinstance(
        driver_error, ValueError
    ):
        return True
    # A bind processor refused the value before any driver saw it (a str for a
    # Date column on SQLite): SQLAlchemy wraps that in a bare StatementError.
    return (
        isinstance(error, exc.StatementError)
        and not isinstance(error, exc.DBAPIError)
        and isinstance(error.orig, (TypeError, ValueError, ArithmeticError))
    )


def _is_unavailable(error: BaseException, driver_error: BaseException) -> bool:
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        driver_error,
        (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ),
    ):
        return True
    if isinstance(driver_error, sqlite3.Error):
        return _sqlite_code(driver_error) in _SQLITE_UNAVAILABLE_CODES
    sqlstate = _sqlstate(driver_error)
    return sqlstate in _UNAVAILABLE_SQLSTATES or (
        sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    )


def _sqlite_code(error: sqlite3.Error) -> int:
    # The extended code's low byte is the primary one (SQLITE_IOERR_READ is an IOERR);
    # an error raised by our own driver code carries none.
    code: int | None = getattr(error, "sqlite_errorcode", None)
    return -1 if code is None else code & 0xFF


def _plain(url: str | URL) -> str:
    # Rendered in full here: the error classes mask the password themselves.
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
