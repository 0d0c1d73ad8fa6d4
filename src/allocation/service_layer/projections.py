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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from allocation.domain import events
from allocation.domain.exceptions import shorten
from allocation.service_layer.ports import LineState

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from allocation.service_layer.ports import (
        AbstractAllocationsView,
        AbstractUsersView,
    )
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# A read model's row: its key, and the rest of the row, as (column, value) pairs,
# so that a difference can be shown with its column names. Keys of one read model
# name the same columns, so they compare as their values do.
NamedValues = tuple[tuple[str, Any], ...]
Row = tuple[NamedValues, NamedValues]
# Reads the next page of a read model: at most ``limit`` rows past the key
# ``after`` (from the start for None), in key order.
PageReader = Callable[[NamedValues | None, int], Awaitable[list[Row]]]


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
    rows: Callable[[Any, NamedValues | None, int], Awaitable[list[Row]]]
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
    lines: list[LineState] = []
    for event in batch:
        if isinstance(event, events.Allocated | events.Deallocated):
            lines.append(
                LineState(
                    orderid=event.orderid,
                    sku=event.sku,
                    qty=event.qty,
                    batchref=event.batchref,
                    version=event.aggregate_version,
                    allocated=isinstance(event, events.Allocated),
                )
            )
        elif isinstance(event, events.ProductImported):
            lines += _imported_lines(event)
    await uow.allocations_view.write_many(lines)


async def _clear_allocations(uow: AbstractUnitOfWork) -> None:
    await uow.allocations_view.clear()


async def _allocation_rows(
    view: AbstractAllocationsView, after: NamedValues | None, limit: int
) -> list[Row]:
    start = None
    if after is not None:
        (_, orderid), (_, sku), (_, qty) = after
        start = (orderid, sku, qty)
    return [
        (
            (("orderid", line.orderid), ("sku", line.sku), ("qty", line.qty)),
            (
                ("batchref", line.batchref),
                ("version", line.version),
                ("allocated", line.allocated),
            ),
        )
        for line in await view.lines(after=start, limit=limit)
    ]


async def _add_user(event: events.UserRegistered, uow: AbstractUnitOfWork) -> None:
    await uow.users_view.add(event.user_id, event.name, event.email)


async def _clear_users(uow: AbstractUnitOfWork) -> None:
    await uow.users_view.clear()


async def _user_rows(
    view: AbstractUsersView, after: NamedValues | None, limit: int
) -> list[Row]:
    start = None if after is None else after[0][1]
    return [
        ((("user_id", row["id"]),), (("name", row["name"]), ("email", row["email"])))
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
    view_attribute="allocations_view",
    apply_batch=_apply_allocations,
)
USERS_VIEW = Projection(
    name="users_view",
    appliers={events.UserRegistered: _add_user},
    clear=_clear_users,
    rows=_user_rows,
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
    name: str, *, stored: PageReader, replayed: PageReader, page_size: int
) -> list[str]:
    """One line per row of read model ``name`` that differs between what is stored
    and what the replayed log gives (the first few, by key), then how many more
    differ.

    Both sides are read in key order, ``page_size`` rows at a time, and merged:
    at most one page of each is held, however large the read model.
    """
    have_rows, want_rows = _Paged(stored, page_size), _Paged(replayed, page_size)
    have, want = await have_rows.next(), await want_rows.next()
    problems: list[str] = []
    differing = 0
    while True:
        have_values: NamedValues | None
        want_values: NamedValues | None
        if have is not None and (want is None or have[0] < want[0]):
            key, have_values, want_values = have[0], have[1], None
            have = await have_rows.next()
        elif want is not None and (have is None or want[0] < have[0]):
            key, have_values, want_values = want[0], None, want[1]
            want = await want_rows.next()
        elif have is not None and want is not None:  # the same key
            key, have_values, want_values = have[0], have[1], want[1]
            have, want = await have_rows.next(), await want_rows.next()
            if have_values == want_values:
                continue
        else:
            break
        differing += 1
        if differing <= SHOWN_ROWS:
            problems.append(_difference(name, key, have_values, want_values))
    if differing > SHOWN_ROWS:
        problems.append(
            f"{name}: {differing - SHOWN_ROWS} more rows differ from the replayed log"
        )
    return problems


class _Paged:
    """The rows of one side of a comparison, one at a time, read a page at a time."""

    def __init__(self, read: PageReader, page_size: int) -> None:
        self._read = read
        self._page_size = page_size
        self._page: list[Row] = []
        self._index = 0
        self._last_key: NamedValues | None = None
        self._exhausted = False

    async def next(self) -> Row | None:
        """The next row in key order, None past the last."""
        if self._index == len(self._page):
            if self._exhausted:
                return None
            # Let the page read go before reading the next one.
            self._page, self._index = [], 0
            self._page = await self._read(self._last_key, self._page_size)
            self._exhausted = len(self._page) < self._page_size
            if not self._page:
                return None
            self._last_key = self._page[-1][0]
        row = self._page[self._index]
        self._index += 1
        return row


def _difference(
    name: str,
    key: NamedValues,
    have: NamedValues | None,
    want: NamedValues | None,
) -> str:
    found = "missing" if have is None else f"stored {_show(have)}"
    expected = "has no such row" if want is None else f"gives {_show(want)}"
    return f"{name} {_show(key)}: {found}; the replayed log {expected}"


def _show(values: NamedValues) -> str:
    return " ".join(f"{column}={shorten(value)}" for column, value in values)
