"""The allocation domain: products hold batches of stock, batches hold order lines."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from allocation.domain import events, values
from allocation.domain.aggregate import Aggregate

if TYPE_CHECKING:
    import datetime


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
    """Stock of one sku, in the warehouse (``eta`` None) or arriving on ``eta``."""

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

    def allocate(self, line: OrderLine) -> None:
        if self.can_allocate(line):
            self._allocations.add(line)

    def deallocate_one(self) -> OrderLine:
        # The newest order ids go first: the oldest orders keep their stock.
        line = max(self._allocations, key=lambda each: (each.orderid, each.qty))
        self._allocations.remove(line)
        return line


class Product(Aggregate):
    """The aggregate: every batch of one sku, changed only through this class.

    ``version_number`` goes up by one with every event it records, which is how the
    adapters detect a concurrent writer (optimistic concurrency).
    """

    AGGREGATE_TYPE = "product"

    def __init__(
        self, sku: str, batches: list[Batch] | None = None, version_number: int = 0
    ) -> None:
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

    def batch(self, ref: str) -> Batch | None:
        return next((b for b in self.batches if b.reference == ref), None)

    def add_batch(self, batch: Batch) -> None:
        if batch.sku != self.sku:
            raise ValueError(
                f"batch {batch.reference} is for {batch.sku}, not {self.sku}"
            )
        self.batches.append(batch)
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
        batch.allocate(line)
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
        batch._purchased_quantity = values.check_quantity(qty, minimum=0)
        self._record(events.BatchQuantityChanged(ref=ref, sku=self.sku, qty=qty))
        while batch.available_quantity < 0:
            line = batch.deallocate_one()
            self._record(
                events.Deallocated(
                    orderid=line.orderid, sku=line.sku, qty=line.qty, batchref=ref
                )
            )
