"""The base of commands and events: a stable type name, an id and a JSON-safe payload."""

from __future__ import annotations

import dataclasses
import datetime
import typing
import uuid
from typing import Any, ClassVar, Self

_JSON_SCALARS = (str, int, float, bool, type(None))
# Envelope fields: they travel with a message but are not part of its payload, and
# two messages with the same payload are equal whatever their ids.
METADATA_FIELDS = frozenset(
    {"message_id", "correlation_id", "causation_id", "aggregate_version"}
)


def new_message_id() -> str:
    """A fresh, globally unique message id (a UUID4 in its usual text form)."""
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A command or an event.

    Subclasses set ``TYPE``, the name under which the message is logged and
    published; it must never change once messages of that type are stored.

    Attributes:
        message_id: unique per message; the idempotency key of its handlers.
        correlation_id: the id of the first message of the chain this one is part
            of (None for a message that starts a chain).
        causation_id: the id of the message whose handling produced this one.
    """

    TYPE: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Message]]] = {}

    message_id: str = dataclasses.field(
        default_factory=new_message_id, kw_only=True, compare=False, repr=False
    )
    correlation_id: str | None = dataclasses.field(
        default=None, kw_only=True, compare=False, repr=False
    )
    causation_id: str | None = dataclasses.field(
        default=None, kw_only=True, compare=False, repr=False
    )

    def __init_subclass__(cls) -> None:
        # No super() call: slots=True rebuilds the class, which breaks its __class__ cell.
        if not cls.TYPE:
            return
        known = Message._registry.get(cls.TYPE)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"message type {cls.TYPE!r} is used by {known} and {cls}")
        Message._registry[cls.TYPE] = cls

    def to_payload(self) -> dict[str, Any]:
        """Return the fields as a dict that ``json.dumps`` accepts."""
        payload: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.name in METADATA_FIELDS:
                continue
            value = getattr(self, field.name)
            if isinstance(value, datetime.date):
                value = value.isoformat()
            elif not isinstance(value, _JSON_SCALARS):
                raise TypeError(f"{type(self).__name__}.{field.name} is not JSON-safe")
            payload[field.name] = value
        return payload

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], **metadata: str | int | None
    ) -> Self:
        """Rebuild a message from what ``to_payload`` returned, plus its metadata."""
        values = {**payload, **metadata}
        for name in cls._fields_holding_dates():
            if isinstance(values.get(name), str):
                values[name] = datetime.date.fromisoformat(values[name])
        return cls(**values)

    @property
    def chain_id(self) -> str:
        """The correlation id that messages caused by this one carry."""
        return self.correlation_id or self.message_id

    @classmethod
    def _fields_holding_dates(cls) -> frozenset[str]:
        # Resolved once per class: get_type_hints is slow and the answer never changes.
        cached = cls.__dict__.get("_date_fields_cache")
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = frozenset(
                field.name
                for field in dataclasses.fields(cls)
                if _holds_date(hints.get(field.name))
            )
            type.__setattr__(cls, "_date_fields_cache", cached)
        return typing.cast("frozenset[str]", cached)


def _holds_date(hint: object) -> bool:
    return hint is datetime.date or datetime.date in typing.get_args(hint)


def message_class(type_name: str) -> type[Message]:
    """Return the message class registered under ``type_name`` (KeyError if none)."""
    return Message._registry[type_name]
