"""What several worker processes share on PostgreSQL: one catch-up pass per
subscriber (advisory locks), and the relay's wake-up on each commit (LISTEN)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from allocation.adapters.postgres.database import PostgresDatabase
from allocation.adapters.postgres.locks import PostgresSubscriberLocks
from allocation.service_layer.exceptions import DatabaseUnavailable
from tests.integration.postgres_fixtures import (  # noqa: F401 - fixtures
    URL,
    admin_fixture,
    database_fixture,
    new_event,
    schema_fixture,
)

pytestmark = pytest.mark.postgres


async def test_one_worker_at_a_time_catches_a_subscriber_up(
    database: PostgresDatabase,
) -> None:
    other_worker = await PostgresDatabase.open(URL, pool_size=1)
    try:
        mine = PostgresSubscriberLocks(database)
        theirs = PostgresSubscriberLocks(other_worker)
        async with mine.hold("send_coupon") as held:
            assert held
            async with theirs.hold("send_coupon") as also_held:
                assert not also_held
            async with theirs.hold("users_view") as other_subscriber:
                assert other_subscriber
        async with theirs.hold("send_coupon") as held_after_release:
            assert held_after_release
    finally:
        await other_worker.close()


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
            " WHERE application_name LIKE 'allocation relay wake-ups%'"
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(lose_its_connection)
            with pytest.raises(DatabaseUnavailable, match="closed"):
                await database.log_listener().listen(listening.set)
