"""The unit of work on a SQLite database: one connection, one transaction (asyncio only).

Its commit writes the claims, the inline projections, the snapshots, the tracking
row and the events in a single trip to aiosqlite's worker thread, with the COMMIT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allocation.adapters import tables
from allocation.adapters.sqlite import view_sql
from allocation.adapters.sqlite.session import SqliteSession, Write
from allocation.adapters.sqlite.store import SqliteEventStore
from allocation.adapters.sqlite.views import SqliteAllocationsView, SqliteUsersView
from allocation.service_layer.unit_of_work import AbstractUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Table

    from allocation.adapters.sqlite.database import SqliteDatabase

# Each read model the unit of work holds: its live table and the class keeping it.
_VIEWS: dict[str, tuple[Table, Callable[[SqliteSession, Table], Any]]] = {
    "allocations_view": (tables.allocations_view, SqliteAllocationsView),
    "users_view": (tables.users_view, SqliteUsersView),
}


class SqliteUnitOfWork(AbstractUnitOfWork):
    """A unit of work on one connection of a ``SqliteDatabase`` (asyncio only).

    Make a new one per handler call (``database.unit_of_work()``): its session
    must never be shared between tasks. The connection is taken at the first
    statement and handed back when the block ends.

    Attributes:
        session: its connection and transaction (see ``session``).
    """

    event_log: SqliteEventStore
    session: SqliteSession

    def __init__(self, database: SqliteDatabase, **options: Any) -> None:
        super().__init__(**options)
        self._database = database
        self._shadows: dict[str, Any] = {}

    async def _start(self) -> None:
        self.session = session = SqliteSession(self._database)
        self._shadows = {}
        self.event_log = SqliteEventStore(session)
        self.allocations_view = SqliteAllocationsView(session, tables.allocations_view)
        self.users_view = SqliteUsersView(session, tables.users_view)

    async def commit(self) -> None:
        # Every write of the commit waits for its COMMIT: one trip in all.
        self.session.deferring = True
        try:
            await super().commit()
        finally:
            self.session.deferring = False

    async def _commit(self) -> None:
        await self.session.commit()

    async def _rollback(self) -> None:
        await self.session.rollback()

    async def _close(self) -> None:
        await self.session.close()

    async def _shadow_view(self, attribute: str) -> Any:
        shadow = self._shadows.get(attribute)
        if shadow is None:
            live, view_class = _VIEWS[attribute]
            self.session.queue(Write(view_sql.shadow(live).create))
            shadow = self._shadows[attribute] = view_class(
                self.session, view_sql.shadow_of(live)
            )
        return shadow

    async def _swap_shadow(self, attribute: str) -> None:
        live, _ = _VIEWS[attribute]
        *first, last = (Write(statement) for statement in view_sql.shadow(live).swap)
        # One trip: the earlier statements go as queued writes before the last.
        self.session.queue(*first)
        await self.session.write(last)
        self._shadows.pop(attribute, None)

    async def _drop_shadow(self, attribute: str) -> None:
        live, _ = _VIEWS[attribute]
        self.session.queue(Write(view_sql.shadow(live).drop))
        self._shadows.pop(attribute, None)
