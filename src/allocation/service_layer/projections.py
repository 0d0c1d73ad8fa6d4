"""Projections: read models built from events, which a replay can rebuild from the log.

A projection is inline or asynchronous. An inline one is written by the unit of
work in the command's own transaction: it is current the moment the command
returns, and costs no transaction of its own. An asynchronous one is a subscriber
like any other, with a stable name, fed after the commit (and by catch-up); its
changes are made in the same transaction as the record that it has handled the
event, so each event takes effect exactly once, even when delivered twice. Both
kinds replay from the log.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from allocation.domain import events
from allocation.domain.exceptions import shorten
from allocation.service_layer.ports import LineState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from allocation.service_layer.ports import (
        AbstractAllocationsView,
        AbstractUsersView,
    )
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# A read model's row: its values in the order of its columns, its key first (so
# rows sort by key), as the views' paged reads give them. Keys of one read model
# hold the same columns, so they compare as their values do.
Row = tuple[Any, ...]
Key = tuple[Any, ...]
# Reads the next page of a read model: at most ``limit`` rows past the key
# ``after`` (from the start for None), in key order.
PageReader = Callable[[Key | None, int], Awaitable[Sequence[Row]]]


@dataclasses.dataclass(frozen=True, slots=True)
class Projection:
    """A read model: its name, what each event does to it, and how to empty it.

    Attributes:
        name: the subscriber name under which its progress is tracked.
        appliers: for each event type, a function that changes the read model
            inside an open unit of work (without committing).
        clear: empties the read model inside an open unit of work.
        rows: reads a page of a read model's rows, in key order: ``rows(view,
            after, limit)`` gives at most ``limit`` rows past the key ``after``
            of ``view`` (the port the unit of work's ``view_attribute`` holds),
            for ``verify`` and a replay to compare with a rebuild from the log.
        columns: the names of a row's values, in order, the key's first.
        key_size: how many of them make the key.
        view_attribute: the unit of work's attribute holding its read model
            (a replay points it at a shadow table).
        inline: written in the command's own transaction instead of after it.
        apply_batch: applies a batch of events at once (catch-up, replay);
            without it they are applied one by one.
    """

    name: str
    appliers: Mapping[
        type[events.Event], Callable[[Any, AbstractUnitOfWork], Awaitable[None]]
    ]
    clear: Callable[[AbstractUnitOfWork], Awaitable[None]]
    rows: Callable[[Any, Key | None, int], Awaitable[Sequence[Row]]]
    columns: tuple[str, ...]
    key_size: int
    view_attribute: str
    inline: bool = False
    apply_batch: (
        Callable[[Sequence[events.Event], AbstractUnitOfWork], Awaitable[None]] | None
    ) = None

    def reader(self, uow: AbstractUnitOfWork) -> PageReader:
        """Reads pages of the read model the unit of work points at now (live or
        shadow), still that one after the unit of work is pointed elsewhere."""
        return functools.partial(self.rows, getattr(uow, self.view_attribute))

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(kind.TYPE for kind in self.appliers)

    def handler(
        self, event_type: type[events.Event]
    ) -> Callable[[Any, AbstractUnitOfWork], Awaitable[None]]:
        """The bus handler for one event type: apply, then commit."""
        apply = self.appliers[event_type]

        async def apply_and_commit(event: Any, uow: AbstractUnitOfWork) -> None:
            async with uow:
                await apply(event, uow)
                await uow.commit()

        apply_and_commit.__name__ = f"{self.name}.{apply.__name__}"
        return apply_and_commit

    async def apply(self, event: events.Event, uow: AbstractUnitOfWork) -> None:
        """Apply one event inside an open unit of work."""
        await self.appliers[type(event)](event, uow)

    async def apply_many(
        self, batch: Sequence[events.Event], uow: AbstractUnitOfWork
    ) -> None:
        """Apply events in log order inside an open unit of work (catch-up, replay)."""
        if self.apply_batch is not None:
            await self.apply_batch(batch, uow)
            return
        for event in batch:
            await self.apply(event, uow)


async def _add_allocation(event: events.Allocated, uow: AbstractUnitOfWork) -> None:
    await uow.allocations_view.add(
        orderid=event.orderid,
        sku=event.sku,
        qty=event.qty,
        batchref=event.batchref,
        version=event.aggregate_version,
    )


async def _remove_allocation(
    event: events.Deallocated, uow: AbstractUnitOfWork
) -> None:
    await uow.allocations_view.remove(
        orderid=event.orderid,
        sku=event.sku,
        qty=event.qty,
        batchref=event.batchref,
        version=event.aggregate_version,
    )


async def _add_imported_allocations(
    event: events.ProductImported, uow: AbstractUnitOfWork
) -> None:
    await uow.allocations_view.write_many(_imported_lines(event))


def _imported_lines(event: events.ProductImported) -> list[LineState]:
    """The lines an import's batches held, as of the import's version: a line a
    later event changed keeps that event's row, whichever arrives first."""
    return [
        LineState(
            orderid=line.orderid,
            sku=line.sku,
            qty=line.qty,
            batchref=batch.ref,
            version=event.aggregate_version,
            allocated=True,
        )
        for batch in event.batches
        for line in batch.allocations
    ]


async def _apply_allocations(
    batch: Sequence[events.Event], uow: AbstractUnitOfWork
) -> None:
    # By position (orderid, sku, qty, batchref, version, allocated): every event of
    # a catch-up or replay batch passes here, and keywords cost nearly twice as much.
    lines = [
        LineState(
            event.orderid,
            event.sku,
            event.qty,
            event.batchref,
            event.aggregate_version,
            isinstance(event, events.Allocated),
        )
        for event in batch
        if isinstance(event, (events.Allocated, events.Deallocated))
    ]
    for event in batch:
        # A product's baseline (rare: once per product logged partly before the
        # log) carries the lines it held.
        if isinstance(event, events.ProductImported):
            lines += _imported_lines(event)
    await uow.allocations_view.write_many(lines)


async def _clear_allocations(uow: AbstractUnitOfWork) -> None:
    await uow.allocations_view.clear()


async def _allocation_rows(
    view: AbstractAllocationsView, after: Key | None, limit: int
) -> Sequence[Row]:
    # A line is a tuple of the row's values, in the order of LineState's fields.
    after_line = None if after is None else (after[0], after[1], after[2])
    return await view.lines(after=after_line, limit=limit)


async def _add_user(event: events.UserRegistered, uow: AbstractUnitOfWork) -> None:
    await uow.users_view.add(event.user_id, event.name, event.email)


async def _clear_users(uow: AbstractUnitOfWork) -> None:
    await uow.users_view.clear()


async def _user_rows(
    view: AbstractUsersView, after: Key | None, limit: int
) -> Sequence[Row]:
    start = None if after is None else after[0]
    return [
        (row["id"], row["name"], row["email"])
        for row in await view.page(after=start, limit=limit)
    ]


ALLOCATIONS_VIEW = Projection(
    name="allocations_view",
    appliers={
        events.Allocated: _add_allocation,
        events.Deallocated: _remove_allocation,
        events.ProductImported: _add_imported_allocations,
    },
    clear=_clear_allocations,
    rows=_allocation_rows,
    columns=LineState._fields,
    key_size=3,  # orderid, sku, qty
    view_attribute="allocations_view",
    apply_batch=_apply_allocations,
)
USERS_VIEW = Projection(
    name="users_view",
    appliers={events.UserRegistered: _add_user},
    clear=_clear_users,
    rows=_user_rows,
    columns=("user_id", "name", "email"),
    key_size=1,
    view_attribute="users_view",
    # Registering a user is one transaction, and a reader finds the user at once.
    inline=True,
)
PROJECTIONS = (ALLOCATIONS_VIEW, USERS_VIEW)
INLINE_PROJECTIONS = tuple(
    projection for projection in PROJECTIONS if projection.inline
)


# A difference report shows this many rows, then how many more differ.
SHOWN_ROWS = 5


async def compare_rows(
    name: str,
    *,
    stored: PageReader,
    replayed: PageReader,
    columns: Sequence[str],
    key_size: int,
    page_size: int,
) -> list[str]:
    """One line per row of read model ``name`` that differs between what is stored
    and what the replayed log gives (the first few, by key), then how many more
    differ. ``columns`` name a row's values; the first ``key_size`` are its key.

    Both sides are read in key order, ``page_size`` rows at a time, and merged:
    at most one page of each is held, however large the read model.
    """
    differences = _Differences(name, columns, key_size)
    have_side = _Paged(stored, key_size, page_size)
    want_side = _Paged(replayed, key_size, page_size)
    have, want = await have_side.next_page(), await want_side.next_page()
    i = j = 0
    while have and want:
        # Row by row within the pages in hand; most rows agree whole.
        while i < len(have) and j < len(want):
            have_row, want_row = have[i], want[j]
            if have_row == want_row:
                i, j = i + 1, j + 1
                continue
            have_key, want_key = have_row[:key_size], want_row[:key_size]
            if have_key < want_key:
                differences.add(have_key, have_row, None)
                i += 1
            elif want_key < have_key:
                differences.add(want_key, None, want_row)
                j += 1
            else:
                differences.add(have_key, have_row, want_row)
                i, j = i + 1, j + 1
        if i == len(have):
            have, i = (), 0  # let the page go before the next is read
            have = await have_side.next_page()
        if j == len(want):
            want, j = (), 0
            want = await want_side.next_page()
    # One side is done: the other's remaining rows are missing from it.
    while have:
        for row in have[i:]:
            differences.add(row[:key_size], row, None)
        have, i = (), 0
        have = await have_side.next_page()
    while want:
        for row in want[j:]:
            differences.add(row[:key_size], None, row)
        want, j = (), 0
        want = await want_side.next_page()
    return differences.lines()


class _Paged:
    """One side of a comparison: its rows, read a page at a time in key order."""

    def __init__(self, read: PageReader, key_size: int, page_size: int) -> None:
        self._read = read
        self._key_size = key_size
        self._page_size = page_size
        self._last_key: Key | None = None
        self._exhausted = False

    async def next_page(self) -> Sequence[Row]:
        """The next page, empty past the last one."""
        if self._exhausted:
            return ()
        page = await self._read(self._last_key, self._page_size)
        self._exhausted = len(page) < self._page_size
        if page:
            self._last_key = tuple(page[-1][: self._key_size])
        return page


class _Differences:
    """The lines showing how two read models differ: the first few, then a count."""

    def __init__(self, name: str, columns: Sequence[str], key_size: int) -> None:
        self._name = name
        self._key_columns = tuple(columns[:key_size])
        self._value_columns = tuple(columns[key_size:])
        self._key_size = key_size
        self._shown: list[str] = []
        self._count = 0

    def add(self, key: Key, have: Row | None, want: Row | None) -> None:
        """The row of ``key`` differs: ``have`` stored, ``want`` replayed (None
        for a side without it)."""
        self._count += 1
        if self._count > SHOWN_ROWS:
            return
        found = "missing" if have is None else f"stored {self._values(have)}"
        expected = "has no such row" if want is None else f"gives {self._values(want)}"
        key_shown = _show(self._key_columns, key)
        self._shown.append(
            f"{self._name} {key_shown}: {found}; the replayed log {expected}"
        )

    def lines(self) -> list[str]:
        if self._count <= SHOWN_ROWS:
            return list(self._shown)
        more = self._count - SHOWN_ROWS
        return [
            *self._shown,
            f"{self._name}: {more} more rows differ from the replayed log",
        ]

    def _values(self, row: Row) -> str:
        return _show(self._value_columns, row[self._key_size :])


def _show(columns: Sequence[str], values: Sequence[Any]) -> str:
    return " ".join(
        f"{column}={shorten(value)}"
        for column, value in zip(columns, values, strict=True)
    )
