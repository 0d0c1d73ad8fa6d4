"""The database file as a user meets it: downgrades that lose data, read-only files,
a directory that does not exist."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from typing import TYPE_CHECKING

import pytest

from allocation.adapters import migrations
from tests.conftest import service_missing
from tests.e2e.conftest import Cli, error_line, snapshot
from tests.e2e.test_status_and_traces import SEEDED_STATUS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e

# What only reads: each must work on a database this user may not write.
READING = [
    pytest.param(["allocations", "o1"], ["LAMP\twarehouse"], id="allocations"),
    pytest.param(
        ["verify"], ["verify: the event log and the stored state agree"], id="verify"
    ),
    pytest.param(["dead-letters", "list"], [], id="dead-letters-list"),
    pytest.param(["status"], SEEDED_STATUS, id="status"),
    pytest.param(
        ["db", "current"],
        [f"database at revision {migrations.head_revision()}"],
        id="db-current",
    ),
]


def test_db_downgrade_that_would_lose_data_is_refused_without_yes(
    seeded: Cli,
) -> None:
    """Regression (issue 8): `db downgrade base` deleted every table, no warning."""
    before = snapshot(seeded.database)

    result = seeded("db", "downgrade", "base")

    line = error_line(result)
    assert result.returncode == 1
    assert "would lose data" in line
    assert "table claims (2 rows)" in line
    assert "table users_view (1 row)" in line
    assert "--yes" in line
    assert snapshot(seeded.database) == before
    assert seeded.ok("db", "current") == [
        f"database at revision {migrations.head_revision()}"
    ]


def test_db_downgrade_with_yes_goes_ahead(seeded: Cli) -> None:
    assert seeded.ok("db", "downgrade", "base", "--yes") == [
        "database at revision base (no schema)"
    ]


def test_db_downgrade_of_an_empty_database_needs_no_yes(migrated: Cli) -> None:
    assert migrated.ok("db", "downgrade", "base") == [
        "database at revision base (no schema)"
    ]


def test_events_list_works_on_a_read_only_file(seeded: Cli) -> None:
    with _read_only(seeded, seeded.database) as reader:
        result = reader("events", "list")

    assert (result.returncode, result.stderr) == (0, "3 events\n"), result
    assert len(result.stdout.splitlines()) == 3


@pytest.mark.parametrize(("args", "expected"), READING)
def test_reading_commands_work_on_a_read_only_file(
    seeded: Cli, args: list[str], expected: list[str]
) -> None:
    """Regression (issue 8): every command said "attempt to write a readonly database"."""
    with _read_only(seeded, seeded.database) as reader:
        result = reader(*args)

    assert result.returncode == 0, result
    assert result.stdout.splitlines() == expected
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "expected"), READING)
def test_reading_commands_work_in_a_read_only_directory(
    seeded: Cli, args: list[str], expected: list[str]
) -> None:
    with _read_only(seeded, seeded.cwd) as reader:
        result = reader(*args)

    assert result.returncode == 0, result
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["add-batch", "b9", "LAMP", "1"], id="add-batch"),
        pytest.param(["register-user", "Bob", "bob@example.com"], id="register-user"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["catch-up"], id="catch-up"),
    ],
)
@pytest.mark.parametrize("what", ["file", "directory"])
def test_writing_commands_on_a_read_only_database_say_so(
    seeded: Cli, args: list[str], what: str
) -> None:
    before = snapshot(seeded.database)
    target = seeded.database if what == "file" else seeded.cwd
    with _read_only(seeded, target) as reader:
        result = reader(*args)

    line = error_line(result)
    assert result.returncode == 1
    assert "read-only" in line
    assert "unavailable" not in line
    assert snapshot(seeded.database) == before


def test_a_read_only_spell_leaves_nothing_that_stops_a_writer(seeded: Cli) -> None:
    with _read_only(seeded, seeded.database) as reader:
        for args in (["allocations", "o1"], ["verify"], ["events", "list"]):
            assert reader(*args).returncode == 0

    # The writer runs without privileges too: a -shm file the reader had left
    # behind, read-only like the database then, would refuse it.
    writer = _unprivileged(seeded)
    assert writer.ok("add-batch", "b9", "LAMP", "1") == [
        "added batch b9: 1 x LAMP, in stock"
    ]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["demo"], id="demo"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["db", "current"], id="db-current"),
        pytest.param(["allocations", "o1"], id="allocations"),
        pytest.param(["verify"], id="verify"),
        pytest.param(["events", "list"], id="events-list"),
        pytest.param(["add-batch", "b1", "LAMP", "1"], id="add-batch"),
    ],
)
def test_a_database_in_a_missing_directory_is_named_as_such(
    cli: Cli, args: list[str]
) -> None:
    """Regression (issue 8): it said "no schema: run db upgrade", which then failed."""
    missing = cli.cwd / "missing"
    url = f"sqlite:///{missing / 'allocation.db'}"

    result = cli(*args, env={"DATABASE_URL": url})

    assert f"directory '{missing}' does not exist" in error_line(result)
    assert result.returncode == 1
    assert not missing.exists()


@contextlib.contextmanager
def _read_only(cli: Cli, target: Path) -> Iterator[Cli]:
    """Take write permission on ``target`` away for the block; yield the command."""
    mode = stat.S_IMODE(target.stat().st_mode)
    target.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield _unprivileged(cli)
    finally:
        target.chmod(mode)


def _unprivileged(cli: Cli) -> Cli:
    """The command as a user whom file modes bind (root overrides them otherwise)."""
    if os.geteuid() != 0:
        return cli
    setpriv = shutil.which("setpriv") or ""
    if not setpriv:
        service_missing("root ignores file modes, and setpriv is missing to drop that")
    # Still root, the owner of the files, but without the capabilities that
    # override their modes.
    drop = "-dac_override,-dac_read_search,-fowner"
    return dataclasses.replace(
        cli, launcher=(setpriv, "--bounding-set", drop, *cli.launcher)
    )
