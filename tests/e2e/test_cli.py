"""The ``allocation`` command as a user runs it: the demo, the use cases, the errors."""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import subprocess

import pytest

from tests.e2e.conftest import MODULE, SCRIPT, Cli, error_line, snapshot

pytestmark = pytest.mark.e2e


def _article_lines(name: str, email: str) -> list[str]:
    return [
        f"[User Service] Регистрируем пользователя {name} с email {email}",
        f"[Email Service] Отправка приветственного письма на {email}",
        f"[Log Service] Пользователь зарегистрирован: {email}",
        f"[Coupon Service] Отправка купона пользователю {email}",
    ]


# More than a 64-bit integer column holds: a user error, not a crash.
_HUGE = "99999999999999999999"

DEMO_OUTPUT = [
    *_article_lines("Иван", "ivan@example.com"),
    *_article_lines("Мария", "maria@example.com"),
]


@pytest.mark.parametrize("launcher", [SCRIPT, MODULE], ids=["script", "module"])
def test_demo_prints_the_articles_lines(cli: Cli, launcher: tuple[str, ...]) -> None:
    result = dataclasses.replace(cli, launcher=launcher)("demo")

    assert result.returncode == 0, result
    assert result.stderr == ""
    assert result.stdout.splitlines() == DEMO_OUTPUT
    assert cli.database.is_file()


def test_demo_again_on_the_same_database_is_friendly(cli: Cli) -> None:
    cli.ok("demo")

    lines = cli.ok("demo")

    assert len(lines) == 2
    assert "ivan@example.com" in lines[0]
    assert "maria@example.com" in lines[1]
    assert all("already registered" in line for line in lines)


def test_db_upgrade_reports_the_revision(cli: Cli) -> None:
    (upgraded,) = cli.ok("db", "upgrade")

    assert upgraded.startswith("database at revision ")
    assert cli.ok("db", "current") == [upgraded]
    assert cli.database.is_file()


def test_db_downgrade_to_base_removes_the_schema(migrated: Cli) -> None:
    assert migrated.ok("db", "downgrade", "base") == [
        "database at revision base (no schema)"
    ]


def test_register_user_prints_the_articles_lines(migrated: Cli) -> None:
    *service_lines, registered = migrated.ok("register-user", "Пётр", "p@example.com")

    assert service_lines == _article_lines("Пётр", "p@example.com")
    assert re.fullmatch(r"registered user [0-9a-f-]{36}", registered)


def test_add_batch_says_what_was_added(migrated: Cli) -> None:
    assert migrated.ok("add-batch", "b1", "LAMP", "10") == [
        "added batch b1: 10 x LAMP, in stock"
    ]
    assert migrated.ok("add-batch", "b2", "LAMP", "5", "--eta", "2030-01-02") == [
        "added batch b2: 5 x LAMP, arriving 2030-01-02"
    ]


def test_allocate_prefers_the_batch_in_stock(migrated: Cli) -> None:
    migrated.ok("add-batch", "shipment", "LAMP", "10", "--eta", "2030-01-02")
    migrated.ok("add-batch", "warehouse", "LAMP", "10")

    assert migrated.ok("allocate", "o1", "LAMP", "3") == [
        "allocated 3 x LAMP of order o1 to batch warehouse"
    ]
    assert migrated.ok("allocations", "o1") == ["LAMP\twarehouse"]


def test_allocations_of_an_unknown_order_are_empty(migrated: Cli) -> None:
    assert migrated.ok("allocations", "nobody") == ["order nobody has no allocations"]


def test_out_of_stock_is_reported_not_an_error(migrated: Cli) -> None:
    migrated.ok("add-batch", "b1", "LAMP", "2")

    *emails, answer = migrated.ok("allocate", "o1", "LAMP", "5")

    assert answer == "out of stock: no batch of LAMP can take 5 (order o1)"
    assert len(emails) == 1
    assert "Out of stock: LAMP" in emails[0]
    assert migrated.ok("allocations", "o1") == ["order o1 has no allocations"]


def test_allocations_show_every_line_of_an_order(migrated: Cli) -> None:
    """Regression (issue 8): the view kept one line per sku, and verify agreed."""
    migrated.ok("add-batch", "s1", "CHAIR", "3")
    migrated.ok("add-batch", "s2", "CHAIR", "100", "--eta", "2030-01-02")
    migrated.ok("allocate", "ox", "CHAIR", "3")
    migrated.ok("allocate", "ox", "CHAIR", "50")

    assert migrated.ok("allocations", "ox") == ["CHAIR\ts1", "CHAIR\ts2"]
    migrated.ok("change-batch-quantity", "s2", "0")  # the 50 fit nowhere else
    assert migrated.ok("allocations", "ox") == ["CHAIR\ts1"]
    assert migrated.ok("verify") == ["verify: the event log and the stored state agree"]


def test_verify_names_a_tampered_view_row_and_exits_1(seeded: Cli) -> None:
    connection = sqlite3.connect(seeded.database)
    with connection:
        connection.execute("UPDATE allocations_view SET batchref = 'forged'")
    connection.close()

    result = seeded("verify")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        (
            "allocations_view orderid='o1' sku='LAMP' qty=3: stored batchref='forged'"
            " version=2 allocated=True; the replayed log gives batchref='warehouse'"
            " version=2 allocated=True"
        )
    ]
    assert result.stderr == "verify: 1 difference\n"


def test_change_batch_quantity_reallocates_what_no_longer_fits(seeded: Cli) -> None:
    seeded.ok("add-batch", "shipment", "LAMP", "10", "--eta", "2030-01-02")

    assert seeded.ok("change-batch-quantity", "warehouse", "1") == [
        "batch warehouse now holds 1"
    ]
    assert seeded.ok("allocations", "o1") == ["LAMP\tshipment"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(["allocate", "o2", "NOSUCH", "1"], "'NOSUCH'", id="unknown-sku"),
        pytest.param(["allocate", "o2", "LAMP", "-3"], "'-3'", id="negative-qty"),
        pytest.param(["allocate", "o2", "LAMP", "abc"], "'abc'", id="qty-not-number"),
        pytest.param(["allocate", "o2", "LAMP", "0"], "'0'", id="zero-qty"),
        pytest.param(["allocate", "", "LAMP", "1"], "''", id="blank-orderid"),
        pytest.param(["add-batch", "b9", "LAMP", "-1"], "'-1'", id="batch-qty"),
        pytest.param(["add-batch", "b9", "LAMP", _HUGE], f"'{_HUGE}'", id="huge-qty"),
        pytest.param(
            ["add-batch", "b9", "LAMP", "4", "--eta", "2030-13-01"],
            "'2030-13-01'",
            id="bad-eta",
        ),
        pytest.param(
            ["add-batch", "b9", "LAMP", "4", "--eta", "tomorrow"],
            "'tomorrow'",
            id="eta-not-date",
        ),
        pytest.param(
            ["add-batch", "warehouse", "LAMP", "99"], "'warehouse'", id="duplicate-ref"
        ),
        pytest.param(
            ["change-batch-quantity", "nosuch", "1"], "'nosuch'", id="unknown-batch"
        ),
        pytest.param(
            ["change-batch-quantity", "warehouse", "x"], "'x'", id="change-qty"
        ),
        pytest.param(
            ["change-batch-quantity", "warehouse", _HUGE],
            f"'{_HUGE}'",
            id="change-huge-qty",
        ),
        pytest.param(
            ["register-user", "Bob", "bob@nowhere"], "'bob@nowhere'", id="bad-email"
        ),
        pytest.param(
            ["register-user", "Иван", "ivan@example.com"],
            "'ivan@example.com'",
            id="duplicate-email",
        ),
        pytest.param(
            ["register-user", "Bob", "IVAN@Example.com"],
            "ivan@example.com",
            id="duplicate-email-other-case",
        ),
        pytest.param(["register-user", " ", "bob@example.com"], "' '", id="blank-name"),
    ],
)
def test_user_error_is_one_line_and_changes_nothing(
    seeded: Cli, args: list[str], named: str
) -> None:
    before = snapshot(seeded.database)

    result = seeded(*args)

    assert named.lower() in error_line(result).lower()
    assert result.returncode in {1, 2}  # 1: refused by the application, 2: usage
    # Every row of every table, the allocations and their read model included.
    assert snapshot(seeded.database) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["allocations", "o1"], id="allocations"),
        pytest.param(["add-batch", "b1", "LAMP", "1"], id="add-batch"),
        pytest.param(["register-user", "Bob", "bob@example.com"], id="register-user"),
    ],
)
def test_command_without_schema_says_to_upgrade(cli: Cli, args: list[str]) -> None:
    result = cli(*args)

    assert result.stdout == ""
    assert "run `allocation db upgrade`" in error_line(result)


def test_command_after_downgrade_says_to_upgrade(migrated: Cli) -> None:
    migrated.ok("db", "downgrade", "base")

    assert "allocation db upgrade" in error_line(migrated("allocations", "o1"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALLOCATION_RETRY_ATTEMPTS", "x"),
        ("ALLOCATION_RETRY_ATTEMPTS", "0"),
        ("ALLOCATION_RETRY_DELAY", "-1"),
        ("ALLOCATION_CONFLICT_RETRIES", "many"),
        ("ALLOCATION_DATABASE_POOL_SIZE", "0"),
        ("SMTP_PORT", "abc"),
    ],
)
def test_bad_setting_is_one_line_naming_it(cli: Cli, variable: str, value: str) -> None:
    # SMTP_PORT is read only when SMTP_HOST is set.
    env = {variable: value, "SMTP_HOST": "127.0.0.1"}

    line = error_line(cli("allocations", "o1", env=env))

    assert f"{variable}={value!r}" in line


def test_bad_setting_stops_the_demo_before_it_starts(cli: Cli) -> None:
    result = cli("demo", env={"ALLOCATION_RETRY_ATTEMPTS": "x"})

    assert "ALLOCATION_RETRY_ATTEMPTS='x'" in error_line(result)
    assert result.stdout == ""


def test_unusable_database_url_is_one_line(cli: Cli) -> None:
    result = cli("allocations", "o1", env={"DATABASE_URL": "nonsense://x"})

    assert "nonsense://x" in error_line(result)


def test_unknown_revision_is_a_user_error(cli: Cli) -> None:
    result = cli("db", "upgrade", "nosuchrevision")

    assert "nosuchrevision" in error_line(result)
    assert result.returncode == 1


def test_usage_error_is_one_line(cli: Cli) -> None:
    result = cli("allocate", "o1")

    assert result.returncode == 2
    assert "allocation allocate: error:" in error_line(result)


def test_help_lists_the_commands(cli: Cli) -> None:
    output = "\n".join(cli.ok("--help"))

    for command in ("demo", "db", "add-batch", "allocate", "allocations"):
        assert command in output


def _into_a_closed_pipe(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -1` does once it has its line
    try:
        return subprocess.run(
            [*cli.launcher, *args],
            cwd=cli.cwd,
            env=cli.env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def test_demo_into_a_closed_pipe_still_registers_everyone(cli: Cli) -> None:
    """Regression (issue 2): `allocation demo | head -n 1` ended in retries and a traceback."""
    demo = _into_a_closed_pipe(cli, "demo")
    assert (demo.returncode, demo.stderr) == (0, "")
    already = "is already registered in this database"
    assert [line.split(": nothing")[0] for line in cli.ok("demo")] == [
        f"Иван <ivan@example.com> {already}",
        f"Мария <maria@example.com> {already}",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list"],
        ["events", "list", "--json"],
        ["messages"],
        ["messages", "--json-schema"],
    ],
    ids=" ".join,
)
def test_output_into_a_closed_pipe_ends_quietly(seeded: Cli, args: list[str]) -> None:
    """Regression: `allocation events list | head -1` exited 70 with BrokenPipeError."""
    result = _into_a_closed_pipe(seeded, *args)

    assert result.returncode == 0
    assert "Error" not in result.stderr


def test_allocations_of_an_order_id_no_order_can_have_is_a_one_line_error(
    migrated: Cli,
) -> None:
    """Regression: the order id was printed raw, control characters and all."""
    line = error_line(migrated("allocations", "x\x1b[2J\nforged line" + "y" * 10_000))

    assert "\x1b" not in line
    assert "invalid order id" in line
    assert len(line) < 300


@pytest.mark.parametrize(
    "revision", ["\x1b[2J\nforged", "x" * 10_000, "head; drop"], ids=repr
)
def test_a_revision_that_is_no_revision_is_a_usage_error(
    migrated: Cli, revision: str
) -> None:
    """Regression: the revision was echoed raw, over two lines and at any length."""
    result = migrated("db", "downgrade", revision)

    line = error_line(result)
    assert result.returncode == 2
    assert "\x1b" not in line
    assert len(line) < 300
