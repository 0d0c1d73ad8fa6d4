"""A unit of work for code written as in the book: built on a SQLAlchemy session
factory (asyncio only).

The session factory only says which database: the work itself runs on that
engine's own adapters, on a connection of its own per unit of work, like every
other unit of work here. Production code gets its units of work from
``bootstrap``, which keeps one pool per process instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allocation.adapters import engines
from allocation.service_layer.unit_of_work import AbstractUnitOfWork

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """A unit of work on the database ``session_factory`` is bound to."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], **options: Any
    ) -> None:
        super().__init__(**options)
        bind = session_factory.kw.get("bind")
        if bind is None:
            raise ValueError("the session factory is bound to no engine")
        self._url: str = bind.url.render_as_string(hide_password=False)
        self._options = options
        self._database: engines.Database | None = None
        self._inner: AbstractUnitOfWork | None = None

    async def _start(self) -> None:
        self._database = await engines.open_database(
            self._url, pool_size=1, read_only=False
        )
        inner = self._database.unit_of_work(
            snapshot_every=self.snapshot_every,
            inline_projections=self.inline_projections,
        )
        await inner._start()
        self._inner = inner
        self.event_log = inner.event_log
        self.allocations_view = inner.allocations_view
        self.users_view = inner.users_view

    def _engine_unit(self) -> AbstractUnitOfWork:
        if self._inner is None:
            raise RuntimeError("use the unit of work inside `async with`")
        return self._inner

    async def _commit(self) -> None:
        await self._engine_unit()._commit()

    async def _rollback(self) -> None:
        if self._inner is not None:
            await self._inner._rollback()

    async def _close(self) -> None:
        inner, self._inner = self._inner, None
        database, self._database = self._database, None
        try:
            if inner is not None:
                await inner._close()
        finally:
            if database is not None:
                await database.close()

    async def _shadow_view(self, attribute: str) -> Any:
        return await self._engine_unit()._shadow_view(attribute)

    async def _swap_shadow(self, attribute: str) -> None:
        await self._engine_unit()._swap_shadow(attribute)

    async def _drop_shadow(self, attribute: str) -> None:
        await self._engine_unit()._drop_shadow(attribute)
