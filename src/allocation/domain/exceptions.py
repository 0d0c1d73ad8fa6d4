"""Errors of the allocation application, rooted in one class.

AllocationError
├── InvalidQuantity, InvalidEmail, InvalidName, BlankIdentifier   (bad input)
├── InvalidMessage       a message of the wrong shape: built, decoded or upcast
├── EmailAlreadyRegistered, BatchAlreadyExists                    (uniqueness)
├── EventNotApplicable, EventOutOfSequence, InvalidSnapshot  (folding a stream)
├── ConcurrencyConflict                      (raised by adapters, retried by the bus)
├── AlreadyProcessed                         (a redelivery; the bus lets it pass)
├── service_layer.exceptions: InvalidSku, UnknownBatch, UnknownMessage, ...
├── adapters.exceptions: SchemaOutOfDate, MigrationFailed, DatabaseUnavailable,
│                        DataRefused, BrokerUnavailable
└── config.ConfigurationError
"""

from __future__ import annotations

# Error lines quote the input that caused them, but never more than this much of it:
# a 10,000-character name must not make a 10 kB line.
_MAX_QUOTED = 80


def shorten(value: object, limit: int = _MAX_QUOTED) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | bytes) else "cut"
    return f"{text[: limit - 1]}… ({size})"


class AllocationError(Exception):
    """Raised for any failure the application understands and can explain in one line."""


class InvalidQuantity(AllocationError):
    """Raised when a quantity is not a whole number in the allowed range."""

    def __init__(self, qty: object, *, minimum: int, maximum: int) -> None:
        self.qty = qty
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(
            f"invalid quantity {shorten(qty)}: "
            f"must be a whole number from {minimum} to {maximum}"
        )


class InvalidEmail(AllocationError):
    """Raised when an email address is not of the form name@domain.tld."""

    def __init__(self, email: object) -> None:
        self.email = email
        super().__init__(f"invalid email address {shorten(email)}")


class InvalidName(AllocationError):
    """Raised when a user's name is blank, too long or holds control characters."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(
            f"invalid name {shorten(name)}: must be 1 to 200 characters, "
            "without control characters"
        )


class BlankIdentifier(AllocationError):
    """Raised when an identifier is empty, padded, too long or holds control
    characters (a reference, sku, order id, user id or message id)."""

    def __init__(self, field: str, value: object, *, maximum: int = 255) -> None:
        self.field = field
        self.value = value
        self.maximum = maximum
        super().__init__(
            f"invalid {field} {shorten(value)}: must be 1 to {maximum} characters, "
            "without leading or trailing spaces, control characters or invisible "
            "marks"
        )


class EmailAlreadyRegistered(AllocationError):
    """Raised when a user registers with an email that another user already has."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"email {shorten(email)} is already registered")


class BatchAlreadyExists(AllocationError):
    """Raised when a batch is added with a reference that is already taken."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        super().__init__(f"batch {shorten(reference)} already exists")


class InvalidMessage(AllocationError):
    """Raised when a message cannot be built or decoded: a field of the wrong type,
    a missing or unknown field, text that is not JSON, or a name no message has.

    Attributes:
        message_type: the message's TYPE (or the name that was given).
        problems: one short line per field that is wrong.
    """

    def __init__(self, message_type: str, problems: list[str]) -> None:
        self.message_type = message_type
        self.problems = problems
        super().__init__(
            f"invalid {shorten(message_type, 40)} message: {'; '.join(problems)}"
        )


class AlreadyProcessed(AllocationError):
    """Raised when a subscriber's commit finds the message already recorded as handled.

    The commit is rolled back, so a redelivered message has its effects once; the
    bus treats this as success.
    """

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"message already processed: {detail}")


class ConcurrencyConflict(AllocationError):
    """Raised when another transaction changed an aggregate first; the bus retries it."""

    def __init__(self, aggregate: str, detail: str = "") -> None:
        self.aggregate = aggregate
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"concurrent change to {aggregate}{suffix}")


class EventNotApplicable(AllocationError):
    """Raised when an aggregate is given an event it cannot apply: a type it has no
    apply step for (another aggregate's event, or a new event whose step was
    forgotten), or one naming a part the aggregate does not have (a batch it never
    created, a line that is not allocated): a stream that is not this aggregate's.

    Attributes:
        aggregate_type: the aggregate's AGGREGATE_TYPE.
        event_type: the event's TYPE.
        reason: what does not fit, or "" when the type has no apply step.
    """

    def __init__(self, aggregate_type: str, event_type: str, reason: str = "") -> None:
        self.aggregate_type = aggregate_type
        self.event_type = event_type
        self.reason = reason
        why = reason or f"a {aggregate_type} has no apply step for it"
        super().__init__(f"cannot apply {event_type} to a {aggregate_type}: {why}")


class EventOutOfSequence(AllocationError):
    """Raised when a stream's event is not its aggregate's next version: an event is
    missing before it (a gap) or it repeats a version already applied (a duplicate).

    Attributes:
        aggregate_type, aggregate_id: the stream.
        expected: the version the next event must bring about.
        found: the version the event carries.
    """

    def __init__(
        self, aggregate_type: str, aggregate_id: str, *, expected: int, found: int
    ) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.found = found
        kind = "a gap" if found > expected else "a duplicate"
        super().__init__(
            f"{aggregate_type} {shorten(aggregate_id)}: event of version {found} where"
            f" {expected} comes next ({kind} in the stream)"
        )


class InvalidSnapshot(AllocationError):
    """Raised when a snapshot's state does not fit its aggregate's shape (a field
    missing or of the wrong type): rebuild the aggregate from its events instead.

    Attributes:
        aggregate_type, aggregate_id: the aggregate the snapshot claims to be.
        detail: what does not fit.
    """

    def __init__(self, aggregate_type: str, aggregate_id: str, detail: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.detail = detail
        super().__init__(
            f"snapshot of {aggregate_type} {shorten(aggregate_id)} does not fit: {detail}"
        )
