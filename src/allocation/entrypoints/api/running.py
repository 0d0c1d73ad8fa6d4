"""Running one command for an HTTP request: Idempotency-Key, problems, log position.

The response is rendered from the events the command's commit appends, inside that
commit, and with an Idempotency-Key stored in the same transaction as the events
(``service_layer.idempotency``): a repeat gets the stored response and never a second
effect, even when the first request's process died between commit and answer.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import Response

from allocation.domain.exceptions import AllocationError, InvalidMessage, shorten
from allocation.entrypoints.api import problems
from allocation.service_layer import idempotency

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from starlette.requests import Request

    from allocation.domain import commands, events
    from allocation.service_layer.messagebus import MessageBus

    Render = Callable[[Sequence[events.Event]], tuple[int, str]]
    Headers = Callable[[int, str], Mapping[str, str]]
    Refusal = Callable[[AllocationError], Response | None]
    Unchanged = Callable[[Any], tuple[int, str]]

logger = logging.getLogger(__name__)

POSITION_HEADER = "Log-Position"
REPLAYED_HEADER = "Idempotent-Replayed"
# The draft makes the key a structured-field string ("..."); a bare token is taken
# too. Either holds a character that is not a space. Spaces, then one visible
# character, then any: a pattern that never backtracks, however long the header.
_QUOTED = r'"\x20*[\x21\x23-\x5b\x5d-\x7e][\x20\x21\x23-\x5b\x5d-\x7e]*"'
_BARE = r"[\x21\x23-\x7e]{1,255}"
# The JSON Schema pattern the OpenAPI document gives the header, whose maxLength
# (MAX_KEY_HEADER) bounds a quoted key to 255 characters between its quotes.
KEY_PATTERN = rf"^(?:{_QUOTED}|{_BARE})$"
MAX_KEY_HEADER = 257
_KEY = re.compile(KEY_PATTERN)
_JSON_TYPES = ("application/json", "application/problem+json")
# No command body nests; one nested deeper than Python's stack allows is refused.
TOO_DEEP = "body: nested too deeply"


class BadKey(Exception):
    """Raised when an Idempotency-Key header is not a usable key."""


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, None without one."""
    given = request.headers.getlist("idempotency-key")
    if not given:
        return None
    if len(given) > 1:
        raise BadKey("several Idempotency-Key headers")
    raw = given[0].strip()
    if len(raw) > MAX_KEY_HEADER or _KEY.fullmatch(raw) is None:
        raise BadKey(raw)
    return raw[1:-1] if raw.startswith('"') else raw


async def json_body(request: Request, message_type: str) -> dict[str, Any]:
    """The request's body as a JSON object (refused as an InvalidMessage otherwise)."""
    raw = await request.body()
    try:
        decoded = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidMessage(message_type, ["body: not JSON text"]) from None
    except RecursionError:
        raise InvalidMessage(message_type, [TOO_DEEP]) from None
    if not isinstance(decoded, dict):
        raise InvalidMessage(message_type, ["body: must be a JSON object"])
    return decoded


def unsupported_media_type(request: Request) -> Response | None:
    """A 415 problem unless the body is declared JSON (or not declared at all),
    sent as it is (the API decodes no Content-Encoding)."""
    encodings = [
        coding.strip().lower()
        for header in request.headers.getlist("content-encoding")
        for coding in header.split(",")
    ]
    applied = [coding for coding in encodings if coding not in ("", "identity")]
    if applied:
        return problems.response(
            "unsupported-media-type",
            f"a command's body is sent as it is, not with Content-Encoding"
            f" {shorten(applied[0])}",
        )
    declared = request.headers.get("content-type")
    if declared is None:
        return None
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type in _JSON_TYPES or media_type.endswith("+json"):
        return None
    return problems.response(
        "unsupported-media-type",
        f"a command's body is JSON, not {media_type or 'an empty media type'}",
    )


async def run(
    request: Request,
    bus: MessageBus,
    command: commands.Command,
    render: Render,
    *,
    media_type: str = "application/json",
    error_media_type: str = problems.MEDIA_TYPE,
    headers: Headers | None = None,
    refusal: Refusal | None = None,
    unchanged: Unchanged | None = None,
) -> Response:
    """Handle ``command`` for ``request`` and answer with what ``render`` makes of
    the events it appended (or the response stored under the request's key).

    A command that appended nothing (an order line allocated already) is answered
    by ``unchanged`` from the handler's result, or by ``render`` of no events.

    ``refusal`` may turn a domain error into a response of the route's own
    dialect (the book's paths); by default it becomes a problem. A rendered
    failure (out of stock) is a problem document unless ``error_media_type`` says
    otherwise.
    """
    media_types = (media_type, error_media_type)
    try:
        key = idempotency_key(request)
    except BadKey:
        return problems.response(
            "invalid-idempotency-key", "the Idempotency-Key header is not a usable key"
        )
    settings = request.app.state.settings
    token: str | None = None
    if key is not None:
        fingerprint = idempotency.fingerprint(
            request.method, request.url.path, await request.body()
        )
        claimed = await idempotency.claim(
            bus.uow_factory, key, fingerprint, lease=settings.idempotency_lease
        )
        if isinstance(claimed, idempotency.KeyRecord):
            return await _answer_known_key(
                bus, claimed, fingerprint, media_types, headers
            )
        token = claimed.token
    pending = idempotency.PendingRequest(
        key=key,
        fingerprint="" if key is None else fingerprint,
        token=token,
        render=render,
        ttl=settings.idempotency_ttl,
    )
    entered = idempotency.current.set(pending)
    try:
        # A caller's W3C trace context: the command's spans and events join it.
        with bus.observer.continued(request.headers.get("traceparent")):
            result = await bus.handle(command)
    except AllocationError as error:
        await _release(bus, key, token)
        answer = refusal(error) if refusal is not None else None
        answer = answer or problems.for_error(error)
        if answer is None:
            raise
        return answer
    except BaseException:
        await _release(bus, key, token)
        raise
    finally:
        idempotency.current.reset(entered)
    stored = pending.response
    if stored is None:
        # The command committed nothing: nothing to protect, so the key is let go.
        await _release(bus, key, token)
        status_code, body = unchanged(result) if unchanged else render(())
        stored = idempotency.StoredResponse(status_code, body, ())
    position = pending.position
    if position is None:
        position = await _position(bus, stored.message_ids)
    return _response(stored, position, media_types, headers, replayed=False)


async def _answer_known_key(
    bus: MessageBus,
    record: idempotency.KeyRecord,
    fingerprint: str,
    media_types: tuple[str, str],
    headers: Headers | None,
) -> Response:
    if record.fingerprint != fingerprint:
        return problems.response(
            "idempotency-key-reused",
            "this Idempotency-Key was used for another request (method, path or body)",
        )
    if record.state != "done" or record.response is None:
        return problems.response(
            "idempotency-key-in-use",
            "a request with this Idempotency-Key is still being handled",
        )
    position = await _position(bus, record.response.message_ids)
    return _response(record.response, position, media_types, headers, replayed=True)


async def _release(bus: MessageBus, key: str | None, token: str | None) -> None:
    if key is None or token is None:
        return
    try:
        # Shielded: a client that went away must not leave its key held until
        # the lease ends.
        with anyio.CancelScope(shield=True):
            await idempotency.release(bus.uow_factory, key, token)
    except AllocationError:
        # Its lease ends anyway; the request's own answer matters more.
        logger.warning("could not release Idempotency-Key %r", key, exc_info=True)


async def _position(bus: MessageBus, message_ids: Sequence[str]) -> int:
    async with bus.uow_factory() as uow:
        if message_ids:
            reached = await uow.event_log.last_position_of(message_ids)
            if reached is not None:
                return reached
        return await uow.event_log.last_position()


def _response(
    stored: idempotency.StoredResponse,
    position: int,
    media_types: tuple[str, str],
    headers: Headers | None,
    *,
    replayed: bool,
) -> Response:
    extra = dict(headers(stored.status_code, stored.body)) if headers else {}
    extra[POSITION_HEADER] = str(position)
    if replayed:
        extra[REPLAYED_HEADER] = "true"
    success, failure = media_types
    failed = stored.status_code >= 400
    if failed and failure == problems.MEDIA_TYPE:
        return problems.from_document(json.loads(stored.body), headers=extra)
    return Response(
        stored.body,
        status_code=stored.status_code,
        media_type=failure if failed else success,
        headers=extra,
    )
