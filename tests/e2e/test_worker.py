"""`allocation worker`: background catch-up in the foreground, stopped by a signal."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

# Commits a registration the way a process that died before dispatching leaves it.
_LOST_DISPATCH = """
import anyio
from allocation.bootstrap import bootstrap
from allocation.domain import users

async def main():
    async with bootstrap(catch_up=False) as bus:
        async with bus.uow_factory() as uow:
            uow.users.add(users.User.register("u-lost", "Ann", "lost@example.com"))
            await uow.commit()

anyio.run(main, backend="asyncio")
"""


def _start_worker(cli: Cli) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [*cli.launcher, "worker", "--interval", "0.2"],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    assert "running" in worker.stderr.readline()
    return worker


def _handled_by(cli: Cli, subscriber: str) -> int:
    connection = sqlite3.connect(cli.database)
    try:
        (count,) = connection.execute(
            "SELECT count(*) FROM processed_messages WHERE subscriber = ?",
            (subscriber,),
        ).fetchone()
        return int(count)
    finally:
        connection.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_stops_cleanly_on_a_signal(
    migrated: Cli, stop: signal.Signals
) -> None:
    worker = _start_worker(migrated)
    worker.send_signal(stop)
    stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert stderr.strip() == f"worker {worker.pid} stopping on {stop.name}"
    assert stdout == ""


def test_the_worker_delivers_what_a_dead_process_left(migrated: Cli) -> None:
    worker = _start_worker(migrated)  # it gives every subscriber a checkpoint
    try:
        subprocess.run(
            [sys.executable, "-c", _LOST_DISPATCH],
            cwd=migrated.cwd,
            env=migrated.env,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while _handled_by(migrated, "send_welcome_email") == 0:
            assert time.monotonic() < deadline, "the worker never caught up"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    for subscriber in ("send_coupon", "log_registration", "users_view"):
        assert _handled_by(migrated, subscriber) == 1
