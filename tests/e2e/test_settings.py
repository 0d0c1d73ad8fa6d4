"""Settings and worker options are checked before anything runs or is written (issue 8)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import service_missing
from tests.e2e.conftest import error_line, snapshot

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _postgres_url(query: str) -> str:
    """The test database's URL as a user writes it, ``postgresql://...?query``."""
    url = make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return f"{plain}?{query}"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_retry_delay_that_is_no_number_refuses_before_any_write(
    migrated: Cli, value: str
) -> None:
    """Regression: with ALLOCATION_RETRY_DELAY=nan, register-user committed, then exit 70."""
    before = snapshot(migrated.database)

    result = migrated(
        "register-user", "Ann", "ann@example.com", env={"ALLOCATION_RETRY_DELAY": value}
    )

    assert result.returncode == 1
    assert f"ALLOCATION_RETRY_DELAY={value!r}" in error_line(result)
    assert result.stdout == ""
    assert snapshot(migrated.database) == before


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BROKER_URL", "garbage"),
        ("SMTP_PORT", "70000"),
        ("SMTP_STARTTLS", "maybe"),
        ("ALLOCATION_STOCK_DESK_EMAIL", "no address"),
        ("ALLOCATION_COMMAND_STREAM", ""),
        ("ALLOCATION_RETRY_DELAY", "1e300"),
        ("SMTP_HOST", "bad host\\x"),
    ],
)
def test_the_worker_refuses_a_bad_setting_in_one_line(
    migrated: Cli, variable: str, value: str
) -> None:
    """Regression: BROKER_URL=garbage ended the worker with an ExceptionGroup (exit 70)."""
    result = migrated("worker", env={variable: value})

    assert result.returncode == 1
    assert error_line(result).startswith(f"allocation: error: {variable}={value!r}")


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "0", "-1", "x", "1e999", "86401", "1e-07"]
)
def test_a_worker_interval_that_is_no_positive_number_is_a_usage_error(
    migrated: Cli, value: str
) -> None:
    """Regression: `worker --interval nan` ran, catching up "every nans"."""
    result = migrated("worker", f"--interval={value}")

    assert result.returncode == 2
    assert "argument --interval: invalid interval" in error_line(result)


def test_a_position_beyond_64_bits_is_a_usage_error(migrated: Cli) -> None:
    """Regression: exit 70 on SQLite, "database unavailable" on PostgreSQL."""
    result = migrated("events", "list", "--after", "99999999999999999999999")

    assert result.returncode == 2
    assert "argument --after: invalid position" in error_line(result)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query", ["sslmode=disable", "ssl=disable", "application_name=shop&sslmode=prefer"]
)
def test_a_postgresql_url_takes_the_common_libpq_options(cli: Cli, query: str) -> None:
    """Regression: ?sslmode=disable ended in "TypeError: connect() got an unexpected
    keyword argument 'sslmode'" (exit 70)."""
    result = cli("db", "current", env={"DATABASE_URL": _postgres_url(query)})

    if result.returncode != 0 and "unavailable" in result.stderr:
        service_missing(f"PostgreSQL does not answer: {result.stderr}")
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.startswith("database at revision")


@pytest.mark.parametrize("query", ["target_session_attrs=any", "sslmode=maybe"])
def test_a_postgresql_url_option_asyncpg_cannot_take_is_refused_in_one_line(
    cli: Cli, query: str
) -> None:
    # Refused before any connection is tried: no server needed.
    url = f"postgresql://app:s3cret@127.0.0.1:1/db?{query}"

    result = cli("db", "current", env={"DATABASE_URL": url})

    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("allocation: error: DATABASE_URL=")
    assert "accepted query options: sslmode" in line
    assert "s3cret" not in line
