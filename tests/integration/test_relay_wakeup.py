"""The relay woken by PostgreSQL's commit notices, through a real worker's wiring."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import text

from allocation import config
from allocation.adapters import log_listener
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications
from tests.conftest import random_batchref, random_sku
from tests.integration.conftest import REDIS_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus

# Far beyond any wait below: what reaches the stream was not found by the poll.
POLL_NEVER = 3600.0
# This process's listener, told apart from any other worker's on the same server.
LISTENER = f"{log_listener.APPLICATION_NAME} {os.getpid()}"


@contextlib.asynccontextmanager
async def _worker(
    database_url: str, client: redis.Redis
) -> AsyncIterator[tuple[MessageBus, str]]:
    """A bus that relays like `allocation worker`, polling only every hour."""
    stream = f"test:events:{uuid.uuid4().hex[:8]}"
    commands = f"{stream}:commands"
    settings = config.Settings(
        database_url=database_url,
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


async def _listening_pids(engine: AsyncEngine) -> list[int]:
    """The backends of this process's listener that have issued their LISTEN."""
    async with engine.connect() as connection:
        pids = await connection.scalars(
            text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :name"
                " AND query LIKE 'LISTEN %'"
            ),
            {"name": LISTENER},
        )
        return list(pids)


async def _listeners_once_there_are(engine: AsyncEngine, count: int) -> list[int]:
    """Poll the server (it has no event to wait for) until ``count`` listen."""
    with anyio.fail_after(10):
        while True:
            pids = await _listening_pids(engine)
            if len(pids) == count:
                return pids
            await anyio.sleep(0.05)


def _skip_unless_postgres(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("commit notices are PostgreSQL's; SQLite relays by polling")


@pytest.mark.postgres
async def test_each_commit_wakes_the_relay(
    engine: AsyncEngine, database_url: str, redis_client: redis.Redis
) -> None:
    """Three commits in turn, each awaited on the stream before the next: only
    wake-ups relay them all (the poll is an hour apart; the passes at start and on
    connecting cover two at most)."""
    _skip_unless_postgres(engine)
    async with _worker(database_url, redis_client) as (bus, stream):
        for _ in range(3):
            await _add_batch_and_see_it_relayed(bus, redis_client, stream)
        await _listeners_once_there_are(engine, 1)
    await _listeners_once_there_are(engine, 0)  # closed on the way out


@pytest.mark.postgres
async def test_the_relay_is_woken_again_after_its_listener_is_killed(
    engine: AsyncEngine,
    database_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _skip_unless_postgres(engine)
    with caplog.at_level(logging.WARNING, logger="allocation.service_layer.relay"):
        async with _worker(database_url, redis_client) as (bus, stream):
            [killed] = await _listeners_once_there_are(engine, 1)
            async with engine.connect() as connection:
                await connection.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}
                )
            # Most likely committed before the listener is back: its first wake-up
            # on reconnecting covers whatever it missed.
            await _add_batch_and_see_it_relayed(bus, redis_client, stream)
            assert await _listeners_once_there_are(engine, 1) != [killed]
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


async def test_only_postgresql_gets_a_listener() -> None:
    assert log_listener.for_database("sqlite+aiosqlite:///allocation.db") is None
    assert log_listener.for_database("postgresql://u@h/db") is not None
