"""`allocation history` and `allocation replay` as a user runs them (issue 9)."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli


def _tamper(cli: Cli, statement: str) -> None:
    connection = sqlite3.connect(cli.database)
    try:
        with connection:
            connection.execute(statement)
    finally:
        connection.close()


def test_history_prints_each_event_and_the_state_it_led_to(seeded: Cli) -> None:
    lines = seeded.ok("history", "product", "LAMP")

    assert [line.split("\t")[2] for line in lines[::2]] == [
        "batch_created",
        "allocated",
    ]
    assert lines[0].startswith("v1\t")
    assert lines[1].startswith("\tstate: ")
    after_allocation = json.loads(lines[3].removeprefix("\tstate: "))
    assert after_allocation["batches"]["warehouse"]["allocations"] == [
        {"orderid": "o1", "sku": "LAMP", "qty": 3}
    ]


def test_history_at_a_version_stops_there(seeded: Cli) -> None:
    lines = seeded.ok("history", "product", "LAMP", "--at-version", "1", "--json")

    [only] = [json.loads(line) for line in lines]
    assert (only["version"], only["name"]) == (1, "batch_created")
    assert only["state"]["batches"]["warehouse"]["allocations"] == []


def test_history_past_the_last_version_says_where_the_stream_ends(
    seeded: Cli,
) -> None:
    result = seeded("history", "product", "LAMP", "--at-version", "1000")

    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 4  # both events, each with its state
    assert result.stderr == (
        "product 'LAMP' has 2 events: version 1000 is not reached yet\n"
    )


def test_history_of_a_user(seeded: Cli) -> None:
    [line] = seeded.ok("history", "user", _user_id(seeded), "--json")

    assert json.loads(line)["state"] == {"name": "Иван", "email": "ivan@example.com"}


def test_history_of_an_unknown_product_is_a_clear_error(seeded: Cli) -> None:
    result = seeded("history", "product", "NOPE")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "allocation: error: the log holds no product 'NOPE'\n"


def test_replay_reports_a_tampered_row_and_mends_it(seeded: Cli) -> None:
    _tamper(seeded, "UPDATE users_view SET name = 'Mallory'")

    dry = seeded.ok("replay", "users_view", "--dry-run")
    assert dry[0].startswith("users_view user_id=")
    assert "stored name='Mallory'" in dry[0]
    assert dry[-1].endswith(
        "the live read model differed (above); nothing swapped (dry run)"
    )
    assert _user_names(seeded) == ["Mallory"]  # a dry run changes nothing

    mended = seeded.ok("replay", "users_view")
    assert mended[-1].endswith("the live read model differed (above); swapped in")
    assert _user_names(seeded) == ["Иван"]
    assert seeded("verify").returncode == 0


def _user_names(cli: Cli) -> list[str]:
    connection = sqlite3.connect(cli.database)
    try:
        return [name for (name,) in connection.execute("SELECT name FROM users_view")]
    finally:
        connection.close()


def _user_id(cli: Cli) -> str:
    connection = sqlite3.connect(cli.database)
    try:
        (user_id,) = connection.execute(
            "SELECT owner FROM claims WHERE kind = 'email'"
        ).fetchone()
    finally:
        connection.close()
    return str(user_id)
