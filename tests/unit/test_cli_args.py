"""The command line's argument types and parser, without running a command."""

from __future__ import annotations

import argparse

import pytest

from allocation.domain import values
from allocation.entrypoints import cli_args
from allocation.entrypoints.cli import _build_parser


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("５", id="fullwidth-digit"),
        pytest.param("٥", id="arabic-indic-digit"),
        pytest.param("1_000", id="underscore"),
        pytest.param("+5", id="plus-sign"),
        pytest.param("-5", id="minus-sign"),
        pytest.param(" 5", id="leading-space"),
        pytest.param("5 ", id="trailing-space"),
        pytest.param("5\n", id="trailing-newline"),
        pytest.param("5.0", id="decimal-point"),
        pytest.param("0x5", id="hexadecimal"),
        pytest.param("", id="empty"),
    ],
)
def test_a_number_is_plain_ascii_digits_only(raw: str) -> None:
    """Regression (issue 8): int() took all of these, and so did the command line."""
    assert cli_args.parse_whole_number(raw, minimum=0, maximum=10) is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", 0), ("5", 5), ("007", 7), ("10", 10)]
)
def test_a_number_in_range_is_its_value(raw: str, expected: int) -> None:
    assert cli_args.parse_whole_number(raw, minimum=0, maximum=10) == expected


@pytest.mark.parametrize(
    "raw",
    [
        str(values.MAX_QUANTITY + 1),
        "99999999999999999999999",
        # More digits than int() converts: still an answer, not int()'s own error.
        "9" * 5000,
    ],
)
def test_a_number_above_the_maximum_is_refused(raw: str) -> None:
    assert (
        cli_args.parse_whole_number(raw, minimum=0, maximum=values.MAX_QUANTITY) is None
    )


def test_a_number_below_the_minimum_is_refused() -> None:
    assert cli_args.parse_whole_number("0", minimum=1, maximum=10) is None


def test_a_position_goes_up_to_the_largest_64_bit_integer() -> None:
    position = cli_args.whole_number(
        "position", minimum=0, maximum=cli_args.MAX_POSITION
    )

    assert position(str(2**63 - 1)) == 2**63 - 1
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        position(str(2**63))
    assert str(refused.value) == (
        f"invalid position '{2**63}': must be a whole number from 0 to {2**63 - 1}"
    )


def test_a_refused_quantity_names_the_domains_range() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        cli_args.quantity(1)("５")

    assert str(refused.value) == (
        f"invalid quantity '５': must be a whole number from 1 to {values.MAX_QUANTITY}"
    )


def test_a_refused_number_quotes_at_most_about_80_characters() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        cli_args.quantity(0)("9" * 10_000)

    assert len(str(refused.value)) < 200


@pytest.mark.parametrize("raw", ["20300101", "2030-W01-1", "2030-01-0１", "2030-13-01"])
def test_a_date_is_written_yyyy_mm_dd(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected YYYY-MM-DD"):
        cli_args.date(raw)


def test_event_names_are_the_events_types() -> None:
    names = cli_args.event_names()

    assert "allocated" in names
    assert "user_registered" in names
    assert "create_batch" not in names  # a command, never in the event log
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("raw", "meant"),
    [
        ("Allocated", "allocated"),
        ("UserRegistered", "user_registered"),
        ("user-registered", "user_registered"),
        ("out_of_stok", "out_of_stock"),
    ],
)
def test_an_event_name_misspelt_says_the_right_spelling(raw: str, meant: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        cli_args.event_name(raw)

    assert str(refused.value).startswith(
        f"unknown event name {raw!r}: did you mean {meant!r}? valid names: "
    )


def test_an_unknown_event_name_lists_the_valid_ones() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        cli_args.event_name("nothing-like-it")

    assert str(refused.value) == (
        "unknown event name 'nothing-like-it': valid names: "
        + ", ".join(cli_args.event_names())
    )


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_parsers(child))
    return found


def _positionals() -> list[tuple[str, argparse.Action]]:
    return [
        (parser.prog, action)
        for parser in _parsers(_build_parser())
        for action in parser._actions
        if not action.option_strings
        and not isinstance(action, argparse._SubParsersAction)
    ]


def test_every_positional_argument_has_help() -> None:
    """Regression (issue 8): `allocation allocate --help` said nothing of its arguments."""
    unexplained = [
        f"{prog} {action.dest}" for prog, action in _positionals() if not action.help
    ]

    assert unexplained == []


def _is_numeric(action: argparse.Action) -> bool:
    if not callable(action.type):
        return False
    try:
        return isinstance(action.type("1"), int)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False


def test_every_numeric_positional_argument_says_its_range() -> None:
    numeric = [(prog, action) for prog, action in _positionals() if _is_numeric(action)]

    assert numeric  # the quantities and the dead-letter ids
    for prog, action in numeric:
        assert action.help is not None
        assert " to " in action.help, f"{prog} {action.dest}: {action.help}"
