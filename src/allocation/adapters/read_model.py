"""Read models: flat tables kept up to date by event handlers (CQRS)."""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, NamedTuple, TypedDict

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from allocation.adapters import database, orm, postgres_driver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.expression import Executable


class AllocationRow(TypedDict):
    """One allocated order line as the read model shows it."""

    sku: str
    batchref: str


class LineState(NamedTuple):
    """Where an order line (orderid, sku, qty) stands as of product ``version``.

    An order may hold several lines of one sku (in one batch or in several), and
    a line is in at most one batch at a time: the line is the read model's key.
    """

    orderid: str
    sku: str
    qty: int
    batchref: str
    version: int | None
    allocated: bool


def _line_key(line: LineState) -> tuple[str, str, int]:
    """The row's key: the order line."""
    return (line.orderid, line.sku, line.qty)


class AbstractAllocationsView(abc.ABC):
    """Port for the allocations read model: one row per order line.

    Each row keeps the product version of the last event applied to it and whether
    the line is allocated now (a deallocated line stays, marked so), which lets
    events arrive in any order, or twice.
    """

    @abc.abstractmethod
    async def add(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        """Record the batch an order line is allocated to, as of product ``version``.

        A row already at that version or a later one is left alone, so events may
        arrive in any order. ``version`` None applies unconditionally.
        """

    @abc.abstractmethod
    async def remove(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        """Record that an order line left ``batchref`` as of product ``version``."""

    async def write_many(self, lines: Sequence[LineState]) -> None:
        """Apply many line states in order (catch-up and replay batches)."""
        for line in lines:
            write = self.add if line.allocated else self.remove
            await write(line.orderid, line.sku, line.qty, line.batchref, line.version)

    @abc.abstractmethod
    async def for_order(self, orderid: str) -> list[AllocationRow]:
        """One entry per allocated line of an order, by sku, batch, then quantity."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget every row (a replay rebuilds them)."""

    @abc.abstractmethod
    async def lines(self) -> list[LineState]:
        """Every row, deallocated lines and versions included, by order, sku, qty.

        What ``verify`` compares with a replay of the log.
        """


class UserRow(TypedDict):
    """A registered user as readers see it."""

    id: str
    name: str
    email: str


class AbstractUsersView(abc.ABC):
    """Port for the users read model."""

    @abc.abstractmethod
    async def add(self, user_id: str, name: str, email: str) -> None:
        """Record (or overwrite) a user."""

    @abc.abstractmethod
    async def by_email(self, email: str) -> UserRow | None:
        """The user with this (normalised) email, if any."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget every row (a replay rebuilds them)."""

    @abc.abstractmethod
    async def all_rows(self) -> list[UserRow]:
        """Every user, sorted by email (then id)."""


@functools.cache
def _upsert(dialect: str, *, guarded: bool) -> Executable:
    """Write one line's state, built once per dialect (building is the slow part).

    Guarded, it only overwrites a row of an older version: the newest event wins
    whatever the order of arrival, and a redelivered one changes nothing.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = orm.allocations_view
    statement = insert(table).values(
        orderid=bindparam("orderid"),
        sku=bindparam("sku"),
        qty=bindparam("qty"),
        batchref=bindparam("batchref"),
        version=bindparam("version"),
        allocated=bindparam("allocated"),
    )
    return statement.on_conflict_do_update(
        index_elements=["orderid", "sku", "qty"],
        set_={
            "batchref": statement.excluded.batchref,
            "version": statement.excluded.version,
            "allocated": statement.excluded.allocated,
        },
        where=(table.c.version < statement.excluded.version) if guarded else None,
    )


@functools.cache
def _upsert_user(dialect: str) -> Executable:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(orm.users_view).values(
        user_id=bindparam("user_id"), name=bindparam("name"), email=bindparam("email")
    )
    return statement.on_conflict_do_update(
        index_elements=["user_id"],
        set_={"name": statement.excluded.name, "email": statement.excluded.email},
    )


async def _begin_reading(session: AsyncSession) -> None:
    if not session.in_transaction():
        # A pure read: on SQLite, begin without taking the write lock.
        await session.connection(execution_options={database.READ_ONLY: True})


class SqlAlchemyAllocationsView(AbstractAllocationsView):
    """The read model in the ``allocations_view`` table (asyncio only)."""

    def __init__(
        self,
        session: AsyncSession,
        driver: postgres_driver.DriverTransaction | None = None,
    ) -> None:
        self._session = session
        # PostgreSQL's hot statements run on the driver (see postgres_driver).
        self._driver = driver

    async def add(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        await self._write(
            LineState(orderid, sku, qty, batchref, version, allocated=True)
        )

    async def remove(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        await self._write(
            LineState(orderid, sku, qty, batchref, version, allocated=False)
        )

    async def write_many(self, lines: Sequence[LineState]) -> None:
        if not lines or any(line.version is None for line in lines):
            await super().write_many(lines)
            return
        # One executemany for the whole batch: the guard keeps the newest version
        # of each line, whatever the order within the batch.
        dialect = self._session.get_bind().dialect.name
        await self._session.execute(
            _upsert(dialect, guarded=True), [line._asdict() for line in lines]
        )

    async def _write(self, line: LineState) -> None:
        guarded = line.version is not None
        if self._driver is not None:
            statement = (
                postgres_driver.UPSERT_LINE_GUARDED
                if guarded
                else postgres_driver.UPSERT_LINE
            )
            driver = await self._driver.connection()
            await driver.execute(
                statement,
                line.orderid,
                line.sku,
                line.qty,
                line.batchref,
                line.version or 0,
                line.allocated,
            )
            return
        dialect = self._session.get_bind().dialect.name
        await self._session.execute(
            _upsert(dialect, guarded=guarded),
            line._replace(version=line.version or 0)._asdict(),
        )

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        table = orm.allocations_view
        await _begin_reading(self._session)
        rows = await self._session.execute(
            select(table.c.sku, table.c.batchref, table.c.qty).where(
                table.c.orderid == orderid, table.c.allocated
            )
        )
        # Sorted here, not by the database: collations differ between engines and
        # from Python's code-point order, which the in-memory fake uses.
        return [
            AllocationRow(sku=sku, batchref=batchref)
            for sku, batchref, _ in sorted(tuple(row) for row in rows)
        ]

    async def clear(self) -> None:
        await self._session.execute(delete(orm.allocations_view))

    async def lines(self) -> list[LineState]:
        table = orm.allocations_view
        await _begin_reading(self._session)
        rows = await self._session.execute(
            select(
                table.c.orderid,
                table.c.sku,
                table.c.qty,
                table.c.batchref,
                table.c.version,
                table.c.allocated,
            )
        )
        return sorted((LineState(*row) for row in rows), key=_line_key)


class SqlAlchemyUsersView(AbstractUsersView):
    """The users read model in the ``users_view`` table (asyncio only)."""

    def __init__(
        self,
        session: AsyncSession,
        driver: postgres_driver.DriverTransaction | None = None,
    ) -> None:
        self._session = session
        self._driver = driver

    async def add(self, user_id: str, name: str, email: str) -> None:
        if self._driver is not None:
            driver = await self._driver.connection()
            await driver.execute(postgres_driver.UPSERT_USER, user_id, name, email)
            return
        statement = _upsert_user(self._session.get_bind().dialect.name)
        await self._session.execute(
            statement, {"user_id": user_id, "name": name, "email": email}
        )

    async def by_email(self, email: str) -> UserRow | None:
        table = orm.users_view
        await _begin_reading(self._session)
        row = (
            await self._session.execute(
                select(table.c.user_id, table.c.name, table.c.email).where(
                    table.c.email == email
                )
            )
        ).first()
        return None if row is None else UserRow(id=row[0], name=row[1], email=row[2])

    async def clear(self) -> None:
        await self._session.execute(delete(orm.users_view))

    async def all_rows(self) -> list[UserRow]:
        table = orm.users_view
        await _begin_reading(self._session)
        rows = await self._session.execute(
            select(table.c.user_id, table.c.name, table.c.email)
        )
        # Sorted here, as for_order is: the same order on every engine.
        return sorted(
            (UserRow(id=uid, name=name, email=email) for uid, name, email in rows),
            key=lambda row: (row["email"], row["id"]),
        )
