"""HTTP idempotency keys in memory, staged per transaction as the SQL stores do.

Every write of a key holds the key's lock until its transaction ends, as a row
lock does: of two claims of one key the second waits, then finds it held, and a
key being completed cannot be taken over under its holder. Runs on asyncio and
trio (AnyIO).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from allocation.memory.transaction import Bound, LockTable
from allocation.service_layer.exceptions import IdempotencyKeyLost
from allocation.service_layer.idempotency import KeyRecord

if TYPE_CHECKING:
    import datetime

    from allocation.memory.transaction import Transaction
    from allocation.service_layer.idempotency import StoredResponse


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    fingerprint: str
    token: str
    state: Literal["in_flight", "done"]
    response: StoredResponse | None
    expires_at: datetime.datetime


class KeyData:
    """The committed keys of one store, shared by every handle on it."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.locks = LockTable()


@dataclasses.dataclass(slots=True)
class _KeyChanges:
    """One transaction's writes of keys: a row, or None for a deletion."""

    data: KeyData
    rows: dict[str, _Row | None] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        pass  # every written key is locked until the commit: nobody else wrote it

    def apply(self) -> None:
        for key, row in self.rows.items():
            if row is None:
                self.data.rows.pop(key, None)
            else:
                self.data.rows[key] = row


class FakeIdempotencyKeys(Bound):
    """The event store's idempotency-key methods (mixed into FakeEventStore)."""

    _keys: KeyData

    async def claim_request(
        self,
        key: str,
        fingerprint: str,
        token: str,
        now: datetime.datetime,
        lease_until: datetime.datetime,
    ) -> KeyRecord | None:
        with self._writing() as transaction:
            changes = await self._locked(key, transaction)
            row = self._row(key, changes)
            if row is not None and row.expires_at > now:
                return KeyRecord(
                    key=key,
                    fingerprint=row.fingerprint,
                    state=row.state,
                    response=row.response,
                    expires_at=row.expires_at,
                )
            changes.rows[key] = _Row(fingerprint, token, "in_flight", None, lease_until)
            return None

    async def complete_request(
        self,
        key: str,
        token: str,
        response: StoredResponse,
        expires_at: datetime.datetime,
    ) -> None:
        with self._writing() as transaction:
            changes = await self._locked(key, transaction)
            row = self._row(key, changes)
            if row is None or row.token != token or row.state != "in_flight":
                raise IdempotencyKeyLost(key)
            changes.rows[key] = _Row(
                row.fingerprint, token, "done", response, expires_at
            )

    async def release_request(self, key: str, token: str) -> None:
        with self._writing() as transaction:
            changes = await self._locked(key, transaction)
            row = self._row(key, changes)
            if row is not None and row.token == token and row.state == "in_flight":
                changes.rows[key] = None

    async def purge_requests(self, now: datetime.datetime) -> int:
        purged = 0
        with self._writing() as transaction:
            staged = self._staged_in(transaction)
            keys = set(self._keys.rows).union(staged.rows if staged else ())
            expired = [
                key
                for key in sorted(keys)
                if (row := self._row(key, staged)) is not None and row.expires_at <= now
            ]
            for key in expired:
                changes = await self._locked(key, transaction)
                # Looked at again once locked: its holder may have completed it.
                row = self._row(key, changes)
                if row is not None and row.expires_at <= now:
                    changes.rows[key] = None
                    purged += 1
        return purged

    async def _locked(self, key: str, transaction: Transaction) -> _KeyChanges:
        await self._keys.locks.acquire(("idempotency_key", key), transaction)
        return transaction.changes(self._keys, lambda: _KeyChanges(self._keys))

    def _staged_in(self, transaction: Transaction) -> _KeyChanges | None:
        return transaction.staged(self._keys)  # type: ignore[return-value]  # ours

    def _row(self, key: str, changes: _KeyChanges | None) -> _Row | None:
        if changes is not None and key in changes.rows:
            return changes.rows[key]
        return self._keys.rows.get(key)
