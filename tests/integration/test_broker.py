"""Publishing to a real Redis (127.0.0.1:6379): the relay's stream entries."""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as redis

from allocation.adapters.broker import RedisStreamsPublisher
from allocation.adapters.exceptions import BrokerUnavailable
from allocation.service_layer import relay, services
from tests.conftest import service_missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.service_layer.messagebus import MessageBus

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def stream() -> AsyncIterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as error:
        await client.aclose()
        service_missing(f"Redis at {REDIS_URL} does not answer: {error}")
    name = f"test:events:{uuid.uuid4().hex[:8]}"
    try:
        yield client, name
    finally:
        await client.delete(name)
        await client.aclose()


async def test_the_relay_writes_one_entry_per_event_in_log_order(
    bus: MessageBus, stream: tuple[redis.Redis, str]
) -> None:
    client, name = stream
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    publisher = RedisStreamsPublisher(REDIS_URL, name)
    try:
        assert await relay.relay_once(bus, publisher) == 2
    finally:
        await publisher.aclose()
    entries = [fields for _, fields in await client.xrange(name)]
    assert [entry["name"] for entry in entries] == ["batch_created", "allocated"]
    assert [int(entry["aggregate_version"]) for entry in entries] == [1, 2]
    assert json.loads(entries[1]["payload"]) == {
        "orderid": "o1",
        "sku": "LAMP",
        "qty": 2,
        "batchref": "b1",
    }
    assert len({entry["message_id"] for entry in entries}) == 2


async def test_an_unreachable_broker_is_a_clear_error(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    publisher = RedisStreamsPublisher("redis://127.0.0.1:1/0", "nowhere")
    try:
        with pytest.raises(BrokerUnavailable, match=re.escape("127.0.0.1:1")):
            await relay.relay_once(bus, publisher)
    finally:
        await publisher.aclose()
