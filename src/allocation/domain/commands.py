"""Commands: what a caller asks the application to do. Each has exactly one handler."""

from __future__ import annotations

import dataclasses
import datetime  # noqa: TC003 - dataclass fields are resolved at run time

from allocation.domain import messages


@dataclasses.dataclass(frozen=True, slots=True)
class Command(messages.Message):
    """Base of every command."""


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterUser(Command):
    """Register a new user; ``user_id`` is chosen by the caller."""

    TYPE = "register_user"
    user_id: str
    name: str
    email: str


@dataclasses.dataclass(frozen=True, slots=True)
class CreateBatch(Command):
    """Add a batch of stock, in the warehouse (no eta) or on its way."""

    TYPE = "create_batch"
    ref: str
    sku: str
    qty: int
    eta: datetime.date | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Allocate(Command):
    """Allocate an order line to the best batch of its sku."""

    TYPE = "allocate"
    orderid: str
    sku: str
    qty: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeBatchQuantity(Command):
    """Set a batch's purchased quantity, deallocating lines that no longer fit."""

    TYPE = "change_batch_quantity"
    ref: str
    qty: int
