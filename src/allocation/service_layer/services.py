"""Thin functions that build a command, hand it to the bus and return its answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from allocation.domain import commands, messages

if TYPE_CHECKING:
    import datetime

    from allocation.service_layer.messagebus import MessageBus


async def register_user(bus: MessageBus, name: str, email: str) -> str:
    """Register a user and return the new user's id.

    Raises:
        InvalidName, InvalidEmail: the input is unusable.
        EmailAlreadyRegistered: another user has this email (compared lower-cased).
    """
    user_id = messages.new_message_id()  # a UUID version 7, as every id here
    await bus.handle(commands.RegisterUser(user_id=user_id, name=name, email=email))
    return user_id


async def add_batch(
    bus: MessageBus, ref: str, sku: str, qty: int, eta: datetime.date | None = None
) -> None:
    """Add a batch of ``qty`` units of ``sku``; ``eta`` None means in the warehouse."""
    await bus.handle(commands.CreateBatch(ref=ref, sku=sku, qty=qty, eta=eta))


async def allocate(bus: MessageBus, orderid: str, sku: str, qty: int) -> str | None:
    """Allocate an order line; return the batch reference, or None when out of stock.

    Raises:
        InvalidSku: no batch holds ``sku``.
    """
    result = await bus.handle(commands.Allocate(orderid=orderid, sku=sku, qty=qty))
    return cast("str | None", result)


async def change_batch_quantity(bus: MessageBus, ref: str, qty: int) -> None:
    """Set a batch's quantity; lines that no longer fit are reallocated."""
    await bus.handle(commands.ChangeBatchQuantity(ref=ref, qty=qty))
