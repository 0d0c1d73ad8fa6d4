"""The broker: events out to other services and commands in, on Redis Streams.

Asyncio only (redis-py's asyncio client).

One stream (``allocation:events`` by default) holds every published event in log
order, so each aggregate's events stay in order; every entry carries the event's
``message_id``, by which consumers drop the duplicates at-least-once delivery brings.
Commands come in on another stream, read by a consumer group; the entries are read as
bytes and decoded field by field, so one entry that is not UTF-8 cannot fail the read
of the others.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import redis.asyncio as redis
from redis import exceptions as redis_errors

from allocation.service_layer.channels import (
    DEFAULT_STREAM,
    AbstractCommandStream,
    AbstractPublisher,
    Entry,
)
from allocation.service_layer.exceptions import BrokerRefused, BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from allocation.service_layer.ports import LoggedEvent


def entry_fields(logged: LoggedEvent) -> dict[str, str]:
    """The fields of one stream entry: flat strings, the payload as JSON, and the
    W3C ``traceparent`` of the trace it was written in, if it was traced."""
    event = logged.event
    fields = {
        "message_id": event.message_id,
        "name": event.TYPE,
        "position": str(logged.position),
        "aggregate_type": logged.aggregate_type,
        "aggregate_id": logged.aggregate_id,
        "aggregate_version": str(logged.aggregate_version),
        "occurred_at": logged.occurred_at.isoformat(),
        "correlation_id": event.correlation_id or "",
        "causation_id": event.causation_id or "",
        "payload": (
            logged.payload_json
            if logged.payload_json is not None
            else event.payload_json()
        ),
        # The version the payload text was written with: consumers upcast by it.
        "schema_version": str(
            logged.schema_version
            if logged.payload_json is not None
            else event.SCHEMA_VERSION
        ),
    }
    if logged.trace_context:
        fields["traceparent"] = logged.trace_context
    return fields


@contextlib.asynccontextmanager
async def translated_errors(url: str) -> AsyncIterator[None]:
    """Redis's connection failures as our BrokerUnavailable, its refusals as
    BrokerRefused."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        raise BrokerUnavailable(url, str(error) or type(error).__name__) from error
    except redis_errors.ResponseError as error:
        raise BrokerRefused(url, str(error) or type(error).__name__) from error


async def ping(url: str) -> None:
    """Check that the broker at ``url`` answers (BrokerUnavailable otherwise)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        async with translated_errors(url):
            await client.ping()
    finally:
        await client.aclose()


class RedisStreamsPublisher(AbstractPublisher):
    """XADDs a batch in one pipelined round trip."""

    def __init__(self, url: str, stream: str = DEFAULT_STREAM) -> None:
        self.url = url
        self.stream = stream
        self.destination = stream
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5
        )

    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        if not batch:
            return
        async with (
            translated_errors(self.url),
            self._client.pipeline(transaction=False) as pipe,
        ):
            for logged in batch:
                pipe.xadd(self.stream, entry_fields(logged))  # type: ignore[arg-type]  # str fields
            await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


def decode_entry(entry_id: bytes | str, raw: Mapping[bytes, bytes] | None) -> Entry:
    """An entry read as bytes, decoded field by field; fields never raise."""
    fields: dict[str, str] = {}
    undecodable: list[str] = []
    for key, value in (raw or {}).items():
        try:
            fields[key.decode()] = value.decode()
        except UnicodeDecodeError:
            undecodable.append(key.decode(errors="backslashreplace"))
    identifier = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Entry(identifier, fields, tuple(undecodable), dict(raw or {}))


def raw_fields(entry: Entry) -> dict[bytes, bytes]:
    """The entry's fields as the broker held them."""
    if entry.raw is not None:
        return dict(entry.raw)
    return {key.encode(): value.encode() for key, value in entry.fields.items()}


class RedisCommandStream(AbstractCommandStream):
    """A Redis Streams consumer-group member (asyncio only)."""

    def __init__(
        self,
        url: str,
        stream: str = "allocation:commands",
        group: str = "allocation",
        consumer: str = "consumer",
    ) -> None:
        self.url = url
        self.stream = stream
        self.dead_stream = dead_stream_of(stream)
        self.group = group
        self.consumer = consumer
        # Bytes, not decode_responses: one entry that is not UTF-8 would fail the
        # whole XREADGROUP reply, and every entry read with it would stay pending.
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=10
        )
        self._group_ready = False
        # Whether this consumer may hold entries it read and has not acknowledged:
        # they are read again, in order, before anything new.
        self._backlog = True

    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        async with translated_errors(self.url), self._group_lost():
            await self._ensure_group()
            if self._backlog:
                left = await self._read_group("0", count, block_ms=None)
                if left:
                    return left
                self._backlog = False
            entries = await self._read_group(">", count, block_ms=block_ms)
        self._backlog = bool(entries)
        return entries

    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        async with translated_errors(self.url), self._group_lost():
            await self._ensure_group()
            reply: Any = await self._client.xautoclaim(
                self.stream, self.group, self.consumer, idle_ms, "0-0", count=count
            )
        claimed = reply[1] if len(reply) > 1 else []
        entries = [decode_entry(entry_id, fields) for entry_id, fields in claimed]
        self._backlog = self._backlog or bool(entries)
        return entries

    async def ack(self, entry_id: str) -> None:
        async with translated_errors(self.url):
            await self._client.xack(self.stream, self.group, entry_id)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        fields = {
            **raw_fields(entry),
            b"reason": reason.encode(errors="backslashreplace"),
            b"original_id": entry.entry_id.encode(),
        }
        # One transaction: a crash between the two would dead-letter it twice.
        async with (
            translated_errors(self.url),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.xadd(self.dead_stream, fields)  # type: ignore[arg-type]  # bytes fields
            pipe.xack(self.stream, self.group, entry.entry_id)
            await pipe.execute()

    async def leave(self) -> bool:
        if not self._group_ready:
            return True  # never read: never joined
        async with translated_errors(self.url):
            try:
                mine: Any = await self._client.xpending_range(
                    self.stream, self.group, "-", "+", 1, consumername=self.consumer
                )
                if mine:
                    return False
                # Nothing of ours is pending and this consumer reads no more, so
                # deleting it loses nothing.
                await self._client.xgroup_delconsumer(
                    self.stream, self.group, self.consumer
                )
            except redis_errors.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
        return True  # left, or the group is gone and this consumer with it

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _read_group(
        self, after: str, count: int, *, block_ms: int | None
    ) -> list[Entry]:
        replies: Any = await self._client.xreadgroup(
            self.group, self.consumer, {self.stream: after}, count=count, block=block_ms
        )
        return [
            decode_entry(entry_id, fields)
            for _, entries in replies or []
            for entry_id, fields in entries
        ]

    @contextlib.asynccontextmanager
    async def _group_lost(self) -> AsyncIterator[None]:
        """A group that vanished (Redis restarted without its data, the stream was
        deleted) is created again on the next try, not failed on forever."""
        try:
            yield
        except redis_errors.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._group_ready = False
            raise BrokerUnavailable(self.url, "the consumer group is gone") from error

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(
                self.stream, self.group, id="0", mkstream=True
            )
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True


def dead_stream_of(stream: str) -> str:
    """The dead-letter stream of a command stream."""
    return f"{stream}:dead"
