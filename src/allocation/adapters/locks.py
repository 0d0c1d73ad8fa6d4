"""Who may catch a subscriber up: one pass at a time, across processes on PostgreSQL.

Catch-up of one subscriber must not run twice at once: two passes would both hand
the same events to an email handler. Within a process an AnyIO lock per subscriber
is enough. Across worker processes, PostgreSQL's session advisory locks are: the
server releases them by itself when the holding process dies, so a crashed worker
never blocks the others. (SQLite serves one process well; several workers call for
PostgreSQL.)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from allocation.adapters import database_errors
from allocation.service_layer.locks import SubscriberLocks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


class PostgresSubscriberLocks(SubscriberLocks):
    """Adds a PostgreSQL advisory lock per subscriber, held on its own connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = engine

    @contextlib.asynccontextmanager
    async def hold(self, subscriber: str) -> AsyncIterator[bool]:
        async with super().hold(subscriber) as held_here:
            if not held_here:
                yield False
                return
            key = _lock_key(subscriber)
            url = self._engine.url
            with database_errors.translated_errors(url):
                connection = await self._engine.connect()
            # Straight on the driver, outside any transaction: a session lock needs
            # none, and the relay takes this lock on every pass.
            driver: Any = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]  # just connected
            # Until the answer is in hand (a cancelled or failed try may still have
            # taken the lock) and until an unlock succeeds, the connection may hold
            # the lock, so it may not go back to the pool.
            may_hold_lock = True
            try:
                with database_errors.translated_errors(url):
                    taken = await driver.fetchval(_TRY_LOCK, key)
                may_hold_lock = bool(taken)
                try:
                    yield bool(taken)
                finally:
                    if taken:
                        with anyio.CancelScope(shield=True):
                            may_hold_lock = not await _unlock(driver, key)
            finally:
                with anyio.CancelScope(shield=True):
                    if not may_hold_lock and not driver.is_closed():
                        await connection.close()
                    else:
                        # Closing the connection at the server is what frees a
                        # session lock that could not be released; a dead one must
                        # not go back to the pool either.
                        await connection.invalidate()


_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"


async def _unlock(driver: Any, key: int) -> bool:
    """Release the lock; False when the connection must be discarded to free it."""
    if driver.is_closed():
        return False  # the server dropped the lock with the connection
    try:
        await driver.execute("SELECT pg_advisory_unlock($1)", key)
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
    ) as error:
        logger.warning("could not release the advisory lock %d: %s", key, error)
        return False
    return True


def _lock_key(subscriber: str) -> int:
    """A stable signed 64-bit key per name (Python's hash() changes per process)."""
    digest = hashlib.blake2b(f"allocation:{subscriber}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
