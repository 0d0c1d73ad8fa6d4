"""No output of the command holds a planted credential (issue 8).

A password is planted in every credential setting (DATABASE_URL, BROKER_URL,
SMTP_PASSWORD); the command runs its use cases, its errors and a worker through a
broker outage, and the password shows on no stdout or stderr, ``-v`` included.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import service_missing
from tests.e2e.conftest import error_line, start_worker

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SECRET = f"planted{uuid.uuid4().hex[:12]}"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_url(**changes: object) -> str:
    """The test database's URL with ``changes`` (trust auth ignores a password)."""
    url = make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    return url.set(**changes).render_as_string(hide_password=False)  # type: ignore[arg-type]  # URL.set's keywords


def _smtp_failing_with_credentials() -> dict[str, str]:
    """SMTP credentials for a server that is not there: every email fails."""
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(_closed_port()),
        "SMTP_USERNAME": "allocation",
        "SMTP_PASSWORD": SECRET,
        "SMTP_STARTTLS": "on",
        "ALLOCATION_RETRY_ATTEMPTS": "2",
        "ALLOCATION_RETRY_DELAY": "0.01",
    }


class Outputs:
    """Everything the command printed, to search for the planted password at the end."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(
        self, result: subprocess.CompletedProcess[str]
    ) -> subprocess.CompletedProcess[str]:
        self.texts += [result.stdout, result.stderr]
        return result

    def assert_no_secret(self) -> None:
        leaks = [text for text in self.texts if SECRET in text]
        assert not leaks, leaks


def _wait_for(condition: str, worker_errors: Callable[[], str]) -> None:
    deadline = time.monotonic() + 30
    while condition not in worker_errors():
        assert time.monotonic() < deadline, worker_errors()
        time.sleep(0.05)


@pytest.mark.postgres
def test_no_output_holds_a_planted_password(cli: Cli) -> None:
    outputs = Outputs()
    database = _postgres_url(password=SECRET)
    env = {"DATABASE_URL": database, **_smtp_failing_with_credentials()}
    upgraded = outputs.add(cli("db", "upgrade", env=env))
    if upgraded.returncode != 0:
        service_missing(f"PostgreSQL does not answer: {upgraded.stderr}")
    name = uuid.uuid4().hex[:8]

    registered = outputs.add(
        cli("register-user", "Ann", f"{name}@example.com", env=env)
    )
    verbose = outputs.add(
        cli("-v", "register-user", "Bob", f"{name}.b@example.com", env=env)
    )
    added = outputs.add(cli("add-batch", f"b-{name}", f"SKU-{name}", "5", env=env))
    dead_database = _postgres_url(password=SECRET, port=_closed_port())
    unreachable = outputs.add(
        cli(
            "register-user", "Cy", "cy@example.com", env={"DATABASE_URL": dead_database}
        )
    )
    unusable = [
        outputs.add(cli("allocations", "o1", env={"DATABASE_URL": url}))
        for url in (
            f"postgresql://app:{SECRET}@h:notaport/db",
            f"postgresql://app:x@{SECRET}@h/db",
            f"postgresql://app:{SECRET} with spaces/@h/db",
            f"mysql://app:{SECRET}@h/db",
            f"nonsense://app:{SECRET}@h",
            f"app:{SECRET}@h/db",
        )
    ]
    broker = f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0"
    worker = start_worker(cli, **env, BROKER_URL=broker)
    _wait_for("paused, will retry", worker.errors)
    code, stdout, stderr = worker.stop()
    outputs.texts += [stdout, stderr]

    assert (registered.returncode, added.returncode) == (0, 0), (registered, added)
    assert "gave up" in registered.stderr  # the email really failed
    assert "Traceback" not in registered.stderr
    assert "Traceback" in verbose.stderr  # -v shows it, masked
    assert "unavailable" in error_line(unreachable)
    assert all(result.returncode == 1 for result in unusable), unusable
    assert code == 0, stderr
    assert "relaying to redis://:***@127.0.0.1" in stderr
    outputs.assert_no_secret()


def test_an_smtp_failure_is_one_line_without_v(migrated: Cli) -> None:
    """Regression (issue 8): the bus's error record printed its whole traceback."""
    env = _smtp_failing_with_credentials()

    quiet = migrated("register-user", "Ann", "ann@example.com", env=env)
    verbose = migrated("-v", "register-user", "Bob", "bob@example.com", env=env)

    assert quiet.returncode == 0, quiet
    lines = quiet.stderr.splitlines()
    assert any("send_welcome_email gave up" in line for line in lines), lines
    # Each record its one line: no traceback, no line of one.
    assert all(line.startswith(("WARNING ", "ERROR ")) for line in lines), lines
    assert "Traceback" in verbose.stderr
    assert SECRET not in quiet.stderr + verbose.stderr
