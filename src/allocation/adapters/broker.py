"""Events out to other services: the publisher port and Redis Streams (asyncio only).

One stream (``allocation:events`` by default) holds every published event in log
order, so each aggregate's events stay in order; every entry carries the event's
``message_id``, by which consumers drop the duplicates at-least-once delivery brings.
"""

from __future__ import annotations

import abc
import json
from typing import TYPE_CHECKING

import redis.asyncio as redis
from redis import exceptions as redis_errors

from allocation.adapters.exceptions import BrokerUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

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
        "payload": json.dumps(event.to_payload(), ensure_ascii=False),
    }


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
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for logged in batch:
                    pipe.xadd(self.stream, entry_fields(logged))  # type: ignore[arg-type]  # str fields
                await pipe.execute()
        except (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            OSError,
        ) as error:
            raise BrokerUnavailable(
                self.url, str(error) or type(error).__name__
            ) from error

    async def aclose(self) -> None:
        await self._client.aclose()
