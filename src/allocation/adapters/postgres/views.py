"""The read models in PostgreSQL tables, on the unit of work's session (asyncio only).

Each view works on the table it is given: the live one, or its shadow while a
replay rebuilds it (with its statements compiled once per table, as ``sql``'s).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    bindparam,
    delete,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as upsert

from allocation.adapters import statements, tables
from allocation.adapters.postgres import sql
from allocation.service_layer.ports import (
    AbstractAllocationsView,
    AbstractUsersView,
    AllocationRow,
    LineKey,
    LineState,
    UserRow,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import BindParameter, ColumnElement, Table

    from allocation.adapters.postgres.session import Session


@dataclasses.dataclass(frozen=True, slots=True)
class AllocationsSql:
    """The allocations view's statements on one table."""

    write_line: str
    for_order: str
    clear: str
    lines: str
    lines_after: str


@functools.cache
def allocations_sql(table: Table) -> AllocationsSql:
    new = upsert(table).values(
        orderid=bindparam("orderid"),
        sku=bindparam("sku"),
        qty=bindparam("qty"),
        batchref=bindparam("batchref"),
        version=bindparam("version"),
        allocated=bindparam("allocated"),
    )
    write_line = new.on_conflict_do_update(
        index_elements=[table.c.orderid, table.c.sku, table.c.qty],
        set_={
            "batchref": new.excluded.batchref,
            "version": new.excluded.version,
            "allocated": new.excluded.allocated,
        },
        # Guarded, only a newer version overwrites: events may arrive in any
        # order, or twice. One statement for both kinds of write, so a batch
        # of them is one executemany.
        where=or_(
            bindparam("unguarded", type_=Boolean),
            table.c.version < new.excluded.version,
        ),
    )
    # Paged in key order, the order Python gives the same keys: text compared by
    # code point (the "C" collation), whatever the database's own collation.
    key = (_by_code_point(table.c.orderid), _by_code_point(table.c.sku), table.c.qty)
    lines = select(
        table.c.orderid,
        table.c.sku,
        table.c.qty,
        table.c.batchref,
        table.c.version,
        table.c.allocated,
    ).order_by(*key)
    return AllocationsSql(
        write_line=sql.compiled(
            write_line,
            "orderid",
            "sku",
            "qty",
            "batchref",
            "version",
            "allocated",
            "unguarded",
        ),
        for_order=sql.compiled(statements.allocated_lines_of_order(table), "orderid"),
        clear=sql.compiled(delete(table)),
        lines=sql.compiled(lines.limit(_limit()), "limit"),
        lines_after=sql.compiled(
            lines.where(
                tuple_(*key)
                > tuple_(
                    bindparam("orderid", type_=String),
                    bindparam("sku", type_=String),
                    bindparam("qty", type_=Integer),
                )
            ).limit(_limit()),
            "orderid",
            "sku",
            "qty",
            "limit",
        ),
    )


@functools.cache
def users_sql(table: Table) -> statements.UsersViewSql:
    new = upsert(table).values(
        user_id=bindparam("user_id"), name=bindparam("name"), email=bindparam("email")
    )
    columns = statements.user_columns(table)
    user_id = _by_code_point(table.c.user_id)
    return statements.UsersViewSql(
        upsert=sql.compiled(
            new.on_conflict_do_update(
                index_elements=[table.c.user_id],
                set_={"name": new.excluded.name, "email": new.excluded.email},
            ),
            "user_id",
            "name",
            "email",
        ),
        by_id=sql.compiled(
            columns.where(table.c.user_id == bindparam("user_id")), "user_id"
        ),
        by_email=sql.compiled(
            columns.where(table.c.email == bindparam("email")), "email"
        ),
        clear=sql.compiled(delete(table)),
        all_rows=sql.compiled(columns),
        page=sql.compiled(columns.order_by(user_id).limit(_limit()), "limit"),
        page_after=sql.compiled(
            columns.where(user_id > bindparam("after", type_=String))
            .order_by(user_id)
            .limit(_limit()),
            "after",
            "limit",
        ),
    )


def _by_code_point(column: ColumnElement[str]) -> ColumnElement[str]:
    return column.collate("C")


def _limit() -> BindParameter[int]:
    # NULL: no limit.
    return bindparam("limit", type_=Integer)


shadow_of = statements.shadow_of


@functools.cache
def shadow_sql(table: Table) -> statements.ShadowSql:
    built = statements.shadow_statements(table)
    clear, fill, drop = built.swap
    return statements.ShadowSql(
        create=sql.ddl(built.create),
        swap=(sql.compiled(clear), sql.compiled(fill), sql.ddl(drop)),
        drop=sql.ddl(built.drop),
    )


class PostgresAllocationsView(AbstractAllocationsView):
    """The allocations read model: one row per order line."""

    def __init__(
        self, session: Session, table: Table = tables.allocations_view
    ) -> None:
        self._session = session
        self._sql = allocations_sql(table)

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

    async def lines(
        self, *, after: LineKey | None = None, limit: int | None = None
    ) -> list[LineState]:
        if after is None:
            records = await self._session.fetch(self._sql.lines, limit)
        else:
            records = await self._session.fetch(self._sql.lines_after, *after, limit)
        return [LineState(*record) for record in records]


class PostgresUsersView(AbstractUsersView):
    """The users read model."""

    def __init__(self, session: Session, table: Table = tables.users_view) -> None:
        self._session = session
        self._sql = users_sql(table)

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

    async def page(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[UserRow]:
        if after is None:
            records = await self._session.fetch(self._sql.page, limit)
        else:
            records = await self._session.fetch(self._sql.page_after, after, limit)
        return [_user(record) for record in records]


def _user(record: Sequence[str]) -> UserRow:
    user_id, name, email = record
    return UserRow(id=user_id, name=name, email=email)
