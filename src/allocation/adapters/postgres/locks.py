"""Who may catch a subscriber up, across worker processes: PostgreSQL advisory locks.

Catch-up of one subscriber must not run twice at once: two passes would both hand
the same events to an email handler. Within a process the in-process lock of
``SubscriberLocks`` is enough; across worker processes, PostgreSQL's session
advisory locks are: the server releases them by itself when the holding process
dies, so a crashed worker never blocks the others. Asyncio only (asyncpg).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import anyio

from allocation.adapters.postgres import errors
from allocation.service_layer.locks import SubscriberLocks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.adapters.postgres.database import PostgresDatabase

logger = logging.getLogger(__name__)

_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"


class PostgresSubscriberLocks(SubscriberLocks):
    """Adds a PostgreSQL advisory lock per subscriber, held on a pooled connection."""

    def __init__(self, database: PostgresDatabase) -> None:
        super().__init__()
        self._database = database

    @contextlib.asynccontextmanager
    async def hold(self, subscriber: str) -> AsyncIterator[bool]:
        async with super().hold(subscriber) as held_here:
            if not held_here:
                yield False
                return
            key = lock_key(subscriber)
            pool = self._database.pool
            with errors.translated(self._database.url):
                connection = await pool.acquire()
            # Until the answer is in hand (a cancelled or failed try may still have
            # taken the lock) and until an unlock succeeds, the connection may hold
            # the lock: the pool does not reset connections, so it would hand the
            # lock out with it. Such a connection is closed instead.
            may_hold_lock = True
            try:
                with errors.translated(self._database.url):
                    taken = bool(await connection.fetchval(_TRY_LOCK, key))
                may_hold_lock = taken
                try:
                    yield taken
                finally:
                    if taken:
                        with anyio.CancelScope(shield=True):
                            may_hold_lock = not await _unlock(connection, key)
            finally:
                # One the server closed may be back in the pool already, and
                # then refuses both calls.
                with (
                    anyio.CancelScope(shield=True),
                    contextlib.suppress(*errors.DRIVER_ERRORS),
                ):
                    if may_hold_lock:
                        # Closing the connection at the server is what frees a
                        # session lock that could not be released.
                        connection.terminate()
                    await pool.release(connection)


async def _unlock(connection: Any, key: int) -> bool:
    """Release the lock; False when the connection must be closed to free it."""
    if connection.is_closed():
        return False  # the server dropped the lock with the connection
    try:
        await connection.execute(_UNLOCK, key)
    except errors.DRIVER_ERRORS as error:
        logger.warning("could not release the advisory lock %d: %s", key, error)
        return False
    return True


def lock_key(subscriber: str) -> int:
    """A stable signed 64-bit key per name (Python's hash() changes per process)."""
    digest = hashlib.blake2b(f"allocation:{subscriber}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
