"""Real processes: the installed ``allocation`` command, run as a user would."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from allocation.adapters import database
from tests.conftest import service_missing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPOSITORY = Path(__file__).resolve().parents[2]
# The console script pip put next to this interpreter, as a user's shell finds it.
SCRIPT = (str(Path(sys.executable).parent / "allocation"),)
MODULE = (sys.executable, "-m", "allocation")
# Settings the developer's shell may hold that would steer the command away from
# the default database and the console notifications these tests expect.
_SCRUBBED = ("DATABASE_URL", "PYTHONIOENCODING", "PYTHONPATH", "SMTP_HOST")
# The server's maintenance database, through which a suite creates one of its own.
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


@dataclasses.dataclass(frozen=True)
class Cli:
    """Runs the command in ``cwd`` with a clean environment."""

    cwd: Path
    env: dict[str, str]
    launcher: tuple[str, ...] = SCRIPT

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.launcher, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            encoding="utf-8",
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> list[str]:
        """Run a command that must succeed quietly; return its stdout lines."""
        result = self(*args)
        assert (result.returncode, result.stderr) == (0, ""), result
        return result.stdout.splitlines()

    @property
    def database(self) -> Path:
        return self.cwd / "allocation.db"


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a failure explained in exactly one line on stderr; return that line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# Catch-up moves its checkpoints at every start: bookkeeping, not the user's data.
_BOOKKEEPING = frozenset({"subscriber_checkpoints"})


def snapshot(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every data table, to prove a failed command changed nothing."""
    connection = sqlite3.connect(database)
    try:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            if name not in _BOOKKEEPING
        ]
        return {
            table: sorted(
                connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr
            )
            for table in tables
        }
    finally:
        connection.close()


def _clean_environment() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _SCRUBBED and not name.startswith("ALLOCATION_")
    }
    # A UTF-8 locale as on a user's machine; warnings as errors, as in this suite,
    # so an unclosed connection or a deprecation shows up on stderr.
    return env | {"LC_ALL": "C.UTF-8", "PYTHONWARNINGS": "error"}


def cli_in(directory: Path) -> Cli:
    """The command in ``directory``, outside the repository, with a clean environment."""
    assert not directory.is_relative_to(REPOSITORY)
    return Cli(cwd=directory, env=_clean_environment())


def _copy_database(source: Cli, directory: Path) -> Cli:
    for file in source.cwd.glob("allocation.db*"):
        shutil.copy2(file, directory / file.name)
    return cli_in(directory)


async def fresh_postgres_database(name: str) -> str:
    """The URL of database ``name``, dropped and created empty on ADMIN_URL's server
    (skipped locally, failed under CI, when the server does not answer)."""
    admin = database.create_engine(ADMIN_URL)
    try:
        async with admin.connect() as connection:
            autocommit = await connection.execution_options(
                isolation_level="AUTOCOMMIT"
            )
            await autocommit.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            await autocommit.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        service_missing(f"PostgreSQL at {ADMIN_URL} does not answer: {error}")
    finally:
        await admin.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command in a fresh, empty directory outside the repository."""
    return cli_in(tmp_path)


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    template = cli_in(tmp_path_factory.mktemp("migrated"))
    template.ok("db", "upgrade")
    return template


@pytest.fixture(scope="session")
def _seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    template = cli_in(tmp_path_factory.mktemp("seeded"))
    template.ok("db", "upgrade")
    template.ok("add-batch", "warehouse", "LAMP", "10")
    template.ok("allocate", "o1", "LAMP", "3")
    template.ok("register-user", "Иван", "ivan@example.com")
    return template


@pytest.fixture
def migrated(_migrated_template: Cli, tmp_path: Path) -> Cli:
    """The command on a database already at the newest schema (a copy, made once)."""
    return _copy_database(_migrated_template, tmp_path)


@pytest.fixture
def seeded(_seeded_template: Cli, tmp_path: Path) -> Cli:
    """A migrated database holding batch ``warehouse`` (10 LAMP, 3 to order ``o1``) and Иван."""
    return _copy_database(_seeded_template, tmp_path)


@dataclasses.dataclass
class Worker:
    """A running `allocation worker`; its output goes to files, so it never blocks."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stop(self, how: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
        """Signal it, wait for it; return its exit code, stdout and stderr."""
        self.process.send_signal(how)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the worker ignored {how.name}: {self.errors()}"
            ) from None
        return code, self.stdout.read_text(), self.errors()

    def errors(self) -> str:
        return self.stderr.read_text()


def start_worker(cli: Cli, **env: str) -> Worker:
    """Start `allocation worker` in ``cli``'s directory; return once it runs."""
    number = len(list(cli.cwd.glob("worker-*.err")))
    stdout, stderr = cli.cwd / f"worker-{number}.out", cli.cwd / f"worker-{number}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*cli.launcher, "worker", "--interval", "0.2"],
            cwd=cli.cwd,
            env=cli.env | env,
            stdout=out,
            stderr=err,
        )
    worker = Worker(process, stdout, stderr)
    deadline = time.monotonic() + 30
    while "running" not in worker.errors():
        assert process.poll() is None, worker.errors()
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
    return worker


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, with an append-only file so a restart keeps
    what it had (the shared server on 6379 must not be stopped)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
                "--port", str(self.port), "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--logfile", str(self.directory / "redis.log"),
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        self._wait(lambda: self.cli("ping") == "PONG")

    def stop(self) -> None:
        self.cli("shutdown")
        self._wait(lambda: self.cli("ping") != "PONG")

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip()

    @staticmethod
    def _wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "redis-server did not change state"
            time.sleep(0.05)


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.cli("shutdown", "nosave")
