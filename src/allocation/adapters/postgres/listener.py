"""PostgreSQL's notices of newly committed events, for the relay's wake-ups.

Asyncio only (asyncpg). Every event-log append runs ``pg_notify`` on
``sql.LOG_CHANNEL`` inside its transaction, so the notice arrives when, and only
if, the events are committed. One dedicated connection per worker LISTENs: a
pooled one would be handed to units of work, and a LISTEN ends with the session
that issued it.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import anyio

from allocation.adapters.postgres import errors
from allocation.adapters.postgres.sql import LOG_CHANNEL
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from allocation.adapters.postgres.database import PostgresDatabase

# How the connection shows in pg_stat_activity: this worker's, by its pid.
APPLICATION_NAME = "allocation relay wake-ups"


class PostgresLogListener:
    """LISTENs on one asyncpg connection of its own (the relay's LogListener)."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        check_every: float = 10.0,
        check_timeout: float = 5.0,
    ) -> None:
        self._database = database
        # A connection whose peer vanished without a word is never told it is
        # closed; a cheap query now and then finds out.
        self._check_every = check_every
        self._check_timeout = check_timeout

    async def listen(self, heard: Callable[[], None]) -> None:
        """Call ``heard`` once listening and on every notice; raise
        DatabaseUnavailable when the connection fails or is lost. The connection
        is closed on the way out, cancellation included."""
        connection = await self._database.connect(
            application_name=f"{APPLICATION_NAME} {os.getpid()}"
        )
        try:
            await self._listen_on(connection, heard)
        finally:
            with anyio.CancelScope(shield=True):
                await _close(connection, self._check_timeout)

    async def _listen_on(self, connection: Any, heard: Callable[[], None]) -> None:
        lost = anyio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        with errors.translated(self._database.url):
            await connection.add_listener(
                LOG_CHANNEL, lambda _connection, _pid, _channel, _payload: heard()
            )
        heard()
        while True:
            with anyio.move_on_after(self._check_every):
                await lost.wait()
            if lost.is_set():
                raise DatabaseUnavailable(
                    self._database.url, "the connection was closed"
                )
            await self._check(connection)

    async def _check(self, connection: Any) -> None:
        try:
            with (
                anyio.fail_after(self._check_timeout),
                errors.translated(self._database.url),
            ):
                await connection.fetchval("SELECT 1")
        except TimeoutError as error:
            raise DatabaseUnavailable(self._database.url, "no answer") from error


async def _close(connection: Any, grace_seconds: float) -> None:
    # close() aborts the connection itself when it cannot finish politely; either
    # way it is gone, which is all shutting down asks for.
    with contextlib.suppress(*errors.DRIVER_ERRORS):
        await connection.close(timeout=grace_seconds)
