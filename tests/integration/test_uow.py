"""The SQLAlchemy unit of work on real databases: commit, rollback, events, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from allocation.domain import events, model, users
from allocation.domain.exceptions import ConcurrencyConflict, EmailAlreadyRegistered
from tests.conftest import random_batchref, random_sku

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.unit_of_work import SqlAlchemyUnitOfWork


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(text(f"SELECT count(*) FROM {table}"))
            ).scalar_one()
        )


async def test_commit_persists_the_product_and_its_batches(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    sku, ref = random_sku(), random_batchref()
    async with uow_factory() as uow:
        product = model.Product(sku)
        uow.products.add(product)
        product.add_batch(model.Batch(ref, sku, 20))
        await uow.commit()
    async with uow_factory() as uow:
        loaded = await uow.products.get(sku)
        assert loaded is not None
        assert [b.reference for b in loaded.batches] == [ref]
        assert loaded.version_number == 1
        assert loaded.batches[0].available_quantity == 20


async def test_allocations_round_trip(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    sku, ref = random_sku(), random_batchref()
    async with uow_factory() as uow:
        product = model.Product(sku, [model.Batch(ref, sku, 20)])
        uow.products.add(product)
        await uow.commit()
    async with uow_factory() as uow:
        product = await uow.products.get(sku)
        assert product is not None
        product.allocate(model.OrderLine("o1", sku, 5))
        await uow.commit()
    async with uow_factory() as uow:
        product = await uow.products.get_by_batchref(ref)
        assert product is not None
        assert product.batches[0].allocations == {model.OrderLine("o1", sku, 5)}
        assert product.batches[0].available_quantity == 15


async def test_leaving_without_commit_rolls_back_and_collects_nothing(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    sku = random_sku()
    uow = uow_factory()
    async with uow:
        product = model.Product(sku)
        uow.products.add(product)
        product.add_batch(model.Batch(random_batchref(), sku, 5))
    assert await _count(engine, "products") == 0
    assert uow.collect_new_events() == []


async def test_an_exception_rolls_back(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    uow = uow_factory()

    async def add_then_fail() -> None:
        async with uow:
            uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await add_then_fail()
    assert await _count(engine, "users") == 0
    assert uow.collect_new_events() == []


async def test_events_are_collected_once_after_commit(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    uow = uow_factory()
    async with uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        await uow.commit()
    assert uow.collect_new_events() == [
        events.UserRegistered(user_id="u1", name="Ann", email="ann@example.com")
    ]
    assert uow.collect_new_events() == []


async def test_duplicate_email_is_refused_by_the_constraint(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], engine: AsyncEngine
) -> None:
    async with uow_factory() as uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        await uow.commit()
    uow = uow_factory()

    async def register_again() -> None:
        async with uow:
            uow.users.add(users.User.register("u2", "Annie", "ANN@example.com"))
            await uow.commit()

    with pytest.raises(EmailAlreadyRegistered) as raised:
        await register_again()
    assert raised.value.email == "ann@example.com"
    assert uow.collect_new_events() == []
    assert await _count(engine, "users") == 1


async def test_a_product_changed_since_it_was_read_is_a_conflict(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    """The version check relies on the driver's row count; a lost update must fail."""
    sku = random_sku()
    async with uow_factory() as uow:
        uow.products.add(model.Product(sku, [model.Batch(random_batchref(), sku, 9)]))
        await uow.commit()

    async def allocate_after_a_concurrent_bump() -> None:
        async with uow_factory() as uow:
            product = await uow.products.get(sku)
            assert product is not None
            # Another writer's commit, as seen by this transaction's UPDATE.
            await uow.session.execute(
                text("UPDATE products SET version_number = version_number + 1")
            )
            product.allocate(model.OrderLine("o1", sku, 1))
            await uow.commit()

    with pytest.raises(ConcurrencyConflict):
        await allocate_after_a_concurrent_bump()
    async with uow_factory() as uow:
        product = await uow.products.get(sku)
        assert product is not None
        assert product.batches[0].allocations == frozenset()


async def test_users_are_found_by_id_and_by_email(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    async with uow_factory() as uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        uow.users.add(users.User.register("u2", "Bob", "bob@example.com"))
        await uow.commit()
    async with uow_factory() as uow:
        by_id = await uow.users.get("u1")
        by_email = await uow.users.get_by_email(" BOB@example.com ")
        assert by_id is not None
        assert (by_id.id, by_id.name, by_id.email, by_id.version_number) == (
            "u1",
            "Ann",
            "ann@example.com",
            1,
        )
        assert by_id.events == []
        assert by_email is not None
        assert by_email.id == "u2"
        assert await uow.users.get("nobody") is None
        assert await uow.users.all_ids() == ["u1", "u2"]


async def _register_ann(uow_factory: Callable[[], SqlAlchemyUnitOfWork]) -> None:
    async with uow_factory() as uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        await uow.commit()


def _rename(user: users.User, name: str) -> None:
    # No command changes a user yet; a change is a new version with its event.
    user.name = name
    user._record(events.UserRegistered(user_id=user.id, name=name, email=user.email))


async def test_a_changed_user_is_saved_with_its_new_version(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    await _register_ann(uow_factory)
    async with uow_factory() as uow:
        user = await uow.users.get("u1")
        assert user is not None
        _rename(user, "Anna")
        await uow.commit()
    async with uow_factory() as uow:
        saved = await uow.users.get("u1")
        assert saved is not None
        assert (saved.name, saved.version_number) == ("Anna", 2)


async def test_a_user_changed_since_it_was_read_is_a_conflict(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork],
) -> None:
    await _register_ann(uow_factory)

    async def rename_after_a_concurrent_change() -> None:
        async with uow_factory() as uow:
            user = await uow.users.get("u1")
            assert user is not None
            # Another writer's commit, as seen by this transaction's UPDATE.
            await uow.session.execute(
                text("UPDATE users SET version_number = version_number + 1")
            )
            _rename(user, "Anna")
            await uow.commit()

    with pytest.raises(ConcurrencyConflict):
        await rename_after_a_concurrent_change()
    async with uow_factory() as uow:
        saved = await uow.users.get("u1")
        assert saved is not None
        assert (saved.name, saved.version_number) == ("Ann", 1)
