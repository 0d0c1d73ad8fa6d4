"""The unit of work on PostgreSQL: one pooled asyncpg connection, one transaction
(asyncio only).

The service layer's ``AbstractUnitOfWork`` decides what a commit writes and in
which order; this supplies the transaction, the event store and the read models
on it, and the read models' shadow tables for a replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allocation.adapters import tables
from allocation.adapters.postgres.session import Session
from allocation.adapters.postgres.store import PostgresEventStore
from allocation.adapters.postgres.views import (
    PostgresAllocationsView,
    PostgresUsersView,
    shadow_of,
    shadow_sql,
)
from allocation.service_layer.unit_of_work import (
    DEFAULT_SNAPSHOT_EVERY,
    AbstractUnitOfWork,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Table

    from allocation.adapters.postgres.database import PostgresDatabase
    from allocation.service_layer.projections import Projection

# Each read model the unit of work holds: the attribute, its live table, its class.
_VIEWS: dict[str, tuple[Table, type[PostgresAllocationsView | PostgresUsersView]]] = {
    "allocations_view": (tables.allocations_view, PostgresAllocationsView),
    "users_view": (tables.users_view, PostgresUsersView),
}


class PostgresUnitOfWork(AbstractUnitOfWork):
    """A transaction on a ``PostgresDatabase``; build it with
    ``database.unit_of_work()``.

    The connection is taken from the pool at the first statement, and the
    transaction begins at the first write (or stream lock); both end when the
    ``async with`` block does.
    """

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        inline_projections: Sequence[Projection] | None = None,
    ) -> None:
        super().__init__(
            snapshot_every=snapshot_every, inline_projections=inline_projections
        )
        self._database = database
        self._session: Session | None = None

    async def _start(self) -> None:
        session = Session(self._database)
        self._session = session
        self.event_log = PostgresEventStore(session)
        self.allocations_view = PostgresAllocationsView(session)
        self.users_view = PostgresUsersView(session)

    async def _commit(self) -> None:
        await self._opened_session().commit()

    async def _rollback(self) -> None:
        if self._session is not None:
            await self._session.rollback()

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.release()

    async def _shadow_view(self, attribute: str) -> Any:
        live, view_class = _VIEWS[attribute]
        session = self._opened_session()
        await session.execute(shadow_sql(live).create)
        return view_class(session, shadow_of(live))

    async def _swap_shadow(self, attribute: str) -> None:
        live, _ = _VIEWS[attribute]
        session = self._opened_session()
        for statement in shadow_sql(live).swap:
            await session.execute(statement)

    async def _drop_shadow(self, attribute: str) -> None:
        live, _ = _VIEWS[attribute]
        await self._opened_session().execute(shadow_sql(live).drop)

    def _opened_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is used outside `async with`")
        return self._session
