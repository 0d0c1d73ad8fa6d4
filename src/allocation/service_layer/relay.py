"""The outbox relay: the event log, published to a broker (at-least-once, in log order).

The log is the outbox: events are in it the moment their change commits. The relay
reads it from its checkpoint in batches, publishes a batch, then moves the
checkpoint. A crash between the two publishes that batch again, so consumers must
drop duplicates by message id; nothing is ever skipped.

Where the database can say that new events were committed (PostgreSQL), a listener
wakes the relay at once; the relay still polls, as the safety net for notices that
never came (a lost connection, a database that sends none).

Each destination (stream) has a checkpoint and a lock of its own, so a new stream
receives the whole log and two streams are fed independently.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Protocol

import anyio

from allocation.service_layer.backoff import Outage
from allocation.service_layer.channels import DEFAULT_STREAM

if TYPE_CHECKING:
    from collections.abc import Callable

    from allocation.service_layer.channels import AbstractPublisher
    from allocation.service_layer.messagebus import MessageBus

logger = logging.getLogger(__name__)

RELAY = "relay:broker"
# The tracking tables hold subscriber names of up to this many characters.
_MAX_SUBSCRIBER_NAME = 100


def relay_name(destination: str) -> str:
    """The relay's subscriber name for one destination: its checkpoint and its lock.

    The default stream keeps the name of the days when one checkpoint served every
    stream, so an existing database goes on relaying from where it was.
    """
    if destination == DEFAULT_STREAM:
        return RELAY
    name = f"{RELAY}:{destination}"
    if len(name) <= _MAX_SUBSCRIBER_NAME:
        return name
    digest = hashlib.sha256(destination.encode(errors="surrogatepass")).hexdigest()
    return f"{RELAY}:{destination[:40]}…{digest[:40]}"


def destination_of(subscriber: str) -> str | None:
    """The destination a relay checkpoint's name is for (None: not the relay's).

    A name too long to keep whole gives its shortened form back.
    """
    if subscriber == RELAY:
        return DEFAULT_STREAM
    prefix = f"{RELAY}:"
    return subscriber[len(prefix) :] if subscriber.startswith(prefix) else None


class WakeUp:
    """Tells the relay that new events may be waiting; rings coalesce.

    Any number of rings before one is taken count as one, so a burst of commits
    during a relay pass costs one more pass, not one per commit.
    """

    def __init__(self) -> None:
        self._rung = anyio.Event()

    def ring(self) -> None:
        """Say that new events may be waiting (safe from a driver's callback)."""
        self._rung.set()

    async def rung_within(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for a ring since the last one was taken; say if
        one came, and take it."""
        with anyio.move_on_after(seconds):
            await self._rung.wait()
        return self.take_ring()

    def take_ring(self) -> bool:
        """Take the ring that came since the last one was taken, if any.

        A ring is taken before the pass it causes, so one that arrives during that
        pass is there for the next check.
        """
        if not self._rung.is_set():
            return False
        self._rung = anyio.Event()
        return True


class LogListener(Protocol):
    """Port: hears that events were committed to the log, while it stays connected."""

    async def listen(self, heard: Callable[[], None]) -> None:
        """Call ``heard`` once listening and on every commit notice after.

        The first call covers whatever was committed before listening began. Never
        returns: raises DatabaseUnavailable when the connection fails or is lost.
        """
        ...


async def relay_once(
    bus: MessageBus, publisher: AbstractPublisher, *, batch_size: int = 500
) -> int:
    """Publish everything logged since the checkpoint; return how many events."""
    return await _relay_if_ours(bus, publisher, batch_size) or 0


async def _relay_if_ours(
    bus: MessageBus,
    publisher: AbstractPublisher,
    batch_size: int,
    again: Callable[[], bool] = lambda: False,
) -> int | None:
    """Like relay_once, but None when another worker relays. While ``again()``
    says more may be waiting, pass again without letting go of the lock: the
    checkpoint is ours meanwhile, so it need not be read again either."""
    name = relay_name(publisher.destination)
    async with bus.locks.hold(name) as held:
        if not held:
            return None
        checkpoint, published = await _publish_since(bus, publisher, None, batch_size)
        while again():
            checkpoint, more = await _publish_since(
                bus, publisher, checkpoint, batch_size
            )
            published += more
        return published


async def _publish_since(
    bus: MessageBus,
    publisher: AbstractPublisher,
    checkpoint: int | None,
    batch_size: int,
) -> tuple[int, int]:
    """Publish what follows ``checkpoint`` (None: the stored one), moving it on.

    Returns the new checkpoint and how many events were published.
    """
    name = relay_name(publisher.destination)
    async with bus.uow_factory() as uow:
        if checkpoint is None:
            checkpoint = await uow.event_log.checkpoint(name) or 0
        batch = await uow.event_log.read(after=checkpoint, limit=batch_size)
    published = 0
    while batch:
        await publisher.publish(batch)
        checkpoint = batch[-1].position
        async with bus.uow_factory() as uow:
            await uow.event_log.set_checkpoint(name, checkpoint)
            await uow.commit()
        published += len(batch)
        if len(batch) < batch_size:
            break
        async with bus.uow_factory() as uow:
            batch = await uow.event_log.read(after=checkpoint, limit=batch_size)
    return checkpoint, published


async def keep_relaying(
    bus: MessageBus,
    publisher: AbstractPublisher,
    *,
    interval: float = 0.1,
    batch_size: int = 500,
    max_backoff: float = 5.0,
    wake_up: WakeUp | None = None,
) -> None:
    """Relay until cancelled: a pass whenever ``wake_up`` rings, and one every
    ``interval`` seconds regardless. While the broker or the database is down, back
    off and log once. Nothing ends the loop but cancellation: a worker must outlive
    an outage."""
    outage = Outage(logger, "relay", first=interval, longest=max_backoff)
    while True:
        # Rings that come during a pass are answered under the same lock, for up
        # to ``interval``: under a steady stream of commits, that saves taking the
        # lock and reading the checkpoint on every pass, yet lets a standby worker
        # at the lock as often as polling would.
        rung_meanwhile = _rings_taken_for(wake_up, interval)
        try:
            relayed = await _relay_if_ours(bus, publisher, batch_size, rung_meanwhile)
        except Exception as error:  # noqa: BLE001 - a background loop's boundary: the outage logs it
            # The broker or the database down, or a failure nobody foresaw: tried
            # again after a back-off, and the outage says why, once.
            await anyio.sleep(outage.failed(error))
            continue
        outage.succeeded()
        if wake_up is None or relayed is None:
            # A worker on standby polls: answering every commit would only send
            # it to the relay lock again and again while another worker relays.
            await anyio.sleep(interval)
        else:
            await wake_up.rung_within(interval)


def _rings_taken_for(wake_up: WakeUp | None, seconds: float) -> Callable[[], bool]:
    """Takes a ring of ``wake_up`` if one came, for the next ``seconds``; then no."""
    if wake_up is None:
        return lambda: False
    until = anyio.current_time() + seconds
    return lambda: anyio.current_time() < until and wake_up.take_ring()


async def keep_listening(
    listener: LogListener,
    wake_up: WakeUp,
    *,
    first_backoff: float = 0.1,
    max_backoff: float = 5.0,
) -> None:
    """Ring ``wake_up`` whenever ``listener`` hears of a commit, until cancelled.

    A lost connection is opened again with back-off, logged once when it goes and
    once when it is back; meanwhile the relay's poll carries on alone.
    """
    outage = Outage(logger, "relay wake-ups", first=first_backoff, longest=max_backoff)

    def heard() -> None:
        outage.succeeded()
        wake_up.ring()

    while True:
        try:
            await listener.listen(heard)
        except Exception as error:  # noqa: BLE001 - a background loop's boundary: the outage logs it
            await anyio.sleep(outage.failed(error))
