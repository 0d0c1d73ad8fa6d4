"""The in-memory read models: the allocations and users views as dicts.

Writes are staged in the unit of work's transaction and replayed on the committed
rows when it commits, by the same rule as the SQL tables (a guarded upsert by
version for order lines), so two transactions that wrote one row end as they
would in a database. Runs on asyncio and trio (AnyIO).
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from allocation.memory.transaction import Bound
from allocation.service_layer.ports import (
    AbstractAllocationsView,
    AbstractUsersView,
    AllocationRow,
    LineKey,
    LineState,
    UserRow,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed import SupportsDunderLT

    from allocation.memory.transaction import Transaction

K = TypeVar("K", bound="SupportsDunderLT[Any]")  # a row's key
R = TypeVar("R")  # a row's other columns
W = TypeVar("W")  # what a write asks for

LineRow = tuple[str, int, bool]  # (batchref, version, allocated)


class _Table(Generic[K, R]):
    """The committed rows of one table (live or shadow)."""

    def __init__(self) -> None:
        self.rows: dict[K, R] = {}


@dataclasses.dataclass(slots=True)
class _TableChanges(Generic[K, R, W]):
    """One transaction's writes to one table: what it sees, and what to replay.

    ``merge(current, wanted)`` is the table's write rule: the row to store, or
    None to leave the current one.
    """

    table: _Table[K, R]
    merge: Callable[[R | None, W], R | None]
    writes: list[tuple[K, W] | None] = dataclasses.field(default_factory=list)
    seen: dict[K, R] = dataclasses.field(default_factory=dict)
    cleared: bool = False

    def get(self, key: K) -> R | None:
        if key in self.seen:
            return self.seen[key]
        return None if self.cleared else self.table.rows.get(key)

    def put(self, key: K, wanted: W) -> None:
        row = self.merge(self.get(key), wanted)
        if row is not None:
            self.seen[key] = row
        self.writes.append((key, wanted))

    def clear(self) -> None:
        self.seen.clear()
        self.cleared = True
        self.writes.append(None)  # None: delete every row

    def items(self) -> Iterable[tuple[K, R]]:
        if not self.cleared and not self.seen:
            return self.table.rows.items()
        rows = {} if self.cleared else dict(self.table.rows)
        rows.update(self.seen)
        return rows.items()

    def check(self) -> None:
        pass  # no unique value besides the key, and a write of it never fails

    def apply(self) -> None:
        rows = self.table.rows
        for write in self.writes:
            if write is None:
                rows.clear()
                continue
            key, wanted = write
            row = self.merge(rows.get(key), wanted)
            if row is not None:
                rows[key] = row


class _TableView(Bound, Generic[K, R, W]):
    """A read-model handle on a table, staging its writes in the transaction."""

    def __init__(self) -> None:
        self._table: _Table[K, R] = _Table()

    @property
    def rows(self) -> dict[K, R]:
        """The committed rows, for tests to look at."""
        return self._table.rows

    @staticmethod
    def _merge(current: R | None, wanted: W) -> R | None:
        raise NotImplementedError

    @staticmethod
    def _rewrite(key: K, row: R) -> W:
        """The write that reproduces ``row`` in an empty table."""
        raise NotImplementedError

    def _changes(self, transaction: Transaction) -> _TableChanges[K, R, W]:
        return transaction.changes(
            self._table, lambda: _TableChanges(self._table, self._merge)
        )

    def _visible(self) -> Iterable[tuple[K, R]]:
        transaction = self._reading()
        staged = None if transaction is None else transaction.staged(self._table)
        if staged is None:
            return self._table.rows.items()
        return staged.items()  # type: ignore[attr-defined, no-any-return]  # ours

    def _get(self, key: K) -> R | None:
        transaction = self._reading()
        staged = None if transaction is None else transaction.staged(self._table)
        if staged is None:
            return self._table.rows.get(key)
        return staged.get(key)  # type: ignore[attr-defined, no-any-return]  # ours

    def _page(self, after: K | None, limit: int | None) -> list[tuple[K, R]]:
        """The first ``limit`` rows (all by default) past the key ``after``, by key."""
        rows: Iterable[tuple[K, R]] = self._visible()
        if after is not None:
            rows = (item for item in rows if after < item[0])
        if limit is None:
            return sorted(rows, key=_row_key)
        # A page of a large table without sorting all of it.
        return heapq.nsmallest(limit, rows, key=_row_key)

    def _write(self, writes: Iterable[tuple[K, W]]) -> None:
        with self._writing() as transaction:
            changes = self._changes(transaction)
            for key, wanted in writes:
                changes.put(key, wanted)

    async def clear(self) -> None:
        with self._writing() as transaction:
            self._changes(transaction).clear()

    async def replace_rows(self, source: _TableView[K, R, W]) -> None:
        """Make this table's rows those ``source`` shows (a shadow's swap)."""
        rows = list(source._visible())
        with self._writing() as transaction:
            changes = self._changes(transaction)
            changes.clear()
            for key, row in rows:
                changes.put(key, self._rewrite(key, row))


class FakeAllocationsView(
    _TableView[LineKey, LineRow, LineState], AbstractAllocationsView
):
    """The allocations read model: (orderid, sku, qty) -> (batchref, version,
    allocated) in ``rows``.

    It keeps the same rows as the SQL table, by the same rule, so it also serves
    as scratch state when ``verify`` replays the log.
    """

    @staticmethod
    def _merge(current: LineRow | None, wanted: LineState) -> LineRow | None:
        if (
            wanted.version is not None
            and current is not None
            and current[1] >= wanted.version
        ):
            return None  # an older event, or one already applied
        return (wanted.batchref, wanted.version or 0, wanted.allocated)

    @staticmethod
    def _rewrite(key: LineKey, row: LineRow) -> LineState:
        return LineState(*key, *row)

    async def write_many(self, lines: Sequence[LineState]) -> None:
        self._write(((line.orderid, line.sku, line.qty), line) for line in lines)

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        return [
            AllocationRow(sku=sku, batchref=batchref)
            for sku, batchref, _ in sorted(
                (sku, batchref, qty)
                for (order, sku, qty), (batchref, _, allocated) in self._visible()
                if order == orderid and allocated
            )
        ]

    async def lines(
        self, *, after: LineKey | None = None, limit: int | None = None
    ) -> list[LineState]:
        return [LineState(*key, *row) for key, row in self._page(after, limit)]


class FakeUsersView(_TableView[str, UserRow, UserRow], AbstractUsersView):
    """The users read model: user id -> UserRow in ``rows``."""

    @staticmethod
    def _merge(current: UserRow | None, wanted: UserRow) -> UserRow | None:
        return wanted

    @staticmethod
    def _rewrite(key: str, row: UserRow) -> UserRow:
        return row

    async def add(self, user_id: str, name: str, email: str) -> None:
        self._write([(user_id, UserRow(id=user_id, name=name, email=email))])

    # Readers get copies, as from a database: changing one changes no row.

    async def by_id(self, user_id: str) -> UserRow | None:
        row = self._get(user_id)
        return None if row is None else UserRow(**row)

    async def by_email(self, email: str) -> UserRow | None:
        return next(
            (UserRow(**row) for _, row in self._visible() if row["email"] == email),
            None,
        )

    async def all_rows(self) -> list[UserRow]:
        return sorted(
            (UserRow(**row) for _, row in self._visible()),
            key=lambda row: (row["email"], row["id"]),
        )

    async def page(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[UserRow]:
        return [UserRow(**row) for _, row in self._page(after, limit)]


def _row_key(item: tuple[Any, object]) -> Any:
    return item[0]
