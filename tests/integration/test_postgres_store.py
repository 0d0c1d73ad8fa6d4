"""What only the PostgreSQL store does: its locks, its connections, its errors.

The behaviour every store shares is the contract suite's; here are the stream and
append locks under real concurrency, lost and cancelled connections, read-only
databases, refused values, claims and shadow tables.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from allocation.adapters.postgres.database import PostgresDatabase
from allocation.adapters.postgres.store import stream_lock_key
from allocation.domain.exceptions import ConcurrencyConflict
from allocation.service_layer import projections
from allocation.service_layer.exceptions import (
    ClaimTaken,
    DatabaseUnavailable,
    DataRefused,
)
from allocation.service_layer.ports import Claim
from tests.integration.postgres_fixtures import (  # noqa: F401 - fixtures
    URL,
    WRITERS,
    admin_fixture,
    database_fixture,
    new_event,
    schema_fixture,
    waiting_on_advisory_locks,
)

if TYPE_CHECKING:
    from allocation.adapters.postgres.unit_of_work import PostgresUnitOfWork

pytestmark = pytest.mark.postgres


async def append_next(uow: PostgresUnitOfWork, stream: str) -> None:
    """Lock the stream, read its version, append the next: what a repository does."""
    await uow.event_log.lock_stream("user", stream)
    version = len(await uow.event_log.read_stream("user", stream))
    await uow.event_log.append([new_event(stream, version + 1)])


async def test_a_second_writer_of_a_stream_waits_for_the_first_to_commit(
    database: PostgresDatabase, admin: Any
) -> None:
    stream = str(uuid.uuid4())
    async with database.unit_of_work() as first:
        await append_next(first, stream)
        async with anyio.create_task_group() as task_group:

            async def second_writer() -> None:
                async with database.unit_of_work() as second:
                    await append_next(second, stream)
                    await second.commit()

            task_group.start_soon(second_writer)
            await waiting_on_advisory_locks(admin, 1)
            await first.commit()
    async with database.unit_of_work() as reader:
        logged = await reader.event_log.read_stream("user", stream)
    assert [entry.aggregate_version for entry in logged] == [1, 2]


async def test_concurrent_writers_of_one_stream_queue_and_never_conflict(
    database: PostgresDatabase,
) -> None:
    stream = str(uuid.uuid4())
    connected = 0
    all_connected = anyio.Event()

    async def writer() -> None:
        nonlocal connected
        async with database.unit_of_work() as uow:
            await uow.event_log.last_position()  # its connection is checked out
            connected += 1
            if connected == WRITERS:
                all_connected.set()
            await all_connected.wait()
            await append_next(uow, stream)
            await uow.commit()

    async with anyio.create_task_group() as task_group:
        for _ in range(WRITERS):
            task_group.start_soon(writer)
    async with database.unit_of_work() as reader:
        logged = await reader.event_log.read_stream("user", stream)
    assert [entry.aggregate_version for entry in logged] == list(range(1, WRITERS + 1))


async def test_an_appender_draws_its_position_after_the_previous_commits(
    database: PostgresDatabase, admin: Any
) -> None:
    async with database.unit_of_work() as first:
        await first.event_log.append([new_event("first", 1)])
        async with anyio.create_task_group() as task_group:

            async def second_appender() -> None:
                async with database.unit_of_work() as second:
                    await second.event_log.append([new_event("second", 1)])
                    await second.commit()

            task_group.start_soon(second_appender)
            await waiting_on_advisory_locks(admin, 1)
            async with database.unit_of_work() as reader:
                assert await reader.event_log.last_position() == 0
            await first.commit()
    async with database.unit_of_work() as reader:
        logged = await reader.event_log.read(after=0)
    assert [(entry.aggregate_id, entry.position) for entry in logged] == [
        ("first", 1),
        ("second", 2),
    ]


async def test_a_reader_never_sees_a_position_before_the_ones_under_it(
    database: PostgresDatabase,
) -> None:
    """Positions are gap-free in commit order: whatever head a reader sees, it
    then finds every event up to it."""
    holes: list[tuple[int, list[int]]] = []
    appends = WRITERS * 10

    async def appender(number: int) -> None:
        for version in range(1, appends // WRITERS + 1):
            async with database.unit_of_work() as uow:
                await uow.event_log.append([new_event(f"s{number}", version)])
                await uow.commit()

    async def reader(stop: anyio.Event) -> None:
        while not stop.is_set():
            async with database.unit_of_work() as uow:
                head = await uow.event_log.last_position()
                seen = [e.position for e in await uow.event_log.read(after=0)]
            if seen[:head] != list(range(1, head + 1)):
                holes.append((head, seen))
            await anyio.lowlevel.checkpoint()

    stop = anyio.Event()
    async with anyio.create_task_group() as readers:
        readers.start_soon(reader, stop)
        async with anyio.create_task_group() as appenders:
            for number in range(WRITERS):
                appenders.start_soon(appender, number)
        stop.set()
    async with database.unit_of_work() as uow:
        positions = [entry.position for entry in await uow.event_log.read(after=0)]
    assert positions == list(range(1, appends + 1))
    assert holes == []


async def test_a_connection_killed_mid_transaction_leaves_nothing(
    admin: Any,
) -> None:
    database = await PostgresDatabase.open(URL, pool_size=1)
    try:
        async with database.unit_of_work() as uow:
            await uow.event_log.claim([Claim("email", "kill@example.com", "u1")])
            await uow.users_view.add("u1", "Ivan", "kill@example.com")
            await uow.event_log.append([new_event("u1", 1)])
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"
            )
            with pytest.raises(DatabaseUnavailable):
                await uow.commit()
        # The one connection of the pool was replaced, not handed out dead.
        async with database.unit_of_work() as uow:
            assert await uow.event_log.last_position() == 0
            assert await uow.event_log.claim_owner("email", "kill@example.com") is None
            assert await uow.users_view.all_rows() == []
    finally:
        await database.close()


async def test_leaving_after_the_connection_was_killed_raises_only_ones_own_error(
    admin: Any,
) -> None:
    database = await PostgresDatabase.open(URL, pool_size=1)

    async def fail_after_losing_the_connection() -> None:
        async with database.unit_of_work() as uow:
            await uow.users_view.add("u1", "Ivan", "kill@example.com")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"
            )
            with anyio.fail_after(10):
                while True:
                    if _given_back_by_asyncpg(uow):
                        break
                    await anyio.sleep(0.01)
            raise LookupError("the caller's own")

    try:
        with pytest.raises(LookupError):
            await fail_after_losing_the_connection()
        async with database.unit_of_work() as uow:
            assert await uow.users_view.all_rows() == []
    finally:
        await database.close()


def _given_back_by_asyncpg(uow: PostgresUnitOfWork) -> bool:
    """Whether asyncpg saw the unit of work's connection close and gave it back to
    the pool by itself (its proxy then refuses every call): nothing public says."""
    session = uow._session
    assert session is not None
    proxy: Any = session._connection
    return proxy._con is None


async def test_a_cancelled_unit_of_work_hands_back_no_half_used_connection(
    admin: Any,
) -> None:
    database = await PostgresDatabase.open(URL, pool_size=1)
    try:
        async with anyio.create_task_group() as task_group:

            async def stuck_writer() -> None:
                async with database.unit_of_work() as uow:
                    await uow.event_log.lock_stream("user", "busy")

            await admin.execute("BEGIN")
            await admin.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", *stream_lock_key("user", "busy")
            )
            task_group.start_soon(stuck_writer)
            await waiting_on_advisory_locks(admin, 1)
            task_group.cancel_scope.cancel()
        await admin.execute("ROLLBACK")
        async with database.unit_of_work() as uow:
            await uow.event_log.append([new_event("after", 1)])
            await uow.commit()
        async with database.unit_of_work() as uow:
            assert await uow.event_log.last_position() == 1
    finally:
        await database.close()


async def test_a_read_only_database_refuses_writes_with_a_clear_error(
    database: PostgresDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        await uow.event_log.append([new_event("u1", 1)])
        await uow.commit()
    reader = await PostgresDatabase.open(URL, pool_size=1, read_only=True)
    try:
        async with reader.unit_of_work() as uow:
            await uow.event_log.lock_stream("user", "u1")  # takes no lock
            assert len(await uow.event_log.read_stream("user", "u1")) == 1
            with pytest.raises(DatabaseUnavailable, match="read-only transaction"):
                await uow.event_log.append([new_event("u1", 2)])
    finally:
        await reader.close()
    async with database.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1


async def test_a_wrong_port_is_unavailable_and_the_password_stays_hidden() -> None:
    wrong = "postgresql+asyncpg://someone:s3cret@127.0.0.1:1/nothing"
    with pytest.raises(DatabaseUnavailable) as raised:
        await PostgresDatabase.open(wrong, pool_size=1)
    assert "s3cret" not in str(raised.value)
    assert "127.0.0.1:1" in str(raised.value)


async def test_an_unknown_url_option_is_refused_before_connecting() -> None:
    with pytest.raises(DatabaseUnavailable, match="'sslcert' is not accepted"):
        await PostgresDatabase.open(f"{URL}?sslcert=x", pool_size=1)


async def test_a_value_too_long_for_its_column_is_refused_not_retried(
    database: PostgresDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(DataRefused):
            await uow.users_view.add("u1", "x" * 1000, "long@example.com")


async def test_a_taken_claim_claims_nothing_and_the_transaction_goes_on(
    database: PostgresDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        await uow.event_log.claim([Claim("email", "taken@example.com", "first")])
        await uow.commit()
    wanted = [
        Claim("email", "free@example.com", "second"),
        Claim("email", "taken@example.com", "second"),
    ]
    async with database.unit_of_work() as uow:
        with pytest.raises(ClaimTaken) as raised:
            await uow.event_log.claim(wanted)
        assert raised.value.claim == wanted[1]
        assert await uow.event_log.claim_owner("email", "free@example.com") is None
        await uow.event_log.claim([Claim("email", "other@example.com", "second")])
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert await uow.event_log.claim_owner("email", "other@example.com") == "second"
        assert await uow.event_log.claim_owner("email", "taken@example.com") == "first"


async def test_one_version_appended_twice_is_a_conflict_over_its_aggregate(
    database: PostgresDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        await uow.event_log.append([new_event("p1", 1, kind="product")])
        await uow.commit()
    async with database.unit_of_work() as uow:
        with pytest.raises(ConcurrencyConflict) as raised:
            await uow.event_log.append([new_event("p1", 1, kind="product")])
    assert raised.value.aggregate == "product"


async def test_a_shadow_table_replaces_the_live_one_in_one_transaction(
    database: PostgresDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        await uow.users_view.add("old", "Old", "old@example.com")
        await uow.commit()
    async with database.unit_of_work() as uow:
        await uow.use_shadow(projections.USERS_VIEW, empty=True)
        await uow.users_view.add("new", "New", "new@example.com")
        await uow.swap_in_shadow(projections.USERS_VIEW)
        await uow.commit()
    async with database.unit_of_work() as uow:
        assert [row["id"] for row in await uow.users_view.all_rows()] == ["new"]
        # Swapped, the shadow is gone: a second rebuild starts from nothing.
        await uow.use_shadow(projections.USERS_VIEW)
        assert await uow.users_view.all_rows() == []
        await uow.drop_shadow(projections.USERS_VIEW)
        await uow.commit()


async def test_a_log_lock_holds_back_every_append_until_its_commit(
    database: PostgresDatabase, admin: Any
) -> None:
    async def appender() -> None:
        async with database.unit_of_work() as uow:
            await uow.event_log.append([new_event("u1", 1)])
            await uow.commit()

    async with database.unit_of_work() as replay:
        await replay.event_log.lock_log()
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(appender)
            await waiting_on_advisory_locks(admin, 1)
            assert await replay.event_log.last_position() == 0
            await replay.commit()
    async with database.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1
