"""Errors of the service layer, under ``AllocationError``.

AllocationError
├── InvalidSku        an order names a sku that has no batches
├── UnknownBatch      a batch reference that does not exist
├── UnknownSubscriber a subscriber name that no handler has
├── UnknownDeadLetter a dead-letter id that does not exist
├── SubscriberBusy    another process is catching that subscriber up
├── UnknownMessage    the bus was handed something it has no handler for
└── ClaimTaken        a unique value another aggregate holds (raised by stores)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.domain.exceptions import AllocationError, shorten

if TYPE_CHECKING:
    from collections.abc import Sequence

    from allocation.service_layer.ports import Claim


class InvalidSku(AllocationError):
    """Raised when an order line names a sku that no batch holds."""

    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"invalid sku {shorten(sku)}: no batch holds it")


class UnknownBatch(AllocationError):
    """Raised when a command names a batch reference that does not exist."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        super().__init__(f"unknown batch {shorten(reference)}")


class UnknownSubscriber(AllocationError):
    """Raised when a subscriber name is unknown, or takes no events of that type.

    ``known``, when given, lists the valid names, and the message says them.
    """

    def __init__(
        self,
        name: str,
        event_type: str | None = None,
        *,
        known: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.event_type = event_type
        self.known = tuple(known)
        what = f" for {event_type}" if event_type else ""
        valid = f": valid names: {', '.join(self.known)}" if self.known else ""
        super().__init__(f"no subscriber {shorten(name)}{what}{valid}")


class UnknownDeadLetter(AllocationError):
    """Raised when a dead-letter id names no dead letter (of the event log, or of
    the broker's dead-letter stream ``where``)."""

    def __init__(self, dead_letter_id: int | str, where: str | None = None) -> None:
        self.dead_letter_id = dead_letter_id
        self.where = where
        place = f" in {shorten(where)}" if where else ""
        super().__init__(f"no dead letter with id {shorten(dead_letter_id)}{place}")


class SubscriberBusy(AllocationError):
    """Raised when a subscriber is being caught up elsewhere (e.g. by a worker)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"subscriber {name!r} is being caught up by another process: try again"
        )


class UnknownMessage(AllocationError):
    """Raised when the bus gets a message it has no handler for, or no message at all."""

    def __init__(self, message: object) -> None:
        self.message = message
        super().__init__(f"no handler for {type(message).__name__}: {shorten(message)}")


class ClaimTaken(AllocationError):
    """Raised by an event store when a unique value (an email, a batch reference)
    is already held by another aggregate; the unit of work turns it into the
    domain's own error where there is one."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        super().__init__(
            f"{claim.kind} {shorten(claim.value)} is already held by another"
        )
