"""Commands sent as the HTTP API sends a request with an Idempotency-Key: claim
the key, run the command with the request pending, release the key when nothing
was stored."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from allocation.service_layer import idempotency, services

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from allocation.domain import events
    from allocation.service_layer.messagebus import MessageBus

CONFLICT = (409, "in flight")
MISMATCH = (422, "another request")


def render(appended: Sequence[events.Event]) -> tuple[int, str]:
    """A response naming the events the command appended."""
    return 201, json.dumps({"events": [event.TYPE for event in appended]})


async def send(
    bus: MessageBus,
    key: str,
    body: bytes,
    command: Callable[[], Awaitable[object]],
    *,
    lease: float = 60.0,
) -> tuple[int, str]:
    """Run ``command`` once per key, as the API will: (status code, body)."""
    fingerprint = idempotency.fingerprint("POST", "/commands", body)
    claimed = await idempotency.claim(bus.uow_factory, key, fingerprint, lease=lease)
    if isinstance(claimed, idempotency.KeyRecord):
        if claimed.fingerprint != fingerprint:
            return MISMATCH
        if claimed.response is None:
            return CONFLICT
        return claimed.response.status_code, claimed.response.body
    pending = idempotency.PendingRequest(
        key=key, fingerprint=fingerprint, token=claimed.token, render=render, ttl=60.0
    )
    reset = idempotency.current.set(pending)
    try:
        result = await command()
    except Exception:
        await idempotency.release(bus.uow_factory, key, claimed.token)
        raise
    finally:
        idempotency.current.reset(reset)
    if pending.response is None:
        await idempotency.release(bus.uow_factory, key, claimed.token)
        return 200, json.dumps({"result": result})
    return pending.response.status_code, pending.response.body


async def allocate(
    bus: MessageBus, key: str, orderid: str, sku: str, qty: int
) -> tuple[int, str]:
    """``services.allocate`` sent with ``key``."""
    body = json.dumps({"orderid": orderid, "sku": sku, "qty": qty}).encode()
    return await send(bus, key, body, lambda: services.allocate(bus, orderid, sku, qty))
