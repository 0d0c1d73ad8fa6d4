"""The base of commands and events: one strict schema each, with a stable type name.

Every message is a frozen pydantic model in strict mode: the one declaration
validates a message where it is built (a ``datetime`` for a ``date``, a ``str`` or a
``bool`` for an ``int`` are refused), encodes it, decodes it from outside (the log,
the broker, the command line) and generates its JSON Schema. So an event that could
not be read back can never be appended. A message also carries ``SCHEMA_VERSION``:
the log records it, and an older stored shape is upcast on read.
"""

from __future__ import annotations

import functools
import json
import os
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

import pydantic
import pydantic_core

from allocation.domain import values
from allocation.domain.exceptions import InvalidMessage, shorten

if TYPE_CHECKING:
    from pydantic_core import core_schema

# Envelope fields: they travel with a message but are not part of its payload, and
# two messages with the same payload are equal whatever their ids.
METADATA_FIELDS = frozenset(
    {"message_id", "correlation_id", "causation_id", "aggregate_version"}
)
# Per field, at most this many problems are named in an error line.
_MAX_PROBLEMS = 5


def new_message_id() -> str:
    """A fresh, globally unique message id: a UUID version 7 in its usual text form.

    Time-ordered (RFC 9562: milliseconds since the epoch, then a fraction of the
    millisecond, then 62 random bits): ids made one after the other sort one after
    the other, so the indexes keyed by them (the log's message ids, what each
    subscriber has handled) grow at their end instead of at random places.
    Formatted by hand: building a ``uuid.UUID`` costs several times as much, and
    every command and event needs an id.
    """
    now = time.time_ns()
    # 48 bits of milliseconds, the version, 12 bits of the millisecond's fraction.
    high = now // 1_000_000 << 16 | 0x7000 | now % 1_000_000 * 4096 // 1_000_000
    first = f"{high:016x}"
    raw = bytearray(os.urandom(8))
    raw[0] = raw[0] & 0x3F | 0x80  # the RFC 9562 variant, then 62 random bits
    rest = raw.hex()
    return f"{first[:8]}-{first[8:12]}-{first[12:]}-{rest[:4]}-{rest[4:]}"


class Message(pydantic.BaseModel):
    """A command or an event.

    Subclasses set ``TYPE``, the name under which the message is logged and
    published; it must never change once messages of that type are stored. When a
    payload's shape changes, raise ``SCHEMA_VERSION`` and add an entry to
    ``UPCASTERS`` that turns a payload of the previous version into the new one.

    Fields may be given by keyword or, in declaration order, by position (as the
    book does: ``commands.Allocate("o1", "LAMP", 10)``).

    Attributes:
        message_id: unique per message; the idempotency key of its handlers.
        correlation_id: the id of the first message of the chain this one is part
            of (None for a message that starts a chain).
        causation_id: the id of the message whose handling produced this one.
    """

    model_config = pydantic.ConfigDict(
        strict=True, frozen=True, extra="forbid", hide_input_in_errors=True
    )

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    # A realistic payload: shown by `allocation messages`, put in the JSON Schema,
    # and checked by the tests to decode into the message.
    EXAMPLE: ClassVar[Mapping[str, Any]] = {}
    UPCASTERS: ClassVar[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
    PAYLOAD_FIELDS: ClassVar[tuple[str, ...]] = ()
    _PAYLOAD_SET: ClassVar[frozenset[str]] = frozenset()
    _ENVELOPE_FIELDS: ClassVar[frozenset[str]] = frozenset()
    _registry: ClassVar[dict[str, type[Message]]] = {}

    message_id: values.MessageId = pydantic.Field(
        default_factory=new_message_id, repr=False
    )
    correlation_id: values.MessageId | None = pydantic.Field(default=None, repr=False)
    causation_id: values.MessageId | None = pydantic.Field(default=None, repr=False)

    def __init__(self, /, *args: object, **fields: Any) -> None:
        if args:
            _add_positional(type(self), args, fields)
        try:
            # What BaseModel.__init__ does, without its extra frame: every command
            # and event passes here.
            self.__pydantic_validator__.validate_python(fields, self_instance=self)
        except pydantic.ValidationError as error:
            raise _invalid(type(self), error) from None

    # Marks this __init__ as a plain constructor: otherwise pydantic would route
    # decoding (model_validate_json) through it with the raw JSON values, and in
    # strict Python mode a date written as text would be refused.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # pydantic's marker

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        payload = tuple(
            name for name in cls.model_fields if name not in METADATA_FIELDS
        )
        type.__setattr__(cls, "PAYLOAD_FIELDS", payload)
        type.__setattr__(cls, "_PAYLOAD_SET", frozenset(payload))
        type.__setattr__(
            cls, "_ENVELOPE_FIELDS", METADATA_FIELDS.intersection(cls.model_fields)
        )
        if not cls.TYPE:
            return
        known = Message._registry.get(cls.TYPE)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"message type {cls.TYPE!r} is used by {known} and {cls}")
        Message._registry[cls.TYPE] = cls

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._payload_values() == other._payload_values()

    def __hash__(self) -> int:
        return hash((type(self), self._payload_values()))

    def _payload_values(self) -> tuple[object, ...]:
        state = self.__dict__
        return tuple(state[name] for name in self.PAYLOAD_FIELDS)

    @property
    def payload(self) -> Mapping[str, Any]:
        """The message's own fields (no envelope), as a read-only mapping.

        What the article's handlers read: ``event.payload["email"]``.
        """
        state = self.__dict__
        return types.MappingProxyType(
            {name: state[name] for name in self.PAYLOAD_FIELDS}
        )

    @property
    def chain_id(self) -> str:
        """The correlation id that messages caused by this one carry."""
        return self.correlation_id or self.message_id

    def to_payload(self) -> dict[str, Any]:
        """The payload as a dict that ``json.dumps`` accepts (dates as ISO text)."""
        return self.model_dump(mode="json", include=set(self._PAYLOAD_SET))

    def payload_json(self) -> str:
        """The payload encoded as JSON text, as the log stores and the broker carries it."""
        return self.model_dump_json(include=set(self._PAYLOAD_SET))

    def stamped(self, **envelope: Any) -> Self:
        """A copy with envelope fields set (ids, the aggregate version).

        The envelope's values are the unit of work's own (ids it read, versions it
        counted), so they are set as they are, like ``model_copy(update=...)`` does,
        without its generic bookkeeping: every logged event is stamped.
        """
        copy = self.__class__.__new__(self.__class__)
        object.__setattr__(copy, "__dict__", {**self.__dict__, **envelope})
        object.__setattr__(
            copy,
            "__pydantic_fields_set__",
            self.__pydantic_fields_set__ | envelope.keys(),
        )
        object.__setattr__(copy, "__pydantic_extra__", None)
        object.__setattr__(copy, "__pydantic_private__", None)
        return copy

    @classmethod
    def payload_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the payload (what the log stores and brokers carry),
        generated from this very declaration."""
        schema = cls.model_json_schema()
        properties = schema.get("properties", {})
        for name in METADATA_FIELDS:
            properties.pop(name, None)
        schema["required"] = [
            name for name in schema.get("required", []) if name not in METADATA_FIELDS
        ]
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": cls.TYPE,
            **{key: value for key, value in schema.items() if key != "title"},
            "examples": [dict(cls.EXAMPLE)],
            "x-schema-version": cls.SCHEMA_VERSION,
        }

    @classmethod
    def from_json(
        cls,
        payload_json: str | bytes,
        *,
        schema_version: int | None = None,
        **envelope: object,
    ) -> Self:
        """Decode a payload (JSON text) and its envelope, validating both.

        ``schema_version`` is the version the payload was written with (None: the
        current one); an older payload is upcast first.

        Raises:
            InvalidMessage: the text is not a valid payload of this message.
        """
        if schema_version is not None and schema_version != cls.SCHEMA_VERSION:
            payload_json = _upcast(cls, payload_json, schema_version)
        try:
            validator = _FIELDS_VALIDATORS[cls]
        except KeyError:
            validator = _FIELDS_VALIDATORS[cls] = _fields_validator(cls)
        try:
            if validator is None:
                message = cls.__pydantic_validator__.validate_json(payload_json)
                state, fields_set = message.__dict__, message.__pydantic_fields_set__
            else:
                state, _, fields_set = validator.validate_json(payload_json)
        except pydantic.ValidationError as error:
            raise _invalid(cls, error) from None
        smuggled = fields_set & METADATA_FIELDS
        if smuggled:
            raise InvalidMessage(
                cls.TYPE, [f"{name}: not a payload field" for name in sorted(smuggled)]
            )
        checked = _checked_envelope(cls, envelope)
        state.update(checked)
        fields_set.update(checked)
        if validator is None:
            return cast("Self", message)
        if "message_id" not in checked:
            state["message_id"] = new_message_id()  # the field's own default
        # What the model's own validator does with its fields' output (as
        # ``stamped`` does): the message is new, and nobody else holds it yet.
        built = _new_object(cls)
        _set_attribute(built, "__dict__", state)
        _set_attribute(built, "__pydantic_fields_set__", fields_set)
        _set_attribute(built, "__pydantic_extra__", None)
        _set_attribute(built, "__pydantic_private__", None)
        return built

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], **envelope: object) -> Self:
        """Rebuild a message from what ``to_payload`` returned, plus its envelope."""
        return cls.from_json(json.dumps(dict(payload)), schema_version=None, **envelope)


_new_object = object.__new__
_set_attribute = object.__setattr__


def _fields_validator(cls: type[Message]) -> pydantic_core.SchemaValidator | None:
    """A validator of the fields of ``cls``, from its own schema, except that a
    payload without a message id (every payload) gets None for it instead of a
    fresh id: a decoded message takes its id from its envelope, and making one for
    nothing costs about half of validating an event. None when the schema is not
    of the shape this expects: then the class's own validator decodes.

    (pydantic builds any schema of a model class into that class's own
    validator, so it is the fields' schema that is taken.)
    """
    model: dict[str, Any] = dict(cls.__pydantic_core_schema__)
    try:
        fields_schema = dict(model["schema"])
        fields = fields_schema["fields"] = dict(fields_schema["fields"])
        field = fields["message_id"] = dict(fields["message_id"])
        default = field["schema"] = dict(field["schema"])
        plain = (
            model["type"] == "model"
            and fields_schema["type"] == "model-fields"
            and default["type"] == "default"
            and not model.get("custom_init")
            and not model.get("root_model")
            and model.get("post_init") is None
            and model["config"].get("extra_fields_behavior") == "forbid"
        )
        if not plain:
            return None
        default.pop("default_factory")
    except KeyError:
        return None
    default.pop("default_factory_takes_data", None)
    default["default"] = None
    return pydantic_core.SchemaValidator(
        cast("core_schema.CoreSchema", fields_schema), config=model["config"]
    )


# Each message class's _fields_validator, made at its first decoding.
_FIELDS_VALIDATORS: dict[type[Message], pydantic_core.SchemaValidator | None] = {}

# How an envelope field is named in an error.
_LABELS = {name: name.replace("_", " ") for name in METADATA_FIELDS}


def _checked_envelope(
    cls: type[Message], envelope: dict[str, object]
) -> dict[str, object]:
    """The envelope of a decoded message, held to the rules of its fields (checked
    in place: every event read from the log passes here)."""
    allowed = cls._ENVELOPE_FIELDS
    for name, value in envelope.items():
        if name not in allowed:
            raise InvalidMessage(cls.TYPE, [f"{name}: not an envelope field"])
        if name == "aggregate_version":
            if value is not None and (type(value) is not int or value < 1):
                raise InvalidMessage(cls.TYPE, [f"{name}: not a version (1 or more)"])
        elif isinstance(value, str):
            envelope[name] = values.check_identifier(
                _LABELS[name], value, values.MAX_USER_ID
            )
        elif value is not None or name == "message_id":
            raise InvalidMessage(cls.TYPE, [f"{name}: not text"])
    return envelope


def _registry() -> dict[str, type[Message]]:
    _load_application_messages()
    return Message._registry


@functools.cache
def _load_application_messages() -> None:
    # A class registers itself when its module is imported: import the modules that
    # declare the application's messages (once), so a lookup never depends on what
    # the caller happened to import before.
    from allocation.domain import commands, events  # noqa: F401 - see above


def message_class(type_name: str) -> type[Message]:
    """Return the message class registered under ``type_name`` (KeyError if none)."""
    return _registry()[type_name]


def message_classes() -> dict[str, type[Message]]:
    """Every message class by its TYPE, sorted by TYPE."""
    return dict(sorted(_registry().items()))


def decode(
    name: str,
    payload_json: str | bytes,
    *,
    schema_version: int | None = None,
    **envelope: object,
) -> Message:
    """The message ``name`` whose payload is ``payload_json`` (see Message.from_json).

    Raises:
        InvalidMessage: no message has this name, or the payload does not fit it.
    """
    return named(name).from_json(
        payload_json, schema_version=schema_version, **envelope
    )


def named(name: str) -> type[Message]:
    """The message class whose TYPE is ``name``, as met in a message from outside.

    Raises:
        InvalidMessage: no message has this name.
    """
    kind = _registry().get(name)
    if kind is None:
        raise InvalidMessage(name, ["no message has this name"])
    return kind


def _add_positional(
    cls: type[Message], args: tuple[object, ...], fields: dict[str, Any]
) -> None:
    names = cls.PAYLOAD_FIELDS
    if len(args) > len(names):
        raise InvalidMessage(
            cls.TYPE, [f"takes {len(names)} positional fields, {len(args)} given"]
        )
    for name, value in zip(names, args, strict=False):
        if name in fields:
            raise InvalidMessage(cls.TYPE, [f"{name}: given twice"])
        fields[name] = value


def _upcast(cls: type[Message], payload_json: str | bytes, version: int) -> str:
    if version > cls.SCHEMA_VERSION:
        raise InvalidMessage(
            cls.TYPE,
            [
                (
                    f"written with schema version {version}, this version of "
                    f"allocation reads up to {cls.SCHEMA_VERSION}"
                )
            ],
        )
    try:
        payload = json.loads(payload_json)
    except ValueError:
        raise InvalidMessage(cls.TYPE, ["the payload is not JSON"]) from None
    for step in range(version, cls.SCHEMA_VERSION):
        upcaster = cls.UPCASTERS.get(step)
        if upcaster is None or not isinstance(payload, dict):
            raise InvalidMessage(
                cls.TYPE, [f"no way to read schema version {step} any more"]
            )
        payload = upcaster(payload)
    return json.dumps(payload, ensure_ascii=False)


def _invalid(
    cls: type[pydantic.BaseModel], error: pydantic.ValidationError
) -> InvalidMessage:
    """Our error for pydantic's: one short line per wrong field, no input echoed whole."""
    problems = []
    for detail in error.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]:
        where = ".".join(str(part) for part in detail["loc"]) or "payload"
        # A field name comes from outside too: {"x" * 20_000_000: 1} is a payload.
        where = where if len(where) <= 40 else shorten(where, 40)
        problems.append(f"{where}: {_explain(detail)}")
    if error.error_count() > _MAX_PROBLEMS:
        problems.append(f"and {error.error_count() - _MAX_PROBLEMS} more")
    name = getattr(cls, "TYPE", "") or cls.__name__
    return InvalidMessage(name, problems)


def _explain(detail: Any) -> str:
    kind = detail["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "not a field of this message"
    if kind == "json_invalid":
        return "not valid JSON"
    text = str(detail["msg"])
    return text if len(text) <= 120 else f"{text[:119]}…"
