"""One unit of work's connection and transaction on asyncpg (asyncio only).

The connection is checked out of the pool at the first statement and handed
back by ``release``. Reads before any write run on their own, each a READ
COMMITTED statement that needs no BEGIN (and no ROLLBACK after); the first write,
or ``begin``, opens the transaction, which later reads join. Every statement
runs inside ``errors.translated``, so no driver error leaves this module.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from allocation.adapters.postgres import errors
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from allocation.adapters.postgres.database import PostgresDatabase


class Session:
    """A unit of work's lazily checked-out connection and its transaction."""

    __slots__ = ("_begun", "_broken", "_connection", "_guard", "_pool", "read_only")

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool
        self.read_only = database.read_only
        self._connection: Any = None
        self._begun = False
        # Set once an error left the connection in a state nobody can vouch for:
        # it is then discarded, never handed out again.
        self._broken = False
        self._guard = errors.translated(database.url, self._break)

    def _break(self) -> None:
        self._broken = True

    async def _connected(self) -> Any:
        if self._connection is None:
            with self._guard:
                self._connection = await self._pool.acquire()
        return self._connection

    async def _in_transaction(self) -> Any:
        connection = self._connection or await self._connected()
        if not self._begun:
            with self._guard:
                await connection.execute("BEGIN")
            self._begun = True
        return connection

    async def begin(self) -> None:
        """Open the transaction now, if it is not yet."""
        await self._in_transaction()

    async def read_one_snapshot(self) -> None:
        """Open the transaction now, REPEATABLE READ: every later statement sees
        the database as the first one did (nothing if one is open already)."""
        if self._begun:
            return
        connection = self._connection or await self._connected()
        with self._guard:
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self._begun = True

    async def execute(self, sql: str, *arguments: object) -> None:
        """Run a write, in the transaction."""
        connection = await self._in_transaction()
        with self._guard:
            await connection.execute(sql, *arguments)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run a write once per row, in the transaction, in one round trip."""
        connection = await self._in_transaction()
        with self._guard:
            await connection.executemany(sql, rows)

    async def write_fetch(self, sql: str, *arguments: object) -> list[Any]:
        """Run a write that returns rows, in the transaction."""
        connection = await self._in_transaction()
        with self._guard:
            rows: list[Any] = await connection.fetch(sql, *arguments)
        return rows

    async def fetch(self, sql: str, *arguments: object) -> list[Any]:
        """Run a read: in the transaction once begun, else on its own."""
        connection = self._connection or await self._connected()
        with self._guard:
            rows: list[Any] = await connection.fetch(sql, *arguments)
        return rows

    async def fetch_row(self, sql: str, *arguments: object) -> Any:
        """Run a read of at most one row (None for none)."""
        connection = self._connection or await self._connected()
        with self._guard:
            return await connection.fetchrow(sql, *arguments)

    async def fetch_value(self, sql: str, *arguments: object) -> Any:
        """Run a read of one value (None for no row)."""
        connection = self._connection or await self._connected()
        with self._guard:
            return await connection.fetchval(sql, *arguments)

    async def commit(self) -> None:
        """Commit the transaction, if one began."""
        if not self._begun:
            return
        self._begun = False
        with self._guard:
            await self._connection.execute("COMMIT")

    async def rollback(self) -> None:
        """Roll back the transaction, if one began.

        A connection that cannot even roll back is broken: it is discarded on
        release, and its transaction dies with it at the server, so that failure
        is no error of the caller's.
        """
        if not self._begun:
            return
        self._begun = False
        if self._broken:
            return
        try:
            # A connection the server closed may be back in the pool already
            # (asyncpg returns it by itself): then even asking fails.
            if self._connection.is_closed():
                self._broken = True
                return
            with self._guard:
                await self._connection.execute("ROLLBACK")
        except (DatabaseUnavailable, *errors.DRIVER_ERRORS):
            self._broken = True

    async def release(self) -> None:
        """Hand the connection back to the pool (a broken one is closed first)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        broken, self._broken, self._begun = self._broken or self._begun, False, False
        # A connection the server closed may be back in the pool already (asyncpg
        # returns it by itself), and then refuses both calls; a failing reset makes
        # asyncpg close the connection itself, which is all we would do.
        with contextlib.suppress(*errors.DRIVER_ERRORS):
            if broken:
                # Lost, interrupted midway, or still in a transaction it could
                # not end: only closing it at the server leaves nothing behind.
                connection.terminate()
            await self._pool.release(connection)
