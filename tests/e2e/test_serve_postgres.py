"""Two `allocation serve` processes on one PostgreSQL database, driven at once."""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from allocation.adapters import database, migrations
from tests.e2e.conftest import fresh_postgres_database
from tests.e2e.test_serve import start_server

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ORDERS = 40
DATABASE = "allocation_serve_test"


async def _migrated_database() -> str:
    url = await fresh_postgres_database(DATABASE)
    engine = database.create_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    return url


def test_two_servers_share_one_database_and_one_key_space(cli: Cli) -> None:
    url = anyio.run(_migrated_database, backend="asyncio")
    # Small pools: the server's 100 connections are shared with other suites.
    servers = [
        start_server(cli, DATABASE_URL=url, ALLOCATION_DATABASE_POOL_SIZE="4")
        for _ in range(2)
    ]
    try:
        with httpx.Client(timeout=30) as client:
            added = client.post(
                f"{servers[0].url}/batches",
                json={"ref": "b1", "sku": "LAMP", "qty": ORDERS},
            )
            assert added.status_code == 201, added.text

            def allocate(number: int) -> httpx.Response:
                # Each order is sent twice with one key, once to each server.
                server = servers[number % 2]
                return client.post(
                    f"{server.url}/allocations",
                    json={"orderid": f"o{number // 2}", "sku": "LAMP", "qty": 1},
                    headers={"Idempotency-Key": f"order-{number // 2}"},
                )

            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                answers = list(pool.map(allocate, range(2 * ORDERS)))
            log = client.get(
                f"{servers[1].url}/events",
                params={"name": "allocated", "limit": 1000},
            ).json()["events"]
            shown = client.get(
                f"{servers[1].url}/allocations/o0",
                params={"min_position": max(event["position"] for event in log)},
            )
    finally:
        codes = [server.stop() for server in servers]

    assert {answer.status_code for answer in answers} <= {201, 409}, [
        answer.text for answer in answers if answer.status_code not in {201, 409}
    ]
    assert sorted(event["payload"]["orderid"] for event in log) == sorted(
        f"o{number}" for number in range(ORDERS)
    )
    assert shown.json() == [{"sku": "LAMP", "batchref": "b1"}]
    assert codes == [0, 0], [server.errors() for server in servers]
