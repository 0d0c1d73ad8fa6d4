"""Domain events: facts recorded by aggregates, dispatched after their commit."""

from __future__ import annotations

import datetime

import pydantic

from allocation.domain import messages, values


class Event(messages.Message):
    """Base of every domain event.

    Attributes:
        aggregate_version: the version of its aggregate this event brought about,
            stamped when it is logged. An aggregate's events are totally ordered by
            it, which lets a read model ignore an event older than one it applied.
    """

    aggregate_version: int | None = pydantic.Field(default=None, repr=False)


class UserRegistered(Event):
    """A user was registered; ``name`` and ``email`` as in the article's payload."""

    TYPE = "user_registered"
    user_id: values.UserId
    name: values.PersonName
    email: values.EmailAddress


class BatchCreated(Event):
    """A batch of stock was added to a product."""

    TYPE = "batch_created"
    ref: values.BatchRef
    sku: values.Sku
    qty: values.Quantity
    eta: datetime.date | None = None


class Allocated(Event):
    """An order line was allocated to a batch."""

    TYPE = "allocated"
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity
    batchref: values.BatchRef


class Deallocated(Event):
    """An order line was taken off a batch and needs allocating again."""

    TYPE = "deallocated"
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity
    batchref: values.BatchRef


class BatchQuantityChanged(Event):
    """A batch's purchased quantity was set to ``qty``."""

    TYPE = "batch_quantity_changed"
    ref: values.BatchRef
    sku: values.Sku
    qty: values.Quantity


class OutOfStock(Event):
    """No batch of ``sku`` could take an order line; the stock desk is told."""

    TYPE = "out_of_stock"
    sku: values.Sku
    orderid: values.OrderId
    qty: values.OrderQuantity
