"""The relay woken by PostgreSQL's commit notices: the listener on its own, then
through a real worker's wiring."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from allocation import config
from allocation.adapters import engines
from allocation.adapters.postgres import listener
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.testing import FakeConsole, FakeNotifications
from tests.conftest import random_batchref, random_sku
from tests.integration.conftest import REDIS_URL
from tests.integration.postgres_fixtures import (  # noqa: F401 - fixtures
    URL,
    admin_fixture,
    database_fixture,
    new_event,
    schema_fixture,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import redis.asyncio as redis

    from allocation.adapters.postgres.database import PostgresDatabase
    from allocation.service_layer.messagebus import MessageBus

pytestmark = pytest.mark.postgres

# Far beyond any wait below: what reaches the stream was not found by the poll.
POLL_NEVER = 3600.0
# This process's listener, told apart from any other worker's on the same server.
LISTENER = f"{listener.APPLICATION_NAME} {os.getpid()}"


async def test_only_postgresql_gets_a_listener(
    database: PostgresDatabase, tmp_path: Path
) -> None:
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'allocation.db'}"
    sqlite = await engines.open_database(sqlite_url, pool_size=1, read_only=False)
    try:
        assert sqlite.log_listener() is None
    finally:
        await sqlite.close()
    assert database.log_listener() is not None


async def test_the_listener_hears_a_commit_of_events(
    database: PostgresDatabase,
) -> None:
    send, receive = anyio.create_memory_object_stream[None](10)
    with send, receive:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(
                database.log_listener().listen, lambda: send.send_nowait(None)
            )
            with anyio.fail_after(10):
                await receive.receive()  # listening now
                async with database.unit_of_work() as uow:
                    await uow.event_log.append([new_event("u1", 1)])
                    await uow.commit()
                await receive.receive()
            task_group.cancel_scope.cancel()


async def test_the_listener_says_when_its_connection_is_lost(
    database: PostgresDatabase, admin: Any
) -> None:
    listening = anyio.Event()

    async def lose_its_connection() -> None:
        await listening.wait()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1",
            LISTENER,
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(lose_its_connection)
            with pytest.raises(DatabaseUnavailable, match="closed"):
                await database.log_listener().listen(listening.set)


@contextlib.asynccontextmanager
async def _worker(client: redis.Redis) -> AsyncIterator[tuple[MessageBus, str]]:
    """A bus that relays like `allocation worker`, polling only every hour."""
    stream = f"test:events:{uuid.uuid4().hex[:8]}"
    commands = f"{stream}:commands"
    settings = config.Settings(
        database_url=URL,
        broker_url=REDIS_URL,
        broker_stream=stream,
        command_stream=commands,
        relay_interval=POLL_NEVER,
        catch_up_interval=0,
    )
    try:
        async with bootstrap(
            settings=settings,
            notifications=FakeNotifications(),
            console=FakeConsole(),
            relay=True,
        ) as bus:
            yield bus, stream
    finally:
        await client.delete(stream, commands)


async def _add_batch_and_see_it_relayed(
    bus: MessageBus, client: redis.Redis, stream: str
) -> None:
    reference = random_batchref()
    await services.add_batch(bus, reference, random_sku(), 10)
    with anyio.fail_after(5):
        while True:
            entries = await client.xrange(stream)
            if any(reference in fields["payload"] for _, fields in entries):
                return
            await client.xread(
                {stream: entries[-1][0] if entries else "0-0"}, block=1000
            )


async def _listening_pids(admin: Any) -> list[int]:
    """The backends of this process's listener that have issued their LISTEN."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
        " AND query LIKE 'LISTEN %'",
        LISTENER,
    )
    return [row["pid"] for row in rows]


async def _listeners_once_there_are(admin: Any, count: int) -> list[int]:
    """Poll the server (it has no event to wait for) until ``count`` listen."""
    with anyio.fail_after(10):
        while True:
            pids = await _listening_pids(admin)
            if len(pids) == count:
                return pids
            await anyio.sleep(0.05)


async def test_each_commit_wakes_the_relay(
    admin: Any, redis_client: redis.Redis
) -> None:
    """Three commits in turn, each awaited on the stream before the next: only
    wake-ups relay them all (the poll is an hour apart; the passes at start and on
    connecting cover two at most)."""
    async with _worker(redis_client) as (bus, stream):
        for _ in range(3):
            await _add_batch_and_see_it_relayed(bus, redis_client, stream)
        await _listeners_once_there_are(admin, 1)
    await _listeners_once_there_are(admin, 0)  # closed on the way out


async def test_the_relay_is_woken_again_after_its_listener_is_killed(
    admin: Any, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="allocation.service_layer.relay"):
        async with _worker(redis_client) as (bus, stream):
            [killed] = await _listeners_once_there_are(admin, 1)
            await admin.execute("SELECT pg_terminate_backend($1)", killed)
            # Most likely committed before the listener is back: its first wake-up
            # on reconnecting covers whatever it missed.
            await _add_batch_and_see_it_relayed(bus, redis_client, stream)
            assert await _listeners_once_there_are(admin, 1) != [killed]
            for _ in range(2):
                await _add_batch_and_see_it_relayed(bus, redis_client, stream)
    lines = [record.getMessage().split(":")[0] for record in caplog.records]
    # One line when the listener goes and one when it is back. The relay's own
    # outage lines (a pooled connection lost meanwhile) are its business, but
    # nothing may fail unexpectedly.
    assert [line for line in lines if line.startswith("relay wake-ups")] == [
        "relay wake-ups paused, will retry",
        "relay wake-ups resumed",
    ]
    assert "relay pass failed" not in lines
