"""``GET /events/stream``: the event log as server-sent events, tailed from a position.

Each event is one SSE message whose ``id`` is its log position, so a client that
reconnects with ``Last-Event-ID`` continues where it stopped, missing nothing.
The stream ends when the client goes away or the server shuts down.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import anyio
import fastapi
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response, StreamingResponse

from allocation.entrypoints.api import problems
from allocation.entrypoints.api.query_routes import (
    MAX_POSITION,
    event_document,
    event_names,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection

    from allocation.service_layer.messagebus import MessageBus

router = fastapi.APIRouter()

_BATCH = 500
# How often an idle stream looks at the log again, and says it is alive.
_POLL_SECONDS = 0.2
_KEEP_ALIVE_SECONDS = 15.0


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
        **problems.responses("invalid-request"),
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
    ] = None,
    name: Annotated[list[str] | None, fastapi.Query()] = None,
) -> Response:
    unknown = sorted(set(name or ()) - set(event_names()))
    if unknown:
        return problems.response(
            "invalid-request",
            f"unknown event name {unknown[0]!r}",
            errors=[f"name: one of {', '.join(event_names())}"],
        )
    start = after
    if start is None:
        last_seen = request.headers.get("last-event-id", "0").strip() or "0"
        if not last_seen.isdigit() or int(last_seen) > MAX_POSITION:
            return problems.response(
                "invalid-request",
                "Last-Event-ID must be a log position (a whole number)",
                errors=["Last-Event-ID: a whole number from 0 to 2**63-1"],
            )
        start = int(last_seen)
    return StreamingResponse(
        _tail(request, request.app.state.bus, start, name),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _tail(
    request: Request, bus: MessageBus, after: int, names: Collection[str] | None
) -> AsyncIterator[str]:
    quiet_for = 0.0
    # Tells a client how soon to reconnect after the stream drops.
    yield "retry: 1000\n\n"
    while not _stopping(request):
        async with bus.uow_factory() as uow:
            batch = await uow.event_log.read(after=after, names=names, limit=_BATCH)
        for logged in batch:
            data = json.dumps(event_document(logged), ensure_ascii=False)
            yield f"id: {logged.position}\nevent: {logged.event.TYPE}\ndata: {data}\n\n"
            after = logged.position
        if len(batch) == _BATCH:
            continue
        if await request.is_disconnected():
            return
        await anyio.sleep(_POLL_SECONDS)
        quiet_for = 0.0 if batch else quiet_for + _POLL_SECONDS
        if quiet_for >= _KEEP_ALIVE_SECONDS:
            quiet_for = 0.0
            yield ": keep-alive\n\n"


def _stopping(request: Request) -> bool:
    stopping = getattr(request.app.state, "stopping", None)
    return bool(stopping is not None and stopping())
