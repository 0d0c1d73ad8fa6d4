"""Read-model queries: answers for readers, never through the domain model."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from allocation.adapters.read_model import AllocationRow
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


class UserRow(TypedDict):
    """A registered user as readers see it."""

    id: str
    name: str
    email: str


async def allocations(orderid: str, uow: AbstractUnitOfWork) -> list[AllocationRow]:
    """Return ``[{"sku": ..., "batchref": ...}]`` for every allocated line of an order."""
    async with uow:
        return await uow.allocations_view.for_order(orderid)


async def user_by_email(email: str, uow: AbstractUnitOfWork) -> UserRow | None:
    """Return the user registered with ``email`` (any letter case), or None."""
    async with uow:
        user = await uow.users.get_by_email(email)
        if user is None:
            return None
        return UserRow(id=user.id, name=user.name, email=user.email)
