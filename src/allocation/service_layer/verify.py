"""Verification: replay the whole log and compare with what is stored.

Every state change is an event, so the log alone rebuilds products, batches,
allocations and users; any difference with the tables means a change bypassed the
log, or an event was lost or doubled. The read models are rebuilt by their own
projection code into scratch state in memory (the fakes of ``allocation.testing``,
which keep the same rows as the tables), never by a second statement of their rules,
and compared with the stored ones row by row.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from allocation.domain import events
from allocation.domain.exceptions import shorten
from allocation.service_layer import projections as projections_module

if TYPE_CHECKING:
    import datetime
    from collections.abc import Collection, Sequence

    from allocation.service_layer.ports import LoggedEvent
    from allocation.service_layer.projections import NamedValues, Projection, Rows
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# Differing rows shown per read model; the rest are counted.
SHOWN_ROWS = 5

Line = tuple[str, str, int]  # orderid, sku, qty


@dataclasses.dataclass
class _Product:
    version: int = 0
    batches: dict[str, tuple[int, datetime.date | None]] = dataclasses.field(
        default_factory=dict
    )
    lines: dict[str, set[Line]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Folded:
    products: dict[str, _Product] = dataclasses.field(default_factory=dict)
    users: dict[str, tuple[str, str, int]] = dataclasses.field(default_factory=dict)
    versions: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    def fold(self, logged: LoggedEvent) -> None:
        key = (logged.aggregate_type, logged.aggregate_id)
        expected = self.versions.get(key, 0) + 1
        if logged.aggregate_version != expected:
            self.problems.append(
                f"{key[0]} {key[1]}: event at position {logged.position} has version "
                f"{logged.aggregate_version}, expected {expected}"
            )
        self.versions[key] = logged.aggregate_version
        event = logged.event
        if isinstance(event, events.UserRegistered):
            self.users[event.user_id] = (
                event.name,
                event.email,
                logged.aggregate_version,
            )
            return
        product = self.products.setdefault(logged.aggregate_id, _Product())
        product.version = logged.aggregate_version
        if isinstance(event, events.BatchCreated):
            product.batches[event.ref] = (event.qty, event.eta)
            product.lines.setdefault(event.ref, set())
        elif isinstance(event, events.BatchQuantityChanged):
            _, eta = product.batches.get(event.ref, (0, None))
            product.batches[event.ref] = (event.qty, eta)
        elif isinstance(event, events.Allocated):
            product.lines.setdefault(event.batchref, set()).add(
                (event.orderid, event.sku, event.qty)
            )
        elif isinstance(event, events.Deallocated):
            product.lines.get(event.batchref, set()).discard(
                (event.orderid, event.sku, event.qty)
            )


async def verify(
    uow: AbstractUnitOfWork,
    *,
    scratch: AbstractUnitOfWork,
    batch_size: int = 5000,
    projections: Sequence[Projection] = projections_module.PROJECTIONS,
) -> list[str]:
    """Return every difference between the replayed log and the stored state.

    The stored aggregates are compared with a fold of their events, and each read
    model with what its projection makes of the whole log in ``scratch``: an empty
    in-memory unit of work (``allocation.testing.FakeUnitOfWork``, held to the same
    read-model contract as the SQL adapters), given by the caller so the service
    layer depends on no adapter.
    """
    folded = _Folded()
    async with uow, scratch:
        after = 0
        while batch := await uow.event_log.read(after=after, limit=batch_size):
            for logged in batch:
                folded.fold(logged)
            await _replay(projections, batch, scratch)
            after = batch[-1].position
        problems = list(folded.problems)
        problems += await _compare_products(uow, folded.products)
        problems += await _compare_users(uow, folded.users)
        for projection in projections:
            problems += _compare_rows(
                projection.name,
                stored=await projection.rows(uow),
                replayed=await projection.rows(scratch),
            )
    return problems


async def _replay(
    projections: Sequence[Projection],
    batch: Sequence[LoggedEvent],
    scratch: AbstractUnitOfWork,
) -> None:
    """Apply a batch of the log to every projection, as catch-up and replay do."""
    for projection in projections:
        names = projection.event_names
        mine = [logged.event for logged in batch if logged.event.TYPE in names]
        if mine:
            await projection.apply_many(mine, scratch)


async def _compare_products(
    uow: AbstractUnitOfWork, folded: dict[str, _Product]
) -> list[str]:
    stored_skus = await uow.products.all_skus()
    problems = _unstored("product", folded, stored_skus)
    for sku in stored_skus:
        product = await uow.products.get(sku)
        expected = folded.get(sku)
        if product is None or expected is None:
            problems.append(_unlogged("product", sku))
            continue
        if product.version_number != expected.version:
            problems.append(
                f"product {sku}: stored version {product.version_number}, "
                f"the log has {expected.version} events"
            )
        stored_batches = {
            b.reference: (b.purchased_quantity, b.eta) for b in product.batches
        }
        if stored_batches != expected.batches:
            problems.append(
                f"product {sku}: batches {stored_batches} differ from the log's "
                f"{expected.batches}"
            )
        for batch in product.batches:
            stored_lines = {
                (line.orderid, line.sku, line.qty) for line in batch.allocations
            }
            logged_lines = expected.lines.get(batch.reference, set())
            if stored_lines != logged_lines:
                problems.append(
                    f"batch {batch.reference}: allocations {sorted(stored_lines)} differ "
                    f"from the log's {sorted(logged_lines)}"
                )
    return problems


async def _compare_users(
    uow: AbstractUnitOfWork, folded: dict[str, tuple[str, str, int]]
) -> list[str]:
    stored_ids = await uow.users.all_ids()
    problems = _unstored("user", folded, stored_ids)
    for user_id in stored_ids:
        user = await uow.users.get(user_id)
        expected = folded.get(user_id)
        if user is None or expected is None:
            problems.append(_unlogged("user", user_id))
            continue
        if (user.name, user.email, user.version_number) != expected:
            problems.append(
                f"user {user_id}: stored {(user.name, user.email, user.version_number)}"
                f" differs from the log's {expected}"
            )
    return problems


def _unstored(kind: str, folded: Collection[str], stored: Collection[str]) -> list[str]:
    """One problem per aggregate the log knows of and the tables do not."""
    return [
        f"{kind} {key}: in the log but not stored"
        for key in sorted(set(folded) - set(stored))
    ]


def _unlogged(kind: str, key: str) -> str:
    return f"{kind} {key}: stored but has no events in the log"


def _compare_rows(name: str, *, stored: Rows, replayed: Rows) -> list[str]:
    """One line per differing row (the first few), then how many more differ."""
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
        if have is None:
            found = "missing"
        else:
            found = f"stored {_show(have)}"
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
