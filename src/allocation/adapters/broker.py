"""The broker: events out to other services and commands in, on Redis Streams.

Asyncio only (redis-py's asyncio client).

One stream (``allocation:events`` by default) holds every published event in log
order, so each aggregate's events stay in order; every entry carries the event's
``message_id``, by which consumers drop the duplicates at-least-once delivery brings.
"""

from __future__ import annotations

import abc
import contextlib
from typing import TYPE_CHECKING, Any, NamedTuple

import redis.asyncio as redis
from redis import exceptions as redis_errors

from allocation.adapters.exceptions import BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from allocation.adapters.eventlog import LoggedEvent

DEFAULT_STREAM = "allocation:events"


def entry_fields(logged: LoggedEvent) -> dict[str, str]:
    """The fields of one stream entry: flat strings, the payload as JSON."""
    event = logged.event
    return {
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
    }


@contextlib.asynccontextmanager
async def _translated(url: str) -> AsyncIterator[None]:
    """Redis's connection failures, as our BrokerUnavailable."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
        raise BrokerUnavailable(url, str(error) or type(error).__name__) from error


class AbstractPublisher(abc.ABC):
    """Port for publishing logged events to a broker, in the order given."""

    @abc.abstractmethod
    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        """Publish every event of ``batch``, or raise BrokerUnavailable."""

    async def aclose(self) -> None:  # noqa: B027 - most publishers hold nothing
        """Release connections."""


class RedisStreamsPublisher(AbstractPublisher):
    """XADDs a batch in one pipelined round trip."""

    def __init__(self, url: str, stream: str = DEFAULT_STREAM) -> None:
        self.url = url
        self.stream = stream
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5
        )

    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        if not batch:
            return
        async with (
            _translated(self.url),
            self._client.pipeline(transaction=False) as pipe,
        ):
            for logged in batch:
                pipe.xadd(self.stream, entry_fields(logged))  # type: ignore[arg-type]  # str fields
            await pipe.execute()

    async def aclose(self) -> None:
        await self._client.aclose()


class Entry(NamedTuple):
    """One stream entry: its id in the stream and its fields."""

    entry_id: str
    fields: dict[str, str]


class AbstractCommandStream(abc.ABC):
    """Port for the stream of commands other services send us (consumer group)."""

    @abc.abstractmethod
    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer (none after ``block_ms``)."""

    @abc.abstractmethod
    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer read but never acknowledged, idle that long."""

    @abc.abstractmethod
    async def ack(self, entry_id: str) -> None:
        """Acknowledge an entry: handled, or dead-lettered."""

    @abc.abstractmethod
    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move an entry that cannot be handled to the dead-letter stream, with why."""


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
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.consumer = consumer
        self._client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self._group_ready = False

    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        async with _translated(self.url):
            await self._ensure_group()
            replies: Any = await self._client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=count,
                block=block_ms,
            )
        return [
            Entry(entry_id, dict(fields))
            for _, entries in replies or []
            for entry_id, fields in entries
        ]

    async def reclaim(self, *, idle_ms: int, count: int) -> list[Entry]:
        async with _translated(self.url):
            await self._ensure_group()
            reply: Any = await self._client.xautoclaim(
                self.stream, self.group, self.consumer, idle_ms, "0-0", count=count
            )
        claimed = reply[1] if len(reply) > 1 else []
        return [Entry(entry_id, dict(fields or {})) for entry_id, fields in claimed]

    async def ack(self, entry_id: str) -> None:
        async with _translated(self.url):
            await self._client.xack(self.stream, self.group, entry_id)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        async with _translated(self.url):
            fields: dict[Any, Any] = {
                **entry.fields,
                "reason": reason,
                "original_id": entry.entry_id,
            }
            await self._client.xadd(self.dead_stream, fields)
            await self._client.xack(self.stream, self.group, entry.entry_id)

    async def aclose(self) -> None:
        await self._client.aclose()

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
