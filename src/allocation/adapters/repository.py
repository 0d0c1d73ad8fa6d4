"""Repositories: collections of aggregates that remember which ones they handed out."""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload, selectinload

from allocation.adapters import database, orm, postgres_driver
from allocation.domain import model, users, values
from allocation.domain.exceptions import ConcurrencyConflict

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.ext.asyncio import AsyncSession

AggregateT = TypeVar("AggregateT", model.Product, users.User)


class AbstractRepository(abc.ABC, Generic[AggregateT]):
    """Port for one aggregate type; ``seen`` lists what the unit of work must collect."""

    def __init__(self) -> None:
        self.seen: dict[int, AggregateT] = {}

    def add(self, aggregate: AggregateT) -> None:
        """Stage a new aggregate; it is written when the unit of work commits."""
        self._add(aggregate)
        self._see(aggregate)

    def _see(self, aggregate: AggregateT | None) -> AggregateT | None:
        # Keyed by identity: two objects with one key would be a bug worth seeing.
        if aggregate is not None:
            self.seen[id(aggregate)] = aggregate
        return aggregate

    @abc.abstractmethod
    def _add(self, aggregate: AggregateT) -> None:
        raise NotImplementedError


class AbstractProductRepository(AbstractRepository[model.Product]):
    """Products by sku or by the reference of one of their batches."""

    async def get(self, sku: str) -> model.Product | None:
        return self._see(await self._get(sku))

    async def get_by_batchref(self, ref: str) -> model.Product | None:
        return self._see(await self._get_by_batchref(ref))

    @abc.abstractmethod
    async def _get(self, sku: str) -> model.Product | None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _get_by_batchref(self, ref: str) -> model.Product | None:
        raise NotImplementedError

    @abc.abstractmethod
    async def all_skus(self) -> list[str]:
        """Every stored sku, sorted (for verification)."""


class AbstractUserRepository(AbstractRepository[users.User]):
    """Users by id or by normalised email."""

    async def get(self, user_id: str) -> users.User | None:
        return self._see(await self._get(user_id))

    async def get_by_email(self, email: str) -> users.User | None:
        return self._see(await self._get_by_email(values.normalise_email(email)))

    @abc.abstractmethod
    async def _get(self, user_id: str) -> users.User | None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _get_by_email(self, email: str) -> users.User | None:
        raise NotImplementedError

    @abc.abstractmethod
    async def all_ids(self) -> list[str]:
        """Every stored user id, sorted (for verification)."""


@functools.cache
def _product_queries(
    dialect: str, *, locking: bool = True
) -> tuple[Select[model.Product], Select[model.Product]]:
    """The two product loads for ``dialect``, built once (building costs more than running).

    FOR UPDATE OF products makes PostgreSQL writers of one product queue instead of
    failing the version check. There the batches and allocations must be read by
    statements that run after the lock is granted (selectin loading): a join in the
    locking statement would return the product's new version beside the children
    of the old snapshot, and the version check could not see it. SQLite ignores FOR
    UPDATE and locks the whole database at BEGIN IMMEDIATE, so the aggregate comes
    back in one joined statement there: one round trip instead of three.
    """
    loader = selectinload if dialect == "postgresql" else joinedload
    whole_product = loader(orm.mapped_attribute(model.Product, "batches")).options(
        loader(orm.mapped_attribute(model.Batch, "_allocations"))
    )
    by_sku = (
        select(model.Product)
        .options(whole_product)
        .where(orm.products.c.sku == bindparam("sku"))
    )
    by_batchref = (
        select(model.Product)
        .options(whole_product)
        .where(
            orm.products.c.sku
            == select(orm.batches.c.sku)
            .where(orm.batches.c.reference == bindparam("ref"))
            .scalar_subquery()
        )
    )
    if not locking:
        # A read-only engine (the reading commands) may take no row lock:
        # PostgreSQL refuses FOR UPDATE in a read-only transaction.
        return by_sku, by_batchref
    return (
        by_sku.with_for_update(of=orm.products),
        by_batchref.with_for_update(of=orm.products),
    )


class SqlAlchemyProductRepository(AbstractProductRepository):
    """Products in a SQL database (asyncio only)."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__()
        self._session = session
        bind = session.get_bind()
        self._dialect = bind.dialect.name
        self._locking = not bind.get_execution_options().get(database.READ_ONLY, False)

    def _add(self, aggregate: model.Product) -> None:
        self._session.add(aggregate)

    async def _get(self, sku: str) -> model.Product | None:
        by_sku, _ = _product_queries(self._dialect, locking=self._locking)
        result = await self._session.scalars(by_sku, {"sku": sku})
        return result.unique().one_or_none()

    async def _get_by_batchref(self, ref: str) -> model.Product | None:
        _, by_batchref = _product_queries(self._dialect, locking=self._locking)
        result = await self._session.scalars(by_batchref, {"ref": ref})
        return result.unique().one_or_none()

    async def all_skus(self) -> list[str]:
        skus = await self._session.scalars(
            select(orm.products.c.sku).order_by(orm.products.c.sku)
        )
        return list(skus)


class SqlAlchemyUserRepository(AbstractUserRepository):
    """Users in a SQL database (asyncio only)."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__()
        self._session = session

    def _add(self, aggregate: users.User) -> None:
        self._session.add(aggregate)

    async def _get(self, user_id: str) -> users.User | None:
        return await self._session.get(users.User, user_id)

    async def _get_by_email(self, email: str) -> users.User | None:
        query = select(users.User).where(orm.users_table.c.email == email)
        return (await self._session.scalars(query)).one_or_none()

    async def all_ids(self) -> list[str]:
        ids = await self._session.scalars(
            select(orm.users_table.c.id).order_by(orm.users_table.c.id)
        )
        return list(ids)


class PostgresUserRepository(AbstractUserRepository):
    """Users on PostgreSQL's hot path: rows written and read on the driver.

    Registering a user is the commonest command; the ORM's flush of one new row costs
    more event-loop time than the rest of the command together (see
    ``postgres_driver``). A user is a flat row, so this repository maps it by hand:
    staged users are inserted, and loaded ones updated under the same optimistic
    version check the ORM mapping applies, when the unit of work commits.
    """

    def __init__(self, driver: postgres_driver.DriverTransaction) -> None:
        super().__init__()
        self._driver = driver
        # Users read from the database, with the version they were read at.
        self._loaded_versions: dict[str, int] = {}

    def _add(self, aggregate: users.User) -> None:
        self._loaded_versions.pop(aggregate.id, None)

    async def _get(self, user_id: str) -> users.User | None:
        return await self._load(postgres_driver.USER_BY_ID, user_id)

    async def _get_by_email(self, email: str) -> users.User | None:
        return await self._load(postgres_driver.USER_BY_EMAIL, email)

    async def _load(self, query: str, key: str) -> users.User | None:
        driver = await self._driver.reader()
        row = await driver.fetchrow(query, key)
        if row is None:
            return None
        user = users.User.restored(
            row["id"], row["name"], row["email"], row["version_number"]
        )
        self._loaded_versions[user.id] = user.version_number
        return user

    async def all_ids(self) -> list[str]:
        driver = await self._driver.reader()
        return [row["id"] for row in await driver.fetch(postgres_driver.USER_IDS)]

    async def write(self) -> None:
        """Insert the new users and update the changed ones (before the commit)."""
        if not self.seen:
            return
        driver = await self._driver.connection()
        for user in self.seen.values():
            loaded = self._loaded_versions.get(user.id)
            if loaded is None:
                await driver.execute(
                    postgres_driver.INSERT_USER,
                    user.id,
                    user.name,
                    user.email,
                    user.version_number,
                )
            elif loaded != user.version_number:
                status = await driver.execute(
                    postgres_driver.UPDATE_USER,
                    user.id,
                    user.name,
                    user.email,
                    user.version_number,
                    loaded,
                )
                if status == "UPDATE 0":
                    raise ConcurrencyConflict("user", f"{user.id} changed meanwhile")
            self._loaded_versions[user.id] = user.version_number
