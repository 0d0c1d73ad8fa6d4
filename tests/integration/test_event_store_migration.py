"""Revision 0005: a database of state tables plus log becomes an event store, losing nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from allocation.adapters import migrations
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork
from allocation.views import allocations, user_by_email
from tests.integration import old_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork


async def _populate_revision_0004(engine: AsyncEngine) -> None:
    """A database as the previous version left it: rows in the state tables, one
    product logged from its start (TABLE), one from before the log (LAMP), and a
    user registered before the log (backfilled by 0002)."""
    await migrations.downgrade(engine, "base")
    await migrations.upgrade(engine, "0001")
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO users (id, name, email) VALUES ('u1', 'Ann', 'a@x.io')")
        )
    await migrations.upgrade(engine, "0004")
    async with engine.begin() as connection:
        for statement in (
            (
                "INSERT INTO products (sku, version_number) VALUES ('TABLE', 2),"
                " ('LAMP', 0)"
            ),
            (
                "INSERT INTO batches (id, reference, sku, purchased_quantity, eta)"
                " VALUES (1, 't1', 'TABLE', 20, NULL), (2, 'l1', 'LAMP', 10, NULL),"
                " (3, 'l2', 'LAMP', 5, '2031-01-02')"
            ),
            (
                "INSERT INTO allocations (batch_id, orderid, sku, qty)"
                " VALUES (1, 'o1', 'TABLE', 2), (2, 'o2', 'LAMP', 4)"
            ),
            (
                "INSERT INTO allocations_view (orderid, sku, qty, batchref, version,"
                " allocated) VALUES ('o1', 'TABLE', 2, 't1', 2, true),"
                " ('o2', 'LAMP', 4, 'l1', 0, true)"
            ),
        ):
            await connection.execute(text(statement))
        await connection.execute(
            old_rows.LOG.insert(),
            [
                old_rows.product_event(
                    1, "batch_created", ref="t1", sku="TABLE", qty=20, eta=None
                ),
                old_rows.product_event(
                    2, "allocated", orderid="o1", sku="TABLE", qty=2, batchref="t1"
                ),
            ],
        )


async def test_a_populated_database_migrates_to_the_event_store_and_verifies(
    engine: AsyncEngine, uow_factory: Callable[[], AbstractUnitOfWork]
) -> None:
    await _populate_revision_0004(engine)

    await migrations.upgrade(engine)

    assert await verify(uow_factory(), scratch=FakeUnitOfWork()) == []
    async with uow_factory() as uow:
        lamp = await uow.products.get("LAMP")
        table = await uow.products.get("TABLE")
        by_batch = await uow.products.get_by_batchref("l2")
    assert lamp is not None
    assert table is not None
    assert by_batch is not None
    assert by_batch.sku == "LAMP"
    assert {b.reference: b.available_quantity for b in lamp.batches} == {
        "l1": 6,
        "l2": 5,
    }
    assert {b.reference: b.available_quantity for b in table.batches} == {"t1": 18}
    assert table.version_number == 2
    assert await allocations("o2", uow_factory()) == [{"sku": "LAMP", "batchref": "l1"}]
    found = await user_by_email("A@X.io", uow_factory())
    assert found is not None
    assert found["id"] == "u1"


async def test_a_migrated_email_stays_taken(
    engine: AsyncEngine, uow_factory: Callable[[], AbstractUnitOfWork]
) -> None:
    await _populate_revision_0004(engine)
    await migrations.upgrade(engine)

    async with uow_factory() as uow:
        user = await uow.users.get_by_email("a@x.io")
    assert user is not None
    assert (user.id, user.name, user.email) == ("u1", "Ann", "a@x.io")


async def test_a_product_logged_only_in_part_goes_down_and_up_with_its_stock(
    engine: AsyncEngine, uow_factory: Callable[[], AbstractUnitOfWork]
) -> None:
    """A product whose first events predate the log keeps its state as a snapshot;
    going back to the state tables reads that snapshot, not a fold with a gap."""
    await _populate_revision_0004(engine)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE products SET version_number = 3 WHERE sku = 'LAMP'")
        )
        await connection.execute(
            old_rows.LOG.insert(),
            [
                old_rows.product_event(
                    3, "allocated", orderid="o2", sku="LAMP", qty=4, batchref="l1"
                )
            ],
        )
    await migrations.upgrade(engine)
    async with uow_factory() as uow:
        lamp = await uow.products.get("LAMP")
    assert lamp is not None
    assert {b.reference: b.available_quantity for b in lamp.batches} == {
        "l1": 6,
        "l2": 5,
    }

    await migrations.downgrade(engine, "0004", allow_data_loss=True)

    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT b.reference, b.purchased_quantity, p.version_number"
                " FROM batches b JOIN products p ON p.sku = b.sku"
                " WHERE b.sku = 'LAMP' ORDER BY b.reference"
            )
        )
        assert [tuple(row) for row in rows] == [("l1", 10, 3), ("l2", 5, 3)]
        lines = await connection.execute(
            text("SELECT orderid, qty FROM allocations WHERE sku = 'LAMP'")
        )
        assert [tuple(row) for row in lines] == [("o2", 4)]
    await migrations.upgrade(engine)
