"""The outbox relay: the event log, published to a broker (at-least-once, in log order).

The log is the outbox: events are in it the moment their change commits. The relay
reads it from its checkpoint in batches, publishes a batch, then moves the
checkpoint. A crash between the two publishes that batch again, so consumers must
drop duplicates by message id; nothing is ever skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from allocation.adapters.exceptions import BrokerUnavailable, DatabaseUnavailable
from allocation.service_layer.backoff import Outage

if TYPE_CHECKING:
    from allocation.adapters.broker import AbstractPublisher
    from allocation.service_layer.messagebus import MessageBus

logger = logging.getLogger(__name__)

RELAY = "relay:broker"


async def relay_once(
    bus: MessageBus, publisher: AbstractPublisher, *, batch_size: int = 500
) -> int:
    """Publish everything logged since the checkpoint; return how many events."""
    published = 0
    async with bus.locks.hold(RELAY) as held:
        if not held:
            return 0  # another worker relays
        async with bus.uow_factory() as uow:
            checkpoint = await uow.event_log.checkpoint(RELAY) or 0
        while True:
            async with bus.uow_factory() as uow:
                batch = await uow.event_log.read(after=checkpoint, limit=batch_size)
            if not batch:
                return published
            await publisher.publish(batch)
            checkpoint = batch[-1].position
            async with bus.uow_factory() as uow:
                await uow.event_log.set_checkpoint(RELAY, checkpoint)
                await uow.commit()
            published += len(batch)
            if len(batch) < batch_size:
                return published


async def keep_relaying(
    bus: MessageBus,
    publisher: AbstractPublisher,
    *,
    interval: float = 0.1,
    batch_size: int = 500,
    max_backoff: float = 5.0,
) -> None:
    """Relay until cancelled; while the broker or the database is down, back off
    and log once. Nothing ends the loop but cancellation: a worker must outlive an
    outage."""
    outage = Outage(logger, "relay", first=interval, longest=max_backoff)
    while True:
        try:
            await relay_once(bus, publisher, batch_size=batch_size)
        except (BrokerUnavailable, DatabaseUnavailable) as error:
            await anyio.sleep(outage.failed(error))
            continue
        except Exception as error:  # a background loop's boundary: log, retry
            logger.exception("relay pass failed")
            await anyio.sleep(outage.failed(error))
            continue
        outage.succeeded()
        await anyio.sleep(interval)
