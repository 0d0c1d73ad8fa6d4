"""Idempotency-key rows to and from the service layer's value types, and the
statements both engines run on them before compiling, the same for every engine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import bindparam, delete, literal_column, null, select, update

from allocation.adapters import tables
from allocation.service_layer.idempotency import KeyRecord, StoredResponse

if TYPE_CHECKING:
    import datetime
    from collections.abc import Sequence

    from sqlalchemy import Delete, Insert, Select, Update
    from sqlalchemy.sql.expression import ColumnElement

    from allocation.adapters.statements import DialectInsert

# The columns every engine's reads of a key select, in this order.
KEY_COLUMNS = (
    "key",
    "fingerprint",
    "state",
    "status_code",
    "response",
    "message_ids",
    "expires_at",
)
IN_FLIGHT: Final = "in_flight"
DONE: Final = "done"


def _quoted(text: str) -> ColumnElement[str]:
    return literal_column(f"'{text}'")


_keys = tables.idempotency_keys


def claim(insert_into: DialectInsert) -> Insert:
    """Claims a key, returning its token when taken: a key past its expiry (done)
    or its lease (in flight, its holder gone) is taken over; any other is left as
    it is, and nothing is returned."""
    new = insert_into(_keys).values(
        key=bindparam("key"),
        fingerprint=bindparam("fingerprint"),
        token=bindparam("token"),
        state=_quoted(IN_FLIGHT),
        created_at=bindparam("created_at"),
        expires_at=bindparam("expires_at"),
    )
    return new.on_conflict_do_update(  # type: ignore[no-any-return]  # the dialect's Insert
        index_elements=[_keys.c.key],
        set_={
            "fingerprint": new.excluded.fingerprint,
            "token": new.excluded.token,
            "state": new.excluded.state,
            "status_code": null(),
            "response": null(),
            "message_ids": null(),
            "created_at": new.excluded.created_at,
            "expires_at": new.excluded.expires_at,
        },
        where=_keys.c.expires_at <= new.excluded.created_at,
    ).returning(_keys.c.token)


RECORD: Select[Any] = select(*(_keys.c[name] for name in KEY_COLUMNS)).where(
    _keys.c.key == bindparam("key")
)
# The key as its claim left it: still held, by the same token.
_held = (
    _keys.c.key == bindparam("key"),
    _keys.c.token == bindparam("token"),
    _keys.c.state == _quoted(IN_FLIGHT),
)
COMPLETE: Update = (
    update(_keys)
    .where(*_held)
    .values(
        state=_quoted(DONE),
        status_code=bindparam("status_code"),
        response=bindparam("response"),
        message_ids=bindparam("message_ids"),
        expires_at=bindparam("expires_at"),
    )
)
RELEASE: Delete = delete(_keys).where(*_held)
PURGE: Delete = delete(_keys).where(_keys.c.expires_at <= bindparam("now"))


def message_ids_json(response: StoredResponse) -> str:
    return json.dumps(list(response.message_ids))


def key_record(row: Sequence[Any], expires_at: datetime.datetime) -> KeyRecord:
    """The record of a row of KEY_COLUMNS, its expiry read by the engine."""
    key, fingerprint, state, status_code, body, message_ids, _ = row
    response = None
    if state == DONE:
        response = StoredResponse(
            status_code=status_code,
            body=body,
            message_ids=tuple(json.loads(message_ids)),
        )
    return KeyRecord(
        key=key,
        fingerprint=fingerprint,
        state=DONE if state == DONE else IN_FLIGHT,
        response=response,
        expires_at=expires_at,
    )
