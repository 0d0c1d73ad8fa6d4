"""A SQLite database opened once per process: its settings and a small pool of
aiosqlite connections (asyncio only).

Connections use WAL (readers never wait for the writer), a busy timeout (writers
of other processes queue instead of failing), foreign keys, and
``synchronous=NORMAL``, which in WAL mode loses nothing when a process dies (only
a power cut can drop the last commits: the usual trade for WAL's speed). Opened
read-only, the file is opened ``mode=ro`` with ``query_only``, which works on a
file this process may not write.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import aiosqlite
import anyio

from allocation.adapters.sqlite import errors, files
from allocation.adapters.sqlite.session import on_worker
from allocation.adapters.sqlite.unit_of_work import SqliteUnitOfWork
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.service_layer.locks import SubscriberLocks

if TYPE_CHECKING:
    from collections.abc import Sequence

BUSY_TIMEOUT_MS = 15_000
DEFAULT_POOL_SIZE = 5
# A unit of work waits this long for a free connection, then gives up.
POOL_TIMEOUT_SECONDS = 30.0
# Long enough for any close that can finish; a stuck one is dropped after it.
_CLOSE_SECONDS = 2.0
# Enough for every statement of the engine, shadow tables included.
_CACHED_STATEMENTS = 256
_WRITER_PRAGMAS = (
    # First, so that switching to WAL waits for a writer instead of failing.
    f"busy_timeout={BUSY_TIMEOUT_MS}",
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
)
# A reader changes no setting of the file (the journal mode is the writers'), and
# refuses any write, whatever the file's permissions.
_READER_PRAGMAS = ("query_only=ON", f"busy_timeout={BUSY_TIMEOUT_MS}")


class SqliteDatabase:
    """An open SQLite database: it makes units of work and owns their connections.

    Build it with ``await SqliteDatabase.open(url, ...)``, once per process, and
    ``close()`` it on the way out.

    Attributes:
        url: the URL it was opened from.
        read_only: opened for reading only: every write is refused.
        errors: turns the driver's errors into ours (see ``errors``).
    """

    def __init__(
        self, url: str, location: files.Location, *, pool_size: int, read_only: bool
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.errors = errors.TranslatedErrors(
            url, path=location.path, read_only=read_only
        )
        self._location = location
        # Each in-memory connection would be a database of its own.
        self._pool_size = 1 if location.in_memory else pool_size
        self._slots = anyio.Semaphore(self._pool_size, fast_acquire=True)
        self._idle: list[aiosqlite.Connection] = []
        # Writers of this process queue here instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms; other processes still queue there.
        self._writer = anyio.Semaphore(1, fast_acquire=True)
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        read_only: bool = False,
    ) -> SqliteDatabase:
        """Open the database at ``url`` (``sqlite+aiosqlite:///path``), with at
        most ``pool_size`` connections; one is opened now, so a file that cannot
        be used is reported here.

        Raises:
            DatabaseUnavailable: the URL is unusable, or the file cannot be opened.
            DatabaseDirectoryMissing: the file's directory does not exist.
            DatabaseReadOnly: a read-write opening of a read-only file.
            DatabaseFileUnusable: a file that cannot even be read.
        """
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        location = files.locate(url, read_only=read_only)
        database = cls(url, location, pool_size=pool_size, read_only=read_only)
        database._idle.append(await database._connect())
        return database

    def unit_of_work(self, **options: Any) -> SqliteUnitOfWork:
        """A fresh unit of work on this database (one per handler call); the
        options are AbstractUnitOfWork's (``snapshot_every``,
        ``inline_projections``)."""
        return SqliteUnitOfWork(self, **options)

    def subscriber_locks(self) -> SubscriberLocks:
        """Catch-up's locks: in this process only (SQLite serves one process well)."""
        return SubscriberLocks()

    def log_listener(self) -> None:
        """None: SQLite cannot tell other connections of a commit."""

    async def close(self) -> None:
        """Close the idle connections; those in use close as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _disconnect(connection)

    async def check_out(self) -> aiosqlite.Connection:
        """A connection for one unit of work; wait while all are in use.

        Raises:
            DatabaseUnavailable: the database is closed, no connection came free
                within POOL_TIMEOUT_SECONDS, or a new one cannot be opened.
        """
        if self._closed:
            raise DatabaseUnavailable(self.url, "the database was closed")
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(POOL_TIMEOUT_SECONDS) as waiting:
                await self._slots.acquire()
            if waiting.cancelled_caught:
                raise DatabaseUnavailable(
                    self.url,
                    f"all {self._pool_size} connections stayed in use for"
                    f" {POOL_TIMEOUT_SECONDS:g} s",
                ) from None
        try:
            return self._idle.pop() if self._idle else await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def check_in(
        self, connection: aiosqlite.Connection, *, reusable: bool
    ) -> None:
        """Take a connection back: kept for the next unit of work if
        ``reusable`` (no transaction left open, nothing broken), else closed."""
        try:
            if reusable and not self._closed:
                self._idle.append(connection)
            else:
                await _disconnect(connection)
        finally:
            self._slots.release()

    async def hold_writer(self) -> None:
        """Wait for this process's other writers (as SQLite would, as long).

        Raises:
            ConcurrencyConflict: another unit of work held the write lock for
                the whole busy timeout (the bus reruns the command).
        """
        try:
            self._writer.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(BUSY_TIMEOUT_MS / 1000) as waiting:
                await self._writer.acquire()
            if waiting.cancelled_caught:
                raise ConcurrencyConflict(
                    "database", "another unit of work held the write lock"
                ) from None

    def release_writer(self) -> None:
        """Let the next writer of this process in."""
        self._writer.release()

    async def _connect(self) -> aiosqlite.Connection:
        location = self._location
        connection = aiosqlite.connect(
            location.target,
            uri=location.uri,
            # BEGIN is ours to say (IMMEDIATE); sqlite3 would defer it.
            isolation_level=None,
            cached_statements=_CACHED_STATEMENTS,
        )
        # aiosqlite's worker thread must not keep a crashed process alive.
        connection._thread.daemon = True
        pragmas = _READER_PRAGMAS if self.read_only else _WRITER_PRAGMAS
        with self.errors:
            await connection
        try:
            with self.errors:
                await on_worker(connection, _prepare, pragmas)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _disconnect(connection)
            raise
        return connection


def _prepare(connection: sqlite3.Connection, pragmas: Sequence[str]) -> None:
    """Apply the connection's settings (on the worker thread, in one trip)."""
    for pragma in pragmas:
        connection.execute(f"PRAGMA {pragma}").fetchall()


async def _disconnect(connection: aiosqlite.Connection) -> None:
    """Close a connection that is no longer wanted, whatever state it is in."""
    with anyio.move_on_after(_CLOSE_SECONDS, shield=True):
        try:
            await connection.close()
        except (sqlite3.Error, ValueError):
            # Already broken or closed: there is nothing left to release.
            return
