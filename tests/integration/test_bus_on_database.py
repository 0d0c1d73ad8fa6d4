"""The whole path on real databases: commands, events, read model, concurrency."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import text

from allocation import views
from allocation.domain.exceptions import EmailAlreadyRegistered
from allocation.service_layer import services
from tests.conftest import random_batchref, random_orderid, random_sku

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus
    from allocation.testing import FakeConsole, FakeNotifications


async def test_allocations_view_follows_allocate_and_reallocation(
    bus: MessageBus,
) -> None:
    sku, in_stock = random_sku(), random_batchref("a")
    shipment = random_batchref("b")
    orderid = random_orderid()
    await services.add_batch(bus, in_stock, sku, 10)
    await services.add_batch(bus, shipment, sku, 10, eta=datetime.date(2030, 1, 1))
    assert await services.allocate(bus, orderid, sku, 6) == in_stock
    assert await views.allocations(orderid, bus.uow_factory()) == [
        {"sku": sku, "batchref": in_stock}
    ]
    await services.change_batch_quantity(bus, in_stock, 2)
    rows = await views.allocations(orderid, bus.uow_factory())
    assert rows == [{"sku": sku, "batchref": shipment}]


async def test_register_user_commits_and_notifies(
    bus: MessageBus, notifications: FakeNotifications, console: FakeConsole
) -> None:
    user_id = await services.register_user(bus, "Иван", "Ivan@Example.com")
    found = await views.user_by_email("ivan@example.com", bus.uow_factory())
    assert found == {"id": user_id, "name": "Иван", "email": "ivan@example.com"}
    assert [m.subject for m in notifications.sent["ivan@example.com"]] == [
        "Добро пожаловать!",
        "Ваш купон",
    ]
    assert console.lines[0].startswith("[User Service] Регистрируем пользователя Иван")


async def test_a_duplicate_email_changes_nothing(
    bus: MessageBus, engine: AsyncEngine, notifications: FakeNotifications
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    with pytest.raises(EmailAlreadyRegistered):
        await services.register_user(bus, "Other Ann", "ANN@example.com ")
    async with engine.connect() as connection:
        count = (
            await connection.execute(text("SELECT count(*) FROM users_view"))
        ).scalar()
    assert count == 1
    assert len(notifications.sent["ann@example.com"]) == 2


async def test_concurrent_allocations_never_over_allocate(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    sku, ref = random_sku(), random_batchref()
    await services.add_batch(bus, ref, sku, 30)
    outcomes: dict[str, str | None] = {}

    async def allocate_one(index: int) -> None:
        orderid = f"order-{index}"
        outcomes[orderid] = await services.allocate(bus, orderid, sku, 1)

    async with anyio.create_task_group() as group:
        for index in range(50):
            group.start_soon(allocate_one, index)

    assert len(outcomes) == 50  # every command answered, none failed for a conflict
    allocated = [orderid for orderid, batchref in outcomes.items() if batchref == ref]
    assert len(allocated) == 30
    assert sum(1 for batchref in outcomes.values() if batchref is None) == 20
    async with bus.uow_factory() as uow:
        product = await uow.products.get(sku)
    assert product is not None
    stored = [line for batch in product.batches for line in batch.allocations]
    version = product.version_number
    assert (len(stored), sum(line.qty for line in stored)) == (30, 30)
    assert version == 1 + 50  # the batch, then one event per command
