"""A command stream of a test's own, on the test Redis, and commands to put on it."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from allocation.adapters.broker import RedisCommandStream
from allocation.service_layer import consumer
from tests.conftest import random_batchref, random_sku
from tests.integration.conftest import REDIS_URL

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    import redis.asyncio as redis

    from allocation.service_layer.messagebus import MessageBus


class Commands:
    """A command stream of the test's own, written and inspected in bytes."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.dead = f"{name}:dead"

    def consumer(self, name: str = "consumer-a") -> RedisCommandStream:
        return RedisCommandStream(REDIS_URL, self.name, "allocation", name)

    async def add(self, fields: Mapping[str, str] | Mapping[bytes, bytes]) -> str:
        sent: Any = fields  # str or bytes: redis-py's field type is invariant
        entry_id: Any = await self.client.xadd(self.name, sent)
        return str(entry_id.decode())

    async def pending(self) -> int:
        summary: dict[str, Any] = await self.client.xpending(self.name, "allocation")
        return int(summary["pending"])

    async def dead_letters(self) -> list[tuple[str, dict[bytes, bytes]]]:
        entries: Any = await self.client.xrange(self.dead)
        return [(entry_id.decode(), fields) for entry_id, fields in entries]


def create_batch(
    ref: str | None = None, *, message_id: str | None = None, **payload: object
) -> dict[str, str]:
    return {
        "name": "create_batch",
        "message_id": message_id or str(uuid.uuid4()),
        "payload": json.dumps(
            {"ref": ref or random_batchref(), "sku": random_sku(), "qty": 5, **payload}
        ),
    }


async def in_inbox(bus: MessageBus, message_ids: Collection[str]) -> set[str]:
    async with bus.uow_factory() as uow:
        return await uow.event_log.processed_among(consumer.INBOX, message_ids)
