"""The one place an engine is chosen: a database URL to that engine's package.

Asyncio only (aiosqlite and asyncpg are). Each engine's package is a complete set of
the ports; nothing else asks which engine it runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from allocation.adapters import database
from allocation.service_layer.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from allocation.service_layer.locks import SubscriberLocks
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


class LogListener(Protocol):
    """Tells when new events are committed, where the database can say so."""

    async def listen(self, heard: Callable[[], None]) -> None: ...


class Database(Protocol):
    """An open database of one engine: it makes units of work and closes."""

    url: str

    def unit_of_work(self, **options: Any) -> AbstractUnitOfWork: ...

    def subscriber_locks(self) -> SubscriberLocks: ...

    def log_listener(self) -> LogListener | None: ...

    async def close(self) -> None: ...


async def open_database(url: str, *, pool_size: int, read_only: bool) -> Database:
    """Open the database at ``url`` with the package of its engine.

    Raises:
        DatabaseUnavailable: it cannot be reached.
        DatabaseFileUnusable: a SQLite file that cannot be opened as asked.
    """
    url = database.normalise_database_url(url)
    if not url.startswith(("postgresql+asyncpg:", "sqlite+aiosqlite:")):
        raise DatabaseUnavailable(
            url, "unusable URL (a sqlite:// or postgresql:// URL is needed)"
        )
    if url.startswith("postgresql"):
        from allocation.adapters.postgres.database import PostgresDatabase

        return await PostgresDatabase.open(
            url, pool_size=pool_size, read_only=read_only
        )
    from allocation.adapters.sqlite.database import SqliteDatabase

    return await SqliteDatabase.open(url, pool_size=pool_size, read_only=read_only)
