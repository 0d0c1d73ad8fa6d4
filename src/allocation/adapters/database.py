"""SQLAlchemy engines, for what runs through SQLAlchemy: migrations and the schema check.

Asyncio only, like the drivers underneath. The application's own work runs on each
engine's package (``adapters.sqlite``, ``adapters.postgres``); this module also holds
the URL rules they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from allocation.adapters.exceptions import first_line
from allocation.adapters.postgres import database as postgres_database
from allocation.adapters.sqlite import files
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection

# Execution option that makes a SQLite transaction begin DEFERRED (a reader that does
# not hold the write lock); every other transaction begins IMMEDIATE.
READ_ONLY = "allocation_read_only"
SQLITE_BUSY_TIMEOUT_MS = 15_000


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


def create_engine(
    url: str,
    *,
    pool_size: int | None = None,
    read_only: bool = False,
    pre_ping: bool = False,
) -> AsyncEngine:
    """Build the engine for ``url``; SQLite files get WAL, a busy timeout, foreign keys.

    Plain ``sqlite://`` and ``postgresql://`` URLs get their async drivers;
    PostgreSQL holds at most ``pool_size`` connections (SQLAlchemy's 5 + 10
    overflow without).

    ``pre_ping`` tries each pooled connection before handing it out, so one the
    database dropped (a restart) is replaced rather than failing its next use.

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
    options: dict[str, Any] = {"pool_pre_ping": True} if pre_ping else {}
    target: str | URL = url
    try:
        if url.startswith("sqlite+aiosqlite:"):
            location = files.locate(url, read_only=read_only)
            if location.uri:
                separator = "&" if "?" in location.target else "?"
                target = f"sqlite+aiosqlite:///{location.target}{separator}uri=true"
        elif url.startswith("postgresql+asyncpg:"):
            target, connect_args = postgres_database.connect_options(url)
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
        reason = f"unusable URL ({first_line(error)})"
        raise DatabaseUnavailable(url, reason) from error
    if engine.dialect.name == "sqlite":
        prepare = (
            _prepare_read_only_sqlite_connection
            if read_only
            else _prepare_sqlite_connection
        )
        event.listen(engine.sync_engine, "connect", prepare)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
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
    connection.exec_driver_sql(f"BEGIN {mode}")
