"""The unit of work: one atomic change, its events logged in the same transaction."""

from __future__ import annotations

import abc
import contextvars
import dataclasses
import itertools
from typing import TYPE_CHECKING, Self

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from allocation.adapters import (
    database_errors,
    eventlog,
    postgres_driver,
    read_model,
    repository,
    sql_eventlog,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from allocation.domain import events, messages
    from allocation.domain.aggregate import Aggregate


@dataclasses.dataclass(slots=True)
class Handling:
    """What the current handler call is doing, for the units of work it opens.

    The bus sets it (in a context variable, so concurrent handlers each see their
    own) before it calls a handler.

    Attributes:
        message: the message being handled; events committed meanwhile are
            caused by it.
        subscriber: the name under which the message counts as handled (an event
            handler's subscriber name, or a broker inbox for a command): the
            commit then records it in the same transaction as the effects, which
            makes them exactly-once.
        owner: the bus's set of claimed event ids: new events are added to it
            just before their commit, so catch-up leaves them to the fast path.
        tracked: set once a commit has recorded the message as processed.
    """

    message: messages.Message
    subscriber: str | None = None
    owner: set[str] | None = None
    tracked: bool = False
    claimed: list[str] = dataclasses.field(default_factory=list)

    def claim(self, message_ids: Iterable[str]) -> None:
        """Mark new events as this process's to dispatch."""
        if self.owner is not None:
            fresh = list(message_ids)
            self.claimed.extend(fresh)
            self.owner.update(fresh)

    def release_uncommitted(self, committed: Iterable[events.Event]) -> None:
        """Give up claims on events whose commit failed: they will never exist."""
        if self.owner is not None and self.claimed:
            done = {event.message_id for event in committed}
            self.owner.difference_update(mid for mid in self.claimed if mid not in done)


handling: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "allocation_handling", default=None
)


class AbstractUnitOfWork(abc.ABC):
    """Port for a transaction over the repositories, read models and event log.

    ``async with uow:`` opens it; leaving without ``commit()`` (or with an exception)
    rolls back. Events recorded by the aggregates it handed out are appended to the
    event log by ``commit()``, in the same transaction, and become available from
    ``collect_new_events()`` only once that commit succeeded.
    """

    products: repository.AbstractProductRepository
    users: repository.AbstractUserRepository
    allocations_view: read_model.AbstractAllocationsView
    users_view: read_model.AbstractUsersView
    event_log: eventlog.AbstractEventLog

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
        """Make the changes and their events durable, atomically.

        Raises:
            ConcurrencyConflict: another transaction wrote the same aggregate
                version first (the bus reruns the handler).
            AlreadyProcessed: this subscriber had already handled the message.
        """
        current = handling.get()
        new_events = self._take_new_events(None if current is None else current.message)
        if current is not None and new_events:
            current.claim(new.event.message_id for new in new_events)
        tracking = (
            (current.subscriber, current.message.message_id)
            if current is not None
            and current.subscriber is not None
            and not current.tracked
            else None
        )
        await self._commit(new_events, tracking)
        if tracking is not None and current is not None:
            current.tracked = True
        self._committed_events.extend(new.event for new in new_events)

    async def rollback(self) -> None:
        """Undo what is not committed; the events it recorded are dropped."""
        self._take_new_events(None)
        await self._rollback()

    def collect_new_events(self) -> list[events.Event]:
        """Hand over, once, the events of every successful commit so far."""
        collected, self._committed_events = self._committed_events, []
        return collected

    def _take_new_events(
        self, cause: messages.Message | None
    ) -> list[eventlog.NewEvent]:
        """Pop the aggregates' new events, stamped with their version and cause."""
        if not self.products.seen and not self.users.seen:
            return []  # the common case on exit and for read-model handlers
        new_events: list[eventlog.NewEvent] = []
        aggregates: Iterable[Aggregate] = itertools.chain(
            self.products.seen.values(), self.users.seen.values()
        )
        for aggregate in aggregates:
            if not aggregate.events:
                continue
            # The last event brings the aggregate to its current version.
            first_version = aggregate.version_number - len(aggregate.events) + 1
            for version, event in enumerate(aggregate.events, first_version):
                stamped = event.stamped(
                    aggregate_version=version,
                    correlation_id=cause.chain_id if cause else event.correlation_id,
                    causation_id=cause.message_id if cause else event.causation_id,
                )
                new_events.append(
                    eventlog.NewEvent(
                        event=stamped,
                        aggregate_type=aggregate.AGGREGATE_TYPE,
                        aggregate_id=aggregate.aggregate_id,
                        aggregate_version=version,
                    )
                )
            aggregate.events.clear()
        return new_events

    @abc.abstractmethod
    async def _start(self) -> None:
        raise NotImplementedError

    @abc.abstractmethod
    async def _commit(
        self, new_events: list[eventlog.NewEvent], tracking: tuple[str, str] | None
    ) -> None:
        """Append ``new_events`` and the tracking row, then commit, atomically."""
        raise NotImplementedError

    @abc.abstractmethod
    async def _rollback(self) -> None:
        raise NotImplementedError


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """A unit of work on one ``AsyncSession`` (asyncio only).

    Make a new one per handler call: a session must never be shared between tasks.
    On an engine from ``database.create_engine`` for PostgreSQL, the transaction
    runs on the driver instead and the session joins it (see ``postgres_driver``).
    """

    session: AsyncSession

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        super().__init__()
        self._session_factory = session_factory
        # Decided once: the engine a DriverTransaction can run on, if it is one.
        engine = session_factory.kw.get("bind")
        self._driven_engine = (
            engine
            if isinstance(engine, AsyncEngine)
            and postgres_driver.drives(engine.sync_engine)
            else None
        )

    async def _start(self) -> None:
        engine = self._driven_engine
        self._driver: postgres_driver.DriverTransaction | None = None
        self._users_on_driver: repository.PostgresUserRepository | None = None
        self.users: repository.AbstractUserRepository
        if engine is not None:
            with database_errors.translated_errors(engine.url):
                connection = await engine.connect()
            self._driver = driver = postgres_driver.DriverTransaction(connection)
            self.session = session = self._session_factory(bind=connection)
            self.users = self._users_on_driver = repository.PostgresUserRepository(
                driver
            )
        else:
            driver = None
            self.session = session = self._session_factory()
            self.users = repository.SqlAlchemyUserRepository(session)
        self.products = repository.SqlAlchemyProductRepository(session)
        self.allocations_view = read_model.SqlAlchemyAllocationsView(session, driver)
        self.users_view = read_model.SqlAlchemyUsersView(session, driver)
        self.event_log = sql_eventlog.SqlAlchemyEventLog(session, driver)

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
                await self._close()
        # Every driver error raised inside the block, by a repository or a read
        # model, is translated here, in one place.
        if exc is not None:
            ours = database_errors.translate(exc, self._url)
            if ours is not exc:
                raise ours from exc

    async def _close(self) -> None:
        session = self.session
        try:
            # Skipped when it holds neither a connection nor an object: a round of
            # SQLAlchemy bookkeeping saved on every command.
            if session.in_transaction() or session.identity_map or session.new:
                await session.close()
        finally:
            if self._driver is not None:
                await self._driver.release()

    async def _commit(
        self, new_events: list[eventlog.NewEvent], tracking: tuple[str, str] | None
    ) -> None:
        # Both arguments are lazy (a URL object, a generator): they cost nothing
        # unless the commit fails.
        new_emails = (user.email for user in self.users.seen.values())
        session = self.session
        with database_errors.translated_errors(
            session.get_bind().engine.url, new_emails
        ):
            if self._driver is not None and (
                session.new or session.dirty or session.deleted
            ):
                # The aggregates' rows go first, so the append lock is held only
                # from the append to the commit.
                await session.flush()
            if self._users_on_driver is not None:
                await self._users_on_driver.write()
            await self.event_log.append(new_events)
            if tracking is not None:
                subscriber, message_id = tracking
                await self.event_log.mark_processed(
                    subscriber, [message_id], exactly_once=True
                )
            if self._driver is not None:
                await self._driver.commit()
            if session.in_transaction():
                # On the driver path, only the session's bookkeeping: the
                # transaction itself is already committed.
                await session.commit()

    async def _rollback(self) -> None:
        with database_errors.translated_errors(self.session.get_bind().engine.url):
            if self._driver is not None:
                await self._driver.rollback()
            if self.session.in_transaction():
                await self.session.rollback()

    @property
    def _url(self) -> str:
        return str(self.session.get_bind().engine.url)
