"""The read models in PostgreSQL tables, on the unit of work's session (asyncio only).

Each view works on the table it is given: the live one, or its shadow while a
replay rebuilds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.adapters import tables
from allocation.adapters.postgres import sql
from allocation.service_layer.ports import (
    AbstractAllocationsView,
    AbstractUsersView,
    AllocationRow,
    LineState,
    UserRow,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Table

    from allocation.adapters.postgres.session import Session


class PostgresAllocationsView(AbstractAllocationsView):
    """The allocations read model: one row per order line."""

    def __init__(
        self, session: Session, table: Table = tables.allocations_view
    ) -> None:
        self._session = session
        self._sql = sql.allocations_sql(table)

    async def write_many(self, lines: Sequence[LineState]) -> None:
        if not lines:
            return
        # One executemany, applied in order: within a batch too, a line's newest
        # version wins. A line without a version applies unconditionally.
        await self._session.execute_many(
            self._sql.write_line,
            [
                (
                    line.orderid,
                    line.sku,
                    line.qty,
                    line.batchref,
                    line.version or 0,
                    line.allocated,
                    line.version is None,
                )
                for line in lines
            ],
        )

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        records = await self._session.fetch(self._sql.for_order, orderid)
        # Sorted here, not by the database: its collation may differ from the
        # code-point order every other store uses.
        return [
            AllocationRow(sku=sku, batchref=batchref)
            for sku, batchref, _ in sorted(tuple(record) for record in records)
        ]

    async def clear(self) -> None:
        await self._session.execute(self._sql.clear)

    async def lines(self) -> list[LineState]:
        records = await self._session.fetch(self._sql.lines)
        return sorted(
            (LineState(*record) for record in records),
            key=lambda line: (line.orderid, line.sku, line.qty),
        )


class PostgresUsersView(AbstractUsersView):
    """The users read model."""

    def __init__(self, session: Session, table: Table = tables.users_view) -> None:
        self._session = session
        self._sql = sql.users_sql(table)

    async def add(self, user_id: str, name: str, email: str) -> None:
        await self._session.execute(self._sql.upsert, user_id, name, email)

    async def by_id(self, user_id: str) -> UserRow | None:
        record = await self._session.fetch_row(self._sql.by_id, user_id)
        return None if record is None else _user(record)

    async def by_email(self, email: str) -> UserRow | None:
        record = await self._session.fetch_row(self._sql.by_email, email)
        return None if record is None else _user(record)

    async def clear(self) -> None:
        await self._session.execute(self._sql.clear)

    async def all_rows(self) -> list[UserRow]:
        records = await self._session.fetch(self._sql.all_rows)
        # Sorted here, as for_order is: the same order on every store.
        return sorted(
            (_user(record) for record in records),
            key=lambda row: (row["email"], row["id"]),
        )


def _user(record: Sequence[str]) -> UserRow:
    user_id, name, email = record
    return UserRow(id=user_id, name=name, email=email)
