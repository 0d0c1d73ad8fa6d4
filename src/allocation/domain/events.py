"""Domain events: facts recorded by aggregates, dispatched after their commit."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

import pydantic

from allocation.domain import messages, values


class Event(messages.Message):
    """Base of every domain event.

    Attributes:
        aggregate_version: the version of its aggregate this event brought about,
            stamped when it is logged. An aggregate's events are totally ordered by
            it, which lets a read model ignore an event older than one it applied.
    """

    # A baseline stands for every event of its aggregate before it, which the log
    # never held: it is the first event of its stream and may bear any version
    # (see Aggregate.replayed).
    BASELINE: ClassVar[bool] = False

    aggregate_version: int | None = pydantic.Field(default=None, repr=False)


class UserRegistered(Event):
    """A user was registered; ``name`` and ``email`` as in the article's payload."""

    TYPE = "user_registered"
    EXAMPLE = {
        "user_id": "6f1c2a9e-3b7d-4c55-9a41-2f8e0b6d7c13",
        "name": "Иван",
        "email": "ivan@example.com",
    }
    user_id: values.UserId
    name: values.PersonName
    email: values.EmailAddress


def _purchased_quantity_was_qty(payload: dict[str, Any]) -> dict[str, Any]:
    """BatchCreated version 1 called the batch's quantity ``qty``; version 2 uses
    the batch's own name for it. A payload that already has both is left as it is,
    to be refused, rather than have one of them silently dropped."""
    if "purchased_quantity" in payload:
        return payload
    return {
        ("purchased_quantity" if name == "qty" else name): value
        for name, value in payload.items()
    }


class BatchCreated(Event):
    """A batch of stock was added to a product.

    Schema version 2 renamed ``qty`` to ``purchased_quantity``; version 1 payloads
    are upcast when read.
    """

    TYPE = "batch_created"
    SCHEMA_VERSION = 2
    UPCASTERS = {1: _purchased_quantity_was_qty}
    EXAMPLE = {
        "ref": "batch-001",
        "sku": "SMALL-TABLE",
        "purchased_quantity": 20,
        "eta": None,
    }
    ref: values.BatchRef
    sku: values.Sku
    purchased_quantity: values.Quantity
    eta: datetime.date | None = None


class Allocated(Event):
    """An order line was allocated to a batch."""

    TYPE = "allocated"
    EXAMPLE = {
        "orderid": "order-1",
        "sku": "SMALL-TABLE",
        "qty": 2,
        "batchref": "batch-001",
    }
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity
    batchref: values.BatchRef


class Deallocated(Event):
    """An order line was taken off a batch and needs allocating again."""

    TYPE = "deallocated"
    EXAMPLE = {
        "orderid": "order-1",
        "sku": "SMALL-TABLE",
        "qty": 2,
        "batchref": "batch-001",
    }
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity
    batchref: values.BatchRef


class BatchQuantityChanged(Event):
    """A batch's purchased quantity was set to ``qty``."""

    TYPE = "batch_quantity_changed"
    EXAMPLE = {"ref": "batch-001", "sku": "SMALL-TABLE", "qty": 5}
    ref: values.BatchRef
    sku: values.Sku
    qty: values.Quantity


class OutOfStock(Event):
    """No batch of ``sku`` could take an order line; the stock desk is told."""

    TYPE = "out_of_stock"
    EXAMPLE = {"sku": "SMALL-TABLE", "orderid": "order-2", "qty": 30}
    sku: values.Sku
    orderid: values.OrderId
    qty: values.OrderQuantity


class ImportedLine(pydantic.BaseModel):
    """An order line a batch held when its product was imported."""

    model_config = pydantic.ConfigDict(strict=True, frozen=True, extra="forbid")

    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity


class ImportedBatch(pydantic.BaseModel):
    """A batch of a product as it was imported, with the lines it held."""

    model_config = pydantic.ConfigDict(strict=True, frozen=True, extra="forbid")

    ref: values.BatchRef
    purchased_quantity: values.Quantity
    eta: datetime.date | None = None
    allocations: tuple[ImportedLine, ...] = ()


class ProductImported(Event):
    """A product's state when the log began: the baseline of its stream.

    The product's first events predate the log. The baseline stands for them, which the log never held, so it bears the version
    of the last of them (the one before the stream's first logged event) and is
    folded first whatever its position. Only a migration writes it (revision 0007,
    from the product's stored state and its logged events); no command records it.
    """

    TYPE = "product_imported"
    BASELINE = True
    EXAMPLE = {
        "sku": "SMALL-TABLE",
        "batches": [
            {
                "ref": "batch-001",
                "purchased_quantity": 20,
                "eta": None,
                "allocations": [{"orderid": "order-1", "sku": "SMALL-TABLE", "qty": 2}],
            }
        ],
    }
    sku: values.Sku
    batches: tuple[ImportedBatch, ...]
