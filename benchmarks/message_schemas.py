"""What one message costs on each schema library we weighed, beside plain dataclasses.

For UserRegistered-shaped messages (three text fields and the envelope) it times what
the bus and the log do with every message: build it (with our text rules), stamp the
envelope on a copy, encode the payload to JSON, and decode it back with validation.
It also says whether each library refuses, where the message is built, the values
issue 8 found in the log (a datetime for a date, a str or a bool for an int).

The candidates: the dataclasses we had (no validation, hand-written JSON), msgspec
Structs (validation only when decoding: building one checks nothing unless
``__post_init__`` does it by hand), and pydantic v2 in strict mode (what we use: the
one declaration validates when built and when decoded).

Run: .venv/bin/python benchmarks/message_schemas.py [--quick]
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import timeit
from typing import Any

import msgspec

from allocation.domain import events, messages, values

_ENVELOPE = {
    "aggregate_version": 1,
    "correlation_id": "c0ffee00-0000-4000-8000-000000000000",
    "causation_id": "c0ffee00-0000-4000-8000-000000000001",
}


@dataclasses.dataclass(frozen=True, slots=True)
class DataclassEvent:
    user_id: str
    name: str
    email: str
    message_id: str = dataclasses.field(default_factory=messages.new_message_id)
    correlation_id: str | None = None
    causation_id: str | None = None
    aggregate_version: int | None = None

    def __post_init__(self) -> None:
        # The same rules as ours, by hand (the dataclasses had only some of them).
        object.__setattr__(self, "name", values.check_name(self.name))
        object.__setattr__(self, "email", values.normalise_email(self.email))


class MsgspecEvent(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    name: str
    email: str
    message_id: str = msgspec.field(default_factory=messages.new_message_id)
    correlation_id: str | None = None
    causation_id: str | None = None
    aggregate_version: int | None = None

    def __post_init__(self) -> None:
        # msgspec checks types only when decoding; the text rules still need Python.
        msgspec.structs.force_setattr(self, "name", values.check_name(self.name))
        msgspec.structs.force_setattr(self, "email", values.normalise_email(self.email))


_PAYLOAD_FIELDS = ("user_id", "name", "email")
_MSGSPEC_ENCODER = msgspec.json.Encoder()
_MSGSPEC_DECODER = msgspec.json.Decoder(MsgspecEvent)


def _dataclass_ops() -> dict[str, Any]:
    built = DataclassEvent(user_id="u-1", name="Иван", email="ivan@example.com")
    encoded = json.dumps({name: getattr(built, name) for name in _PAYLOAD_FIELDS})
    return {
        "build": lambda: DataclassEvent(
            user_id="u-1", name="Иван", email="ivan@example.com"
        ),
        "stamp": lambda: dataclasses.replace(built, **_ENVELOPE),
        "encode": lambda: json.dumps(
            {name: getattr(built, name) for name in _PAYLOAD_FIELDS}
        ),
        "decode": lambda: DataclassEvent(
            **json.loads(encoded), message_id="m-1", **_ENVELOPE
        ),
    }


def _msgspec_ops() -> dict[str, Any]:
    built = MsgspecEvent(user_id="u-1", name="Иван", email="ivan@example.com")
    whole = _MSGSPEC_ENCODER.encode(msgspec.structs.replace(built, message_id="m-1"))
    return {
        "build": lambda: MsgspecEvent(
            user_id="u-1", name="Иван", email="ivan@example.com"
        ),
        "stamp": lambda: msgspec.structs.replace(built, **_ENVELOPE),
        "encode": lambda: _MSGSPEC_ENCODER.encode(built),
        "decode": lambda: _MSGSPEC_DECODER.decode(whole),
    }


def _pydantic_ops() -> dict[str, Any]:
    built = events.UserRegistered(user_id="u-1", name="Иван", email="ivan@example.com")
    encoded = built.payload_json()
    return {
        "build": lambda: events.UserRegistered(
            user_id="u-1", name="Иван", email="ivan@example.com"
        ),
        "stamp": lambda: built.stamped(**_ENVELOPE),
        "encode": built.payload_json,
        "decode": lambda: messages.decode(
            "user_registered", encoded, message_id="m-1", **_ENVELOPE
        ),
    }


def _refuses_a_datetime_when_built(kind: str) -> bool:
    moment = datetime.datetime(2030, 1, 1, 12, 0)
    if kind == "pydantic (ours)":
        try:
            events.BatchCreated(ref="b", sku="s", purchased_quantity=1, eta=moment)
        except messages.InvalidMessage:
            return True
        return False

    class Batch(msgspec.Struct):
        eta: datetime.date | None

    @dataclasses.dataclass
    class BatchDataclass:
        eta: datetime.date | None

    # Neither checks a type when built: both keep the datetime.
    built: Any = Batch(eta=moment) if kind == "msgspec" else BatchDataclass(eta=moment)
    return type(built.eta) is not datetime.datetime


def _time(operation: Any, number: int, repeat: int) -> float:
    return min(timeit.repeat(operation, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    number, repeat = (5_000, 3) if quick else (50_000, 7)
    print(
        f"python {sys.version.split()[0]}, best of {repeat} x {number} calls, µs/call"
    )
    candidates = {
        "dataclasses (before)": _dataclass_ops(),
        "msgspec": _msgspec_ops(),
        "pydantic (ours)": _pydantic_ops(),
    }
    print(f"{'':24}{'build':>8}{'stamp':>8}{'encode':>8}{'decode':>8}{'total':>8}")
    for name, operations in candidates.items():
        figures = [_time(op, number, repeat) for op in operations.values()]
        cells = "".join(f"{figure:8.2f}" for figure in figures)
        print(f"{name:24}{cells}{sum(figures):8.2f}")
    for name in candidates:
        verdict = "refused" if _refuses_a_datetime_when_built(name) else "accepted"
        print(f"{name}: a datetime for a date, when built: {verdict}")
    print(
        "decode: the dataclasses check no type (json.loads and the constructor);"
        " msgspec and pydantic validate every field"
    )


if __name__ == "__main__":
    main()
