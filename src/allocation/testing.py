"""Fakes for testing handlers and services without a database (core: asyncio and trio).

async with bootstrap(uow=FakeUnitOfWork(), notifications=FakeNotifications(),
                     console=FakeConsole()) as bus:
    ...

The unit of work runs on an in-memory engine (``allocation.memory``) that passes
the same contract tests as the SQLite and PostgreSQL stores: writes are staged
until commit and dropped by a rollback, exactly as there.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Self

from allocation.memory.store import FakeEventStore
from allocation.memory.transaction import Transaction
from allocation.memory.views import FakeAllocationsView, FakeUsersView
from allocation.service_layer import repository
from allocation.service_layer.channels import (
    AbstractConsole,
    AbstractNotifications,
    AbstractPublisher,
)
from allocation.service_layer.exceptions import BrokerUnavailable
from allocation.service_layer.tracking import handling
from allocation.service_layer.unit_of_work import (
    DEFAULT_SNAPSHOT_EVERY,
    AbstractUnitOfWork,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from allocation.domain import events
    from allocation.memory.views import _TableView
    from allocation.service_layer.channels import Email
    from allocation.service_layer.ports import LoggedEvent
    from allocation.service_layer.projections import Projection

__all__ = [
    "FakeAllocationsView",
    "FakeConsole",
    "FakeDatabase",
    "FakeEventStore",
    "FakeNotifications",
    "FakePublisher",
    "FakeUnitOfWork",
    "FakeUsersView",
]

AnyView = FakeAllocationsView | FakeUsersView


class FakeDatabase:
    """An in-memory database: one event store, the read models and their shadow
    tables, shared by every unit of work it makes (as ``SqliteDatabase`` and
    ``PostgresDatabase`` share theirs)."""

    url = "memory://"

    def __init__(self) -> None:
        self.event_log = FakeEventStore()
        self.views: dict[str, AnyView] = {
            "allocations_view": FakeAllocationsView(),
            "users_view": FakeUsersView(),
        }
        self.shadows: dict[str, AnyView] = {}

    def unit_of_work(
        self,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        inline_projections: Sequence[Projection] | None = None,
    ) -> FakeUnitOfWork:
        """A fresh unit of work on this database."""
        return FakeUnitOfWork(
            self,
            snapshot_every=snapshot_every,
            inline_projections=inline_projections,
        )

    async def close(self) -> None:
        """Nothing to release: here for the same interface as the SQL databases."""


@dataclasses.dataclass(slots=True)
class _ShadowDrops:
    """Shadow tables a transaction drops when it commits."""

    shadows: dict[str, AnyView]
    dropped: set[str] = dataclasses.field(default_factory=set)

    def check(self) -> None:
        pass

    def apply(self) -> None:
        for attribute in self.dropped:
            self.shadows.pop(attribute, None)


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    """One ``async with`` of a unit of work: its transaction and what it handed out."""

    transaction: Transaction = dataclasses.field(default_factory=Transaction)
    token: contextvars.Token[_Entry | None] | None = None
    products: repository.ProductRepository | None = None
    users: repository.UserRepository | None = None
    views: dict[str, Any] = dataclasses.field(default_factory=dict)
    live_views: dict[str, object] = dataclasses.field(default_factory=dict)


class FakeUnitOfWork(AbstractUnitOfWork):
    """An in-memory unit of work; ``committed`` turns True on the first commit and
    ``commits`` counts them.

    One instance may serve every handler call (``bootstrap(uow=...)``), even
    concurrent ones: each ``async with`` entry is its own transaction, found
    through a context variable (every task, and every handler the bus starts
    eagerly, runs in its own context), so concurrent handlers never see each
    other's staged writes. The events of a commit are collected by the handler
    call that made them (the bus's current ``Handling``), or, outside the bus,
    by whoever calls ``collect_new_events``. Several instances on one
    ``FakeDatabase`` behave as several connections to one database.
    """

    def __init__(
        self,
        database: FakeDatabase | None = None,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        inline_projections: Sequence[Projection] | None = None,
    ) -> None:
        self.database = database if database is not None else FakeDatabase()
        self._entries: contextvars.ContextVar[_Entry | None] = contextvars.ContextVar(
            f"fake_unit_of_work_{id(self)}", default=None
        )
        self._event_log = self.database.event_log.bound_to(self)
        self._live: dict[str, AnyView] = {
            attribute: view.bound_to(self)
            for attribute, view in self.database.views.items()
        }
        self._idle_products = repository.ProductRepository(self._event_log)
        self._idle_users = repository.UserRepository(self._event_log)
        self._idle_live_views: dict[str, object] = {}
        # Committed, not yet collected events, by the handler call that made them.
        self._events: dict[int, tuple[object, list[events.Event]]] = {}
        self.committed = False
        self.commits = 0
        super().__init__(
            snapshot_every=snapshot_every, inline_projections=inline_projections
        )

    # ---- the unit of work's attributes, per entry

    def current_transaction(self) -> Transaction | None:
        """The transaction of this context's innermost entry, if any."""
        entry = self._entries.get()
        return None if entry is None else entry.transaction

    @property  # type: ignore[override]  # a property stands for the attribute
    def event_log(self) -> FakeEventStore:
        return self._event_log

    @event_log.setter
    def event_log(self, store: FakeEventStore) -> None:
        # A store handed in (a test's subclass) becomes this unit of work's own.
        store.attach(self)
        self._event_log = store
        self._idle_products = repository.ProductRepository(store)
        self._idle_users = repository.UserRepository(store)

    @property  # type: ignore[override]  # a property stands for the attribute
    def allocations_view(self) -> FakeAllocationsView:
        return self._view("allocations_view")  # type: ignore[return-value]  # its key

    @allocations_view.setter
    def allocations_view(self, view: FakeAllocationsView) -> None:
        self._set_view("allocations_view", view)

    @property  # type: ignore[override]  # a property stands for the attribute
    def users_view(self) -> FakeUsersView:
        return self._view("users_view")  # type: ignore[return-value]  # its key

    @users_view.setter
    def users_view(self, view: FakeUsersView) -> None:
        self._set_view("users_view", view)

    @property
    def products(self) -> repository.ProductRepository:
        entry = self._entries.get()
        if entry is None or entry.products is None:
            return self._idle_products
        return entry.products

    @products.setter
    def products(self, products: repository.ProductRepository) -> None:
        entry = self._entries.get()
        if entry is None:
            self._idle_products = products
        else:
            entry.products = products

    @property
    def users(self) -> repository.UserRepository:
        entry = self._entries.get()
        if entry is None or entry.users is None:
            return self._idle_users
        return entry.users

    @users.setter
    def users(self, users: repository.UserRepository) -> None:
        entry = self._entries.get()
        if entry is None:
            self._idle_users = users
        else:
            entry.users = users

    @property
    def _live_views(self) -> dict[str, object]:
        entry = self._entries.get()
        return self._idle_live_views if entry is None else entry.live_views

    @_live_views.setter
    def _live_views(self, views: dict[str, object]) -> None:
        entry = self._entries.get()
        if entry is None:
            self._idle_live_views = views
        else:
            entry.live_views = views

    @property
    def _committed_events(self) -> list[events.Event]:
        current = handling.get()
        found = self._events.get(id(current))
        if found is None:
            # The handling object is kept with its events, so its id stays unique.
            found = self._events[id(current)] = (current, [])
        return found[1]

    @_committed_events.setter
    def _committed_events(self, collected: list[events.Event]) -> None:
        current = handling.get()
        if collected:
            self._events[id(current)] = (current, collected)
        else:
            self._events.pop(id(current), None)  # collected: forget the call

    @property
    def _opened(self) -> bool:
        return self._entries.get() is not None

    def _view(self, attribute: str) -> AnyView:
        entry = self._entries.get()
        if entry is not None and attribute in entry.views:
            return entry.views[attribute]  # type: ignore[no-any-return]  # a view
        return self._live[attribute]

    def _set_view(self, attribute: str, view: AnyView) -> None:
        entry = self._entries.get()
        if entry is not None:
            entry.views[attribute] = view  # a shadow for this entry, or back
        else:
            view.attach(self)
            self._live[attribute] = view

    # ---- entering and leaving

    async def __aenter__(self) -> Self:
        entry = _Entry()
        entry.token = self._entries.set(entry)
        try:
            return await super().__aenter__()
        except BaseException:
            self._entries.reset(entry.token)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entry = self._entries.get()
        try:
            await super().__aexit__(exc_type, exc, traceback)
        finally:
            if entry is not None and entry.token is not None:
                entry.transaction.rollback()  # releases its locks, whatever happened
                self._entries.reset(entry.token)

    async def _start(self) -> None:
        pass  # the entry and its transaction exist already (see __aenter__)

    async def _commit(self) -> None:
        entry = self._current_entry()
        entry.transaction.commit()
        entry.transaction = Transaction()  # the next statement begins anew
        self.committed = True
        self.commits += 1

    async def _rollback(self) -> None:
        entry = self._entries.get()
        if entry is not None:
            entry.transaction.rollback()
            entry.transaction = Transaction()

    def _current_entry(self) -> _Entry:
        entry = self._entries.get()
        if entry is None:
            raise RuntimeError("use the unit of work inside `async with uow:`")
        return entry

    # ---- shadows of the read models

    def _drops(self, transaction: Transaction) -> _ShadowDrops:
        return transaction.changes(
            self.database, lambda: _ShadowDrops(self.database.shadows)
        )

    async def _shadow_view(self, attribute: str) -> AnyView:
        shadows = self.database.shadows
        shadow = shadows.get(attribute)
        if shadow is None:
            # A new empty table: created at once, as its creation changes no row.
            shadow = shadows[attribute] = type(self.database.views[attribute])()
        handle = shadow.bound_to(self)
        drops = self._drops(self._current_entry().transaction)
        if attribute in drops.dropped:  # dropped, then made again: empty
            drops.dropped.discard(attribute)
            await handle.clear()
        return handle

    async def _swap_shadow(self, attribute: str) -> None:
        drops = self._drops(self._current_entry().transaction)
        shadow = self.database.shadows.get(attribute)
        if shadow is None or attribute in drops.dropped:
            raise LookupError(f"no shadow of {attribute} to swap in")
        live: _TableView[Any, Any, Any] = self._live[attribute]
        await live.replace_rows(shadow.bound_to(self))
        drops.dropped.add(attribute)

    async def _drop_shadow(self, attribute: str) -> None:
        if attribute in self.database.shadows:
            self._drops(self._current_entry().transaction).dropped.add(attribute)


class FakeNotifications(AbstractNotifications):
    """Records every email: ``sent[destination]`` is the list sent there, in order."""

    def __init__(self) -> None:
        self.sent: defaultdict[str, list[Email]] = defaultdict(list)

    async def send(self, destination: str, message: Email) -> None:
        self.sent[destination].append(message)


class FakeConsole(AbstractConsole):
    """Records the console lines in ``lines``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


class FakePublisher(AbstractPublisher):
    """Keeps what it publishes; ``fail_next`` makes that many publishes fail."""

    def __init__(self) -> None:
        self.published: list[LoggedEvent] = []
        self.fail_next = 0

    async def publish(self, batch: Sequence[LoggedEvent]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise BrokerUnavailable("fake://broker", "down on purpose")
        self.published.extend(batch)
