"""A unit of work built on a SQLAlchemy session factory, as the book builds one.

The store contract suite holds every engine's unit of work to the same rules; this
checks that code written as in the book reaches them through
``unit_of_work.SqlAlchemyUnitOfWork``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.domain import model, users
from allocation.service_layer import unit_of_work
from tests.conftest import random_batchref, random_sku

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def test_a_book_style_unit_of_work_commits_through_the_engines_adapters(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    sku, ref = random_sku(), random_batchref()
    async with unit_of_work.SqlAlchemyUnitOfWork(session_factory) as uow:
        product = model.Product(sku)
        uow.products.add(product)
        product.add_batch(model.Batch(ref, sku, 20))
        await uow.commit()
    async with unit_of_work.SqlAlchemyUnitOfWork(session_factory) as uow:
        loaded = await uow.products.get_by_batchref(ref)
        assert loaded is not None
        assert loaded.version_number == 1
        assert loaded.batches[0].available_quantity == 20
        [logged] = await uow.event_log.read(after=0)
    assert logged.aggregate_id == sku


async def test_a_book_style_unit_of_work_rolls_back_without_commit(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with unit_of_work.SqlAlchemyUnitOfWork(session_factory) as uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
    async with unit_of_work.SqlAlchemyUnitOfWork(session_factory) as uow:
        assert await uow.users.get("u1") is None
        assert await uow.event_log.last_position() == 0
        assert await uow.users_view.by_email("ann@example.com") is None
