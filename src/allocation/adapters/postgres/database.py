"""A PostgreSQL database: an asyncpg pool, and units of work on it (asyncio only).

Built once by bootstrap from a ``postgresql+asyncpg://`` URL and closed on exit.
The URL's query may say what libpq's would (``sslmode``, ``application_name``);
anything else is refused before a connection is tried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from allocation.adapters.exceptions import first_line
from allocation.adapters.postgres import errors
from allocation.adapters.postgres.listener import PostgresLogListener
from allocation.adapters.postgres.locks import PostgresSubscriberLocks
from allocation.adapters.postgres.unit_of_work import PostgresUnitOfWork
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy.engine import URL

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
URL_OPTIONS = ("sslmode", "ssl", "application_name")
ACCEPTED_OPTIONS = f"sslmode (or ssl) = {', '.join(SSL_MODES)}; application_name"
# How long opening a connection may take before the database counts as unavailable.
CONNECT_TIMEOUT_SECONDS = 10.0
# Spellings of PostgreSQL URLs that mean this engine.
_SCHEMES = ("postgresql", "postgresql+asyncpg", "postgres", "postgres+asyncpg")


def connect_options(url: str | URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without its query, and the asyncpg.connect() arguments its query meant.

    ``sslmode`` (or asyncpg's own ``ssl``) becomes ``ssl``, ``application_name`` a
    server setting.

    Raises:
        ValueError: an option not in URL_OPTIONS, an option given twice, or an SSL
            mode not in SSL_MODES; the message names it.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    unknown = sorted(set(parsed.query) - set(URL_OPTIONS))
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


class PostgresDatabase:
    """An asyncpg pool of at most ``pool_size`` connections, and what runs on it.

    Open it with ``await PostgresDatabase.open(url, pool_size=..., read_only=...)``;
    ``unit_of_work()`` gives a fresh unit of work per call; ``close()`` ends it.
    Read-only, every transaction on it is (the server refuses writes) and units
    of work take no locks.

    Attributes:
        url: the URL it was opened with (shown masked by our errors).
        read_only: whether it refuses writes.
    """

    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        read_only: bool,
        dsn: str,
        connect_arguments: dict[str, Any],
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.pool = pool
        self._dsn = dsn
        self._connect_arguments = connect_arguments

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int,
        read_only: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> Self:
        """Connect to the database at ``url`` (one connection now, the rest as needed).

        Raises:
            DatabaseUnavailable: the URL is unusable, or the server cannot be
                reached, refuses us, or has no such database.
        """
        try:
            target, arguments = connect_options(url)
        except (ArgumentError, ValueError) as error:
            reason = f"unusable URL ({first_line(error)})"
            raise DatabaseUnavailable(url, reason) from error
        if target.drivername not in _SCHEMES:
            reason = f"unusable URL (not PostgreSQL: {target.drivername})"
            raise DatabaseUnavailable(url, reason)
        if read_only:
            arguments["server_settings"] = {
                **arguments.get("server_settings", {}),
                "default_transaction_read_only": "on",
            }
        arguments["timeout"] = connect_timeout
        dsn = target.set(drivername="postgresql").render_as_string(hide_password=False)
        with errors.translated(url):
            pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                # asyncpg's default reset (a ROLLBACK if needed, then UNLISTEN, RESET
                # ALL, CLOSE ALL and unlocking every advisory lock) costs a round
                # trip per checkout. Our units of work end their transactions and
                # set nothing; what takes a session lock discards the connection
                # when unsure it let go. asyncpg still rolls back an open
                # transaction before calling this.
                reset=_nothing_to_reset,
                **arguments,
            )
        return cls(url, pool, read_only=read_only, dsn=dsn, connect_arguments=arguments)

    async def close(self) -> None:
        """Close every connection (those in use are waited for)."""
        await self.pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def unit_of_work(self, **options: Any) -> PostgresUnitOfWork:
        """A fresh unit of work on this database; ``options`` are
        ``AbstractUnitOfWork``'s (``snapshot_every``, ``inline_projections``)."""
        return PostgresUnitOfWork(self, **options)

    def subscriber_locks(self) -> PostgresSubscriberLocks:
        """Locks that let one worker process at a time catch a subscriber up."""
        return PostgresSubscriberLocks(self)

    def log_listener(self) -> PostgresLogListener:
        """What tells the relay that events were committed."""
        return PostgresLogListener(self)

    async def connect(
        self, *, application_name: str | None = None
    ) -> asyncpg.Connection[asyncpg.Record]:
        """A connection of its own, outside the pool (e.g. to LISTEN on); the caller
        closes it.

        Raises:
            DatabaseUnavailable: it cannot be opened.
        """
        arguments = dict(self._connect_arguments)
        if application_name is not None:
            arguments["server_settings"] = {
                **arguments.get("server_settings", {}),
                "application_name": application_name,
            }
        with errors.translated(self.url):
            connection: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
                self._dsn, **arguments
            )
        return connection


async def _nothing_to_reset(_connection: asyncpg.Connection[asyncpg.Record]) -> None:
    return None
