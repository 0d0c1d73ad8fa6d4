"""Fakes for testing handlers and services without a database (core: asyncio and trio).

async with bootstrap(uow=FakeUnitOfWork(), notifications=FakeNotifications(),
                     console=FakeConsole()) as bus:
    ...
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from allocation.adapters.console import AbstractConsole
from allocation.adapters.notifications import AbstractNotifications
from allocation.adapters.read_model import AbstractAllocationsView, AllocationRow
from allocation.adapters.repository import (
    AbstractProductRepository,
    AbstractUserRepository,
)
from allocation.domain.exceptions import EmailAlreadyRegistered
from allocation.service_layer.unit_of_work import AbstractUnitOfWork

if TYPE_CHECKING:
    from allocation.adapters.notifications import Email
    from allocation.domain import events, model, users


class FakeProductRepository(AbstractProductRepository):
    """Products in a dict, indexed by sku and by batch reference."""

    def __init__(self, products: list[model.Product] | None = None) -> None:
        super().__init__()
        self._by_sku: dict[str, model.Product] = {}
        for product in products or []:
            self._by_sku[product.sku] = product

    def _add(self, aggregate: model.Product) -> None:
        self._by_sku[aggregate.sku] = aggregate

    async def _get(self, sku: str) -> model.Product | None:
        return self._by_sku.get(sku)

    async def _get_by_batchref(self, ref: str) -> model.Product | None:
        # A linear scan: fine for the handful of products a test creates.
        for product in self._by_sku.values():
            if product.batch(ref) is not None:
                return product
        return None


class FakeUserRepository(AbstractUserRepository):
    """Users in dicts by id and by email."""

    def __init__(self) -> None:
        super().__init__()
        self._by_id: dict[str, users.User] = {}
        self._by_email: dict[str, users.User] = {}

    def _add(self, aggregate: users.User) -> None:
        pass  # stored by _store at commit, where the database checks uniqueness

    def _store(self, user: users.User) -> None:
        holder = self._by_email.get(user.email)
        if holder is not None and holder is not user:
            raise EmailAlreadyRegistered(user.email)
        self._by_email[user.email] = user
        self._by_id[user.id] = user

    async def _get(self, user_id: str) -> users.User | None:
        return self._by_id.get(user_id)

    async def _get_by_email(self, email: str) -> users.User | None:
        return self._by_email.get(email)


class FakeAllocationsView(AbstractAllocationsView):
    """The read model as a dict keyed by (orderid, sku)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    async def add(self, orderid: str, sku: str, batchref: str) -> None:
        self.rows[orderid, sku] = batchref

    async def remove(self, orderid: str, sku: str, batchref: str) -> None:
        if self.rows.get((orderid, sku)) == batchref:
            del self.rows[orderid, sku]

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        return sorted(
            (
                AllocationRow(sku=sku, batchref=batchref)
                for (order, sku), batchref in self.rows.items()
                if order == orderid
            ),
            key=lambda row: row["sku"],
        )


class FakeUnitOfWork(AbstractUnitOfWork):
    """An in-memory unit of work; ``committed`` turns True on the first commit.

    One instance may serve every handler call (pass it to ``bootstrap(uow=...)``).
    Its changes are applied at once and a rollback does not undo them, as in the
    book; uniqueness of emails is checked on commit, as the database does.
    """

    products: FakeProductRepository
    users: FakeUserRepository
    allocations_view: FakeAllocationsView

    def __init__(self) -> None:
        super().__init__()
        self.products = FakeProductRepository()
        self.users = FakeUserRepository()
        self.allocations_view = FakeAllocationsView()
        self.committed = False
        self.commits = 0

    async def _start(self) -> None:
        pass

    async def _commit(self, new_events: list[events.Event]) -> None:
        for user in list(self.users.seen.values()):
            self.users._store(user)
        self.committed = True
        self.commits += 1

    async def _rollback(self) -> None:
        pass


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
