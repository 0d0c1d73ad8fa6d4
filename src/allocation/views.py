"""Read-model queries: answers for readers, never through the domain model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.domain import values

if TYPE_CHECKING:
    from allocation.service_layer.ports import AllocationRow, UserRow
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


async def allocations(orderid: str, uow: AbstractUnitOfWork) -> list[AllocationRow]:
    """Return ``[{"sku": ..., "batchref": ...}]``, one per allocated line of an order.

    An order may hold lines of one sku in several batches (or two in one batch):
    each is an entry, sorted by sku, then batch, then the line's quantity.

    Raises:
        BlankIdentifier: ``orderid`` is no order id (a written one could not hold
            it), so both databases answer alike instead of one refusing it.
    """
    orderid = values.check_identifier("order id", orderid)
    async with uow:
        return await uow.allocations_view.for_order(orderid)


async def user_by_email(email: str, uow: AbstractUnitOfWork) -> UserRow | None:
    """Return ``{"id", "name", "email"}`` of the user with ``email`` (any case), or None."""
    async with uow:
        return await uow.users_view.by_email(values.normalise_email(email))


async def user_by_id(user_id: str, uow: AbstractUnitOfWork) -> UserRow | None:
    """Return ``{"id", "name", "email"}`` of the user with this id, or None.

    Raises:
        BlankIdentifier: ``user_id`` is no user id.
    """
    user_id = values.check_identifier("user id", user_id, values.MAX_USER_ID)
    async with uow:
        return await uow.users_view.by_id(user_id)


async def users_list(uow: AbstractUnitOfWork) -> list[UserRow]:
    """Every registered user, sorted by email."""
    async with uow:
        return await uow.users_view.all_rows()
