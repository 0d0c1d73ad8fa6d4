"""More concurrent commands than the SQLite pool has connections."""

from __future__ import annotations

import anyio

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications
from tests.integration import sqlite_fixtures

migrated_file = sqlite_fixtures.migrated_file
path = sqlite_fixtures.path
url = sqlite_fixtures.url

COMMANDS = 12


async def test_writers_beyond_the_pool_wait_their_turn_without_a_deadlock(
    url: str,
) -> None:
    """Regression: a writer took the process's writer lock before a connection,
    while every pooled connection waited for that lock; only the busy timeout
    (15 s) broke it, as a ConcurrencyConflict. With no reruns allowed, every
    command must still succeed."""
    settings = config.Settings(
        database_url=url, database_pool_size=2, conflict_retries=0
    )
    async with bootstrap(
        settings=settings, console=FakeConsole(), notifications=FakeNotifications()
    ) as bus:
        await services.add_batch(bus, "b1", "LAMP", 1000)
        batches: list[str | None] = []

        async def allocate(number: int) -> None:
            batches.append(await services.allocate(bus, f"o{number}", "LAMP", 1))

        async with anyio.create_task_group() as group:
            for number in range(COMMANDS):
                group.start_soon(allocate, number)

    assert batches == ["b1"] * COMMANDS
