"""Who may catch a subscriber up: one pass at a time (core: asyncio and trio).

Catch-up of one subscriber must not run twice at once: two passes would both hand
the same events to an email handler. Within a process an AnyIO lock per subscriber
is enough; the PostgreSQL adapter adds a lock across worker processes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class SubscriberLocks:
    """In-process locks, one per subscriber name."""

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, subscriber: str) -> AsyncIterator[bool]:
        """Yield True while this pass owns ``subscriber``; False if someone else does."""
        lock = self._locks.setdefault(subscriber, anyio.Lock())
        if lock.locked():
            yield False
            return
        async with lock:
            yield True
