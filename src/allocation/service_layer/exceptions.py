"""Errors of the service layer, under ``AllocationError``.

AllocationError
├── InvalidSku        an order names a sku that has no batches
├── UnknownBatch      a batch reference that does not exist
├── UnknownSubscriber a subscriber name that no handler has
├── UnknownDeadLetter a dead-letter id that does not exist
├── SubscriberBusy    another process is catching that subscriber up
├── UnknownMessage    the bus was handed something it has no handler for
├── ClaimTaken        a unique value another aggregate holds (raised by stores)
├── IdempotencyKeyLost  a request's key was taken over before its commit (raised by stores)
│   Raised by adapters, handled here (retried, dead-lettered, reported):
├── DatabaseUnavailable   the database cannot be reached, opened or written (transient)
├── DataRefused           the database refused a value (the input's fault: not retried)
├── UnreadableLogEntry    a log row holds no event this version can read
├── BrokerRefused         the broker answered no (a key of another type, ...)
└── BrokerUnavailable     the message broker cannot be reached (transient)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from allocation.domain.exceptions import AllocationError, shorten
from allocation.service_layer.masking import mask_secrets, mask_url

# A driver's reason quotes the value it refused: never more than this much of it.
_MAX_REASON = 160
_MAX_URL = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

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


class IdempotencyKeyLost(AllocationError):
    """Raised by an event store when a request completes an idempotency key that
    is no longer its own: its lease ended and another request took the key over,
    or it was purged. The command's transaction rolls back, so only the new
    holder's effect remains."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {shorten(key)} was taken over: its lease had ended"
        )


class UnreadableLogEntry(AllocationError):
    """Raised when a row of the event log holds no event this version can read: it
    was edited by hand, written by another program, or by a newer version."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = cut_reason(reason)
        super().__init__(
            f"the event log's entry at position {position} cannot be read: "
            f"{self.reason}"
        )


class DatabaseUnavailable(AllocationError):
    """Raised when the database cannot be reached, opened or written.

    A connection refused or lost, too many connections, a file that cannot be
    opened: the same command may succeed later, so consumers retry it.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = cut_reason(mask_secrets(reason, url))
        super().__init__(f"database {_cut_url(self.url)} is unavailable: {self.reason}")


class DataRefused(AllocationError):
    """Raised when the database refuses a value: out of range, too long, not storable.

    The input is at fault, not the database: the same command fails again, so the
    CLI exits 1 and a consumer dead-letters it instead of retrying.
    """

    def __init__(self, reason: str) -> None:
        self.reason = cut_reason(mask_secrets(reason))
        super().__init__(f"the database refused a value: {self.reason}")


class BrokerRefused(AllocationError):
    """Raised when the broker answers but refuses a command: a key of another type
    (WRONGTYPE), a database number it does not have, a malformed id. Retrying the
    same command cannot help; the setting or the data must change."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = cut_reason(mask_secrets(reason, url))
        super().__init__(f"broker {_cut_url(self.url)} refused: {self.reason}")


class BrokerUnavailable(AllocationError):
    """Raised when the message broker cannot be reached or refuses a write."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = cut_reason(mask_secrets(reason, url))
        super().__init__(f"broker {_cut_url(self.url)} is unavailable: {self.reason}")


def _cut_url(url: str) -> str:
    """A masked URL as an error line quotes it: the start names the database."""
    return url if len(url) <= _MAX_URL else f"{url[: _MAX_URL - 1]}…"


def cut_reason(reason: str) -> str:
    """The first line of ``reason``, at most about _MAX_REASON characters.

    A reason may quote input (a revision, a value): a control character left in it
    would reach the terminal, so each is shown escaped.
    """
    lines = reason.strip().splitlines()
    line = _CONTROL.sub(
        lambda match: repr(match.group())[1:-1], lines[0] if lines else ""
    )
    line = line or "no reason given"
    if len(line) <= _MAX_REASON:
        return line
    return f"{line[: _MAX_REASON - 1]}… ({len(line)} characters)"
