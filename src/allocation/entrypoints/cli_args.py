"""Argument types of the ``allocation`` command: numbers, dates and event names.

Each parses strictly and raises ``argparse.ArgumentTypeError`` with one line, so a
malformed command line is a usage error (exit 2) before anything runs. Python's own
``int()`` is too lenient for a command line: it takes ``'５'`` (any Unicode digit),
``'1_000'``, ``'+5'`` and ``' 5'``; ``date.fromisoformat`` takes ``'20300101'`` and
week dates. Here a number is plain ASCII digits and a date is YYYY-MM-DD.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import re
from typing import TYPE_CHECKING

from allocation.domain import events, messages, values
from allocation.domain.exceptions import InvalidQuantity, shorten

if TYPE_CHECKING:
    from collections.abc import Callable

# event_log.position is a 64-bit BIGINT on PostgreSQL (and SQLite's rowid).
MAX_POSITION = 2**63 - 1
# dead_letters.id is a 32-bit INTEGER.
MAX_DEAD_LETTER_ID = 2**31 - 1

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def parse_whole_number(raw: str, *, minimum: int, maximum: int) -> int | None:
    """``raw`` as an int when it is ASCII digits from ``minimum`` to ``maximum``.

    Returns None otherwise: signs, spaces, underscores, other scripts' digits, a
    decimal point and values out of range alike.
    """
    if not _DIGITS.fullmatch(raw):
        return None
    significant = raw.lstrip("0")
    # Longer than the maximum is out of range, and int() is never asked to
    # convert thousands of digits (which it refuses with its own error).
    if len(significant) > len(str(maximum)):
        return None
    value = int(raw)
    return value if minimum <= value <= maximum else None


def whole_number(what: str, *, minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type for a whole number named ``what`` in a range."""

    def parse(raw: str) -> int:
        value = parse_whole_number(raw, minimum=minimum, maximum=maximum)
        if value is None:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {shorten(raw)}: "
                f"must be a whole number from {minimum} to {maximum}"
            )
        return value

    return parse


# Alembic's revision syntax: ids, head/heads/base, relative steps ("-1", "head-2"),
# branch labels ("branch@head").
_REVISION = re.compile(r"[A-Za-z0-9_.@:+-]{1,64}")


def revision(raw: str) -> str:
    """An argparse type for an alembic revision: its own characters, nothing else."""
    if not _REVISION.fullmatch(raw):
        raise argparse.ArgumentTypeError(
            f"invalid revision {shorten(raw)}: letters, digits and _.@:+- only, "
            "at most 64 characters (e.g. head, base, 0003, -1)"
        )
    return raw


def quantity(minimum: int) -> Callable[[str], int]:
    """An argparse type for a quantity, as the domain's rule says (InvalidQuantity)."""

    def parse(raw: str) -> int:
        value = parse_whole_number(raw, minimum=minimum, maximum=values.MAX_QUANTITY)
        if value is None:
            raise argparse.ArgumentTypeError(
                str(InvalidQuantity(raw, minimum=minimum, maximum=values.MAX_QUANTITY))
            )
        return value

    return parse


def date(raw: str) -> datetime.date:
    """An argparse type for a calendar date written YYYY-MM-DD."""
    try:
        if _DATE.fullmatch(raw):
            return datetime.date.fromisoformat(raw)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"invalid date {shorten(raw)}: expected YYYY-MM-DD"
    )


def port(raw: str) -> int:
    """An argparse type for a TCP port: a whole number from 1 to 65535."""
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise argparse.ArgumentTypeError(
            f"invalid port {shorten(raw)}: must be a whole number from 1 to 65535"
        )
    return int(raw)


def event_names() -> list[str]:
    """The TYPE of every event, sorted: the names the event log stores."""
    return [
        name
        for name, cls in messages.message_classes().items()
        if issubclass(cls, events.Event)
    ]


def event_name(raw: str) -> str:
    """An argparse type for an event's TYPE; an unknown one names the right spelling."""
    known = event_names()
    if raw in known:
        return raw
    hint = _closest(raw, known)
    did_you_mean = f" did you mean {hint!r}?" if hint else ""
    raise argparse.ArgumentTypeError(
        f"unknown event name {shorten(raw)}:{did_you_mean}"
        f" valid names: {', '.join(known)}"
    )


def _closest(raw: str, known: list[str]) -> str | None:
    # A class name (Allocated, UserRegistered) or a dashed spelling means its TYPE.
    folded = {name.replace("_", ""): name for name in known}
    spelled = folded.get(re.sub(r"[\s_-]", "", raw).lower())
    if spelled is not None:
        return spelled
    close = difflib.get_close_matches(raw.lower(), known, n=1)
    return close[0] if close else None
