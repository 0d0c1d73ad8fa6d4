"""``GET /events/stream``: the event log as server-sent events, tailed from a position.

Each event is one SSE message whose ``id`` is its log position, so a client that
reconnects with ``Last-Event-ID`` continues where it stopped, missing nothing.
The stream ends when the client goes away or the server shuts down.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Annotated

import anyio
import fastapi
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response, StreamingResponse

from allocation.domain.exceptions import AllocationError, shorten
from allocation.entrypoints.api import problems
from allocation.entrypoints.api.query_routes import (
    MAX_POSITION,
    EventNames,
    PlainDigits,
)
from allocation.entrypoints.cli_args import event_names
from allocation.entrypoints.cli_log import event_document

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Sequence

    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.ports import LoggedEvent

logger = logging.getLogger(__name__)

router = fastapi.APIRouter()

_BATCH = 500
# How often an idle stream looks at the log again, and says it is alive.
_POLL_SECONDS = 0.2
_KEEP_ALIVE_SECONDS = 15.0
# A log position as Last-Event-ID carries it: 0 to 2**63-1 takes at most 19 digits.
_POSITION_PATTERN = "^[0-9]{0,19}$"
_POSITION = re.compile("[0-9]{1,19}")


@router.get(
    "/events/stream",
    summary="Tail the event log as server-sent events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One SSE message per event: `id` its log position,"
            " `event` its name, `data` the event as GET /events shows it.",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "event": {"type": "string"},
                            "data": {"type": "string"},
                            "retry": {"type": "integer"},
                        },
                    }
                }
            },
        },
        **problems.responses("invalid-request", "database-unavailable"),
    },
)
async def event_stream(
    request: Request,
    after: Annotated[
        int | None,
        fastapi.Query(
            ge=0,
            le=MAX_POSITION,
            description="Start past this position (default: the Last-Event-ID header,"
            " else 0).",
        ),
        PlainDigits,
    ] = None,
    name: EventNames = None,
    last_event_id: Annotated[
        str,
        fastapi.Header(
            alias="Last-Event-ID",
            description="The id of the last event a dropped stream delivered: a"
            " reconnect continues past it (when `after` is not given).",
            json_schema_extra={"pattern": _POSITION_PATTERN},
        ),
    ] = "",
) -> Response:
    unknown = sorted(set(name or ()) - set(event_names()))
    if unknown:
        return problems.response(
            "invalid-request",
            f"unknown event name {shorten(unknown[0])}",
            errors=[f"name: one of {', '.join(event_names())}"],
        )
    last_seen = _last_seen(last_event_id)
    if last_seen is None:
        # Refused even beside `after`, which wins: a header that is no position
        # is a client's mistake either way.
        return problems.response(
            "invalid-request",
            "Last-Event-ID must be a log position (a whole number)",
            errors=["Last-Event-ID: a whole number from 0 to 2**63-1"],
        )
    start = last_seen if after is None else after
    bus: MessageBus = request.app.state.bus
    # Read once before answering: a database that does not answer is a 503
    # problem now, not a 200 whose stream breaks.
    first = await _read(bus, start, name)
    return StreamingResponse(
        _tail(request, bus, start, name, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _last_seen(header: str) -> int | None:
    """The position a Last-Event-ID header names (0 without one), None if it
    names none. Only ASCII digits: str.isdigit() also takes "²"."""
    text = header.strip() or "0"
    if not _POSITION.fullmatch(text):
        return None
    position = int(text)
    return position if position <= MAX_POSITION else None


async def _read(
    bus: MessageBus, after: int, names: Collection[str] | None
) -> Sequence[LoggedEvent]:
    async with bus.uow_factory() as uow:
        return await uow.event_log.read(after=after, names=names, limit=_BATCH)


async def _tail(
    request: Request,
    bus: MessageBus,
    after: int,
    names: Collection[str] | None,
    batch: Sequence[LoggedEvent],
) -> AsyncIterator[str]:
    quiet_for = 0.0
    # Tells a client how soon to reconnect after the stream drops.
    yield "retry: 1000\n\n"
    while True:
        for logged in batch:
            data = json.dumps(event_document(logged), ensure_ascii=False)
            yield f"id: {logged.position}\nevent: {logged.event.TYPE}\ndata: {data}\n\n"
            after = logged.position
        if len(batch) < _BATCH:
            if await request.is_disconnected():
                return
            await anyio.sleep(_POLL_SECONDS)
            quiet_for = 0.0 if batch else quiet_for + _POLL_SECONDS
            if quiet_for >= _KEEP_ALIVE_SECONDS:
                quiet_for = 0.0
                yield ": keep-alive\n\n"
        if _stopping(request):
            return
        try:
            batch = await _read(bus, after, names)
        except AllocationError as error:
            # The client reconnects with Last-Event-ID once the database is back,
            # missing nothing; a traceback would say no more than this line.
            logger.warning("event stream after position %d ended: %s", after, error)
            return


def _stopping(request: Request) -> bool:
    stopping = getattr(request.app.state, "stopping", None)
    return bool(stopping is not None and stopping())
