"""``allocation status`` and traces on the console, as a user runs them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

# The seeded database: three commands, each caught up at its start.
SEEDED_STATUS = [
    "log head: 3",
    "SUBSCRIBER                      KIND        CHECKPOINT  LAG  DEAD LETTERS",
    "allocations_view                projection  2           0    0",
    "log_registration                handler     2           0    0",
    "reallocate                      handler     2           0    0",
    "send_coupon                     handler     2           0    0",
    "send_out_of_stock_notification  handler     2           0    0",
    "send_welcome_email              handler     2           0    0",
]


def test_status_shows_each_subscribers_checkpoint_lag_and_dead_letters(
    seeded: Cli,
) -> None:
    assert seeded.ok("status") == SEEDED_STATUS


def test_status_as_json_holds_the_same_figures(seeded: Cli) -> None:
    [line] = seeded.ok("status", "--json")

    figures = json.loads(line)
    assert figures["head"] == 3
    assert figures["relays"] == []
    assert figures["subscribers"][0] == {
        "name": "allocations_view",
        "projection": True,
        "checkpoint": 2,
        "lag": 0,
        "dead_letters": 0,
    }


def test_status_shows_the_configured_relay_destination(seeded: Cli) -> None:
    # The relay never ran: everything is still to publish. Nothing connects to
    # the broker for this.
    result = seeded(
        "status",
        env={"BROKER_URL": "redis://127.0.0.1:1/0", "ALLOCATION_BROKER_STREAM": "out"},
    )

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines()[-2:] == [
        "RELAY TO  POSITION  LAG",
        "out       -         3",
    ]


def _spans(stderr: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote: JSON objects one after the other."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := stderr.find("{", at)) != -1:
        span, at = decoder.raw_decode(stderr, at)
        spans.append(span)
    return spans


def test_console_traces_show_one_trace_from_the_command_to_its_logged_event(
    migrated: Cli,
) -> None:
    result = migrated(
        "register-user",
        "Ann",
        "ann@example.com",
        env={"OTEL_TRACES_EXPORTER": "console"},
    )

    assert result.returncode == 0, result
    spans = _spans(result.stderr)
    assert sorted(span["name"] for span in spans) == [
        "command register_user",
        "handler log_registration",
        "handler register_user",
        "handler send_coupon",
        "handler send_welcome_email",
    ]
    [trace_id] = {span["context"]["trace_id"] for span in spans}
    assert {span["resource"]["attributes"]["service.name"] for span in spans} == {
        "allocation"
    }
    [line] = migrated.ok("events", "list", "--json")
    assert json.loads(line)["trace_context"].split("-")[1] == trace_id.removeprefix(
        "0x"
    )


def test_without_an_exporter_events_carry_no_trace(migrated: Cli) -> None:
    migrated.ok("add-batch", "b1", "LAMP", "10")

    [line] = migrated.ok("events", "list", "--json")
    assert json.loads(line)["trace_context"] is None


def test_an_exporter_name_that_is_no_name_is_a_one_line_error(migrated: Cli) -> None:
    result = migrated("status", env={"OTEL_TRACES_EXPORTER": "console;rm -rf"})

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("allocation: error: OTEL_TRACES_EXPORTER=")
