"""The allocation domain: products hold batches of stock, batches hold order lines."""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any, Self

from allocation.domain import events, values
from allocation.domain.aggregate import Aggregate, applies
from allocation.domain.exceptions import (
    AllocationError,
    BatchAlreadyExists,
    EventNotApplicable,
    InvalidSnapshot,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclasses.dataclass(unsafe_hash=True)
class OrderLine:
    """A customer's request for ``qty`` units of ``sku``; a value object."""

    orderid: str
    sku: str
    qty: int

    def __post_init__(self) -> None:
        self.orderid = values.check_identifier("order id", self.orderid)
        self.sku = values.check_identifier("sku", self.sku)
        self.qty = values.check_quantity(self.qty, minimum=1)


class Batch:
    """Stock of one sku, in the warehouse (``eta`` None) or arriving on ``eta``.

    A batch is part of its Product and changes only through the product's apply
    steps: its line methods are private to this module.
    """

    def __init__(
        self, ref: str, sku: str, qty: int, eta: datetime.date | None = None
    ) -> None:
        self.reference = values.check_identifier("batch reference", ref)
        self.sku = values.check_identifier("sku", sku)
        self.eta = eta
        self._purchased_quantity = values.check_quantity(qty, minimum=0)
        self._allocations: set[OrderLine] = set()

    def __repr__(self) -> str:
        return f"<Batch {self.reference}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)

    def _sort_key(self) -> tuple[int, datetime.date | None, str]:
        # In-stock batches (no eta) first, then the earliest arrival; the reference
        # breaks ties so the choice never depends on load order.
        return (0 if self.eta is None else 1, self.eta, self.reference)

    @property
    def purchased_quantity(self) -> int:
        return self._purchased_quantity

    @property
    def allocations(self) -> frozenset[OrderLine]:
        return frozenset(self._allocations)

    @property
    def allocated_quantity(self) -> int:
        return sum(line.qty for line in self._allocations)

    @property
    def available_quantity(self) -> int:
        return self._purchased_quantity - self.allocated_quantity

    def can_allocate(self, line: OrderLine) -> bool:
        return self.sku == line.sku and self.available_quantity >= line.qty

    def _deallocation_order(self) -> list[OrderLine]:
        # The newest order ids go first: the oldest orders keep their stock.
        return sorted(
            self._allocations, key=lambda each: (each.orderid, each.qty), reverse=True
        )

    def _remove_line(self, line: OrderLine) -> bool:
        # The member itself is removed, not an equal copy: a mapped collection
        # tracks its members by identity.
        for member in self._allocations:
            if member == line:
                self._allocations.remove(member)
                return True
        return False

    def _state(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "purchased_quantity": self._purchased_quantity,
            "eta": None if self.eta is None else self.eta.isoformat(),
            "allocations": [
                {"orderid": line.orderid, "sku": line.sku, "qty": line.qty}
                for line in sorted(
                    self._allocations,
                    key=lambda each: (each.orderid, each.sku, each.qty),
                )
            ],
        }


class Product(Aggregate):
    """The aggregate: every batch of one sku, changed only through its events.

    ``version_number`` goes up by one with every event it records, which is how the
    adapters detect a concurrent writer (optimistic concurrency).
    """

    AGGREGATE_TYPE = "product"
    SNAPSHOT_VERSION = 1

    def __init__(
        self, sku: str, batches: list[Batch] | None = None, version_number: int = 0
    ) -> None:
        # ``batches`` builds a state no event made; the current SQL repositories
        # and some tests rely on it. Events build a product with ``blank``.
        self.sku = values.check_identifier("sku", sku)
        self.batches = batches if batches is not None else []
        self.version_number = version_number
        self.events: list[events.Event] = []

    def __repr__(self) -> str:
        return f"<Product {self.sku} v{self.version_number}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Product) and other.sku == self.sku

    def __hash__(self) -> int:
        return hash(self.sku)

    @property
    def aggregate_id(self) -> str:
        return self.sku

    @classmethod
    def blank(cls, aggregate_id: str) -> Self:
        return cls(aggregate_id)

    def batch(self, ref: str) -> Batch | None:
        return next((b for b in self.batches if b.reference == ref), None)

    # Commands: check the rules, then record the event.

    def add_batch(self, batch: Batch) -> None:
        """Add a new batch (no allocations yet) of this product's sku."""
        if batch.sku != self.sku:
            raise ValueError(
                f"batch {batch.reference} is for {batch.sku}, not {self.sku}"
            )
        if self.batch(batch.reference) is not None:
            raise BatchAlreadyExists(batch.reference)
        if batch.allocations:
            # The event carries the stock only; lines are allocated by the product.
            raise ValueError(f"batch {batch.reference} is new: it holds no lines yet")
        self._record(
            events.BatchCreated(
                ref=batch.reference,
                sku=batch.sku,
                purchased_quantity=batch.purchased_quantity,
                eta=batch.eta,
            )
        )

    def allocate(self, line: OrderLine) -> str | None:
        """Allocate ``line`` to the preferred batch; return its reference.

        Returns None and records OutOfStock when no batch can take the line: running
        out of stock is an expected outcome, not an error.
        """
        for existing in self.batches:
            if line in existing._allocations:
                return existing.reference
        candidates = [b for b in self.batches if b.can_allocate(line)]
        if not candidates:
            self._record(
                events.OutOfStock(sku=line.sku, orderid=line.orderid, qty=line.qty)
            )
            return None
        batch = min(candidates, key=Batch._sort_key)
        self._record(
            events.Allocated(
                orderid=line.orderid,
                sku=line.sku,
                qty=line.qty,
                batchref=batch.reference,
            )
        )
        return batch.reference

    def change_batch_quantity(self, ref: str, qty: int) -> None:
        """Set a batch's quantity; lines that no longer fit are deallocated."""
        batch = self.batch(ref)
        if batch is None:
            raise ValueError(f"batch {ref} is not part of {self.sku}")
        qty = values.check_quantity(qty, minimum=0)
        excess = batch.allocated_quantity - qty
        self._record(events.BatchQuantityChanged(ref=ref, sku=self.sku, qty=qty))
        # Counted here rather than read back from the batch, so a faulty apply step
        # shows as a wrong state instead of a loop that never ends.
        for line in batch._deallocation_order():
            if excess <= 0:
                break
            self._record(
                events.Deallocated(
                    orderid=line.orderid, sku=line.sku, qty=line.qty, batchref=ref
                )
            )
            excess -= line.qty

    # Apply steps: the only code that changes a product.

    @applies(events.BatchCreated)
    def _apply_batch_created(self, event: events.BatchCreated) -> None:
        self.batches.append(
            Batch(event.ref, event.sku, event.purchased_quantity, event.eta)
        )

    @applies(events.Allocated)
    def _apply_allocated(self, event: events.Allocated) -> None:
        batch = self._batch_of(event, event.batchref)
        batch._allocations.add(OrderLine(event.orderid, event.sku, event.qty))

    @applies(events.Deallocated)
    def _apply_deallocated(self, event: events.Deallocated) -> None:
        batch = self._batch_of(event, event.batchref)
        line = OrderLine(event.orderid, event.sku, event.qty)
        if not batch._remove_line(line):
            raise EventNotApplicable(
                self.AGGREGATE_TYPE,
                event.TYPE,
                f"batch {event.batchref} holds no line {line}",
            )

    @applies(events.BatchQuantityChanged)
    def _apply_batch_quantity_changed(self, event: events.BatchQuantityChanged) -> None:
        self._batch_of(event, event.ref)._purchased_quantity = event.qty

    @applies(events.ProductImported)
    def _apply_product_imported(self, event: events.ProductImported) -> None:
        for imported in event.batches:
            batch = Batch(
                imported.ref, self.sku, imported.purchased_quantity, imported.eta
            )
            batch._allocations.update(
                OrderLine(line.orderid, line.sku, line.qty)
                for line in imported.allocations
            )
            self.batches.append(batch)

    @applies(events.OutOfStock)
    def _apply_out_of_stock(self, event: events.OutOfStock) -> None:
        """Running out of stock changes nothing: the event is a message to the desk."""

    def _batch_of(self, event: events.Event, ref: str) -> Batch:
        batch = self.batch(ref)
        if batch is None:
            raise EventNotApplicable(
                self.AGGREGATE_TYPE,
                event.TYPE,
                f"batch {ref} is not part of {self.sku}",
            )
        return batch

    # Snapshots.

    def snapshot_state(self) -> dict[str, Any]:
        ordered = sorted(self.batches, key=lambda batch: batch.reference)
        return {"batches": {batch.reference: batch._state() for batch in ordered}}

    @classmethod
    def from_snapshot(
        cls, aggregate_id: str, version: int, state: Mapping[str, Any]
    ) -> Self:
        try:
            product = cls(aggregate_id, version_number=version)
            for ref, stored in state["batches"].items():
                eta = stored["eta"]
                batch = Batch(
                    ref,
                    stored["sku"],
                    stored["purchased_quantity"],
                    None if eta is None else datetime.date.fromisoformat(eta),
                )
                batch._allocations.update(
                    OrderLine(line["orderid"], line["sku"], line["qty"])
                    for line in stored["allocations"]
                )
                product.batches.append(batch)
        except (
            AllocationError,
            LookupError,
            TypeError,
            ValueError,
            AttributeError,
        ) as error:
            raise InvalidSnapshot(
                cls.AGGREGATE_TYPE, aggregate_id, repr(error)
            ) from error
        return product
