"""Transactions of the in-memory engine: what a unit of work stages until it commits.

Every table of the engine (the log, each read model) keeps its committed state in
a data object shared by every handle on it, and stages a transaction's writes in
a ``Changes`` object of that transaction. A handle belongs to a unit of work and
asks it for the transaction of the current ``async with`` entry; a handle used
outside any entry runs each statement as its own transaction (autocommit).
Runs on asyncio and trio (AnyIO).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator


class Changes(Protocol):
    """One table's staged writes within one transaction."""

    def check(self) -> None:
        """Raise what committing these writes now would violate (a unique value
        another transaction committed meanwhile)."""

    def apply(self) -> None:
        """Make the writes part of the committed state."""


ChangesT = TypeVar("ChangesT", bound=Changes)


class Transaction:
    """The staged writes and held locks of one unit-of-work entry.

    ``commit`` checks every table's changes before it applies any, without a
    suspension point in between: a commit is atomic, as in a database.
    """

    __slots__ = ("_changes", "_on_end")

    def __init__(self) -> None:
        # Keyed by the table's data object: a table joins at its first write.
        self._changes: dict[object, Changes] = {}
        self._on_end: list[Callable[[], None]] = []

    def changes(self, table: object, start: Callable[[], ChangesT]) -> ChangesT:
        """This transaction's changes to ``table``, begun on first use."""
        found = self._changes.get(table)
        if found is None:
            found = self._changes[table] = start()
        return found  # type: ignore[return-value]  # start() made this very entry

    def staged(self, table: object) -> Changes | None:
        """The changes to ``table`` if this transaction wrote to it."""
        return self._changes.get(table)

    def on_end(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the transaction ends, committed or not."""
        self._on_end.append(release)

    def commit(self) -> None:
        """Check, then apply every table's changes; end the transaction.

        On a failed check nothing is applied and the transaction stays open, for
        the caller to roll back.
        """
        changes = list(self._changes.values())
        for table_changes in changes:
            table_changes.check()
        for table_changes in changes:
            table_changes.apply()
        self._end()

    def rollback(self) -> None:
        """Drop the staged writes and release the locks."""
        self._end()

    def _end(self) -> None:
        self._changes.clear()
        releases, self._on_end = self._on_end, []
        for release in releases:
            release()


class LockTable:
    """Locks held by a transaction until it ends (the engine's advisory locks).

    Taking a lock the transaction already holds is free; another transaction's
    lock is waited for, as a database session waits.
    """

    def __init__(self) -> None:
        self._holders: dict[Hashable, Transaction] = {}
        # Created only when someone waits: anyio.Event needs a running loop.
        self._released: dict[Hashable, anyio.Event] = {}

    async def acquire(self, key: Hashable, transaction: Transaction) -> None:
        while True:
            holder = self._holders.get(key)
            if holder is transaction:
                return
            if holder is None:
                self._holders[key] = transaction
                transaction.on_end(lambda: self._release(key))
                return
            released = self._released.get(key)
            if released is None:
                released = self._released[key] = anyio.Event()
            await released.wait()

    def _release(self, key: Hashable) -> None:
        del self._holders[key]
        released = self._released.pop(key, None)
        if released is not None:
            released.set()


class TransactionSource(Protocol):
    """Whatever tells a handle which transaction it is in (its unit of work)."""

    def current_transaction(self) -> Transaction | None: ...


class Bound:
    """Base of the engine's handles: they join their unit of work's transaction."""

    _source: TransactionSource | None = None

    def attach(self, source: TransactionSource) -> None:
        """Join ``source``'s transactions from now on (this very handle)."""
        self._source = source

    def bound_to(self, source: TransactionSource) -> Self:
        """A handle on the same committed state, in ``source``'s transactions.

        A shallow copy, so a subclass's overrides and attributes come along.
        """
        handle = object.__new__(type(self))
        handle.__dict__.update(self.__dict__)
        handle._source = source
        return handle

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Transaction]:
        """The transaction to stage a write in: the unit of work's, or (outside
        one) a transaction of this one statement, committed at once."""
        current = None if self._source is None else self._source.current_transaction()
        if current is not None:
            yield current
            return
        statement = Transaction()
        try:
            yield statement
        except BaseException:
            statement.rollback()
            raise
        try:
            statement.commit()
        except BaseException:
            statement.rollback()
            raise

    def _reading(self) -> Transaction | None:
        """The transaction whose staged writes a read also sees, if any."""
        return None if self._source is None else self._source.current_transaction()
