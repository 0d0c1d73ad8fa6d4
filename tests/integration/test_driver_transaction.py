"""Statements run on the driver (PostgreSQL's hot path) stay inside the unit of work's
transaction: they commit with it, roll back with it, and leave nothing open."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from allocation.adapters import database, postgres_driver
from allocation.domain import model, users
from allocation.domain.exceptions import EmailAlreadyRegistered
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.service_layer.unit_of_work import SqlAlchemyUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def one_connection(
    database_url: str, engine: AsyncEngine
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on an engine whose pool holds a single connection (PostgreSQL)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the driver transaction is PostgreSQL's")
    single = database.create_engine(database_url, pool_size=1)
    try:
        yield async_sessionmaker(single, class_=AsyncSession)
    finally:
        await single.dispose()


async def _set_checkpoint(
    factory: async_sessionmaker[AsyncSession], position: int
) -> None:
    async with SqlAlchemyUnitOfWork(factory) as uow:
        await uow.event_log.set_checkpoint("relay:broker", position)
        await uow.commit()


async def _terminate(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def _user_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT user_id FROM users_view"))
        return {row[0] for row in rows}


async def _tracked(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT message_id FROM processed_messages")
        )
        return {row[0] for row in rows}


async def test_view_and_tracking_rows_roll_back_with_the_unit_of_work(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    user_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())

    async def write_then_fail() -> None:
        async with uow_factory() as uow:
            await uow.users_view.add(user_id, "Ivan", "ivan@example.com")
            await uow.event_log.mark_processed(
                "users_view", [message_id], exactly_once=True
            )
            raise RuntimeError("the handler failed after writing")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    assert await _user_ids(engine) == set()
    assert await _tracked(engine) == set()


async def test_a_unit_of_work_used_after_its_commit_starts_a_new_transaction(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())
    async with uow_factory() as uow:
        await uow.users_view.add(kept, "Ivan", "ivan@example.com")
        await uow.commit()
        await uow.users_view.add(dropped, "Olga", "olga@example.com")
        # Leaving without a second commit must undo the second write only.
    assert await _user_ids(engine) == {kept}


async def test_a_user_and_its_event_commit_together_or_not_at_all(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    async with uow_factory() as uow:
        uow.users.add(users.User.register(str(uuid.uuid4()), "Ivan", "a@example.com"))
        await uow.commit()

    async def register_again() -> None:
        async with uow_factory() as uow:
            uow.users.add(
                users.User.register(str(uuid.uuid4()), "Ivan", "a@example.com")
            )
            await uow.commit()

    # The same email again: the user row is refused, so its logged event must go too.
    with pytest.raises(EmailAlreadyRegistered):
        await register_again()
    async with engine.connect() as connection:
        logged = await connection.execute(text("SELECT count(*) FROM event_log"))
        assert logged.scalar_one() == 1


@pytest.mark.postgres
async def test_a_cancelled_unit_of_work_hands_its_connection_back_clean(
    one_connection: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    started = anyio.Event()

    async def write_then_hang() -> None:
        async with SqlAlchemyUnitOfWork(one_connection) as uow:
            await uow.users_view.add(str(uuid.uuid4()), "Ivan", "i@example.com")
            started.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(write_then_hang)
        await started.wait()
        group.cancel_scope.cancel()
    single: AsyncEngine = one_connection.kw["bind"]
    async with single.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        assert not driver.is_in_transaction()
    assert await _user_ids(engine) == set()


@pytest.mark.postgres
async def test_autocommit_asked_for_runs_outside_any_transaction(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("isolation levels are PostgreSQL's here")
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        # VACUUM refuses to run inside a transaction block.
        await autocommit.execute(text("VACUUM users_view"))


@pytest.mark.postgres
async def test_an_engine_built_elsewhere_still_logs_in_the_same_transaction(
    database_url: str, engine: AsyncEngine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the driver transaction is PostgreSQL's")
    plain = create_async_engine(database_url)  # no autocommit, no hooks
    try:
        assert not postgres_driver.drives(plain.sync_engine)
        factory = async_sessionmaker(plain, class_=AsyncSession)
        user_id = str(uuid.uuid4())
        async with SqlAlchemyUnitOfWork(factory) as uow:
            uow.users.add(users.User.register(user_id, "Ivan", "p@example.com"))
            await uow.commit()
        async with SqlAlchemyUnitOfWork(factory) as uow:
            logged = await uow.event_log.read(after=0)
        assert [entry.aggregate_id for entry in logged] == [user_id]
    finally:
        await plain.dispose()


@pytest.mark.postgres
async def test_a_connection_lost_mid_transaction_is_not_handed_out_again(
    one_connection: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    async def write_while_the_server_drops_us() -> None:
        async with SqlAlchemyUnitOfWork(one_connection) as uow:
            await uow.users_view.add(str(uuid.uuid4()), "Ivan", "i@example.com")
            async with engine.connect() as admin:
                await admin.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND state = 'idle in transaction'"
                    )
                )
            await uow.commit()

    with pytest.raises(DatabaseUnavailable):
        await write_while_the_server_drops_us()
    # The one pooled connection was dead; the next unit of work gets a new one.
    kept = str(uuid.uuid4())
    async with SqlAlchemyUnitOfWork(one_connection) as uow:
        await uow.users_view.add(kept, "Olga", "o@example.com")
        await uow.commit()
    assert await _user_ids(engine) == {kept}


async def test_orm_and_driver_writes_share_one_transaction(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    dropped_user, dropped_sku = str(uuid.uuid4()), f"sku-{uuid.uuid4().hex[:8]}"

    async def both_then_fail() -> None:
        async with uow_factory() as uow:
            uow.products.add(model.Product(dropped_sku))
            await uow.session.flush()  # the ORM's INSERT begins the transaction
            await uow.users_view.add(dropped_user, "Ivan", "i@example.com")
            raise RuntimeError("the handler failed after both writes")

    with pytest.raises(RuntimeError):
        await both_then_fail()
    kept_user, kept_sku = str(uuid.uuid4()), f"sku-{uuid.uuid4().hex[:8]}"
    async with uow_factory() as uow:
        await uow.users_view.add(kept_user, "Olga", "o@example.com")
        uow.products.add(model.Product(kept_sku))  # the driver first this time
        await uow.commit()
    assert await _user_ids(engine) == {kept_user}
    async with engine.connect() as connection:
        skus = await connection.execute(text("SELECT sku FROM products"))
        assert {row[0] for row in skus} == {kept_sku}


@pytest.mark.postgres
async def test_a_pooled_connection_that_died_while_idle_fails_one_command_cleanly(
    one_connection: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    async with SqlAlchemyUnitOfWork(one_connection) as uow:
        pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
    await _terminate(engine, pid)
    with pytest.raises(DatabaseUnavailable):
        await _set_checkpoint(one_connection, 7)
    await _set_checkpoint(one_connection, 7)
    async with SqlAlchemyUnitOfWork(one_connection) as uow:
        assert await uow.event_log.checkpoint("relay:broker") == 7


@pytest.mark.postgres
async def test_a_connection_sqlalchemy_finds_dead_mid_transaction_fails_cleanly(
    one_connection: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    async def write_then_lose_the_connection() -> None:
        async with SqlAlchemyUnitOfWork(one_connection) as uow:
            await uow.users_view.add(str(uuid.uuid4()), "Ivan", "i@example.com")
            await _terminate(
                engine, await uow.session.scalar(text("SELECT pg_backend_pid()"))
            )
            # SQLAlchemy, not the driver, meets the dead connection first.
            await uow.event_log.set_checkpoint("relay:broker", 7)
            await uow.commit()

    with pytest.raises(DatabaseUnavailable):
        await write_then_lose_the_connection()
    await _set_checkpoint(one_connection, 7)
    assert await _user_ids(engine) == set()
