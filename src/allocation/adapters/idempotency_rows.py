"""Idempotency-key rows to and from the service layer's value types, the same for
every engine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from allocation.service_layer.idempotency import KeyRecord, StoredResponse

if TYPE_CHECKING:
    import datetime
    from collections.abc import Sequence

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
