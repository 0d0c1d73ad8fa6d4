"""The allocations read model: a flat table kept up to date by event handlers (CQRS)."""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, TypedDict

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from allocation.adapters import database, orm

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.expression import Executable


class AllocationRow(TypedDict):
    """One allocated order line as the read model shows it."""

    sku: str
    batchref: str


class AbstractAllocationsView(abc.ABC):
    """Port for the allocations read model."""

    @abc.abstractmethod
    async def add(self, orderid: str, sku: str, batchref: str) -> None:
        """Record (or overwrite) the batch that an order line is allocated to."""

    @abc.abstractmethod
    async def remove(self, orderid: str, sku: str, batchref: str) -> None:
        """Forget that an order line is allocated to ``batchref``."""

    @abc.abstractmethod
    async def for_order(self, orderid: str) -> list[AllocationRow]:
        """Return the allocations of one order, sorted by sku."""


@functools.cache
def _upsert(dialect: str) -> Executable:
    """Insert or overwrite one row, built once per dialect (building is the slow part).

    An upsert, so a redelivered Allocated event leaves one row, not an error.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(orm.allocations_view).values(
        orderid=bindparam("orderid"),
        sku=bindparam("sku"),
        batchref=bindparam("batchref"),
    )
    return statement.on_conflict_do_update(
        index_elements=["orderid", "sku"],
        set_={"batchref": statement.excluded.batchref},
    )


class SqlAlchemyAllocationsView(AbstractAllocationsView):
    """The read model in the ``allocations_view`` table (asyncio only)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, orderid: str, sku: str, batchref: str) -> None:
        statement = _upsert(self._session.get_bind().dialect.name)
        await self._session.execute(
            statement, {"orderid": orderid, "sku": sku, "batchref": batchref}
        )

    async def remove(self, orderid: str, sku: str, batchref: str) -> None:
        table = orm.allocations_view
        # Matching the batch too means a late Deallocated never erases the newer
        # allocation that reallocation made.
        await self._session.execute(
            delete(table).where(
                table.c.orderid == orderid,
                table.c.sku == sku,
                table.c.batchref == batchref,
            )
        )

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        table = orm.allocations_view
        if not self._session.in_transaction():
            # A pure read: on SQLite, begin without taking the write lock.
            await self._session.connection(execution_options={database.READ_ONLY: True})
        rows = await self._session.execute(
            select(table.c.sku, table.c.batchref)
            .where(table.c.orderid == orderid)
            .order_by(table.c.sku)
        )
        return [AllocationRow(sku=sku, batchref=batchref) for sku, batchref in rows]
