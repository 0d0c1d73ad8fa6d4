"""Handlers: what the application does for each command and event.

A handler takes the message, then names its dependencies (``uow``, ``notifications``,
``console``, ``stock_desk_email``); bootstrap injects them. An event handler's
function name is its subscriber name in the event log's tracking: keep it stable.
The read models are projections (``projections.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allocation.domain import commands, events, model, users
from allocation.domain.exceptions import BatchAlreadyExists
from allocation.service_layer.channels import Email
from allocation.service_layer.exceptions import InvalidSku, UnknownBatch

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from allocation.service_layer.channels import AbstractConsole, AbstractNotifications
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


async def register_user(
    command: commands.RegisterUser, uow: AbstractUnitOfWork, console: AbstractConsole
) -> str:
    user = users.User.register(command.user_id, command.name, command.email)
    async with uow:
        # The unique constraint on the email decides; a read first would only race.
        uow.users.add(user)
        await uow.commit()
    console.write(
        f"[User Service] Регистрируем пользователя {user.name} с email {user.email}"
    )
    return user.id


async def add_batch(command: commands.CreateBatch, uow: AbstractUnitOfWork) -> None:
    batch = model.Batch(command.ref, command.sku, command.qty, command.eta)
    async with uow:
        if await uow.products.get_by_batchref(batch.reference) is not None:
            raise BatchAlreadyExists(batch.reference)
        product = await uow.products.get(batch.sku)
        if product is None:
            product = model.Product(batch.sku)
            uow.products.add(product)
        product.add_batch(batch)
        await uow.commit()


async def allocate(command: commands.Allocate, uow: AbstractUnitOfWork) -> str | None:
    line = model.OrderLine(command.orderid, command.sku, command.qty)
    async with uow:
        product = await uow.products.get(line.sku)
        if product is None:
            raise InvalidSku(line.sku)
        batchref = product.allocate(line)
        await uow.commit()
    return batchref


async def change_batch_quantity(
    command: commands.ChangeBatchQuantity, uow: AbstractUnitOfWork
) -> None:
    async with uow:
        product = await uow.products.get_by_batchref(command.ref)
        if product is None:
            raise UnknownBatch(command.ref)
        product.change_batch_quantity(command.ref, command.qty)
        await uow.commit()


async def reallocate(event: events.Deallocated, uow: AbstractUnitOfWork) -> None:
    await allocate(
        commands.Allocate(orderid=event.orderid, sku=event.sku, qty=event.qty), uow
    )


async def send_welcome_email(
    event: events.UserRegistered, notifications: AbstractNotifications
) -> None:
    await notifications.send(
        event.email,
        Email(
            subject="Добро пожаловать!",
            body=f"Здравствуйте, {event.name}! Спасибо за регистрацию.",
            console_line=f"[Email Service] Отправка приветственного письма на {event.email}",
            idempotency_key=f"{event.message_id}.welcome",
        ),
    )


async def log_registration(
    event: events.UserRegistered, console: AbstractConsole
) -> None:
    console.write(f"[Log Service] Пользователь зарегистрирован: {event.email}")


async def send_coupon(
    event: events.UserRegistered, notifications: AbstractNotifications
) -> None:
    await notifications.send(
        event.email,
        Email(
            subject="Ваш купон",
            body=f"{event.name}, дарим вам купон на первую покупку.",
            console_line=f"[Coupon Service] Отправка купона пользователю {event.email}",
            idempotency_key=f"{event.message_id}.coupon",
        ),
    )


async def send_out_of_stock_notification(
    event: events.OutOfStock,
    notifications: AbstractNotifications,
    stock_desk_email: str,
) -> None:
    await notifications.send(
        stock_desk_email,
        Email(
            subject=f"Out of stock: {event.sku}",
            body=f"Order {event.orderid} wanted {event.qty} of {event.sku}; none is left.",
            console_line=f"[Email Service] Out of stock: {event.sku} "
            f"(order {event.orderid}), telling {stock_desk_email}",
            idempotency_key=f"{event.message_id}.out-of-stock",
        ),
    )


COMMAND_HANDLERS: dict[type[commands.Command], Callable[..., Awaitable[Any]]] = {
    commands.RegisterUser: register_user,
    commands.CreateBatch: add_batch,
    commands.Allocate: allocate,
    commands.ChangeBatchQuantity: change_batch_quantity,
}

EVENT_HANDLERS: dict[type[events.Event], list[Callable[..., Awaitable[Any]]]] = {
    events.UserRegistered: [send_welcome_email, log_registration, send_coupon],
    events.Deallocated: [reallocate],
    events.OutOfStock: [send_out_of_stock_notification],
}
