"""The statements of the SQLite read models and of their shadow tables, built from
the Core tables once per table (the live one or its shadow)."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from sqlalchemy import MetaData, bindparam, delete, insert, select, tuple_
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.schema import CreateTable, DropTable

from allocation.adapters import tables
from allocation.adapters.sqlite import sql

if TYPE_CHECKING:
    from sqlalchemy import Table


@dataclasses.dataclass(frozen=True, slots=True)
class AllocationsViewSql:
    """The statements of one allocations table (the live one or its shadow)."""

    upsert_guarded: str
    upsert: str
    for_order: str
    clear: str
    lines: str
    lines_after: str


@dataclasses.dataclass(frozen=True, slots=True)
class UsersViewSql:
    """The statements of one users table (the live one or its shadow)."""

    upsert: str
    by_id: str
    by_email: str
    clear: str
    all_rows: str
    page: str
    page_after: str


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowSql:
    """Creating a shadow table, swapping its rows into the live one, dropping it."""

    create: str
    swap: tuple[str, ...]
    drop: str


_LINE = ("orderid", "sku", "qty", "batchref", "version", "allocated")


@functools.cache
def allocations_view(table: Table) -> AllocationsViewSql:
    """The statements of the allocations read model kept in ``table``."""
    statement = upsert(table)
    changes = {name: statement.excluded[name] for name in _LINE[3:]}
    key = ["orderid", "sku", "qty"]
    in_key_order = select(*(table.c[name] for name in _LINE)).order_by(
        *(table.c[name] for name in key)
    )
    return AllocationsViewSql(
        # Guarded, it only overwrites a row of an older version: the newest event
        # wins whatever the order of arrival, and a redelivered one changes nothing.
        upsert_guarded=sql.compiled(
            statement.on_conflict_do_update(
                index_elements=key,
                set_=changes,
                where=table.c.version < statement.excluded.version,
            ),
            *_LINE,
        ),
        upsert=sql.compiled(
            statement.on_conflict_do_update(index_elements=key, set_=changes), *_LINE
        ),
        for_order=sql.compiled(
            select(table.c.sku, table.c.batchref, table.c.qty).where(
                table.c.orderid == bindparam("orderid"), table.c.allocated
            ),
            "orderid",
        ),
        clear=sql.compiled(delete(table)),
        # In key order, a page at a time: the key is the table's primary key, so
        # each page is a range of its index. SQLite's default (BINARY) collation
        # compares text by its UTF-8 bytes: code-point order, as Python does.
        lines=sql.compiled(sql.first_rows(in_key_order), "limit"),
        lines_after=sql.compiled(
            sql.first_rows(
                in_key_order.where(
                    tuple_(table.c.orderid, table.c.sku, table.c.qty)
                    > tuple_(bindparam("orderid"), bindparam("sku"), bindparam("qty"))
                )
            ),
            "orderid",
            "sku",
            "qty",
            "limit",
        ),
    )


@functools.cache
def users_view(table: Table) -> UsersViewSql:
    """The statements of the users read model kept in ``table``."""
    statement = upsert(table)
    columns = select(table.c.user_id, table.c.name, table.c.email)
    return UsersViewSql(
        upsert=sql.compiled(
            statement.on_conflict_do_update(
                index_elements=["user_id"],
                set_={
                    "name": statement.excluded.name,
                    "email": statement.excluded.email,
                },
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
        page=sql.compiled(sql.first_rows(columns.order_by(table.c.user_id)), "limit"),
        page_after=sql.compiled(
            sql.first_rows(
                columns.where(table.c.user_id > bindparam("after")).order_by(
                    table.c.user_id
                )
            ),
            "after",
            "limit",
        ),
    )


@functools.cache
def shadow_of(table: Table) -> Table:
    """The shadow of a read-model table: the same columns and key, another name."""
    metadata = MetaData(naming_convention=tables.metadata.naming_convention)
    return table.to_metadata(metadata, name=f"{table.name}_shadow")


@functools.cache
def shadow(table: Table) -> ShadowSql:
    """The statements that create, swap in and drop the shadow of ``table``."""
    copy = shadow_of(table)
    names = [column.name for column in table.columns]
    return ShadowSql(
        create=str(CreateTable(copy, if_not_exists=True).compile(dialect=sql.DIALECT)),
        swap=(
            sql.compiled(delete(table)),
            sql.compiled(insert(table).from_select(names, select(*copy.columns))),
            str(DropTable(copy).compile(dialect=sql.DIALECT)),
        ),
        drop=str(DropTable(copy, if_exists=True).compile(dialect=sql.DIALECT)),
    )
