"""Two `allocation worker` processes drain one PostgreSQL event log together."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import text

from allocation import config
from allocation.adapters import database, migrations
from allocation.bootstrap import bootstrap
from allocation.domain import events, users
from allocation.service_layer import catchup, services
from allocation.service_layer.ports import NewEvent
from tests.e2e.conftest import fresh_postgres_database, start_worker

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DATABASE = "allocation_workers_test"
EVENTS = 10_000


async def _log_undelivered_events(url: str) -> None:
    """Migrate, give every subscriber its checkpoint, then log events nobody handled."""
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    settings = config.Settings(database_url=url)
    async with bootstrap(settings=settings, catch_up=False) as bus:
        await catchup.catch_up(bus)
        batch: list[NewEvent] = []
        for index in range(EVENTS):
            if index % 10 == 0:
                # Registered as commands register: the users view is inline.
                async with bus.uow_factory() as uow:
                    uow.users.add(
                        users.User.register(f"u{index}", "Ann", f"u{index}@example.com")
                    )
                    await uow.commit()
                uow.collect_new_events()  # left undispatched, for the workers
            else:
                event = events.Allocated(
                    orderid=f"o{index}", sku="LAMP", qty=1, batchref=f"b{index % 7}"
                )
                batch.append(NewEvent(event, "product", "LAMP", index + 1))
            if len(batch) == 1000:
                async with bus.uow_factory() as uow:
                    await uow.event_log.append(batch)
                    await uow.commit()
                batch = []


async def _counts(url: str) -> dict[str, int]:
    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT subscriber, count(*), count(DISTINCT message_id)"
                    " FROM processed_messages GROUP BY subscriber"
                )
            )
            counts = {}
            for subscriber, total, distinct in rows:
                assert total == distinct
                counts[f"handled by {subscriber}"] = int(total)
            for table in ("allocations_view", "users_view", "dead_letters"):
                counts[f"rows in {table}"] = int(
                    (
                        await connection.execute(text(f"SELECT count(*) FROM {table}"))
                    ).scalar()
                    or 0
                )
            return counts
    finally:
        await engine.dispose()


def test_two_workers_handle_each_tracked_event_exactly_once(cli: Cli) -> None:
    url = anyio.run(fresh_postgres_database, DATABASE, backend="asyncio")
    anyio.run(_log_undelivered_events, url, backend="asyncio")
    workers = [start_worker(cli, DATABASE_URL=url) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while True:
            counts = anyio.run(_counts, url, backend="asyncio")
            if (
                counts.get("handled by allocations_view", 0) == 9_000
                and counts.get("handled by send_coupon", 0) == 1_000
            ):
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.5)
    finally:
        stopped = [worker.stop() for worker in workers]
    assert [code for code, _, _ in stopped] == [0, 0], stopped

    counts = anyio.run(_counts, url, backend="asyncio")
    # One record per tracked effect (nothing handled twice, nothing skipped), and
    # the read models hold exactly those effects.
    assert counts == counts | {
        "handled by allocations_view": 9_000,
        "rows in allocations_view": 9_000,
        "rows in users_view": 1_000,
        "rows in dead_letters": 0,
    }
    for outside_effect in ("send_welcome_email", "send_coupon", "log_registration"):
        assert counts[f"handled by {outside_effect}"] == 1_000


_ALLOCATE_MANY = """
import json, sys, anyio
from allocation import config
from allocation.bootstrap import bootstrap
from allocation.service_layer import services

async def main(url, prefix, tasks):
    outcomes = {}
    settings = config.Settings(database_url=url)
    async with bootstrap(settings=settings, catch_up=False) as bus:
        async def one(index):
            orderid = f"{prefix}-{index}"
            outcomes[orderid] = await services.allocate(bus, orderid, "LAMP", 1)
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(one, index)
    print(json.dumps(outcomes))

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), backend="asyncio")
"""


async def _batch_of(url: str, quantity: int) -> None:
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    async with bootstrap(
        settings=config.Settings(database_url=url), catch_up=False
    ) as bus:
        await services.add_batch(bus, "b1", "LAMP", quantity)


async def _allocated(url: str) -> tuple[int, int, int]:
    async with (
        bootstrap(
            settings=config.Settings(database_url=url), catch_up=False, read_only=True
        ) as bus,
        bus.uow_factory() as uow,
    ):
        product = await uow.products.get("LAMP")
    assert product is not None
    lines = [line for batch in product.batches for line in batch.allocations]
    return len(lines), sum(line.qty for line in lines), product.version_number


def test_processes_allocating_one_sku_never_over_allocate(cli: Cli) -> None:
    url = anyio.run(fresh_postgres_database, DATABASE, backend="asyncio")
    anyio.run(_batch_of, url, 30, backend="asyncio")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _ALLOCATE_MANY, url, f"p{number}", "25"],
            cwd=cli.cwd,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(2)
    ]
    outcomes: dict[str, str | None] = {}
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outcomes |= json.loads(stdout.splitlines()[-1])  # after the stock emails

    assert len(outcomes) == 50  # every command answered, none failed on a conflict
    assert sum(1 for batch in outcomes.values() if batch == "b1") == 30
    assert sum(1 for batch in outcomes.values() if batch is None) == 20
    assert anyio.run(_allocated, url, backend="asyncio") == (30, 30, 1 + 50)
