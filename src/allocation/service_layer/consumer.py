"""Commands from other services, read from the broker: inbox, dead letters, reclaim.

Each entry becomes a command handled through the bus. Its commit records the
entry's message id in the inbox (``processed_messages`` under ``INBOX``) in the same
transaction, so a redelivery changes nothing. An entry is acknowledged only once it
is handled or dead-lettered; one that cannot be handled (malformed, unknown, refused
by the domain) goes to the dead-letter stream with the reason. Entries another
consumer read and never acknowledged (it died) are reclaimed after a while.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from allocation.adapters.exceptions import BrokerUnavailable, DatabaseUnavailable
from allocation.domain import commands, messages
from allocation.domain.exceptions import (
    AllocationError,
    AlreadyProcessed,
    ConcurrencyConflict,
    shorten,
)
from allocation.service_layer.backoff import Outage

if TYPE_CHECKING:
    from allocation.adapters.broker import AbstractCommandStream, Entry
    from allocation.service_layer.messagebus import MessageBus

logger = logging.getLogger(__name__)

INBOX = "inbox:broker"
# What other services may ask of us; the book's external message is the first.
ACCEPTED: frozenset[type[commands.Command]] = frozenset(
    {commands.ChangeBatchQuantity, commands.CreateBatch, commands.Allocate}
)


class MalformedMessage(AllocationError):
    """Raised when a broker entry is not a command we accept; says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse(entry: Entry) -> commands.Command:
    """The command an entry carries: fields ``name``, ``message_id``, ``payload``.

    The payload is decoded and validated by the command's own schema.
    """
    fields = entry.fields
    name, message_id = fields.get("name"), fields.get("message_id")
    if not name:
        raise MalformedMessage("no 'name' field")
    if not message_id:
        raise MalformedMessage("no 'message_id' field")
    kind = messages.message_classes().get(name)
    if kind is None:
        raise MalformedMessage(f"unknown message name {shorten(name)}")
    if kind not in ACCEPTED:
        raise MalformedMessage(f"{shorten(name)} is not accepted from the broker")
    try:
        command = kind.from_json(fields.get("payload", ""), message_id=message_id)
    except AllocationError as error:
        raise MalformedMessage(str(error)) from None
    assert isinstance(command, commands.Command)  # ACCEPTED holds commands only
    return command


async def handle_entry(
    bus: MessageBus, stream: AbstractCommandStream, entry: Entry
) -> str:
    """Handle one entry; returns what became of it (for logs and tests).

    Raises the transient failures (database or broker away, a lost race) and leaves
    the entry unacknowledged, so it is read again.
    """
    try:
        command = parse(entry)
    except MalformedMessage as error:
        await stream.dead_letter(entry, f"malformed: {error}")
        return "dead-lettered"
    try:
        await bus.handle(command, inbox=INBOX)
    except AlreadyProcessed:
        await stream.ack(entry.entry_id)
        return "duplicate"
    except (DatabaseUnavailable, BrokerUnavailable, ConcurrencyConflict):
        raise
    except AllocationError as error:
        await stream.dead_letter(entry, f"refused: {error}")
        return "dead-lettered"
    except Exception as error:
        logger.exception("entry %s failed", entry.entry_id)
        await stream.dead_letter(entry, f"failed: {type(error).__name__}: {error}")
        return "dead-lettered"
    await stream.ack(entry.entry_id)
    return "handled"


async def consume_once(
    bus: MessageBus,
    stream: AbstractCommandStream,
    *,
    count: int = 100,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
) -> list[str]:
    """Reclaim what dead consumers left, read what is new, handle it all."""
    entries = await stream.reclaim(idle_ms=claim_idle_ms, count=count)
    entries += await stream.read(count=count, block_ms=block_ms)
    return [await handle_entry(bus, stream, entry) for entry in entries]


async def keep_consuming(
    bus: MessageBus,
    stream: AbstractCommandStream,
    *,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
    max_backoff: float = 5.0,
) -> None:
    """Consume until cancelled; while something is down, back off and log once.

    Nothing ends the loop but cancellation: a worker must outlive an outage.
    """
    outage = Outage(logger, "consumer", first=0.1, longest=max_backoff)
    while True:
        try:
            await consume_once(
                bus, stream, block_ms=block_ms, claim_idle_ms=claim_idle_ms
            )
        except (BrokerUnavailable, DatabaseUnavailable) as error:
            await anyio.sleep(outage.failed(error))
            continue
        except ConcurrencyConflict:
            continue  # unacknowledged: reclaimed and handled again
        except Exception as error:  # a background loop's boundary: log, retry
            logger.exception("consumer pass failed")
            await anyio.sleep(outage.failed(error))
            continue
        outage.succeeded()
