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
from typing import TYPE_CHECKING, Any

from allocation.domain import events
from allocation.domain.exceptions import shorten
from allocation.service_layer.ports import LineState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# A read model's content: each row's key, and the rest of the row, as (column,
# value) pairs, so that a difference can be shown with its column names.
NamedValues = tuple[tuple[str, Any], ...]
Rows = dict[NamedValues, NamedValues]


@dataclasses.dataclass(frozen=True, slots=True)
class Projection:
    """A read model: its name, what each event does to it, and how to empty it.

    Attributes:
        name: the subscriber name under which its progress is tracked.
        appliers: for each event type, a function that changes the read model
            inside an open unit of work (without committing).
        clear: empties the read model inside an open unit of work.
        rows: reads the read model's whole content as ``{key: values}``, for
            ``verify`` to compare with a replay of the log.
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
    rows: Callable[[AbstractUnitOfWork], Awaitable[Rows]]
    view_attribute: str
    inline: bool = False
    apply_batch: (
        Callable[[Sequence[events.Event], AbstractUnitOfWork], Awaitable[None]] | None
    ) = None

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


async def _apply_allocations(
    batch: Sequence[events.Event], uow: AbstractUnitOfWork
) -> None:
    await uow.allocations_view.write_many(
        [
            LineState(
                orderid=event.orderid,
                sku=event.sku,
                qty=event.qty,
                batchref=event.batchref,
                version=event.aggregate_version,
                allocated=isinstance(event, events.Allocated),
            )
            for event in batch
            if isinstance(event, events.Allocated | events.Deallocated)
        ]
    )


async def _clear_allocations(uow: AbstractUnitOfWork) -> None:
    await uow.allocations_view.clear()


async def _allocation_rows(uow: AbstractUnitOfWork) -> Rows:
    return {
        (("orderid", line.orderid), ("sku", line.sku), ("qty", line.qty)): (
            ("batchref", line.batchref),
            ("version", line.version),
            ("allocated", line.allocated),
        )
        for line in await uow.allocations_view.lines()
    }


async def _add_user(event: events.UserRegistered, uow: AbstractUnitOfWork) -> None:
    await uow.users_view.add(event.user_id, event.name, event.email)


async def _clear_users(uow: AbstractUnitOfWork) -> None:
    await uow.users_view.clear()


async def _user_rows(uow: AbstractUnitOfWork) -> Rows:
    return {
        (("user_id", row["id"]),): (("name", row["name"]), ("email", row["email"]))
        for row in await uow.users_view.all_rows()
    }


ALLOCATIONS_VIEW = Projection(
    name="allocations_view",
    appliers={
        events.Allocated: _add_allocation,
        events.Deallocated: _remove_allocation,
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


def compare_rows(name: str, *, stored: Rows, replayed: Rows) -> list[str]:
    """One line per row of read model ``name`` that differs between what is stored
    and what the replayed log gives (the first few), then how many more differ."""
    differing = sorted(
        (
            key
            for key in stored.keys() | replayed.keys()
            if stored.get(key) != replayed.get(key)
        ),
        key=repr,
    )
    problems = []
    for key in differing[:SHOWN_ROWS]:
        have, want = stored.get(key), replayed.get(key)
        found = "missing" if have is None else f"stored {_show(have)}"
        expected = "has no such row" if want is None else f"gives {_show(want)}"
        problems.append(f"{name} {_show(key)}: {found}; the replayed log {expected}")
    if len(differing) > SHOWN_ROWS:
        problems.append(
            f"{name}: {len(differing) - SHOWN_ROWS} more rows differ from the"
            " replayed log"
        )
    return problems


def _show(values: NamedValues) -> str:
    return " ".join(f"{column}={shorten(value)}" for column, value in values)
