"""Commands from other services, read from the broker: inbox, dead letters, reclaim.

Each entry becomes a command handled through the bus, in stream order. An entry whose
message id the inbox (``processed_messages`` under ``INBOX``) already holds was
handled before: it is acknowledged and nothing else. Otherwise the command's commit
records the id in the inbox in the same transaction, which also settles a race
between two deliveries. An entry is acknowledged only once it is handled or
dead-lettered. One that cannot be handled (malformed, unknown, refused by the
domain, or failing in a way nobody foresaw) goes at once to the dead-letter stream
with the reason, and one log line says so; only transient failures (the database or
the broker away, a race lost too often) are retried. Entries another consumer read
and never acknowledged (it died) are reclaimed after a while.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from allocation.domain import commands, messages, values
from allocation.domain.exceptions import (
    AllocationError,
    AlreadyProcessed,
    ConcurrencyConflict,
    shorten,
)
from allocation.service_layer import masking
from allocation.service_layer.backoff import Outage
from allocation.service_layer.exceptions import BrokerUnavailable, DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Collection

    from allocation.service_layer.channels import AbstractCommandStream, Entry
    from allocation.service_layer.messagebus import MessageBus

logger = logging.getLogger(__name__)

INBOX = "inbox:broker"
# What other services may ask of us; the book's external message is the first.
ACCEPTED: frozenset[type[commands.Command]] = frozenset(
    {commands.ChangeBatchQuantity, commands.CreateBatch, commands.Allocate}
)
# Failures that say nothing about the entry: it is read again, after a back-off.
TRANSIENT = (DatabaseUnavailable, BrokerUnavailable, ConcurrencyConflict)
# A dead letter's reason, and its log line, stay short whatever the entry held: a
# 20 MB payload must not make a 20 MB reason.
MAX_REASON = 200


class MalformedMessage(AllocationError):
    """Raised when a broker entry is not a command we accept; says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse(entry: Entry) -> commands.Command:
    """The command an entry carries: fields ``name``, ``message_id``, ``payload``.

    The payload is decoded and validated by the command's own schema.
    """
    if entry.undecodable:
        names = ", ".join(shorten(name, 40) for name in entry.undecodable[:3])
        raise MalformedMessage(f"not UTF-8: field {names}")
    fields = entry.fields
    if not fields:
        raise MalformedMessage("no fields (deleted from the stream?)")
    name, message_id = fields.get("name"), fields.get("message_id")
    if not name:
        raise MalformedMessage("no 'name' field")
    if not message_id:
        raise MalformedMessage("no 'message_id' field")
    if "payload" not in fields:
        raise MalformedMessage("no 'payload' field")
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


def reason_line(reason: str) -> str:
    """``reason`` as one short line: escaped control characters, cut to MAX_REASON."""
    line = values.printable(reason)
    if len(line) <= MAX_REASON:
        return line
    return f"{line[: MAX_REASON - 1]}…"


async def consume_once(
    bus: MessageBus,
    stream: AbstractCommandStream,
    *,
    count: int = 100,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
) -> list[str]:
    """Reclaim what dead consumers left, read what is left or new, handle it all in
    stream order; returns what became of each entry.

    A transient failure stops the pass at its entry and is raised: that entry and
    the ones after it stay unacknowledged, and the next pass reads them first. So
    one consumer keeps the stream's order, and nothing waits for a reclaim.
    """
    entries = await stream.reclaim(idle_ms=claim_idle_ms, count=count)
    entries += await stream.read(count=count, block_ms=block_ms)
    # A reclaimed entry joins this consumer's own pending ones: read twice, kept once.
    entries = list({entry.entry_id: entry for entry in entries}.values())
    parsed = [_parse(entry) for entry in entries]
    handled_before = await _in_inbox(
        bus, [p.message_id for p in parsed if not isinstance(p, MalformedMessage)]
    )
    return [
        await _settle(bus, stream, entry, command, handled_before)
        for entry, command in zip(entries, parsed, strict=True)
    ]


def _parse(entry: Entry) -> commands.Command | MalformedMessage:
    try:
        return parse(entry)
    except MalformedMessage as error:
        return error
    except Exception as error:  # noqa: BLE001 - an entry's boundary
        # Raised, it would fail every pass and hold up every entry after this one.
        unforeseen = MalformedMessage(f"{type(error).__name__}: {error}")
        unforeseen.__cause__ = error
        return unforeseen


async def _in_inbox(bus: MessageBus, message_ids: Collection[str]) -> set[str]:
    """Which of ``message_ids`` the inbox holds: commands handled before."""
    if not message_ids:
        return set()
    async with bus.uow_factory() as uow:
        return await uow.event_log.processed_among(INBOX, message_ids)


async def _settle(
    bus: MessageBus,
    stream: AbstractCommandStream,
    entry: Entry,
    parsed: commands.Command | MalformedMessage,
    handled_before: set[str],
) -> str:
    if isinstance(parsed, MalformedMessage):
        return await _dead_letter(
            stream, entry, f"malformed: {parsed}", parsed.__cause__
        )
    if parsed.message_id in handled_before:
        # Handling it again could only be refused (a batch that already exists).
        await stream.ack(entry.entry_id)
        return "duplicate"
    try:
        # The trace of the service that sent it (a ``traceparent`` field) goes on.
        with bus.observer.continued(entry.fields.get("traceparent")):
            await bus.handle(parsed, inbox=INBOX)
    except AlreadyProcessed:
        await stream.ack(entry.entry_id)
        return "duplicate"
    except TRANSIENT:
        raise
    except AllocationError as error:
        if await _in_inbox(bus, [parsed.message_id]):
            # Another delivery of it committed meanwhile (read twice at once, or
            # reclaimed from a slow consumer): refused only for being done.
            await stream.ack(entry.entry_id)
            return "duplicate"
        return await _dead_letter(stream, entry, f"refused: {error}")
    except Exception as error:  # noqa: BLE001 - an entry's boundary
        return await _dead_letter(
            stream,
            entry,
            masking.mask_secrets(f"failed: {type(error).__name__}: {error}"),
            error,
        )
    await stream.ack(entry.entry_id)
    return "handled"


async def _dead_letter(
    stream: AbstractCommandStream,
    entry: Entry,
    reason: str,
    unforeseen: BaseException | None = None,
) -> str:
    line = reason_line(reason)
    await stream.dead_letter(entry, line)
    # After the move, not before: a move that fails is retried, not logged each time.
    logger.log(
        logging.WARNING if unforeseen is None else logging.ERROR,
        "entry %s dead-lettered: %s",
        entry.entry_id,
        line,
        exc_info=unforeseen,
    )
    return "dead-lettered"


async def keep_consuming(
    bus: MessageBus,
    stream: AbstractCommandStream,
    *,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
    max_backoff: float = 5.0,
) -> None:
    """Consume until cancelled; on a failure, back off and log once each way.

    Nothing ends the loop but cancellation: a worker must outlive an outage. The
    back-off covers a lost race too: the entry is read again at once, and rerunning
    it without a pause would only lose again.
    """
    outage = Outage(logger, "consumer", first=0.1, longest=max_backoff)
    while True:
        try:
            await consume_once(
                bus, stream, block_ms=block_ms, claim_idle_ms=claim_idle_ms
            )
        except Exception as error:  # noqa: BLE001 - a background loop's boundary: the outage logs it
            # A transient failure (TRANSIENT) or one nobody foresaw: either way the
            # pass is tried again after a back-off, and the outage says why, once.
            await anyio.sleep(outage.failed(error))
            continue
        outage.succeeded()
