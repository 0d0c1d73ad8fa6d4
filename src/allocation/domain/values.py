"""The values messages and aggregates share: identifiers, names, emails, quantities.

Each rule is written once, as a function that returns the value in its one stored
form (NFC, trimmed or lower-cased where that is the rule) or raises the domain's
error; the annotated types below attach the same functions to message fields, so a
command, an event and an aggregate can never disagree about what is valid. Text
never holds control characters (C0, C1, DEL) or lone surrogates: they forge log
lines, break tab-separated output and cannot be stored alike by SQLite and
PostgreSQL.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

from allocation.domain import exceptions

MAX_IDENTIFIER = 255
MAX_USER_ID = 36
MAX_NAME = 200
MAX_EMAIL = 254
# The largest value a 32-bit INTEGER column holds, on SQLite and PostgreSQL alike.
MAX_QUANTITY = 2**31 - 1

# Characters no text may hold: C0, DEL and C1 controls, lone surrogates, the line
# and paragraph separators (a line break to many terminals and editors) and the
# bidirectional embeddings, overrides and isolates (they reorder what is shown).
_FORBIDDEN = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSTORABLE = re.compile(f"[{_FORBIDDEN}\ud800-\udfff]")
# Identifiers are looked up by exact text: they also refuse the invisible marks
# (zero-width spaces and joiners, direction marks, the byte order mark) that would
# make two that look the same different.
_INVISIBLE = re.compile("[\u200b-\u200f\ufeff]")
# Deliberately modest: one @, no spaces, a dot in the domain. Real deliverability is
# proven only by sending, so anything stricter rejects valid addresses.
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def clean_text(value: str) -> str | None:
    """``value`` in NFC, or None when it holds a character no field may hold."""
    if _UNSTORABLE.search(value):
        return None
    if value.isascii() or unicodedata.is_normalized("NFC", value):
        return value
    return unicodedata.normalize("NFC", value)


def printable(text: str) -> str:
    """``text`` with every character no field may hold written as its escape
    (``\\n``, ``\\t``, ``\\x1b``, ``\\ud800``): what came from outside, printed or
    logged, can then neither forge a line nor break a tab-separated one nor steer a
    terminal."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(
        lambda found: found.group().encode("unicode_escape").decode("ascii"), text
    )


def check_identifier(field: str, value: str, maximum: int = MAX_IDENTIFIER) -> str:
    """Return ``value`` in NFC, or raise BlankIdentifier when it is unusable.

    Surrounding spaces are refused rather than trimmed: a trimmed write would be
    found by no lookup that used the same untrimmed text.
    """
    if (
        type(value) is str
        and 0 < len(value) <= maximum
        and value.isascii()
        and value.isprintable()  # for ASCII: no control character
        and value[0] != " "
        and value[-1] != " "
    ):
        return value  # the common case, decided without a regex
    cleaned = clean_text(value) if isinstance(value, str) else None
    if (
        not cleaned
        or cleaned != cleaned.strip()
        or len(cleaned) > maximum
        or _INVISIBLE.search(cleaned)
    ):
        raise exceptions.BlankIdentifier(field, value, maximum=maximum)
    return cleaned


def check_quantity(qty: object, *, minimum: int) -> int:
    """Return ``qty`` when it is a whole number from ``minimum`` to MAX_QUANTITY."""
    if (
        isinstance(qty, bool)
        or not isinstance(qty, int)
        or not minimum <= qty <= MAX_QUANTITY
    ):
        raise exceptions.InvalidQuantity(qty, minimum=minimum, maximum=MAX_QUANTITY)
    return qty


def check_name(name: str) -> str:
    """Return ``name`` trimmed and in NFC, or raise InvalidName."""
    if (
        type(name) is str
        and 0 < len(name) <= MAX_NAME
        and name.isprintable()  # no control character, nor any whitespace but " "
        and name[0] != " "
        and name[-1] != " "
        and (name.isascii() or unicodedata.is_normalized("NFC", name))
    ):
        return name  # the common case, decided without a regex

    # Surrounding whitespace (a newline pasted along) is trimmed; inside, a control
    # character is refused.
    cleaned = clean_text(name.strip()) if isinstance(name, str) else None
    if not cleaned or len(cleaned) > MAX_NAME:
        raise exceptions.InvalidName(name)
    return cleaned


def normalise_email(email: str) -> str:
    """Return ``email`` trimmed and lower-cased, or raise InvalidEmail."""
    cleaned = clean_text(email.strip()) if isinstance(email, str) else None
    normalised = cleaned.lower() if cleaned else ""
    if len(normalised) > MAX_EMAIL or not _EMAIL_SHAPE.fullmatch(normalised):
        raise exceptions.InvalidEmail(email)
    return normalised


def _identifier(field: str, maximum: int = MAX_IDENTIFIER) -> object:
    def check(value: str) -> str:
        return check_identifier(field, value, maximum)

    return AfterValidator(check)


def _quantity(minimum: int) -> object:
    def check(qty: int) -> int:
        return check_quantity(qty, minimum=minimum)

    return AfterValidator(check)


# The rules above as JSON Schema patterns (ECMA-262), for other services' checks.
_SCHEMA_FORBIDDEN = r"\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_IDENTIFIER_PATTERN = (
    rf"^[^\s{_SCHEMA_FORBIDDEN}\u200b-\u200f\ufeff]"
    rf"(?:[^{_SCHEMA_FORBIDDEN}\u200b-\u200f\ufeff]*"
    rf"[^\s{_SCHEMA_FORBIDDEN}\u200b-\u200f\ufeff])?$"
)
# For other schemas of identifiers (an HTTP route's path parameters).
IDENTIFIER_PATTERN = _IDENTIFIER_PATTERN
# Names as stored: trimmed, so neither end is a space.
_TEXT_PATTERN = (
    rf"^[^\s{_SCHEMA_FORBIDDEN}](?:[^{_SCHEMA_FORBIDDEN}]*[^\s{_SCHEMA_FORBIDDEN}])?$"
)


def _text_schema(maximum: int, description: str, pattern: str) -> object:
    return Field(
        description=description,
        json_schema_extra={"minLength": 1, "maxLength": maximum, "pattern": pattern},
    )


Sku = Annotated[
    str,
    _identifier("sku"),
    _text_schema(MAX_IDENTIFIER, "stock-keeping unit", _IDENTIFIER_PATTERN),
]
BatchRef = Annotated[
    str,
    _identifier("batch reference"),
    _text_schema(
        MAX_IDENTIFIER, "batch reference, no surrounding spaces", _IDENTIFIER_PATTERN
    ),
]
OrderId = Annotated[
    str,
    _identifier("order id"),
    _text_schema(
        MAX_IDENTIFIER, "order id, no surrounding spaces", _IDENTIFIER_PATTERN
    ),
]
UserId = Annotated[
    str,
    _identifier("user id", MAX_USER_ID),
    _text_schema(MAX_USER_ID, "user id", _IDENTIFIER_PATTERN),
]
MessageId = Annotated[
    str,
    _identifier("message id", MAX_USER_ID),
    _text_schema(MAX_USER_ID, "message id (a UUID)", _IDENTIFIER_PATTERN),
]
PersonName = Annotated[
    str,
    AfterValidator(check_name),
    _text_schema(MAX_NAME, "a person's name, trimmed", _TEXT_PATTERN),
]
EmailAddress = Annotated[
    str,
    AfterValidator(normalise_email),
    Field(
        description="an email address, stored trimmed and lower-cased",
        json_schema_extra={
            "maxLength": MAX_EMAIL,
            "format": "email",
            "pattern": f"^{_EMAIL_SHAPE.pattern}$",
        },
    ),
]
Quantity = Annotated[
    int,
    _quantity(0),
    Field(json_schema_extra={"minimum": 0, "maximum": MAX_QUANTITY}),
]
OrderQuantity = Annotated[
    int,
    _quantity(1),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_QUANTITY}),
]
