"""HTTP idempotency keys in PostgreSQL, and the log position of a request's events
(asyncio only).

Of two claims of one new key, the second INSERT waits on the first's row until it
commits, then finds the key held; a claim that finds a key locks its row until
its transaction ends, so the record it reads next is the one it found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as upsert

from allocation.adapters import idempotency_rows, tables
from allocation.adapters.postgres.sql import compiled, strings
from allocation.service_layer.exceptions import IdempotencyKeyLost

if TYPE_CHECKING:
    import datetime
    from collections.abc import Sequence

    from allocation.adapters.postgres.session import Session
    from allocation.service_layer.idempotency import KeyRecord, StoredResponse


_keys = tables.idempotency_keys
CLAIM = compiled(
    idempotency_rows.claim(upsert),
    "key",
    "fingerprint",
    "token",
    "created_at",
    "expires_at",
)
RECORD = compiled(idempotency_rows.RECORD, "key")
# Returning the key: no row back tells that the key was lost.
COMPLETE = compiled(
    idempotency_rows.COMPLETE.returning(_keys.c.key),
    "status_code",
    "response",
    "message_ids",
    "expires_at",
    "key",
    "token",
)
RELEASE = compiled(idempotency_rows.RELEASE, "key", "token")
_purged = idempotency_rows.PURGE.returning(_keys.c.key).cte("purged")
# Counted by the database: the keys themselves need not travel.
PURGE = compiled(select(func.count()).select_from(_purged), "now")
_log = tables.event_log
LAST_POSITION_OF = compiled(
    select(func.max(_log.c.position)).where(
        _log.c.message_id == func.any(strings("message_ids"))
    ),
    "message_ids",
)


class PostgresIdempotencyKeys:
    """The event store's idempotency-key methods (mixed into PostgresEventStore)."""

    _session: Session

    async def claim_request(
        self,
        key: str,
        fingerprint: str,
        token: str,
        now: datetime.datetime,
        lease_until: datetime.datetime,
    ) -> KeyRecord | None:
        while True:
            claimed = await self._session.write_fetch(
                CLAIM, key, fingerprint, token, now, lease_until
            )
            if claimed:
                return None
            record = await self._session.fetch_row(RECORD, key)
            if record is not None:
                return idempotency_rows.key_record(tuple(record), record["expires_at"])
            # Deleted (released) in between: the key is free, try again.

    async def complete_request(
        self,
        key: str,
        token: str,
        response: StoredResponse,
        expires_at: datetime.datetime,
    ) -> None:
        completed = await self._session.write_fetch(
            COMPLETE,
            response.status_code,
            response.body,
            idempotency_rows.message_ids_json(response),
            expires_at,
            key,
            token,
        )
        if not completed:
            raise IdempotencyKeyLost(key)

    async def release_request(self, key: str, token: str) -> None:
        await self._session.execute(RELEASE, key, token)

    async def purge_requests(self, now: datetime.datetime) -> int:
        [record] = await self._session.write_fetch(PURGE, now)
        return int(record[0])

    async def last_position_of(self, message_ids: Sequence[str]) -> int | None:
        if not message_ids:
            return None
        position = await self._session.fetch_value(LAST_POSITION_OF, list(message_ids))
        return None if position is None else int(position)
