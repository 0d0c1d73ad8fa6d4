"""Domain events: facts recorded by aggregates, dispatched after their commit."""

from __future__ import annotations

import dataclasses
import datetime  # noqa: TC003 - dataclass fields are resolved at run time

from allocation.domain import messages


@dataclasses.dataclass(frozen=True, slots=True)
class Event(messages.Message):
    """Base of every domain event.

    Attributes:
        aggregate_version: the version of its aggregate this event brought about,
            stamped when it is logged. An aggregate's events are totally ordered by
            it, which lets a read model ignore an event older than one it applied.
    """

    aggregate_version: int | None = dataclasses.field(
        default=None, kw_only=True, compare=False, repr=False
    )


@dataclasses.dataclass(frozen=True, slots=True)
class UserRegistered(Event):
    """A user was registered; ``name`` and ``email`` as in the article's payload."""

    TYPE = "user_registered"
    user_id: str
    name: str
    email: str


@dataclasses.dataclass(frozen=True, slots=True)
class BatchCreated(Event):
    """A batch of stock was added to a product."""

    TYPE = "batch_created"
    ref: str
    sku: str
    qty: int
    eta: datetime.date | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Allocated(Event):
    """An order line was allocated to a batch."""

    TYPE = "allocated"
    orderid: str
    sku: str
    qty: int
    batchref: str


@dataclasses.dataclass(frozen=True, slots=True)
class Deallocated(Event):
    """An order line was taken off a batch and needs allocating again."""

    TYPE = "deallocated"
    orderid: str
    sku: str
    qty: int
    batchref: str


@dataclasses.dataclass(frozen=True, slots=True)
class BatchQuantityChanged(Event):
    """A batch's purchased quantity was set to ``qty``."""

    TYPE = "batch_quantity_changed"
    ref: str
    sku: str
    qty: int


@dataclasses.dataclass(frozen=True, slots=True)
class OutOfStock(Event):
    """No batch of ``sku`` could take an order line; the stock desk is told."""

    TYPE = "out_of_stock"
    sku: str
    orderid: str
    qty: int
