"""A leaner aiosqlite adapter for SQLAlchemy: one thread trip per statement (asyncio only).

SQLAlchemy's aiosqlite adapter hands every statement to aiosqlite's worker thread
three or four times (make a cursor, execute, fetch, close), and each hand-off costs
the event loop a wake-up. Here the whole statement (cursor, execute, fetch, close)
runs as one call on the worker thread, and BEGIN goes straight to the driver.

It leans on SQLAlchemy 2.1's asyncio connector and on aiosqlite's ``_execute``, so
both are pinned in pyproject.toml, and the whole integration suite runs through it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite
import anyio
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import await_

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

_T = TypeVar("_T")


# Long enough for any close that can finish; a stuck one is dropped after it.
_GRACEFUL_CLOSE_SECONDS = 2.0


class _Outcome:
    """What a finished statement left behind, read without another trip."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(
        self, description: Any = None, rowcount: int = -1, lastrowid: int | None = None
    ) -> None:
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.arraysize = 1

    def close(self) -> None:
        """Nothing to release: the real cursor was closed on the worker thread."""


def _run_statement(
    connection: sqlite3.Connection, operation: str, parameters: Any
) -> tuple[_Outcome, list[Any]]:
    cursor = connection.cursor()
    try:
        with _unbindable_as_data_error():
            cursor.execute(operation, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Outcome(cursor.description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


def _run_many(
    connection: sqlite3.Connection, operation: str, parameters: Sequence[Any]
) -> _Outcome:
    cursor = connection.cursor()
    try:
        with _unbindable_as_data_error():
            cursor.executemany(operation, parameters)
        return _Outcome(cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


@contextlib.contextmanager
def _unbindable_as_data_error() -> Iterator[None]:
    # sqlite3 raises a bare OverflowError for an int beyond 64 bits and a
    # UnicodeEncodeError for a lone surrogate, which SQLAlchemy passes on unwrapped;
    # as the DBAPI's DataError they are what they are: a value the database refuses.
    try:
        yield
    except (OverflowError, UnicodeEncodeError) as error:
        raise sqlite3.DataError(str(error)) from error


def _run_plain(connection: sqlite3.Connection, sql: str) -> None:
    connection.execute(sql).close()


async def _on_worker(driver: Any, function: Callable[..., _T], *args: Any) -> _T:
    """Run ``function(sqlite3_connection, *args)`` on aiosqlite's thread: one trip."""
    result: _T = await driver._execute(function, driver._conn, *args)
    return result


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose every statement is a single call on the worker thread."""

    __slots__ = ()
    # Closing is synchronous: the sqlite3 cursor is already closed.
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Outcome()

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            outcome, rows = await _on_worker(
                self._connection, _run_statement, operation, parameters
            )
        self._cursor = outcome  # type: ignore[assignment]  # duck-typed cursor
        self._rows = collections.deque(rows)
        return None

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            outcome = await _on_worker(
                self._connection, _run_many, operation, list(seq_of_parameters)
            )
        self._cursor = outcome  # type: ignore[assignment]  # duck-typed cursor
        self._rows = collections.deque()
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The adapted connection, with one-trip cursors and a direct BEGIN."""

    __slots__ = ()
    _cursor_cls = OneTripCursor

    def begin(self, mode: str) -> None:
        """Start a transaction (``DEFERRED`` or ``IMMEDIATE``) in one trip."""
        try:
            await_(_on_worker(self._connection, _run_plain, f"BEGIN {mode}"))
        except Exception as error:  # noqa: BLE001 - the adapter re-raises it as a DBAPI error
            self._handle_exception(error)

    @property
    def in_transaction(self) -> bool:
        driver: Any = self._connection
        return bool(driver._conn.in_transaction)

    async def _terminate_graceful_close(self) -> None:
        # SQLAlchemy runs this in a task of its own when it drops a connection (a
        # statement cancelled mid-way, as at shutdown). If its wait is cancelled, it
        # force-stops aiosqlite's thread, and aiosqlite's close() then waits forever
        # for a thread that is gone: that task, and the event loop's shutdown with
        # it, never ended. Bounded, the close ends either way.
        with anyio.move_on_after(_GRACEFUL_CLOSE_SECONDS):
            await self._connection.close()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to ``create_async_engine(module=...)``.

    With ``open_options`` (SQLite URI parameters such as ``mode=ro``), the file
    is opened through a ``file:`` URI carrying them.
    """

    def __init__(
        self, *modules: Any, open_options: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(*modules)
        self._open_options = dict(open_options or {})

    def connect(self, *args: Any, **kwargs: Any) -> OneTripConnection:
        if self._open_options and args:
            path, *rest = args
            args = (_file_uri(path, self._open_options), *rest)
            kwargs["uri"] = True
        connection = self.aiosqlite.connect(*args, **kwargs)
        # aiosqlite's worker thread must not keep a crashed process alive.
        connection._thread.daemon = True
        return OneTripConnection(self, await_(connection))


def _file_uri(path: str, options: Mapping[str, str]) -> str:
    # Quoted, so that a "?" or "#" in a directory name stays part of the path.
    absolute = urllib.parse.quote(os.path.abspath(path))
    return f"file:{absolute}?{urllib.parse.urlencode(options)}"


def dbapi(open_options: Mapping[str, str] | None = None) -> OneTripDbapi:
    """A fresh DBAPI module for one engine, opening files with ``open_options``."""
    return OneTripDbapi(aiosqlite, sqlite3, open_options=open_options)
