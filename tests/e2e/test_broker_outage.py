"""The worker relays to a Redis that stops and starts again: nothing is lost."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import start_worker, wait_for

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli, PrivateRedis

pytestmark = pytest.mark.e2e


def _logged_ids(cli: Cli) -> list[str]:
    connection = sqlite3.connect(cli.database)
    try:
        return [mid for (mid,) in connection.execute(
            "SELECT message_id FROM event_log ORDER BY position"
        )]  # fmt: skip
    finally:
        connection.close()


def _streamed_ids(server: PrivateRedis) -> list[str]:
    lines = server.cli("--no-raw", "xrange", "allocation:events", "-", "+").splitlines()
    return [
        json.loads(lines[index + 1].split(") ", 1)[1])
        for index, line in enumerate(lines)
        if line.strip().endswith('"message_id"')
    ]


def test_a_broker_outage_loses_nothing(
    migrated: Cli, private_redis: PrivateRedis
) -> None:
    worker = start_worker(
        migrated, BROKER_URL=private_redis.url, ALLOCATION_RELAY_INTERVAL="0.05"
    )
    try:
        migrated.ok("add-batch", "b1", "LAMP", "10")
        wait_for(lambda: len(_streamed_ids(private_redis)) == 1, "first event relayed")

        private_redis.stop()
        migrated.ok("add-batch", "b2", "LAMP", "5")
        migrated.ok("allocate", "o1", "LAMP", "3")
        wait_for(lambda: "relay paused" in worker.errors(), "the outage is noticed")
        private_redis.start()

        wait_for(
            lambda: set(_streamed_ids(private_redis)) == set(_logged_ids(migrated)),
            "every logged event relayed after the restart",
        )
        # The entries reach Redis a moment before the pass that sent them ends
        # and says so: a stop in between would cut the line short.
        wait_for(lambda: "relay resumed" in worker.errors(), "the recovery is told")
    finally:
        code, _, stderr = worker.stop()
    assert code == 0, stderr
    assert stderr.count("relay paused") == 1  # one line per outage, not per retry
    assert stderr.count("relay resumed") == 1
    first_seen = list(dict.fromkeys(_streamed_ids(private_redis)))
    assert first_seen == _logged_ids(migrated)  # in log order, duplicates aside


def _add_command(
    server: PrivateRedis, name: str, payload: str, message_id: str
) -> None:
    reply = server.cli(
        "xadd", "allocation:commands", "*",
        "name", name, "message_id", message_id, "payload", payload,
    )  # fmt: skip
    assert reply, "xadd failed"


def test_a_worker_consumes_commands_and_reclaims_a_dead_consumers(
    migrated: Cli, private_redis: PrivateRedis
) -> None:
    migrated.ok("add-batch", "b1", "LAMP", "10")
    migrated.ok("add-batch", "b2", "LAMP", "10", "--eta", "2030-01-01")
    migrated.ok("allocate", "o1", "LAMP", "6")
    _add_command(
        private_redis, "change_batch_quantity", '{"ref": "b1", "qty": 2}', "m-1"
    )
    _add_command(
        private_redis, "change_batch_quantity", '{"ref": "b1", "qty": 2}', "m-1"
    )
    _add_command(private_redis, "change_batch_quantity", "{oops", "m-2")

    worker = start_worker(migrated, BROKER_URL=private_redis.url)
    try:
        wait_for(
            lambda: private_redis.cli("xlen", "allocation:commands:dead") == "1",
            "the malformed entry is dead-lettered",
        )
        wait_for(
            lambda: migrated.ok("allocations", "o1") == ["LAMP\tb2"],
            "the command moved o1 to b2",
        )
    finally:
        code, _, stderr = worker.stop()
    assert code == 0, stderr

    # A consumer reads the next command and dies before handling it...
    _add_command(
        private_redis, "change_batch_quantity", '{"ref": "b1", "qty": 10}', "m-3"
    )
    private_redis.cli(
        "xreadgroup", "group", "allocation", "dead-consumer",
        "count", "1", "streams", "allocation:commands", ">",
    )  # fmt: skip
    assert private_redis.cli(
        "xpending", "allocation:commands", "allocation"
    ).startswith("1")
    # ...and the next worker reclaims it.
    worker = start_worker(
        migrated, BROKER_URL=private_redis.url, ALLOCATION_CLAIM_IDLE_MS="100"
    )
    try:
        wait_for(
            lambda: private_redis.cli(
                "xpending", "allocation:commands", "allocation"
            ).startswith("0"),
            "the dead consumer's entry is reclaimed and handled",
        )
    finally:
        code, _, stderr = worker.stop()
    assert code == 0, stderr
    listed = migrated("events", "list", "--name", "batch_quantity_changed")
    assert (listed.returncode, listed.stderr) == (0, "2 events\n")
    assert [line.split("\t")[-1] for line in listed.stdout.splitlines()] == [
        '{"ref": "b1", "sku": "LAMP", "qty": 2}',  # once, though delivered twice
        '{"ref": "b1", "sku": "LAMP", "qty": 10}',
    ]
