"""Events logged in an older shape are read back in the current one, on every database."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import text

from allocation.domain import events
from allocation.service_layer import services
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus

_INSERT_V1_ROW = text(
    "INSERT INTO event_log (message_id, aggregate_type, aggregate_id,"
    " aggregate_version, name, payload, schema_version, occurred_at)"
    " VALUES (:message_id, 'product', :sku, :version, 'batch_created', :payload, 1,"
    " CURRENT_TIMESTAMP)"
)


async def test_a_batch_created_logged_before_the_rename_is_read_with_purchased_quantity(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    """BatchCreated schema version 1 called the quantity ``qty``; version 2 renamed it."""
    async with engine.begin() as connection:
        for version, (ref, qty) in enumerate([("b1", 20), ("b2", 0)], start=1):
            payload = {"ref": ref, "sku": "LAMP", "qty": qty, "eta": None}
            await connection.execute(
                _INSERT_V1_ROW,
                {
                    "message_id": str(uuid.uuid4()),
                    "sku": "LAMP",
                    "version": version,
                    "payload": json.dumps(payload),
                },
            )

    async with bus.uow_factory() as uow:
        logged = await uow.event_log.read(after=0)
        read_alone = await uow.event_log.read_events(after=0)

    assert [entry.event for entry in logged] == [
        events.BatchCreated(ref="b1", sku="LAMP", purchased_quantity=20, eta=None),
        events.BatchCreated(ref="b2", sku="LAMP", purchased_quantity=0, eta=None),
    ]
    assert [event for _, event in read_alone] == [entry.event for entry in logged]
    assert [entry.event.payload["purchased_quantity"] for entry in logged] == [20, 0]
    # The row itself is left as it was written: the log is never rewritten.
    assert [entry.schema_version for entry in logged] == [1, 1]


async def test_verify_folds_batches_logged_before_the_rename(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await services.add_batch(bus, "b1", "LAMP", 20)
    await services.allocate(bus, "o1", "LAMP", 5)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE event_log SET schema_version = 1, payload = :payload"
                " WHERE name = 'batch_created'"
            ),
            {"payload": '{"ref": "b1", "sku": "LAMP", "qty": 20, "eta": null}'},
        )

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == []
