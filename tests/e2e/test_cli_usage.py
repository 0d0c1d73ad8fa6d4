"""The ``allocation`` command line itself: version, options, numbers, names, progress,
completion (issue 8, item 13)."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import sqlite3
import subprocess

import pytest

from tests.e2e.conftest import Cli, error_line, snapshot

pytestmark = pytest.mark.e2e

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def test_version_is_the_installed_packages(cli: Cli) -> None:
    assert cli.ok("--version") == [
        f"allocation {importlib.metadata.version('allocation')}"
    ]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-v", "db", "upgrade"], id="before-the-command"),
        pytest.param(["db", "-v", "upgrade"], id="between-commands"),
        pytest.param(["db", "upgrade", "-v"], id="after-the-command"),
        pytest.param(["db", "upgrade", "head", "--verbose"], id="long-at-the-end"),
    ],
)
def test_verbose_is_taken_anywhere_on_the_line(cli: Cli, args: list[str]) -> None:
    result = cli(*args)

    assert result.returncode == 0, result
    assert "INFO alembic" in result.stderr  # the migration's own log lines


def test_verbose_after_a_use_case_runs_it(migrated: Cli) -> None:
    result = migrated("register-user", "A", "a@example.com", "-v")

    assert result.returncode == 0, result
    assert result.stdout.splitlines()[-1].startswith("registered user ")


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["allocate"], ["ORDERID", "SKU", f"from 1 to {_INT32_MAX}"]),
        (["add-batch"], ["REF", "QTY units in the batch, a whole number from 0"]),
        (["register-user"], ["NAME the user's name", "EMAIL"]),
        (["dead-letters", "retry"], ["ID a dead letter's id, as listed (1 to"]),
        (["replay"], ["allocations_view or users_view"]),
    ],
)
def test_help_explains_the_positional_arguments(
    cli: Cli, command: list[str], shown: list[str]
) -> None:
    # argparse aligns and wraps the help in columns: compare the words only.
    output = " ".join(" ".join(cli.ok(*command, "--help")).split())

    for text in shown:
        assert text in output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["allocate", "o2", "LAMP", "５"], "'５'", id="fullwidth"),
        pytest.param(["allocate", "o2", "LAMP", "1_000"], "'1_000'", id="underscore"),
        pytest.param(["allocate", "o2", "LAMP", "+5"], "'+5'", id="plus"),
        pytest.param(["allocate", "o2", "LAMP", " 5"], "' 5'", id="space"),
        pytest.param(["allocate", "o2", "LAMP", "5.0"], "'5.0'", id="decimal"),
        pytest.param(
            ["add-batch", "b9", "LAMP", str(_INT32_MAX + 1)],
            f"'{_INT32_MAX + 1}'",
            id="qty-above-32-bits",
        ),
        pytest.param(
            ["change-batch-quantity", "warehouse", "٣"], "'٣'", id="arabic-digit"
        ),
        pytest.param(
            ["events", "list", "--after", "99999999999999999999999"],
            "'99999999999999999999999'",
            id="after-above-64-bits",
        ),
        pytest.param(
            ["events", "list", "--after", str(_INT64_MAX + 1)],
            f"'{_INT64_MAX + 1}'",
            id="after-just-above-64-bits",
        ),
        pytest.param(
            ["events", "list", "--limit", "99999999999999999999999"],
            "'99999999999999999999999'",
            id="limit-above-64-bits",
        ),
        pytest.param(
            ["dead-letters", "retry", str(_INT32_MAX + 1)],
            f"'{_INT32_MAX + 1}'",
            id="retry-id-above-32-bits",
        ),
        pytest.param(
            ["dead-letters", "discard", "99999999999999999999999"],
            "'99999999999999999999999'",
            id="discard-id-above-64-bits",
        ),
        pytest.param(
            ["add-batch", "b9", "LAMP", "4", "--eta", "20300101"],
            "'20300101'",
            id="eta-not-yyyy-mm-dd",
        ),
    ],
)
def test_a_malformed_number_is_a_usage_error(
    seeded: Cli, args: list[str], named: str
) -> None:
    """Regression (issue 8): `５` was allocated; a huge --after crashed with exit 70."""
    before = snapshot(seeded.database)

    result = seeded(*args)

    assert named in error_line(result)
    assert result.returncode == 2
    assert snapshot(seeded.database) == before


def test_the_largest_position_is_a_valid_after(seeded: Cli) -> None:
    result = seeded("events", "list", "--after", str(_INT64_MAX))

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "0 events\n")


def test_an_event_name_in_another_spelling_is_a_usage_error_naming_the_right_one(
    seeded: Cli,
) -> None:
    """Regression (issue 8): `events list --name Allocated` showed nothing, silently."""
    result = seeded("events", "list", "--name", "Allocated")

    line = error_line(result)
    assert result.returncode == 2
    assert "unknown event name 'Allocated': did you mean 'allocated'?" in line
    assert "valid names: allocated, batch_created," in line


def test_events_list_by_name_shows_those_events(seeded: Cli) -> None:
    result = seeded("events", "list", "--name", "allocated")

    assert result.returncode == 0, result
    [line] = result.stdout.splitlines()
    assert "\tallocated\t" in line


def test_replay_of_an_unknown_read_model_names_the_valid_ones(seeded: Cli) -> None:
    result = seeded("replay", "foo")

    assert result.returncode == 1
    assert error_line(result) == (
        "allocation: error: no subscriber 'foo': valid names: "
        "allocations_view, users_view"
    )


def _reset_checkpoints(cli: Cli) -> None:
    """Send every subscriber back to the start of the log: catch-up has work."""
    connection = sqlite3.connect(cli.database)
    try:
        connection.execute("UPDATE subscriber_checkpoints SET position = 0")
        connection.commit()
    finally:
        connection.close()


def _run_on_a_terminal(cli: Cli, *args: str) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal; return the status, stdout and stderr."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*cli.launcher, *args],
            cwd=cli.cwd,
            env=cli.env | {"COLUMNS": "120", "TERM": "xterm"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    drawn = bytearray()
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    process.stdout.close()
    return process.wait(timeout=60), stdout, drawn.decode()


def test_replay_draws_no_bar_when_stderr_is_not_a_terminal(seeded: Cli) -> None:
    """Regression (issue 8): the hand-rolled bar went into pipes and log files too."""
    result = seeded("replay", "allocations_view")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "replayed allocations_view: 1 event applied; the live read model agreed;"
        " swapped in\n"
    )


def test_replay_on_a_terminal_shows_progress_with_rate_and_eta(seeded: Cli) -> None:
    status, stdout, drawn = _run_on_a_terminal(seeded, "replay", "allocations_view")

    assert status == 0, drawn
    assert stdout == (
        "replayed allocations_view: 1 event applied; the live read model agreed;"
        " swapped in\n"
    )
    assert "replay allocations_view" in drawn
    assert "positions/s" in drawn  # the rate
    assert "0:00:00" in drawn  # the time remaining, once done


def test_catch_up_on_a_terminal_shows_each_subscribers_progress(seeded: Cli) -> None:
    """Regression (issue 8): catch-up said nothing until it was done."""
    _reset_checkpoints(seeded)

    status, stdout, drawn = _run_on_a_terminal(seeded, "catch-up")

    assert status == 0, drawn
    assert stdout == "catch-up delivered 0 events\n"  # all handled already
    for subscriber in ("allocations_view", "send_welcome_email", "send_coupon"):
        assert f"catch-up {subscriber}" in drawn


def test_catch_up_draws_no_bar_when_stderr_is_not_a_terminal(seeded: Cli) -> None:
    _reset_checkpoints(seeded)

    assert seeded.ok("catch-up") == ["catch-up delivered 0 events"]


def _complete(cli: Cli, line: str) -> list[str]:
    """What bash completes for ``line`` with the script `allocation completion bash` prints."""
    script = cli.ok("completion", "bash")
    words = line.split(" ")
    completing = "\n".join(
        [
            *script,
            f"COMP_WORDS=({' '.join(repr(word) for word in words)})",
            f"COMP_CWORD={len(words) - 1}",
            f"COMP_LINE={line!r}",
            "COMP_POINT=${#COMP_LINE}",
            "_shtab_allocation",
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile"],
        input=completing,
        capture_output=True,
        encoding="utf-8",
        cwd=cli.cwd,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.split()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("allocation reg", ["register-user"]),
        ("allocation dead-letters r", ["retry"]),
        ("allocation events list --name user", ["user_registered"]),
        ("allocation completion ", ["bash", "zsh"]),
    ],
)
def test_bash_completes_commands_and_choices(
    cli: Cli, line: str, expected: list[str]
) -> None:
    assert _complete(cli, line) == expected


def test_zsh_completion_is_a_compdef_script(cli: Cli) -> None:
    script = cli.ok("completion", "zsh")

    assert script[0] == "#compdef allocation"
    assert any("register-user" in line for line in script)


def test_completion_for_an_unknown_shell_is_a_usage_error(cli: Cli) -> None:
    result = cli("completion", "fish")

    assert result.returncode == 2
    assert "'fish'" in error_line(result)
