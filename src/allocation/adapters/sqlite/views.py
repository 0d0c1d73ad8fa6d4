"""The read models in SQLite tables, on the unit of work's session (asyncio only).

Each view is given the table it keeps: the live one, or its shadow while a replay
rebuilds it. Their writes are queued for the session's next trip (a projection
never needs their result); reads return rows sorted here, not by the database,
so that every engine (and the in-memory fake) gives the same order. The paged
reads by key are the exception: the database orders them, as SQLite's default
collation compares text in code-point order, Python's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.adapters.sqlite import sql
from allocation.adapters.sqlite.session import Write
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

    from sqlalchemy import Table

    from allocation.adapters.sqlite.session import SqliteSession

# SQLite's LIMIT for "no limit".
_NO_LIMIT = -1


class SqliteAllocationsView(AbstractAllocationsView):
    """The allocations read model in ``table`` (``allocations_view`` or its shadow)."""

    def __init__(self, session: SqliteSession, table: Table) -> None:
        self._session = session
        self._sql = sql.allocations_view(table)

    async def write_many(self, lines: Sequence[LineState]) -> None:
        # In order, one executemany per run of lines with (or without) a version:
        # with one, the guard keeps the newest whatever the order of arrival.
        writes: list[Write] = []
        rows: list[tuple[object, ...]] = []
        guarded: bool | None = None
        for line in lines:
            has_version = line.version is not None
            if has_version is not guarded and rows:
                writes.append(self._upserts(rows, guarded=bool(guarded)))
                rows = []
            guarded = has_version
            # A line is a row of the table's columns as it is, unless unversioned.
            rows.append(line if has_version else line._replace(version=0))
        if rows:
            writes.append(self._upserts(rows, guarded=bool(guarded)))
        self._session.queue(*writes)

    def _upserts(self, rows: list[tuple[object, ...]], *, guarded: bool) -> Write:
        statement = self._sql.upsert_guarded if guarded else self._sql.upsert
        return Write(statement, rows, many=True)

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        rows = await self._session.fetch_all(self._sql.for_order, (orderid,))
        return [
            AllocationRow(sku=sku, batchref=batchref)
            for sku, batchref, _ in sorted(tuple(row) for row in rows)
        ]

    async def clear(self) -> None:
        self._session.queue(Write(self._sql.clear))

    async def lines(
        self, *, after: LineKey | None = None, limit: int | None = None
    ) -> list[LineState]:
        rows = await self._session.fetch_all(
            self._sql.lines if after is None else self._sql.lines_after,
            (*(after or ()), _NO_LIMIT if limit is None else limit),
        )
        return [
            LineState(orderid, sku, qty, batchref, version, bool(allocated))
            for orderid, sku, qty, batchref, version, allocated in rows
        ]


class SqliteUsersView(AbstractUsersView):
    """The users read model in ``table`` (``users_view`` or its shadow)."""

    def __init__(self, session: SqliteSession, table: Table) -> None:
        self._session = session
        self._sql = sql.users_view(table)

    async def add(self, user_id: str, name: str, email: str) -> None:
        self._session.queue(Write(self._sql.upsert, (user_id, name, email)))

    async def by_id(self, user_id: str) -> UserRow | None:
        return _user(await self._session.fetch_one(self._sql.by_id, (user_id,)))

    async def by_email(self, email: str) -> UserRow | None:
        return _user(await self._session.fetch_one(self._sql.by_email, (email,)))

    async def clear(self) -> None:
        self._session.queue(Write(self._sql.clear))

    async def all_rows(self) -> list[UserRow]:
        rows = await self._session.fetch_all(self._sql.all_rows)
        return sorted(
            (
                UserRow(id=user_id, name=name, email=email)
                for user_id, name, email in rows
            ),
            key=lambda row: (row["email"], row["id"]),
        )

    async def page(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[UserRow]:
        rows = await self._session.fetch_all(
            self._sql.page if after is None else self._sql.page_after,
            (
                *(() if after is None else (after,)),
                _NO_LIMIT if limit is None else limit,
            ),
        )
        return [
            UserRow(id=user_id, name=name, email=email) for user_id, name, email in rows
        ]


def _user(row: Sequence[str] | None) -> UserRow | None:
    if row is None:
        return None
    user_id, name, email = row
    return UserRow(id=user_id, name=name, email=email)
