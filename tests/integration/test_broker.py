"""Publishing to a real Redis (127.0.0.1:6379): the relay's stream entries."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import TYPE_CHECKING

import pytest

from allocation import views
from allocation.adapters.broker import (
    DEFAULT_STREAM,
    RedisCommandStream,
    RedisStreamsPublisher,
)
from allocation.service_layer import consumer, relay, services
from allocation.service_layer.exceptions import BrokerUnavailable
from tests.integration.conftest import REDIS_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as redis

    from allocation.service_layer.messagebus import MessageBus


@pytest.fixture
async def stream(
    redis_client: redis.Redis,
) -> AsyncIterator[tuple[redis.Redis, str]]:
    name = f"test:events:{uuid.uuid4().hex[:8]}"
    try:
        yield redis_client, name
    finally:
        await redis_client.delete(name)


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
    # The payload's schema version travels with it, so consumers can upcast.
    assert [entry["schema_version"] for entry in entries] == ["2", "1"]
    assert json.loads(entries[1]["payload"]) == {
        "orderid": "o1",
        "sku": "LAMP",
        "qty": 2,
        "batchref": "b1",
    }
    assert len({entry["message_id"] for entry in entries}) == 2


async def test_entries_carry_the_same_payload_text_on_every_database(
    bus: MessageBus, stream: tuple[redis.Redis, str]
) -> None:
    # The relay publishes the payload text the log stored, the message library's
    # own compact encoding, on every database.
    client, name = stream
    user_id = await services.register_user(bus, "Иван", "ivan@example.com")
    publisher = RedisStreamsPublisher(REDIS_URL, name)
    try:
        assert await relay.relay_once(bus, publisher) == 1
    finally:
        await publisher.aclose()
    [(_, entry)] = await client.xrange(name)
    assert entry["payload"] == json.dumps(
        {"user_id": user_id, "name": "Иван", "email": "ivan@example.com"},
        ensure_ascii=False,
        separators=(",", ":"),
    )


async def test_an_unreachable_broker_is_a_clear_error(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    publisher = RedisStreamsPublisher("redis://127.0.0.1:1/0", "nowhere")
    try:
        with pytest.raises(BrokerUnavailable, match=re.escape("127.0.0.1:1")):
            await relay.relay_once(bus, publisher)
    finally:
        await publisher.aclose()


@pytest.fixture
async def commands_in(
    stream: tuple[redis.Redis, str],
) -> AsyncIterator[tuple[redis.Redis, str, RedisCommandStream]]:
    client, name = stream
    consumer = RedisCommandStream(REDIS_URL, name, "allocation", "consumer-a")
    try:
        yield client, name, consumer
    finally:
        await consumer.aclose()
        await client.delete(f"{name}:dead")


def _command(
    name: str, payload: object, message_id: str | None = None
) -> dict[str, str]:
    return {
        "name": name,
        "message_id": message_id or str(uuid.uuid4()),
        "payload": json.dumps(payload),
    }


async def _change_quantity_setup(bus: MessageBus) -> None:
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.add_batch(bus, "b2", "LAMP", 10, eta=datetime.date(2030, 1, 1))
    await services.allocate(bus, "o1", "LAMP", 6)


async def test_an_external_command_is_handled_once_and_acknowledged(
    bus: MessageBus, commands_in: tuple[redis.Redis, str, RedisCommandStream]
) -> None:
    client, name, consumer_stream = commands_in
    await _change_quantity_setup(bus)
    fields = _command("change_batch_quantity", {"ref": "b1", "qty": 2})
    await client.xadd(name, fields)
    await client.xadd(name, fields)  # the same message again: at-least-once

    outcomes = await consumer.consume_once(bus, consumer_stream, block_ms=100)

    assert outcomes == ["handled", "duplicate"]
    assert await views.allocations("o1", bus.uow_factory()) == [
        {"sku": "LAMP", "batchref": "b2"}
    ]
    pending = await client.xpending(name, "allocation")
    assert pending["pending"] == 0


async def test_bad_entries_go_to_the_dead_letter_stream_with_a_reason(
    bus: MessageBus, commands_in: tuple[redis.Redis, str, RedisCommandStream]
) -> None:
    client, name, consumer_stream = commands_in
    await _change_quantity_setup(bus)
    await client.xadd(name, {"payload": "{}"})
    await client.xadd(name, _command("delete_everything", {}))
    await client.xadd(
        name, _command("register_user", {"user_id": "u", "name": "A", "email": "a@b.c"})
    )
    await client.xadd(
        name, {**_command("change_batch_quantity", {}), "payload": "{not json"}
    )
    await client.xadd(
        name, _command("change_batch_quantity", {"ref": "nope", "qty": 1})
    )
    await client.xadd(name, _command("change_batch_quantity", {"ref": "b1", "qty": 2}))

    outcomes = await consumer.consume_once(bus, consumer_stream, block_ms=100)

    assert outcomes == ["dead-lettered"] * 5 + ["handled"]
    reasons = [fields["reason"] for _, fields in await client.xrange(f"{name}:dead")]
    assert reasons[0] == "malformed: no 'name' field"
    assert reasons[1] == "malformed: unknown message name 'delete_everything'"
    assert reasons[2] == "malformed: 'register_user' is not accepted from the broker"
    assert reasons[3] == (
        "malformed: invalid 'change_batch_quantity' message: payload: not valid JSON"
    )
    assert reasons[4] == "refused: unknown batch 'nope'"


async def test_entries_of_a_dead_consumer_are_reclaimed(
    bus: MessageBus, commands_in: tuple[redis.Redis, str, RedisCommandStream]
) -> None:
    client, name, dead_consumer = commands_in
    await _change_quantity_setup(bus)
    await client.xadd(name, _command("change_batch_quantity", {"ref": "b1", "qty": 2}))
    assert len(await dead_consumer.read(count=10, block_ms=100)) == 1  # read, then died
    survivor = RedisCommandStream(REDIS_URL, name, "allocation", "consumer-b")
    try:
        outcomes = await consumer.consume_once(
            bus, survivor, block_ms=100, claim_idle_ms=0
        )
    finally:
        await survivor.aclose()
    assert outcomes == ["handled"]
    assert (await client.xpending(name, "allocation"))["pending"] == 0


async def test_a_new_stream_receives_the_whole_log(
    bus: MessageBus, stream: tuple[redis.Redis, str]
) -> None:
    """Issue 8, item 13: one checkpoint served every stream, so a new one got nothing."""
    client, name = stream
    await services.add_batch(bus, "b1", "LAMP", 10)
    await services.allocate(bus, "o1", "LAMP", 2)
    old, new = (
        RedisStreamsPublisher(REDIS_URL, name),
        RedisStreamsPublisher(REDIS_URL, f"{name}:new"),
    )
    try:
        assert await relay.relay_once(bus, old) == 2
        assert await relay.relay_once(bus, new) == 2
        await services.add_batch(bus, "b2", "LAMP", 10)
        assert await relay.relay_once(bus, new) == 1
        assert await relay.relay_once(bus, old) == 1
    finally:
        await old.aclose()
        await new.aclose()
        await client.delete(f"{name}:new")
    assert await client.xlen(name) == 3


async def test_the_default_stream_goes_on_from_the_checkpoint_it_had(
    bus: MessageBus, redis_client: redis.Redis
) -> None:
    """A database relayed before checkpoints were per stream is not sent again."""
    await services.add_batch(bus, "b1", "LAMP", 10)
    async with bus.uow_factory() as uow:
        await uow.event_log.set_checkpoint(
            relay.RELAY, await uow.event_log.last_position()
        )
        await uow.commit()
    await services.add_batch(bus, "b2", "LAMP", 10)
    publisher = RedisStreamsPublisher(REDIS_URL, DEFAULT_STREAM)
    try:
        assert await relay.relay_once(bus, publisher) == 1
    finally:
        await publisher.aclose()
        await redis_client.delete(DEFAULT_STREAM)
