"""Errors of the allocation application, rooted in one class.

AllocationError
├── InvalidQuantity, InvalidEmail, InvalidName, BlankIdentifier   (bad input)
├── EmailAlreadyRegistered, BatchAlreadyExists                    (uniqueness)
├── ConcurrencyConflict                      (raised by adapters, retried by the bus)
├── AlreadyProcessed                         (a redelivery; the bus lets it pass)
├── service_layer.exceptions: InvalidSku, UnknownBatch, UnknownMessage, ...
├── adapters.exceptions: SchemaOutOfDate, MigrationFailed, DatabaseUnavailable
└── config.ConfigurationError
"""

from __future__ import annotations


class AllocationError(Exception):
    """Raised for any failure the application understands and can explain in one line."""


class InvalidQuantity(AllocationError):
    """Raised when a quantity is not a whole number in the allowed range."""

    def __init__(self, qty: object, *, minimum: int, maximum: int) -> None:
        self.qty = qty
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(
            f"invalid quantity {qty!r}: must be a whole number from {minimum} to {maximum}"
        )


class InvalidEmail(AllocationError):
    """Raised when an email address is not of the form name@domain.tld."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"invalid email address {email!r}")


class InvalidName(AllocationError):
    """Raised when a user's name is blank or too long."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"invalid name {name!r}: must be 1 to 200 characters")


class BlankIdentifier(AllocationError):
    """Raised when a reference, sku or order id is empty, padded or too long."""

    def __init__(self, field: str, value: str) -> None:
        self.field = field
        self.value = value
        super().__init__(
            f"invalid {field} {value!r}: must be 1 to 255 characters, "
            "without leading or trailing spaces"
        )


class EmailAlreadyRegistered(AllocationError):
    """Raised when a user registers with an email that another user already has."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"email {email!r} is already registered")


class BatchAlreadyExists(AllocationError):
    """Raised when a batch is added with a reference that is already taken."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        super().__init__(f"batch {reference!r} already exists")


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
