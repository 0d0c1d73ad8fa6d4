"""`allocation worker`: background catch-up in the foreground, stopped by a signal."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import start_worker

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

# Every subscriber to user_registered.
_SUBSCRIBERS = ("send_welcome_email", "log_registration", "send_coupon")


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
    worker = start_worker(migrated)
    code, stdout, stderr = worker.stop(stop)
    assert code == 0, stderr
    assert (
        stderr.splitlines()[-1]
        == f"worker {worker.process.pid} stopping on {stop.name}"
    )
    assert stdout == ""


def test_the_worker_delivers_what_a_dead_process_left(migrated: Cli) -> None:
    worker = start_worker(migrated)  # it gives every subscriber a checkpoint
    try:
        subprocess.run(
            [sys.executable, "-c", _LOST_DISPATCH],
            cwd=migrated.cwd,
            env=migrated.env,
            check=True,
            timeout=60,
        )
        # A pass records one subscriber after the other: stopped after the first,
        # the worker rightly leaves the rest to the next start.
        deadline = time.monotonic() + 30
        while any(_handled_by(migrated, name) == 0 for name in _SUBSCRIBERS):
            assert time.monotonic() < deadline, worker.errors()
            time.sleep(0.1)
    finally:
        code, stdout, stderr = worker.stop()
    assert code == 0, stderr
    for subscriber in _SUBSCRIBERS:
        assert _handled_by(migrated, subscriber) == 1
    assert sorted(line.split("]")[0] for line in stdout.splitlines()) == [
        "[Coupon Service",
        "[Email Service",
        "[Log Service",
    ]
