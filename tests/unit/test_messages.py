"""Commands and events: stable type names, JSON payloads, immutability."""

from __future__ import annotations

import datetime
import inspect
import json
import re
import time
import uuid

import pydantic
import pytest

from allocation.domain import commands, events, messages

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
ETA = datetime.date(2024, 3, 1)


def _concrete(
    module: object, base: type[messages.Message]
) -> list[type[messages.Message]]:
    return [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if issubclass(member, base) and member is not base
    ]


MESSAGE_CLASSES = [
    *_concrete(commands, commands.Command),
    *_concrete(events, events.Event),
]

# One realistic instance of every message; test_every_message_has_an_example keeps
# this list complete when a message is added.
EXAMPLES: list[messages.Message] = [
    commands.RegisterUser(user_id="u-1", name="Алиса", email="alice@example.com"),
    commands.CreateBatch(ref="b-1", sku="LAMP", qty=10, eta=ETA),
    commands.CreateBatch(ref="b-2", sku="LAMP", qty=10, eta=None),
    commands.Allocate(orderid="o-1", sku="LAMP", qty=2),
    commands.ChangeBatchQuantity(ref="b-1", qty=5),
    events.UserRegistered(user_id="u-1", name="Алиса", email="alice@example.com"),
    events.BatchCreated(ref="b-1", sku="LAMP", purchased_quantity=10, eta=ETA),
    events.BatchCreated(ref="b-2", sku="LAMP", purchased_quantity=10, eta=None),
    events.Allocated(orderid="o-1", sku="LAMP", qty=2, batchref="b-1"),
    events.Deallocated(orderid="o-1", sku="LAMP", qty=2, batchref="b-1"),
    events.BatchQuantityChanged(ref="b-1", sku="LAMP", qty=5),
    events.OutOfStock(sku="LAMP", orderid="o-1", qty=2),
    events.ProductImported(
        sku="LAMP",
        batches=(
            events.ImportedBatch(
                ref="b-1",
                purchased_quantity=10,
                eta=ETA,
                allocations=(events.ImportedLine(orderid="o-1", sku="LAMP", qty=2),),
            ),
        ),
    ),
]


EXAMPLE_PARAMS = [
    pytest.param(example, id=f"{type(example).__name__}-{index}")
    for index, example in enumerate(EXAMPLES)
]


def test_the_modules_define_messages() -> None:
    assert commands.RegisterUser in MESSAGE_CLASSES
    assert events.UserRegistered in MESSAGE_CLASSES


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_has_a_snake_case_type(cls: type[messages.Message]) -> None:
    assert cls.TYPE
    assert SNAKE_CASE.fullmatch(cls.TYPE)


def test_message_types_are_unique() -> None:
    types = [cls.TYPE for cls in MESSAGE_CLASSES]

    assert len(types) == len(set(types))


def test_user_registered_type_is_user_registered() -> None:
    assert events.UserRegistered.TYPE == "user_registered"


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_message_class_returns_the_class_of_a_type(
    cls: type[messages.Message],
) -> None:
    assert messages.message_class(cls.TYPE) is cls


def test_message_class_of_an_unknown_type_raises_key_error() -> None:
    with pytest.raises(KeyError):
        messages.message_class("no_such_message")


def test_a_type_cannot_be_used_by_two_classes() -> None:
    with pytest.raises(TypeError, match="user_registered"):

        class Impostor(events.Event):
            TYPE = "user_registered"

    assert messages.message_class("user_registered") is events.UserRegistered


def test_every_message_has_an_example() -> None:
    assert {type(example) for example in EXAMPLES} == set(MESSAGE_CLASSES)


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_payload_round_trips_through_json(message: messages.Message) -> None:
    payload = message.to_payload()

    assert json.loads(json.dumps(payload)) == payload


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_from_payload_rebuilds_an_equal_message(message: messages.Message) -> None:
    payload = json.loads(json.dumps(message.to_payload()))

    assert type(message).from_payload(payload) == message


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_message_class_and_from_payload_rebuild_a_stored_message(
    message: messages.Message,
) -> None:
    stored = json.dumps({"name": message.TYPE, "payload": message.to_payload()})

    row = json.loads(stored)
    rebuilt = messages.message_class(row["name"]).from_payload(row["payload"])

    assert rebuilt == message


def test_a_date_is_stored_as_an_iso_string() -> None:
    event = events.BatchCreated(ref="b-1", sku="LAMP", purchased_quantity=10, eta=ETA)

    assert event.to_payload()["eta"] == "2024-03-01"


def test_a_missing_eta_is_stored_as_null() -> None:
    command = commands.CreateBatch(ref="b-1", sku="LAMP", qty=10)

    assert json.dumps(command.to_payload()["eta"]) == "null"


def test_rebuilt_eta_is_a_date() -> None:
    payload = json.loads(
        json.dumps(commands.CreateBatch("b-1", "LAMP", 1, ETA).to_payload())
    )

    rebuilt = commands.CreateBatch.from_payload(payload)

    assert rebuilt.eta == ETA
    assert isinstance(rebuilt.eta, datetime.date)


def test_the_payload_does_not_hold_the_type() -> None:
    payload = events.OutOfStock(sku="LAMP", orderid="o-1", qty=2).to_payload()

    assert payload == {"sku": "LAMP", "orderid": "o-1", "qty": 2}


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_messages_are_frozen(message: messages.Message) -> None:
    field = message.PAYLOAD_FIELDS[0]

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(message, field, "changed")


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_messages_are_hashable(message: messages.Message) -> None:
    assert hash(message) == hash(type(message).from_payload(message.to_payload()))


def test_message_ids_are_uuid7_and_sort_in_the_order_they_were_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Time-ordered ids keep the indexes keyed by them growing at one end."""
    start = 1_790_000_000_123_456_789  # nanoseconds since the epoch
    clock = iter(range(start, start + 100 * 300, 300))
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))

    made = [messages.new_message_id() for _ in range(100)]

    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert int(made[0].replace("-", "")[:12], 16) == start // 1_000_000
