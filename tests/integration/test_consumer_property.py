"""Whatever other services put on the command stream, the consumer goes on."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocation.service_layer import consumer
from tests.integration.command_stream import Commands, create_batch, in_inbox

if TYPE_CHECKING:
    import redis.asyncio as redis

    from allocation.service_layer.messagebus import MessageBus

# Stands for a valid create_batch, made afresh in each example.
VALID = "valid"

_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)  # any text Redis can hold
_RANDOM_BYTES = st.dictionaries(
    st.binary(max_size=12), st.binary(max_size=60), min_size=1, max_size=4
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ref", "sku", "qty", "eta", "x"]), inner)
    ),
    max_leaves=6,
)
_NAMES = st.sampled_from(
    ["create_batch", "allocate", "change_batch_quantity", "register_user", "allocated"]
)
_FIELD_SET = st.fixed_dictionaries(
    {},
    optional={
        "name": _NAMES | _TEXT,
        "message_id": st.uuids().map(str) | _TEXT,
        "payload": _JSON.map(json.dumps) | _TEXT,
        "extra": _TEXT,
    },
).filter(bool)
_ENTRIES = st.lists(_RANDOM_BYTES | _FIELD_SET | st.just(VALID), min_size=1, max_size=8)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=_ENTRIES)
async def test_no_entry_stops_the_consumer_or_leaves_a_valid_one_pending(
    bus: MessageBus,
    raw_redis_client: redis.Redis,
    entries: list[dict[bytes, bytes] | dict[str, str] | str],
) -> None:
    """Issue 8: random bytes and random field sets on the command stream."""
    commands = Commands(raw_redis_client, f"test:commands:{uuid.uuid4().hex[:8]}")
    stream = commands.consumer()
    valid: list[str] = []
    try:
        for entry in entries:
            if entry == VALID:
                entry = create_batch()
                valid.append(entry["message_id"])
            assert not isinstance(entry, str)
            await commands.add(entry)
        outcomes: list[str] = []
        for _ in range(len(entries) + 1):
            handled = await consumer.consume_once(bus, stream, block_ms=1)
            if not handled:
                break
            outcomes += handled
        assert len(outcomes) == len(entries)
        assert await commands.pending() == 0
        assert await in_inbox(bus, valid) == set(valid)
        dead = await commands.dead_letters()
        assert len(dead) == outcomes.count("dead-lettered")
        assert all(
            len(fields[b"reason"].decode()) <= consumer.MAX_REASON for _, fields in dead
        )
    finally:
        await stream.aclose()
        await raw_redis_client.delete(commands.name, commands.dead)
