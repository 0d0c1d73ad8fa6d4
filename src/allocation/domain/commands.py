"""Commands: what a caller asks the application to do. Each has exactly one handler."""

from __future__ import annotations

import datetime

from allocation.domain import messages, values


class Command(messages.Message):
    """Base of every command."""


class RegisterUser(Command):
    """Register a new user; ``user_id`` is chosen by the caller."""

    TYPE = "register_user"
    EXAMPLE = {
        "user_id": "6f1c2a9e-3b7d-4c55-9a41-2f8e0b6d7c13",
        "name": "Иван",
        "email": "ivan@example.com",
    }
    user_id: values.UserId
    name: values.PersonName
    email: values.EmailAddress


class CreateBatch(Command):
    """Add a batch of stock, in the warehouse (no eta) or on its way."""

    TYPE = "create_batch"
    EXAMPLE = {"ref": "batch-001", "sku": "SMALL-TABLE", "qty": 20, "eta": "2030-01-31"}
    ref: values.BatchRef
    sku: values.Sku
    qty: values.Quantity
    eta: datetime.date | None = None


class Allocate(Command):
    """Allocate an order line to the best batch of its sku."""

    TYPE = "allocate"
    EXAMPLE = {"orderid": "order-1", "sku": "SMALL-TABLE", "qty": 2}
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity


class ChangeBatchQuantity(Command):
    """Set a batch's purchased quantity, deallocating lines that no longer fit."""

    TYPE = "change_batch_quantity"
    EXAMPLE = {"ref": "batch-001", "qty": 5}
    ref: values.BatchRef
    qty: values.Quantity
