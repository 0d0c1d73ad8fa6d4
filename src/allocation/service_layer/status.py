"""Where delivery stands: each subscriber's checkpoint, lag and dead letters, and the
relay's position per destination, read from the event store in one snapshot.

``allocation status`` prints these figures and the Prometheus gauges
(``adapters.metrics``) are set from them, so both always agree.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from allocation.service_layer import relay

if TYPE_CHECKING:
    from collections.abc import Iterable

    from allocation.service_layer.messagebus import MessageBus


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriberStatus:
    """One subscriber's figures.

    Attributes:
        name: its stable name (an event handler's, or a projection's).
        projection: whether it keeps a read model (which starts from the
            beginning of the log; a handler starts from where the log was when
            it was first seen).
        checkpoint: the log position up to which catch-up has settled it; None
            before its first catch-up pass.
        lag: events of the names it subscribes to, past its checkpoint, that it
            has neither recorded as handled nor given up on (its dead letters):
            what it still has to do. A handler that commits nothing (an email)
            records what it handled in batches, so those count until the next
            catch-up pass or batch writes them.
        dead_letters: events it gave up on, waiting for ``dead-letters retry``.
    """

    name: str
    projection: bool
    checkpoint: int | None
    lag: int
    dead_letters: int


@dataclasses.dataclass(frozen=True, slots=True)
class RelayStatus:
    """How far the relay has published the log to one destination.

    Attributes:
        destination: the stream it publishes to.
        position: the last log position published; None if it never published.
        lag: events logged after ``position``, not yet published.
    """

    destination: str
    position: int | None
    lag: int


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """The log's head and where every subscriber and relay destination stands."""

    head: int
    subscribers: tuple[SubscriberStatus, ...]
    relays: tuple[RelayStatus, ...]

    def as_json(self) -> dict[str, Any]:
        """The figures as plain JSON types (``allocation status --json``)."""
        return dataclasses.asdict(self)


async def status(bus: MessageBus, *, destinations: Iterable[str] = ()) -> Status:
    """The figures of the bus's subscribers and of every relay destination.

    A relay destination shows once the relay has published to it; name the
    ``destinations`` the relay is configured with to show them before that.
    Subscribers are the bus's own (its handlers and projections).
    """
    async with bus.uow_factory() as uow:
        log = uow.event_log
        await log.read_one_snapshot()
        head = await log.last_position()
        checkpoints = await log.all_checkpoints()
        letters = await log.dead_letter_counts()
        subscribers = []
        for name, handlers in sorted(bus.subscriptions().items()):
            checkpoint = checkpoints.get(name)
            projection = name in bus.projections
            # Catch-up starts a handler it has never seen at the head: what was
            # logged before is not its to handle. A projection starts from 0.
            after = checkpoint if checkpoint is not None else 0 if projection else head
            lag = await log.count_unhandled(name, after=after, names=list(handlers))
            subscribers.append(
                SubscriberStatus(
                    name=name,
                    projection=projection,
                    checkpoint=checkpoint,
                    lag=lag,
                    dead_letters=letters.get(name, 0),
                )
            )
        # By relay checkpoint name: a destination named both ways shows once.
        relayed = {
            relay.relay_name(destination): destination for destination in destinations
        }
        for name in checkpoints:
            destination = relay.destination_of(name)
            if destination is not None:
                relayed.setdefault(name, destination)
        relays = []
        for name, destination in sorted(relayed.items(), key=lambda item: item[1]):
            position = checkpoints.get(name)
            lag = await log.count_unhandled(name, after=position or 0)
            relays.append(RelayStatus(destination, position, lag))
    return Status(head=head, subscribers=tuple(subscribers), relays=tuple(relays))
