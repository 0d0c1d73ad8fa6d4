"""HTTP idempotency keys in PostgreSQL, and the log position of a request's events
(asyncio only).

Of two claims of one new key, the second INSERT waits on the first's row until it
commits, then finds the key held; a claim that finds a key locks its row until
its transaction ends, so the record it reads next is the one it found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import (
    bindparam,
    delete,
    func,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as upsert

from allocation.adapters import idempotency_rows, tables
from allocation.adapters.idempotency_rows import DONE, IN_FLIGHT, KEY_COLUMNS
from allocation.adapters.postgres.sql import compiled, strings
from allocation.service_layer.exceptions import IdempotencyKeyLost

if TYPE_CHECKING:
    import datetime
    from collections.abc import Sequence

    from sqlalchemy.sql.expression import ColumnElement

    from allocation.adapters.postgres.session import Session
    from allocation.service_layer.idempotency import KeyRecord, StoredResponse


def _quoted(text: str) -> ColumnElement[str]:
    return literal_column(f"'{text}'")


_keys = tables.idempotency_keys
_new_key = upsert(_keys).values(
    key=bindparam("key"),
    fingerprint=bindparam("fingerprint"),
    token=bindparam("token"),
    state=_quoted(IN_FLIGHT),
    created_at=bindparam("created_at"),
    expires_at=bindparam("expires_at"),
)
# A key past its expiry (done) or its lease (in flight, its holder gone) is
# taken over; any other is left as it is, and nothing is returned.
CLAIM = compiled(
    _new_key.on_conflict_do_update(
        index_elements=[_keys.c.key],
        set_={
            "fingerprint": _new_key.excluded.fingerprint,
            "token": _new_key.excluded.token,
            "state": _new_key.excluded.state,
            "status_code": null(),
            "response": null(),
            "message_ids": null(),
            "created_at": _new_key.excluded.created_at,
            "expires_at": _new_key.excluded.expires_at,
        },
        where=_keys.c.expires_at <= _new_key.excluded.created_at,
    ).returning(_keys.c.token),
    "key",
    "fingerprint",
    "token",
    "created_at",
    "expires_at",
)
RECORD = compiled(
    select(*(_keys.c[name] for name in KEY_COLUMNS)).where(
        _keys.c.key == bindparam("key")
    ),
    "key",
)
_held = (
    _keys.c.key == bindparam("key"),
    _keys.c.token == bindparam("token"),
    _keys.c.state == _quoted(IN_FLIGHT),
)
COMPLETE = compiled(
    update(_keys)
    .where(*_held)
    .values(
        state=_quoted(DONE),
        status_code=bindparam("status_code"),
        response=bindparam("response"),
        message_ids=bindparam("message_ids"),
        expires_at=bindparam("expires_at"),
    )
    .returning(_keys.c.key),
    "status_code",
    "response",
    "message_ids",
    "expires_at",
    "key",
    "token",
)
RELEASE = compiled(delete(_keys).where(*_held), "key", "token")
_purged = (
    delete(_keys)
    .where(_keys.c.expires_at <= bindparam("now"))
    .returning(_keys.c.key)
    .cte("purged")
)
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
