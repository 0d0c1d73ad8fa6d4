"""Fakes for testing handlers and services without a database (core: asyncio and trio).

async with bootstrap(uow=FakeUnitOfWork(), notifications=FakeNotifications(),
                     console=FakeConsole()) as bus:
    ...
"""

from __future__ import annotations

import datetime
import itertools
from collections import defaultdict
from typing import TYPE_CHECKING

from allocation.adapters.broker import AbstractPublisher
from allocation.adapters.console import AbstractConsole
from allocation.adapters.eventlog import AbstractEventLog, DeadLetter, LoggedEvent
from allocation.adapters.notifications import AbstractNotifications
from allocation.adapters.read_model import (
    AbstractAllocationsView,
    AbstractUsersView,
    AllocationRow,
    LineState,
    UserRow,
)
from allocation.adapters.repository import (
    AbstractProductRepository,
    AbstractUserRepository,
)
from allocation.domain.exceptions import (
    AlreadyProcessed,
    ConcurrencyConflict,
    EmailAlreadyRegistered,
)
from allocation.service_layer.exceptions import BrokerUnavailable
from allocation.service_layer.unit_of_work import AbstractUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from allocation.adapters.eventlog import NewEvent
    from allocation.adapters.notifications import Email
    from allocation.domain import model, users


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

    async def all_skus(self) -> list[str]:
        return sorted(self._by_sku)

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

    def _check_unique(self, user: users.User) -> None:
        # What the unique constraint on the email does in the database.
        holder = self._by_email.get(user.email)
        if holder is not None and holder is not user:
            raise EmailAlreadyRegistered(user.email)

    def _store(self, user: users.User) -> None:
        self._by_email[user.email] = user
        self._by_id[user.id] = user

    async def _get(self, user_id: str) -> users.User | None:
        return self._by_id.get(user_id)

    async def _get_by_email(self, email: str) -> users.User | None:
        return self._by_email.get(email)

    async def all_ids(self) -> list[str]:
        return sorted(self._by_id)


class FakeAllocationsView(AbstractAllocationsView):
    """The read model as a dict: (orderid, sku, qty) -> (batchref, version, allocated).

    It keeps the same rows as the SQL table, by the same rule, so it also serves
    as scratch state when ``verify`` replays the log.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, int], tuple[str, int, bool]] = {}

    async def add(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        self._write(orderid, sku, qty, batchref, version, allocated=True)

    async def remove(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None = None,
    ) -> None:
        self._write(orderid, sku, qty, batchref, version, allocated=False)

    def _write(
        self,
        orderid: str,
        sku: str,
        qty: int,
        batchref: str,
        version: int | None,
        *,
        allocated: bool,
    ) -> None:
        known = self.rows.get((orderid, sku, qty))
        if version is not None and known is not None and known[1] >= version:
            return  # an older event, or one already applied
        self.rows[orderid, sku, qty] = (batchref, version or 0, allocated)

    async def clear(self) -> None:
        self.rows.clear()

    async def lines(self) -> list[LineState]:
        return [
            LineState(orderid, sku, qty, batchref, version, allocated)
            for (orderid, sku, qty), (batchref, version, allocated) in sorted(
                self.rows.items()
            )
        ]

    async def for_order(self, orderid: str) -> list[AllocationRow]:
        return [
            AllocationRow(sku=sku, batchref=batchref)
            for sku, batchref, _ in sorted(
                (sku, batchref, qty)
                for (order, sku, qty), (batchref, _, allocated) in self.rows.items()
                if order == orderid and allocated
            )
        ]


class FakeUsersView(AbstractUsersView):
    """The users read model as a dict keyed by user id."""

    def __init__(self) -> None:
        self.rows: dict[str, UserRow] = {}

    async def add(self, user_id: str, name: str, email: str) -> None:
        self.rows[user_id] = UserRow(id=user_id, name=name, email=email)

    async def by_email(self, email: str) -> UserRow | None:
        return next((row for row in self.rows.values() if row["email"] == email), None)

    async def clear(self) -> None:
        self.rows.clear()

    async def all_rows(self) -> list[UserRow]:
        return sorted(self.rows.values(), key=lambda row: (row["email"], row["id"]))


class FakeEventLog(AbstractEventLog):
    """The event log, tracking and dead letters in memory."""

    def __init__(self) -> None:
        self.logged: list[LoggedEvent] = []
        self._by_id: dict[str, LoggedEvent] = {}
        self._versions: set[tuple[str, str, int]] = set()
        self.processed: set[tuple[str, str]] = set()
        self.checkpoints: dict[str, int] = {}
        self.letters: dict[int, DeadLetter] = {}
        self._next_letter = 1

    async def append(self, new_events: Sequence[NewEvent]) -> None:
        versions = [
            (new.aggregate_type, new.aggregate_id, new.aggregate_version)
            for new in new_events
        ]
        # All or nothing, as the unique constraint makes it in the database.
        if len(set(versions)) < len(versions) or self._versions.intersection(versions):
            raise ConcurrencyConflict(
                new_events[0].aggregate_type, "version already logged"
            )
        self._versions.update(versions)
        now = datetime.datetime.now(datetime.UTC)
        for new in new_events:
            logged = LoggedEvent(
                position=len(self.logged) + 1,
                event=new.event,
                aggregate_type=new.aggregate_type,
                aggregate_id=new.aggregate_id,
                aggregate_version=new.aggregate_version,
                occurred_at=now,
            )
            self.logged.append(logged)
            self._by_id[new.event.message_id] = logged

    async def read(
        self, *, after: int, names: Collection[str] | None = None, limit: int = 500
    ) -> list[LoggedEvent]:
        # Positions are 1-based list indexes, so the scan starts right after ``after``.
        found: list[LoggedEvent] = []
        for logged in itertools.islice(self.logged, max(after, 0), None):
            if names is None or logged.event.TYPE in names:
                found.append(logged)
                if len(found) == limit:
                    break
        return found

    async def get(self, message_id: str) -> LoggedEvent | None:
        return self._by_id.get(message_id)

    async def last_position(self) -> int:
        return len(self.logged)

    async def mark_processed(
        self, subscriber: str, message_ids: Iterable[str], *, exactly_once: bool
    ) -> None:
        for message_id in message_ids:
            if exactly_once and (subscriber, message_id) in self.processed:
                raise AlreadyProcessed(f"{subscriber} {message_id}")
            self.processed.add((subscriber, message_id))

    async def processed_among(
        self, subscriber: str, message_ids: Collection[str]
    ) -> set[str]:
        return {mid for mid in message_ids if (subscriber, mid) in self.processed}

    async def checkpoint(self, subscriber: str) -> int | None:
        return self.checkpoints.get(subscriber)

    async def set_checkpoint(self, subscriber: str, position: int) -> None:
        self.checkpoints[subscriber] = max(
            position, self.checkpoints.get(subscriber, 0)
        )

    async def forget(self, subscriber: str) -> None:
        self.processed = {pair for pair in self.processed if pair[0] != subscriber}
        self.checkpoints.pop(subscriber, None)
        self.letters = {
            key: letter
            for key, letter in self.letters.items()
            if letter.subscriber != subscriber
        }

    async def add_dead_letter(
        self, subscriber: str, message_id: str, error: str, attempts: int
    ) -> None:
        known = next(
            (
                letter
                for letter in self.letters.values()
                if (letter.subscriber, letter.message_id) == (subscriber, message_id)
            ),
            None,
        )
        letter_id = known.id if known else self._next_letter
        self._next_letter += known is None
        self.letters[letter_id] = DeadLetter(
            id=letter_id,
            subscriber=subscriber,
            message_id=message_id,
            error=error,
            attempts=attempts,
            last_tried=datetime.datetime.now(datetime.UTC),
        )

    async def dead_letters(
        self, subscriber: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        letters = sorted(self.letters.values(), key=lambda letter: letter.id)
        if subscriber is not None:
            letters = [letter for letter in letters if letter.subscriber == subscriber]
        return letters[:limit]

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        return self.letters.get(dead_letter_id)

    async def remove_dead_letter(self, dead_letter_id: int) -> None:
        self.letters.pop(dead_letter_id, None)


class FakeUnitOfWork(AbstractUnitOfWork):
    """An in-memory unit of work; ``committed`` turns True on the first commit.

    One instance may serve every handler call (pass it to ``bootstrap(uow=...)``).
    Its changes are applied at once and a rollback does not undo them, as in the
    book; uniqueness of emails is checked on commit, as the database does.
    """

    products: FakeProductRepository
    users: FakeUserRepository
    allocations_view: FakeAllocationsView
    users_view: FakeUsersView
    event_log: FakeEventLog

    def __init__(self) -> None:
        super().__init__()
        self.products = FakeProductRepository()
        self.users = FakeUserRepository()
        self.allocations_view = FakeAllocationsView()
        self.users_view = FakeUsersView()
        self.event_log = FakeEventLog()
        self.committed = False
        self.commits = 0

    async def _start(self) -> None:
        pass

    async def _commit(
        self, new_events: list[NewEvent], tracking: tuple[str, str] | None
    ) -> None:
        # Checks first, then writes: a refused commit changes nothing, as in SQL.
        if tracking is not None and tracking in self.event_log.processed:
            raise AlreadyProcessed(" ".join(tracking))
        for user in self.users.seen.values():
            self.users._check_unique(user)
        await self.event_log.append(new_events)
        for user in list(self.users.seen.values()):
            self.users._store(user)
        if tracking is not None:
            self.event_log.processed.add(tracking)
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
