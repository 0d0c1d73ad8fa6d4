"""One unit of work's connection and transaction, in as few trips as it can (asyncio only).

A trip is one call handed to aiosqlite's worker thread: a hand-off, and a wake-up
of the event loop when it is done, which costs more than a statement. So a trip
runs whatever is due at once: the BEGIN a lock asked for, the writes queued
since the last trip, then the statement the caller awaits, and at the end COMMIT.
A write whose failure callers expect at the call (a claim, an append, an
exactly-once record) runs when called, unless the unit of work is committing:
then every write waits for the COMMIT's trip, and a command costs one trip.
A queued write that fails (a refused value, a full disk) fails the trip that
carries it; the transaction is then only good for rolling back, as on PostgreSQL.

Reads before any write run in autocommit mode, without the write lock; the first
write (or a lock) begins the transaction IMMEDIATE, which takes the file's write
lock. Within the process, writers queue on the database's writer lock first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from allocation.adapters.exceptions import DatabaseReadOnly
from allocation.adapters.sqlite import errors
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Sequence

    import aiosqlite

    from allocation.adapters.sqlite.database import SqliteDatabase

    Fetch = Callable[[sqlite3.Connection, str, Sequence[Any]], Any]

_T = TypeVar("_T")

# How a trip ends: the transaction stays open, is committed, or is rolled back.
_KEEP, _COMMIT, _ROLLBACK = 0, 1, 2


class Write:
    """A statement to run on the worker thread, once or for many rows.

    Attributes:
        subject: what a lost race on it concerns (an aggregate type), for the
            error.
    """

    __slots__ = ("arguments", "many", "sql", "subject")

    def __init__(
        self,
        sql: str,
        arguments: Sequence[Any] | Sequence[Sequence[Any]] = (),
        *,
        many: bool = False,
        subject: str | None = None,
    ) -> None:
        self.sql = sql
        self.arguments = arguments
        self.many = many
        self.subject = subject

    @property
    def atomic(self) -> bool:
        """Whether it either applies whole or fails whole (one statement)."""
        return not self.many or len(self.arguments) <= 1

    def run(self, connection: sqlite3.Connection) -> None:
        """Run it (on the worker thread)."""
        if self.many:
            connection.executemany(self.sql, self.arguments)
        else:
            connection.execute(self.sql, self.arguments)


async def on_worker(
    connection: aiosqlite.Connection, function: Callable[..., _T], *args: Any
) -> _T:
    """Run ``function(sqlite3_connection, *args)`` on aiosqlite's worker thread:
    one trip (aiosqlite's own calls each make one, and there are several to a
    statement)."""
    driver: Any = connection  # its _execute is private, and untyped
    result: _T = await driver._execute(function, driver._conn, *args)
    return result


def fetch_all(
    connection: sqlite3.Connection, sql: str, arguments: Sequence[Any]
) -> list[Any]:
    """Every row a query returns (on the worker thread)."""
    return connection.execute(sql, arguments).fetchall()


def fetch_one(
    connection: sqlite3.Connection, sql: str, arguments: Sequence[Any]
) -> Any:
    """The first row a query returns, or None (on the worker thread)."""
    return connection.execute(sql, arguments).fetchone()


class SqliteSession:
    """The connection and transaction of one unit of work.

    The connection is taken from the database's pool at the first trip and
    handed back by ``close``; one that broke is discarded, not reused.

    Attributes:
        deferring: set while the unit of work commits: every write waits for
            the COMMIT's trip.
        in_transaction, failed, finished: written by the worker thread as a
            trip ends (whether a transaction is open, the write that failed,
            the number of the trip).
    """

    __slots__ = (
        "_begin",
        "_begin_reading",
        "_broken",
        "_connection",
        "_database",
        "_holds_writer",
        "_pending",
        "_trips",
        "_uncertain",
        "deferring",
        "failed",
        "finished",
        "in_transaction",
    )

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        self._connection: aiosqlite.Connection | None = None
        self._pending: list[Write] = []
        self._begin = False
        self._begin_reading = False
        self._holds_writer = False
        self._broken = False
        # A trip was cancelled on its way: its outcome is known after the next one.
        self._uncertain = False
        self.deferring = False
        self.failed: Write | None = None
        self.in_transaction = False
        self._trips = self.finished = 0

    async def fetch_all(self, sql: str, arguments: Sequence[Any] = ()) -> list[Any]:
        """Run a query (after what is due) and return its rows."""
        rows: list[Any] = await self._trip(None, fetch_all, sql, arguments, _KEEP)
        return rows

    async def fetch_one(self, sql: str, arguments: Sequence[Any] = ()) -> Any:
        """Run a query (after what is due) and return its first row, or None."""
        return await self._trip(None, fetch_one, sql, arguments, _KEEP)

    def queue(self, *writes: Write) -> None:
        """Write in this transaction, at the next trip: a write nobody expects
        to fail (its error, such as a full disk, surfaces at that trip).

        Raises:
            DatabaseReadOnly: the database was opened for reading only.
        """
        self._refuse_if_read_only()
        self._pending.extend(writes)

    async def write(self, write: Write) -> None:
        """Write in this transaction now (while committing: with the COMMIT).

        A write of many rows applies whole or not at all.
        """
        if self.deferring:
            self.queue(write)
            return
        self._refuse_if_read_only()
        await self._trip(write, None, "", (), _KEEP)

    async def lock(self) -> None:
        """Begin the write transaction: the process's writer lock now, the file's
        at the next trip (that trip's first statement, so nothing is read
        before it). Nothing on a read-only database."""
        if self._database.read_only or self.in_transaction:
            return
        if self._connection is None:
            # A connection first, as every trip takes them: a writer waiting
            # for one while the pool's connections wait for the writer would be
            # a deadlock, broken only by the busy timeout.
            self._connection = await self._database.check_out()
        if not self._holds_writer:
            await self._hold_writer()
        self._begin = True

    def read_one_snapshot(self) -> None:
        """Begin a reading transaction at the next trip (nothing if one is open):
        every later read sees the file as that trip's read did."""
        if not self.in_transaction:
            self._begin_reading = True

    async def commit(self) -> None:
        """Commit what was written (nothing to do if nothing was)."""
        if self._pending or self.in_transaction or self._uncertain:
            await self._trip(None, None, "", (), _COMMIT)
        self._begin = False
        self._release_writer()

    async def rollback(self) -> None:
        """Forget the queued writes and roll back the transaction, if one is open."""
        self._pending = []
        self._begin = False
        try:
            # A broken connection is discarded: closing it rolls back.
            if not self._broken and (self.in_transaction or self._uncertain):
                await self._trip(None, None, "", (), _ROLLBACK)
        finally:
            self._release_writer()

    async def close(self) -> None:
        """Hand the connection back to the pool (discarded if it broke)."""
        self._release_writer()
        connection, self._connection = self._connection, None
        if connection is not None:
            reusable = not (self._broken or self._uncertain or self.in_transaction)
            self.in_transaction = False
            await self._database.check_in(connection, reusable=reusable)

    async def _trip(
        self,
        write: Write | None,
        fetch: Fetch | None,
        sql: str,
        arguments: Sequence[Any],
        end: int,
    ) -> Any:
        connection = self._connection
        if connection is None:
            connection = self._connection = await self._database.check_out()
        begin = self._begin or (
            (bool(self._pending) or write is not None) and not self.in_transaction
        )
        if begin and not self._holds_writer:
            await self._hold_writer()
        # IMMEDIATE takes the write lock; a plain BEGIN starts a reader's snapshot.
        opening = "BEGIN IMMEDIATE" if begin else "BEGIN" if self._begin_reading else ""
        writes, self._pending = self._pending, []
        self._begin = self._begin_reading = False
        self.failed = None
        self._trips = trip = self._trips + 1
        try:
            result = await on_worker(
                connection, _run_trip, self, trip, opening, writes, write, fetch,
                sql, arguments, end,
            )  # fmt: skip
        except errors.DRIVER_ERRORS as error:
            self._uncertain = False
            ours = self._database.errors.translate(
                error, self.failed.subject if self.failed else None
            )
            if isinstance(ours, DatabaseUnavailable):
                self._broken = True
            self._end_if_over()
            if ours is error:
                raise
            raise ours from error
        except BaseException:
            # An error of ours raised on the worker thread (a claim taken), or
            # this task cancelled while the trip may still be running there.
            self._uncertain = self.finished != trip
            if not self._uncertain:
                self._end_if_over()
            raise
        self._uncertain = False
        self._end_if_over()
        return result

    def _end_if_over(self) -> None:
        if not self.in_transaction:
            self._release_writer()

    async def _hold_writer(self) -> None:
        await self._database.hold_writer()
        self._holds_writer = True

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            self._database.release_writer()

    def _refuse_if_read_only(self) -> None:
        if self._database.read_only:
            raise DatabaseReadOnly(
                self._database.errors.path or self._database.url,
                "opened for reading only",
            )


def _run_trip(
    connection: sqlite3.Connection,
    session: SqliteSession,
    trip: int,
    opening: str,
    writes: list[Write],
    write: Write | None,
    fetch: Fetch | None,
    sql: str,
    arguments: Sequence[Any],
    end: int,
) -> Any:
    """What one trip does, on the worker thread, in this order: BEGIN, the queued
    writes, the write called for, the query, the end of the transaction."""
    try:
        if end == _ROLLBACK:
            if connection.in_transaction:
                connection.rollback()
            return None
        if opening and not connection.in_transaction:
            connection.execute(opening)
        for queued in writes:
            session.failed = queued
            queued.run(connection)
        if write is not None:
            session.failed = write
            _run_whole(connection, write)
        session.failed = None
        result = None if fetch is None else fetch(connection, sql, arguments)
        if end == _COMMIT and connection.in_transaction:
            connection.commit()
        return result
    except BaseException:
        if end == _COMMIT and connection.in_transaction:
            # A commit that failed leaves nothing behind, in this same trip.
            connection.rollback()
        raise
    finally:
        session.in_transaction = connection.in_transaction
        session.finished = trip


def _run_whole(connection: sqlite3.Connection, write: Write) -> None:
    """Run ``write`` so that it applies whole or not at all."""
    if write.atomic:
        write.run(connection)
        return
    connection.execute("SAVEPOINT whole_write")
    try:
        write.run(connection)
    except BaseException:
        connection.execute("ROLLBACK TO whole_write")
        connection.execute("RELEASE whole_write")
        raise
    connection.execute("RELEASE whole_write")
