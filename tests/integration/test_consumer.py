"""The command consumer against a real Redis: poison, bytes, duplicates, outages."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer import consumer
from allocation.service_layer.exceptions import BrokerUnavailable, DatabaseUnavailable
from tests.integration.command_stream import Commands, create_batch, in_inbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as redis

    from allocation.adapters.broker import Entry, RedisCommandStream
    from allocation.domain.commands import Command
    from allocation.service_layer.messagebus import MessageBus

CONSUMER_LOG = "allocation.service_layer.consumer"


@pytest.fixture
async def commands(raw_redis_client: redis.Redis) -> AsyncIterator[Commands]:
    name = f"test:commands:{uuid.uuid4().hex[:8]}"
    try:
        yield Commands(raw_redis_client, name)
    finally:
        await raw_redis_client.delete(name, f"{name}:dead")


@pytest.fixture
async def stream(commands: Commands) -> AsyncIterator[RedisCommandStream]:
    consumer_stream = commands.consumer()
    try:
        yield consumer_stream
    finally:
        await consumer_stream.aclose()


class LineHeard(logging.Handler):
    """Sets ``event`` once a record with this message is logged."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.event.set()


def dead_letter_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == CONSUMER_LOG and "dead-lettered" in record.getMessage()
    ]


async def test_poison_is_dead_lettered_at_once_logged_and_the_entries_after_it_handled(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8, item 2: no retry of a bad entry, one WARNING line each, a short reason."""
    wrong_eta = create_batch(eta=12345)
    huge = {**create_batch(), "payload": json.dumps({"x" * 20_000_000: 1})}
    refused = {
        "name": "change_batch_quantity",
        "message_id": str(uuid.uuid4()),
        "payload": json.dumps({"ref": "nope", "qty": 1}),
    }
    good = create_batch()
    ids = [await commands.add(fields) for fields in (wrong_eta, huge, refused, good)]

    with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
        outcomes = await consumer.consume_once(bus, stream, block_ms=100)

    assert outcomes == ["dead-lettered"] * 3 + ["handled"]
    assert await in_inbox(bus, [good["message_id"]]) == {good["message_id"]}
    assert await commands.pending() == 0
    letters = await commands.dead_letters()
    assert [fields[b"original_id"].decode() for _, fields in letters] == ids[:3]
    for (_, fields), sent in zip(letters, (wrong_eta, huge, refused), strict=True):
        kept = {key: value for key, value in fields.items() if key != b"reason"}
        assert kept == {
            **{key.encode(): value.encode() for key, value in sent.items()},
            b"original_id": kept[b"original_id"],
        }
        assert len(fields[b"reason"]) <= consumer.MAX_REASON * 3  # UTF-8 bytes
    reasons = [fields[b"reason"].decode() for _, fields in letters]
    assert reasons[0].startswith("malformed: invalid 'create_batch' message: eta:")
    assert reasons[2] == "refused: unknown batch 'nope'"
    assert all(len(reason) <= consumer.MAX_REASON for reason in reasons)
    lines = dead_letter_lines(caplog)
    assert lines == [
        f"entry {entry_id} dead-lettered: {reason}"
        for entry_id, reason in zip(ids[:3], reasons, strict=True)
    ]
    assert all(
        record.levelno == logging.WARNING
        for record in caplog.records
        if record.name == CONSUMER_LOG
    )


async def test_an_entry_that_is_not_utf8_is_dead_lettered_byte_for_byte(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8, item 2: such bytes broke the read of every entry read with them."""
    first, last = create_batch(), create_batch()
    garbage = {b"name": b"create_batch", b"message_id": b"\xff\xfe", b"\x80": b"x"}
    await commands.add(first)
    garbage_id = await commands.add(garbage)
    await commands.add(last)

    with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
        outcomes = await consumer.consume_once(bus, stream, block_ms=100)

    assert outcomes == ["handled", "dead-lettered", "handled"]
    assert await commands.pending() == 0
    [(_, fields)] = await commands.dead_letters()
    reason = fields.pop(b"reason").decode()
    assert fields == {**garbage, b"original_id": garbage_id.encode()}
    assert reason == r"malformed: not UTF-8: field 'message_id', '\\x80'"
    assert dead_letter_lines(caplog) == [f"entry {garbage_id} dead-lettered: {reason}"]


async def test_a_failure_nobody_foresaw_is_dead_lettered_with_its_traceback(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = bus.handle

    async def broken(message: Command, **options: Any) -> Any:
        if message.message_id == bad["message_id"]:
            raise RuntimeError("bug\n" + "y" * 10_000)
        return await handle(message, **options)

    monkeypatch.setattr(bus, "handle", broken)
    bad, good = create_batch(), create_batch()
    bad_id = await commands.add(bad)
    await commands.add(good)

    with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
        outcomes = await consumer.consume_once(bus, stream, block_ms=100)

    assert outcomes == ["dead-lettered", "handled"]
    [(_, fields)] = await commands.dead_letters()
    reason = fields[b"reason"].decode()
    assert reason.startswith("failed: RuntimeError: bug\\nyyy")
    assert len(reason) == consumer.MAX_REASON
    [record] = [r for r in caplog.records if r.name == CONSUMER_LOG]
    assert record.getMessage() == f"entry {bad_id} dead-lettered: {reason}"
    assert record.exc_info is not None


async def test_an_entry_that_fails_to_parse_unforeseen_holds_up_nothing(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = consumer.parse

    def fragile(entry: Entry) -> Command:
        if entry.fields.get("message_id") == bad["message_id"]:
            raise RecursionError("too deep")
        return parse(entry)

    monkeypatch.setattr(consumer, "parse", fragile)
    bad, good = create_batch(), create_batch()
    bad_id = await commands.add(bad)
    await commands.add(good)

    with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
        outcomes = await consumer.consume_once(bus, stream, block_ms=100)

    assert outcomes == ["dead-lettered", "handled"]
    [record] = [r for r in caplog.records if r.name == CONSUMER_LOG]
    assert record.getMessage() == (
        f"entry {bad_id} dead-lettered: malformed: RecursionError: too deep"
    )
    assert record.exc_info is not None


async def test_a_transient_failure_leaves_its_entry_and_the_later_ones_for_the_next_pass(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 8, item 2: the entries read with it waited for a reclaim, 30 s later."""
    first, flaky, last = create_batch(), create_batch(), create_batch()
    handle = bus.handle
    failures = [DatabaseUnavailable("db://test", "down on purpose")]

    async def down_once(message: Command, **options: Any) -> Any:
        if message.message_id == flaky["message_id"] and failures:
            raise failures.pop()
        return await handle(message, **options)

    monkeypatch.setattr(bus, "handle", down_once)
    for fields in (first, flaky, last):
        await commands.add(fields)

    with pytest.raises(DatabaseUnavailable):
        await consumer.consume_once(bus, stream, block_ms=100)
    assert await in_inbox(bus, [first["message_id"], last["message_id"]]) == {
        first["message_id"]
    }
    assert await commands.pending() == 2

    outcomes = await consumer.consume_once(bus, stream, block_ms=100)

    assert outcomes == ["handled", "handled"]
    assert await commands.pending() == 0
    assert await commands.dead_letters() == []


async def test_a_race_lost_too_often_is_retried_after_a_back_off(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contested, after = create_batch(), create_batch()
    handle = bus.handle
    conflicts = [ConcurrencyConflict("product"), ConcurrencyConflict("product")]

    async def contended(message: Command, **options: Any) -> Any:
        if message.message_id == contested["message_id"] and conflicts:
            raise conflicts.pop()
        return await handle(message, **options)

    monkeypatch.setattr(bus, "handle", contended)
    await commands.add(contested)
    await commands.add(after)
    resumed = LineHeard("consumer resumed")

    with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
        logging.getLogger(CONSUMER_LOG).addHandler(resumed)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: consumer.keep_consuming(
                        bus, stream, block_ms=10, max_backoff=0.01
                    )
                )
                with anyio.fail_after(10):
                    await resumed.event.wait()
                group.cancel_scope.cancel()
        finally:
            logging.getLogger(CONSUMER_LOG).removeHandler(resumed)

    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "consumer paused, will retry",
        "consumer resumed",
    ]
    assert await commands.pending() == 0
    assert await commands.dead_letters() == []


async def test_a_reclaimed_entry_already_handled_is_acknowledged_not_dead_lettered(
    bus: MessageBus,
    commands: Commands,
    stream: RedisCommandStream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8, item 12: a worker died between the commit and the acknowledgement."""
    fields = create_batch()
    await commands.add(fields)
    [entry] = await stream.read(count=10, block_ms=100)
    await bus.handle(consumer.parse(entry), inbox=consumer.INBOX)  # then it died
    survivor = commands.consumer("consumer-b")
    try:
        with caplog.at_level(logging.WARNING, logger=CONSUMER_LOG):
            outcomes = await consumer.consume_once(
                bus, survivor, block_ms=100, claim_idle_ms=1
            )
    finally:
        await survivor.aclose()
    assert outcomes == ["duplicate"]
    assert await commands.pending() == 0
    assert await commands.dead_letters() == []
    assert dead_letter_lines(caplog) == []


async def test_a_command_read_twice_in_one_pass_is_handled_once(
    bus: MessageBus, commands: Commands, stream: RedisCommandStream
) -> None:
    fields = create_batch()
    await commands.add(fields)
    await commands.add(fields)
    outcomes = await consumer.consume_once(bus, stream, block_ms=100)
    assert outcomes == ["handled", "duplicate"]
    assert await commands.dead_letters() == []


async def test_consumers_reclaiming_from_each_other_dead_letter_nothing(
    bus: MessageBus, commands: Commands
) -> None:
    """Issue 8, item 12: with a short claim time, 59 of 60 were also dead-lettered."""
    sent = [create_batch() for _ in range(30)]
    for fields in sent:
        await commands.add(fields)
    consumers = [commands.consumer("consumer-a"), commands.consumer("consumer-b")]

    async def consume(stream: RedisCommandStream) -> None:
        for _ in range(5):
            await consumer.consume_once(
                bus, stream, count=5, block_ms=10, claim_idle_ms=1
            )

    try:
        async with anyio.create_task_group() as group:
            for stream in consumers:
                group.start_soon(consume, stream)
        while await consumer.consume_once(  # whatever is left, by one of them
            bus, consumers[0], block_ms=10, claim_idle_ms=1
        ):
            pass
    finally:
        for stream in consumers:
            await stream.aclose()
    ids = [fields["message_id"] for fields in sent]
    assert await in_inbox(bus, ids) == set(ids)
    assert await commands.dead_letters() == []
    assert await commands.pending() == 0


async def test_a_consumer_leaves_the_group_unless_it_holds_unacknowledged_entries(
    bus: MessageBus, commands: Commands
) -> None:
    done, holding = commands.consumer("done"), commands.consumer("holding")
    try:
        await commands.add(create_batch())
        assert await consumer.consume_once(bus, done, block_ms=10) == ["handled"]
        await commands.add(create_batch())
        assert len(await holding.read(count=10, block_ms=10)) == 1
        assert await done.leave()
        assert not await holding.leave()
    finally:
        await done.aclose()
        await holding.aclose()
    members: list[dict[str, Any]] = await commands.client.xinfo_consumers(
        commands.name, "allocation"
    )
    assert [(member["name"], member["pending"]) for member in members] == [
        (b"holding", 1)
    ]


async def test_a_consumer_group_that_vanished_is_created_again(
    bus: MessageBus, commands: Commands, stream: RedisCommandStream
) -> None:
    await commands.add(create_batch())
    assert await consumer.consume_once(bus, stream, block_ms=10) == ["handled"]
    await commands.client.delete(commands.name)  # as a Redis restarted without data
    await commands.add(create_batch())
    with pytest.raises(BrokerUnavailable, match="the consumer group is gone"):
        await consumer.consume_once(bus, stream, block_ms=10)
    assert await consumer.consume_once(bus, stream, block_ms=10) == ["handled"]
