"""Verification: fold every aggregate's logged events and compare with what is stored.

Every state change is an event, so the log alone rebuilds products, batches,
allocations and users; any difference with the tables (or the read models) means a
change bypassed the log, or an event was lost or doubled.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from allocation.domain import events

if TYPE_CHECKING:
    import datetime
    from collections.abc import Collection

    from allocation.adapters.eventlog import LoggedEvent
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

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
    # What the allocations view must show: the last event of each order line wins.
    view: dict[tuple[str, str], tuple[str, bool]] = dataclasses.field(
        default_factory=dict
    )
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
            self.view[event.orderid, event.sku] = (event.batchref, True)
        elif isinstance(event, events.Deallocated):
            product.lines.get(event.batchref, set()).discard(
                (event.orderid, event.sku, event.qty)
            )
            self.view[event.orderid, event.sku] = (event.batchref, False)


async def verify(uow: AbstractUnitOfWork, *, batch_size: int = 5000) -> list[str]:
    """Return every difference between the folded log and the stored state."""
    folded = _Folded()
    async with uow:
        after = 0
        while batch := await uow.event_log.read(after=after, limit=batch_size):
            for logged in batch:
                folded.fold(logged)
            after = batch[-1].position
        problems = list(folded.problems)
        problems += await _compare_products(uow, folded.products)
        problems += await _compare_users(uow, folded.users)
        problems += await _compare_read_models(uow, folded)
    return problems


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


async def _compare_read_models(uow: AbstractUnitOfWork, folded: _Folded) -> list[str]:
    problems: list[str] = []
    expected_allocations = sorted(
        (orderid, sku, batchref)
        for (orderid, sku), (batchref, allocated) in folded.view.items()
        if allocated
    )
    stored_allocations = await uow.allocations_view.all_rows()
    if stored_allocations != expected_allocations:
        missing = sorted(set(expected_allocations) - set(stored_allocations))
        extra = sorted(set(stored_allocations) - set(expected_allocations))
        problems.append(
            f"allocations_view: missing {missing[:5]}, unexpected {extra[:5]}"
            f" ({len(missing)} missing, {len(extra)} unexpected)"
        )
    expected_users = sorted(
        (user_id, name, email) for user_id, (name, email, _) in folded.users.items()
    )
    stored_users = sorted(
        (row["id"], row["name"], row["email"])
        for row in await uow.users_view.all_rows()
    )
    if stored_users != expected_users:
        problems.append(
            f"users_view: {len(stored_users)} rows, the log has {len(expected_users)} "
            "users, or their names and emails differ"
        )
    return problems
