"""The unit of work: one atomic change, and the events it may publish once committed."""

from __future__ import annotations

import abc
import itertools
from typing import TYPE_CHECKING, Self

import anyio

from allocation.adapters import database, read_model, repository

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from allocation.domain import events, model, users


class AbstractUnitOfWork(abc.ABC):
    """Port for a transaction over the repositories.

    ``async with uow:`` opens it; leaving without ``commit()`` (or with an exception)
    rolls back. Events recorded by the aggregates it handed out become available
    from ``collect_new_events()`` only once their commit succeeded.
    """

    products: repository.AbstractProductRepository
    users: repository.AbstractUserRepository
    allocations_view: read_model.AbstractAllocationsView

    def __init__(self) -> None:
        self._committed_events: list[events.Event] = []

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.rollback()
        # Forgetting what was seen keeps every commit O(1), however long a shared
        # unit of work (a test's fake) lives.
        self.products.seen.clear()
        self.users.seen.clear()

    async def commit(self) -> None:
        """Make the changes durable; their events are collected on success only."""
        new_events = self._take_new_events()
        await self._commit(new_events)
        self._committed_events.extend(new_events)

    async def rollback(self) -> None:
        """Undo what is not committed; the events it recorded are dropped."""
        self._take_new_events()
        await self._rollback()

    def collect_new_events(self) -> list[events.Event]:
        """Hand over, once, the events of every successful commit so far."""
        collected, self._committed_events = self._committed_events, []
        return collected

    def _take_new_events(self) -> list[events.Event]:
        new_events: list[events.Event] = []
        aggregates: Iterable[model.Product | users.User] = itertools.chain(
            self.products.seen.values(), self.users.seen.values()
        )
        for aggregate in aggregates:
            if aggregate.events:
                new_events.extend(aggregate.events)
                aggregate.events.clear()
        return new_events

    @abc.abstractmethod
    async def _start(self) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _commit(self, new_events: list[events.Event]) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _rollback(self) -> None:
        raise NotImplementedError


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """A unit of work on one ``AsyncSession`` (asyncio only).

    Make a new one per handler call: a session must never be shared between tasks.
    """

    session: AsyncSession

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        super().__init__()
        self._session_factory = session_factory

    async def _start(self) -> None:
        self.session = self._session_factory()
        self.products = repository.SqlAlchemyProductRepository(self.session)
        self.users = repository.SqlAlchemyUserRepository(self.session)
        self.allocations_view = read_model.SqlAlchemyAllocationsView(self.session)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled caller must still hand its connection back clean.
        with anyio.CancelScope(shield=True):
            try:
                await super().__aexit__(exc_type, exc, traceback)
            finally:
                await self.session.close()
        # Every driver error raised inside the block, by a repository or a read
        # model, is translated here, in one place.
        if exc is not None:
            ours = database.translate(exc, self._url)
            if ours is not exc:
                raise ours from exc

    async def _commit(self, new_events: list[events.Event]) -> None:
        # Both arguments are lazy (a URL object, a generator): they cost nothing
        # unless the commit fails.
        new_emails = (user.email for user in self.users.seen.values())
        with database.translated_errors(self.session.get_bind().engine.url, new_emails):
            await self.session.commit()

    async def _rollback(self) -> None:
        with database.translated_errors(self.session.get_bind().engine.url):
            await self.session.rollback()

    @property
    def _url(self) -> str:
        return str(self.session.get_bind().engine.url)
