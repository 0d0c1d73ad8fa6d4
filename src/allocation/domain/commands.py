"""Commands: what a caller asks the application to do. Each has exactly one handler."""

from __future__ import annotations

import datetime

from allocation.domain import messages, values


class Command(messages.Message):
    """Base of every command."""


class RegisterUser(Command):
    """Register a new user; ``user_id`` is chosen by the caller."""

    TYPE = "register_user"
    user_id: values.UserId
    name: values.PersonName
    email: values.EmailAddress


class CreateBatch(Command):
    """Add a batch of stock, in the warehouse (no eta) or on its way."""

    TYPE = "create_batch"
    ref: values.BatchRef
    sku: values.Sku
    qty: values.Quantity
    eta: datetime.date | None = None


class Allocate(Command):
    """Allocate an order line to the best batch of its sku."""

    TYPE = "allocate"
    orderid: values.OrderId
    sku: values.Sku
    qty: values.OrderQuantity


class ChangeBatchQuantity(Command):
    """Set a batch's purchased quantity, deallocating lines that no longer fit."""

    TYPE = "change_batch_quantity"
    ref: values.BatchRef
    qty: values.Quantity
