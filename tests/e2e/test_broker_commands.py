"""The command stream as an operator sees it: the worker's lines, `allocation broker`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import error_line, start_worker, wait_for

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli, PrivateRedis

pytestmark = pytest.mark.e2e

COMMANDS, DEAD = "allocation:commands", "allocation:commands:dead"


def _redis(private_redis: PrivateRedis, *args: str | bytes) -> str:
    """redis-cli with arguments that may be any bytes."""
    done = subprocess.run(
        ["redis-cli", "-p", str(private_redis.port), *args],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode(errors="backslashreplace").strip()


def test_the_worker_logs_one_line_per_dead_letter_and_leaves_the_group(
    migrated: Cli, private_redis: PrivateRedis
) -> None:
    """Issue 8, items 2 and 3: nothing was logged, and bytes broke every read."""
    wrong_eta = _redis(
        private_redis, "xadd", COMMANDS, "*", "name", "create_batch", "message_id", "m-1",
        "payload", '{"ref": "b1", "sku": "LAMP", "qty": 5, "eta": 12345}',
    )  # fmt: skip
    not_utf8 = _redis(
        private_redis, "xadd", COMMANDS, "*", "name", "create_batch", "message_id", b"\xff",
        "payload", b"\xc3\x28",
    )  # fmt: skip
    _redis(
        private_redis, "xadd", COMMANDS, "*", "name", "create_batch", "message_id", "m-3",
        "payload", '{"ref": "b3", "sku": "LAMP", "qty": 5, "eta": "2030-01-01"}',
    )  # fmt: skip

    worker = start_worker(migrated, BROKER_URL=private_redis.url)
    try:
        wait_for(
            lambda: _redis(private_redis, "xlen", DEAD) == "2", "both dead-lettered"
        )
        wait_for(
            lambda: migrated("events", "list", "--name", "batch_created").stdout != "",
            "the good entry after them is handled",
        )
    finally:
        code, _, stderr = worker.stop()
    assert code == 0, stderr
    logged = [line for line in stderr.splitlines() if "dead-lettered" in line]
    prefix = "WARNING allocation.service_layer.consumer: entry"
    assert len(logged) == 2, stderr
    assert logged[0].startswith(
        f"{prefix} {wrong_eta} dead-lettered: malformed: invalid 'create_batch'"
        " message: eta: "
    )
    assert logged[1] == (
        f"{prefix} {not_utf8} dead-lettered: malformed: not UTF-8:"
        " field 'message_id', 'payload'"
    )
    assert "Traceback" not in stderr
    assert _redis(private_redis, "xinfo", "consumers", COMMANDS, "allocation") == ""
    assert _redis(private_redis, "xpending", COMMANDS, "allocation").startswith("0")


@pytest.fixture
def broker(migrated: Cli, private_redis: PrivateRedis) -> Cli:
    return dataclasses.replace(
        migrated, env=migrated.env | {"BROKER_URL": private_redis.url}
    )


def _dead_letter(private_redis: PrivateRedis, reason: str, original_id: str) -> str:
    return _redis(
        private_redis, "xadd", DEAD, "*", "name", "create_batch", "message_id", "m-9",
        "payload", json.dumps({"ref": "b9", "sku": "LAMP", "qty": 1}),
        "reason", reason, "original_id", original_id,
    )  # fmt: skip


def test_dead_letters_are_listed_escaped_retried_and_discarded(
    broker: Cli, private_redis: PrivateRedis
) -> None:
    first = _dead_letter(private_redis, "refused: \x1b[2J\tforged\nline", "1-0")
    second = _dead_letter(private_redis, "malformed: no 'name' field", "2-0")

    listed = broker("broker", "dead-letters", "list")
    assert (listed.returncode, listed.stderr) == (0, f"2 dead letters in {DEAD}\n")
    assert listed.stdout.splitlines() == [
        f"{first}\t1-0\tcreate_batch\trefused: \\x1b[2J\\tforged\\nline",
        f"{second}\t2-0\tcreate_batch\tmalformed: no 'name' field",
    ]

    [sent] = broker.ok("broker", "dead-letters", "retry", first)
    new_id = sent.rsplit(" ", 1)[-1]
    assert sent == f"dead letter {first} sent to {COMMANDS} again as {new_id}"
    assert _redis(private_redis, "xrange", COMMANDS, "-", "+").splitlines() == [
        new_id, "name", "create_batch", "message_id", "m-9",
        "payload", '{"ref": "b9", "sku": "LAMP", "qty": 1}',
    ]  # fmt: skip
    again = broker("broker", "dead-letters", "retry", first)
    assert error_line(again) == (
        f"allocation: error: no dead letter with id '{first}' in '{DEAD}'"
    )
    assert again.returncode == 1

    assert broker.ok("broker", "dead-letters", "discard", second) == [
        f"dead letter {second} discarded"
    ]
    assert _redis(private_redis, "xlen", DEAD) == "0"
    assert error_line(broker("broker", "dead-letters", "discard", "nope")).endswith(
        "(see allocation broker dead-letters discard --help)"
    )


def test_pending_shows_the_consumers_holding_unacknowledged_entries(
    broker: Cli, private_redis: PrivateRedis
) -> None:
    nothing = broker("broker", "pending")
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert nothing.stderr == (
        f"no group allocation of {COMMANDS} yet: no worker has read it\n"
    )
    _redis(private_redis, "xgroup", "create", COMMANDS, "allocation", "0", "mkstream")
    _redis(private_redis, "xadd", COMMANDS, "*", "name", "create_batch")
    _redis(
        private_redis, "xreadgroup", "group", "allocation", "stuck\x1bworker",
        "count", "1", "streams", COMMANDS, ">",
    )  # fmt: skip

    shown = broker("broker", "pending")

    assert shown.returncode == 0, shown.stderr
    [line] = shown.stdout.splitlines()
    name, pending, idle = line.split("\t")
    assert (name, pending) == ("stuck\\x1bworker", "1 pending")
    assert idle.startswith("idle ")
    assert shown.stderr == (
        f"1 entries pending, 1 consumers in group allocation of {COMMANDS}\n"
    )


def test_the_broker_commands_need_broker_url(migrated: Cli) -> None:
    result = migrated("broker", "pending")
    assert result.returncode == 1
    assert "BROKER_URL is not set" in error_line(result)


@pytest.mark.parametrize(
    "entry_id", ["18446744073709551616-0", "1-18446744073709551616"]
)
def test_an_entry_id_beyond_64_bits_is_a_usage_error(
    broker: Cli, entry_id: str
) -> None:
    """Regression: Redis refused it and the command exited 70."""
    result = broker("broker", "dead-letters", "retry", entry_id)

    assert result.returncode == 2
    assert "invalid entry id" in error_line(result)


def test_a_command_stream_key_of_another_type_is_one_line(
    broker: Cli, private_redis: PrivateRedis
) -> None:
    """Regression: WRONGTYPE from Redis ended in exit 70."""
    _redis(private_redis, "set", "not-a-stream", "x")

    result = broker(
        "broker", "pending", env={"ALLOCATION_COMMAND_STREAM": "not-a-stream"}
    )

    assert result.returncode == 1
    assert "refused" in error_line(result)
