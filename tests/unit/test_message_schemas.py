"""Strict message schemas: wrong types refused where built and where decoded (issue 8)."""

from __future__ import annotations

import datetime
import json
import math
import re
import unicodedata
import uuid
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocation.domain import commands, events, exceptions, messages, values
from tests.unit.test_messages import EXAMPLE_PARAMS, MESSAGE_CLASSES

ETA = datetime.date(2030, 1, 1)

# Every value the old dataclasses let through to the log or the database.
WRONG_ETAS = [
    datetime.datetime(2030, 1, 1, 12, 0),  # issue 8: a datetime is a date
    "2030-01-01",
    20300101,
    True,
    math.nan,
]
WRONG_QUANTITIES = [True, False, 5.0, "5", math.nan, math.inf, None]


@pytest.mark.parametrize("eta", WRONG_ETAS, ids=repr)
def test_a_batch_with_an_eta_that_is_no_date_is_refused(eta: object) -> None:
    with pytest.raises(exceptions.InvalidMessage, match="eta"):
        commands.CreateBatch(ref="b1", sku="LAMP", qty=5, eta=eta)


@pytest.mark.parametrize("qty", WRONG_QUANTITIES, ids=repr)
def test_a_quantity_that_is_no_int_is_refused(qty: object) -> None:
    with pytest.raises(exceptions.InvalidMessage, match="qty"):
        commands.Allocate(orderid="o1", sku="LAMP", qty=qty)


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(exceptions.InvalidMessage, match="colour: not a field"):
        commands.Allocate(orderid="o1", sku="LAMP", qty=1, colour="red")


def test_a_missing_field_is_refused() -> None:
    with pytest.raises(exceptions.InvalidMessage, match="qty: required"):
        commands.Allocate(orderid="o1", sku="LAMP")  # type: ignore[call-arg]  # on purpose


def test_fields_may_be_given_by_position_as_in_the_book() -> None:
    assert commands.Allocate("o1", "LAMP", 10) == commands.Allocate(
        orderid="o1", sku="LAMP", qty=10
    )


@pytest.mark.parametrize(
    "text",
    ["a\nb", "a\tb", "a\x00b", "\x1b[2J", "a\x85b", "a\x7fb", "a\ud800b"],
    ids=repr,
)
def test_identifiers_refuse_control_characters_and_lone_surrogates(text: str) -> None:
    with pytest.raises(exceptions.BlankIdentifier):
        commands.Allocate(orderid=text, sku="LAMP", qty=1)


def test_a_name_with_a_newline_inside_is_refused() -> None:
    # A newline would forge a second "[Log Service]" line on the console.
    with pytest.raises(exceptions.InvalidName):
        commands.RegisterUser(
            user_id="u1", name="Ann\n[Log Service] forged", email="ann@example.com"
        )


def test_text_is_stored_in_nfc() -> None:
    decomposed = "Е\u0308лка"  # Ё written as Е and a combining diaeresis

    command = commands.CreateBatch(ref=decomposed, sku=decomposed, qty=1)

    assert command.ref == command.sku == unicodedata.normalize("NFC", decomposed)


def test_an_error_quotes_at_most_about_eighty_characters_of_the_input() -> None:
    with pytest.raises(exceptions.InvalidName) as caught:
        commands.RegisterUser(user_id="u1", name="x" * 10_000, email="a@b.co")

    assert len(str(caught.value)) < 200
    assert "10000 characters" in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ('{"ref": "b1", "sku": "L", "qty": 1, "eta": "2030-01-01T12:00:00"}', "eta"),
        ('{"ref": "b1", "sku": "L", "qty": "1"}', "qty"),
        ('{"ref": "b1", "sku": "L", "qty": 1.5}', "qty"),
        ('{"ref": "b1", "sku": "L", "qty": true}', "qty"),
        ('{"ref": "b1", "sku": "L", "qty": 12345, "eta": 12345}', "eta"),
        ('{"ref": "b1", "sku": "L", "qty": 1, "message_id": "x"}', "message_id"),
        ('{"ref": "b1", "sku": "L"}', "qty: required"),
        ("{oops", "not valid JSON"),
        ("[1, 2]", "object"),
    ],
)
def test_a_payload_that_does_not_fit_is_refused_on_decoding(
    payload: str, problem: str
) -> None:
    with pytest.raises(exceptions.InvalidMessage, match=problem):
        messages.decode("create_batch", payload, message_id="m-1")


def test_an_unknown_field_with_a_huge_name_makes_a_short_error() -> None:
    huge = "x" * 1_000_000
    payload = f'{{"ref": "b1", "sku": "L", "qty": 1, "{huge}": 1}}'

    with pytest.raises(exceptions.InvalidMessage) as caught:
        messages.decode("create_batch", payload, message_id="m-1")

    assert len(str(caught.value)) < 200


def test_a_name_no_message_has_is_refused_on_decoding() -> None:
    with pytest.raises(exceptions.InvalidMessage, match="no message has this name"):
        messages.decode("drop_tables", "{}", message_id="m-1")


def test_an_envelope_field_is_validated_on_decoding() -> None:
    with pytest.raises(exceptions.BlankIdentifier, match="message id"):
        messages.decode(
            "allocate",
            '{"orderid": "o1", "sku": "L", "qty": 1}',
            message_id="x" * 37,
        )


def test_a_payload_written_by_a_newer_schema_is_refused() -> None:
    with pytest.raises(exceptions.InvalidMessage, match="schema version 2"):
        messages.decode(
            "allocate",
            '{"orderid": "o1", "sku": "L", "qty": 1}',
            schema_version=2,
            message_id="m-1",
        )


def test_an_older_payload_is_upcast_on_reading() -> None:
    class Renamed(events.Event):
        TYPE = "test_renamed"
        SCHEMA_VERSION = 2
        UPCASTERS = {1: lambda old: {"title": old["name"]}}
        title: str

    old = messages.decode(
        "test_renamed", '{"name": "kept"}', schema_version=1, message_id="m-1"
    )

    assert old == Renamed(title="kept")


def test_batch_created_of_schema_version_1_is_read_with_purchased_quantity() -> None:
    """BatchCreated version 2 renamed ``qty`` to the batch's ``purchased_quantity``."""
    old = messages.decode(
        "batch_created",
        '{"ref": "b1", "sku": "LAMP", "qty": 7, "eta": "2030-01-01"}',
        schema_version=1,
        message_id="m-1",
    )

    assert old == events.BatchCreated(
        ref="b1", sku="LAMP", purchased_quantity=7, eta=datetime.date(2030, 1, 1)
    )
    assert list(old.to_payload()) == ["ref", "sku", "purchased_quantity", "eta"]


@pytest.mark.parametrize(
    ("payload", "schema_version"),
    [
        ('{"ref": "b1", "sku": "L", "qty": 7, "purchased_quantity": 7}', 1),
        ('{"ref": "b1", "sku": "L", "qty": 7}', 2),
    ],
    ids=["v1-with-both-names", "v2-with-the-old-name"],
)
def test_a_batch_created_that_fits_neither_version_is_refused(
    payload: str, schema_version: int
) -> None:
    with pytest.raises(exceptions.InvalidMessage, match="qty: not a field"):
        messages.decode(
            "batch_created", payload, schema_version=schema_version, message_id="m-1"
        )


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_example_decodes(cls: type[messages.Message]) -> None:
    decoded = cls.from_json(json.dumps(dict(cls.EXAMPLE)), message_id="m-1")

    assert decoded.to_payload() == dict(cls.EXAMPLE)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_decoding_makes_no_id_it_would_throw_away(cls: type[messages.Message]) -> None:
    """A decoded message takes its id from its envelope: its fields are validated
    by the schema's own fields, without the id's default (half of the cost)."""
    assert messages._fields_validator(cls) is not None


def test_a_message_decoded_without_an_id_gets_a_fresh_one() -> None:
    payload = '{"orderid": "o1", "sku": "L", "qty": 1}'

    first, second = (messages.decode("allocate", payload) for _ in range(2))

    assert first.message_id != second.message_id
    assert uuid.UUID(first.message_id).version == 7
    assert "message_id" not in first.model_fields_set


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_has_a_payload_json_schema(cls: type[messages.Message]) -> None:
    schema = cls.payload_schema()

    assert schema["title"] == cls.TYPE
    assert set(schema["properties"]) == set(cls.PAYLOAD_FIELDS)
    assert schema["additionalProperties"] is False
    assert schema["x-schema-version"] == cls.SCHEMA_VERSION


@pytest.mark.parametrize("message", EXAMPLE_PARAMS)
def test_the_payload_is_a_read_only_mapping(message: messages.Message) -> None:
    field = message.PAYLOAD_FIELDS[0]

    assert message.payload[field] == getattr(message, field)
    with pytest.raises(TypeError):
        message.payload[field] = "changed"  # type: ignore[index]  # on purpose


# Arbitrary values of the shapes each field could be handed: the right type with
# any content, and the wrong types.
_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)
_ANY_INT = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64), st.booleans(), st.floats()
)
_ANY_VALUE = st.one_of(
    _ANY_TEXT,
    _ANY_INT,
    st.none(),
    st.dates(),
    st.datetimes(),
)


def _fields_of(cls: type[messages.Message]) -> st.SearchStrategy[dict[str, Any]]:
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in cls.model_fields.items():
        if name in messages.METADATA_FIELDS:
            continue
        annotation = str(field.annotation)
        if "date" in annotation:
            strategies[name] = st.one_of(st.none(), st.dates(), _ANY_VALUE)
        elif "int" in annotation:
            strategies[name] = st.one_of(_ANY_INT, _ANY_VALUE)
        else:
            strategies[name] = st.one_of(_ANY_TEXT, _ANY_VALUE)
    return st.fixed_dictionaries(strategies)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_message_is_refused_with_our_error_or_round_trips_exactly(
    data: st.DataObject,
) -> None:
    cls = data.draw(st.sampled_from(MESSAGE_CLASSES))
    fields = data.draw(_fields_of(cls))
    try:
        message = cls(**fields)
    except exceptions.AllocationError:
        return  # refused with a domain error: never another exception
    stamped = (
        message.stamped(aggregate_version=3)
        if isinstance(message, events.Event)
        else message
    )
    version = {"aggregate_version": 3} if isinstance(message, events.Event) else {}
    decoded = messages.decode(
        cls.TYPE,
        stamped.payload_json(),
        schema_version=cls.SCHEMA_VERSION,
        message_id=stamped.message_id,
        **version,
    )

    assert decoded == message
    assert dict(decoded.payload) == dict(message.payload)
    assert decoded.message_id == message.message_id


@settings(max_examples=300, deadline=None)
@given(text=_ANY_TEXT)
def test_any_identifier_text_is_accepted_in_nfc_or_refused(text: str) -> None:
    try:
        accepted = values.check_identifier("sku", text)
    except exceptions.BlankIdentifier:
        return
    assert accepted == unicodedata.normalize("NFC", text)
    # No control character (Cc: C0, DEL, C1) and no lone surrogate (Cs) survives.
    assert not {unicodedata.category(char) for char in accepted} & {"Cc", "Cs"}


@pytest.mark.parametrize(
    "text",
    ["a\u2028b", "a\u2029b", "abc\u202edcba", "a\u2066b", "a\u200bb", "\ufeffabc"],
    ids=repr,
)
def test_identifiers_refuse_line_separators_bidi_controls_and_invisible_marks(
    text: str,
) -> None:
    """A line separator broke `events list`; U+202E reorders what is shown."""
    with pytest.raises(exceptions.BlankIdentifier):
        commands.Allocate(orderid=text, sku="LAMP", qty=1)


def test_a_name_may_hold_a_zero_width_non_joiner() -> None:
    # Persian and other scripts need it inside words; only identifiers refuse it.
    name = "مهر\u200cنوش"

    assert commands.RegisterUser(user_id="u1", name=name, email="m@x.ir").name == name


# What a JSON document can hold: every character but the lone surrogates.
_JSON_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=500, deadline=None)
@given(text=_JSON_TEXT)
def test_the_json_schema_pattern_of_identifiers_agrees_with_the_validator(
    text: str,
) -> None:
    pattern = commands.Allocate.payload_schema()["properties"]["sku"]["pattern"]
    normalised = unicodedata.normalize("NFC", text)
    try:
        values.check_identifier("sku", normalised)
    except exceptions.BlankIdentifier:
        accepted = False
    else:
        accepted = True

    assert accepted == bool(
        re.fullmatch(pattern, normalised) and len(normalised) <= 255
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decoding_accepts_and_refuses_what_the_schema_itself_does(
    data: st.DataObject,
) -> None:
    cls = data.draw(st.sampled_from(MESSAGE_CLASSES))
    payload = json.dumps(data.draw(_fields_of(cls)), default=str)
    try:
        expected = cls.model_validate_json(payload)
    except (pydantic.ValidationError, exceptions.AllocationError):
        with pytest.raises(exceptions.AllocationError):
            cls.from_json(payload, message_id="m-1")
        return

    decoded = cls.from_json(payload, message_id="m-1")

    assert decoded.to_payload() == expected.to_payload()
    assert decoded.model_fields_set == expected.model_fields_set | {"message_id"}
    assert decoded.message_id == "m-1"
