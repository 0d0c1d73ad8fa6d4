"""HTTP Idempotency-Key records: claim a key, complete it with the response in the
command's own transaction, or release it.

A request with a key first claims it in a short transaction of its own; the unit
of work of its command then stores the response with the command's events
(``AbstractUnitOfWork.commit`` reads ``current``), so a repeated request gets the
stored response and never a second effect. A request that commits nothing
releases its claim.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import hashlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Literal

import anyio

from allocation.service_layer.backoff import Outage

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from allocation.domain import events
    from allocation.service_layer.messagebus import UowFactory
    from allocation.service_layer.ports import NewEvent


# The longest key the stores hold (their column's width): the app refuses a
# longer one before claiming it.
MAX_KEY_LENGTH = 255


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """What a completed request answered, kept for its repeats.

    Attributes:
        message_ids: the ids of the events its command appended (the app finds
            their log position with ``last_position_of``).
    """

    status_code: int
    body: str
    message_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """A key as it is stored: in flight (its holder's lease ends at
    ``expires_at``), or done with its ``response`` (kept until ``expires_at``)."""

    key: str
    fingerprint: str
    state: Literal["in_flight", "done"]
    response: StoredResponse | None
    expires_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Claimed:
    """The key is this request's until its lease ends; ``token`` proves it."""

    token: str


@dataclasses.dataclass
class PendingRequest:
    """A request, for the unit of work of its command to render its response in
    the commit, and to store it there when the request holds a key.

    Attributes:
        key, token: the key it holds and the claim's proof; both None for a
            request without a key (its response is rendered, not stored).
        render: the events the command's commit appends, as the response's status
            code and JSON body text.
        ttl: seconds the stored response is kept after the commit.
        response: set once the commit that stored it succeeded; later commits in
            the same context (the event handlers') leave the key alone.
        position: the log position of that commit's last event, where the store
            told it at the append (None: the app reads it from the log).
    """

    key: str | None
    fingerprint: str
    token: str | None
    render: Callable[[Sequence[events.Event]], tuple[int, str]]
    ttl: float
    response: StoredResponse | None = None
    position: int | None = None


# The request being handled, set by the HTTP app around ``bus.handle``; the
# event handlers' tasks copy the context, and so see the same object.
current: contextvars.ContextVar[PendingRequest | None] = contextvars.ContextVar(
    "idempotency_current", default=None
)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The sha256 (hex) of a request's method, path and body.

    A JSON body counts by its content: keys sorted, no whitespace, so two
    encodings of one document match. Any other body counts byte for byte.
    """
    digest = hashlib.sha256()
    # JSON-framed: no path can end where the body begins.
    digest.update(json.dumps([method.upper(), path]).encode())
    digest.update(b"\n")
    digest.update(_canonical(body))
    return digest.hexdigest()


def _canonical(body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        # Not JSON (UnicodeDecodeError is a ValueError too): as it is. Canonical
        # JSON is JSON, so no other body can come out as the same bytes.
        return body
    # ASCII, escapes and all: a string JSON allows, a lone surrogate included,
    # encodes whatever it holds.
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def claim(
    uow_factory: UowFactory, key: str, fingerprint: str, *, lease: float
) -> Claimed | KeyRecord:
    """Claim ``key`` for a request, for ``lease`` seconds, in a transaction of
    its own.

    Returns Claimed when the key was free, or its lease or expiry had ended;
    otherwise the stored record, for the caller to decide: done with the same
    fingerprint, replay its response; in flight, 409; another fingerprint, 422.
    """
    token = str(uuid.uuid4())
    now = utc_now()
    async with uow_factory() as uow:
        record = await uow.event_log.claim_request(
            key, fingerprint, token, now, now + datetime.timedelta(seconds=lease)
        )
        await uow.commit()
    return Claimed(token) if record is None else record


async def release(uow_factory: UowFactory, key: str, token: str) -> None:
    """Give up a claim that led to no commit, so a retry may run (nothing if
    the key is no longer this token's)."""
    async with uow_factory() as uow:
        await uow.event_log.release_request(key, token)
        await uow.commit()


async def purge_expired(uow_factory: UowFactory) -> int:
    """Delete every key past its expiry (done) or its lease (in flight); return
    how many."""
    async with uow_factory() as uow:
        purged = await uow.event_log.purge_requests(utc_now())
        await uow.commit()
    return purged


def completion(
    new_events: Sequence[NewEvent],
) -> tuple[PendingRequest, StoredResponse] | None:
    """The response to store with a commit of ``new_events``, if the context's
    request is still pending and the commit appends events (a commit of nothing
    leaves the key to be released)."""
    pending = current.get()
    if pending is None or pending.response is not None or not new_events:
        return None
    appended = [new.event for new in new_events]
    status_code, body = pending.render(appended)
    return pending, StoredResponse(
        status_code=status_code,
        body=body,
        message_ids=tuple(event.message_id for event in appended),
    )


async def keep_purging(uow_factory: UowFactory, interval: float) -> None:
    """Purge expired keys every ``interval`` seconds until cancelled; an outage is
    logged once each way and retried sooner."""
    outage = Outage(logger, "purging idempotency keys", first=1.0, longest=interval)
    wait = interval
    while True:
        await anyio.sleep(wait)
        try:
            purged = await purge_expired(uow_factory)
        except Exception as error:  # noqa: BLE001 - a background loop's boundary: the outage logs it
            wait = outage.failed(error)
        else:
            outage.succeeded()
            wait = interval
            if purged:
                logger.info("purged %d expired idempotency keys", purged)
