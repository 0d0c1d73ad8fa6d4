"""SQLAlchemy engines, for what runs through SQLAlchemy: migrations and the schema check.

Asyncio only, like the drivers underneath. The application's own work runs on each
engine's package (``adapters.sqlite``, ``adapters.postgres``); this module also holds
the URL rules they share.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from allocation.adapters import database_errors
from allocation.adapters.exceptions import (
    DatabaseDirectoryMissing,
    DatabaseFileUnusable,
    DatabaseReadOnly,
)
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection

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

    Plain ``sqlite://`` and ``postgresql://`` URLs get their async drivers;
    PostgreSQL holds at most ``pool_size`` connections (SQLAlchemy's 5 + 10
    overflow without).

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
            if open_options:
                target = sqlite_uri(make_url(url).database or "", open_options)
                options["connect_args"] = {"uri": True}
        elif url.startswith("postgresql+asyncpg:"):
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
        reason = f"unusable URL ({database_errors.first_line(error)})"
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


def sqlite_uri(path: str, open_options: dict[str, str]) -> str:
    """A SQLAlchemy URL opening the file at ``path`` with SQLite URI parameters."""
    query = urllib.parse.urlencode(open_options)
    return f"sqlite+aiosqlite:///file:{urllib.parse.quote(path)}?{query}&uri=true"


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
    connection.exec_driver_sql(f"BEGIN {mode}")
