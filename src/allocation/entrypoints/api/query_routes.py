"""The query routes: read models (with read-your-writes) and the event log.

A query given ``min_position`` (the ``Log-Position`` a command answered with) waits,
at most ``ALLOCATION_READ_WAIT`` seconds, until the read model it reads holds every
event up to there; then it answers, or says 504 with ``Retry-After``.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Annotated, Any

import fastapi
import pydantic
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response

from allocation import views
from allocation.domain import values
from allocation.domain.exceptions import shorten
from allocation.entrypoints.api import paths, problems
from allocation.entrypoints.cli_args import event_names
from allocation.entrypoints.cli_log import event_document
from allocation.service_layer import freshness, projections

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus
    from allocation.service_layer.projections import Projection

router = fastapi.APIRouter()

MAX_POSITION = 2**63 - 1
MAX_PAGE = 1000

OrderIdPath = Annotated[
    str,
    fastapi.Path(
        min_length=1,
        max_length=values.MAX_IDENTIFIER,
        json_schema_extra={"pattern": values.IDENTIFIER_PATTERN},
    ),
]
UserIdPath = Annotated[
    str,
    fastapi.Path(
        min_length=1,
        max_length=values.MAX_USER_ID,
        json_schema_extra={"pattern": values.IDENTIFIER_PATTERN},
    ),
]


def _plain_digits(value: object) -> object:
    """A query's number as plain ASCII digits: int() and pydantic also take
    ``1_0``, ``+1``, `` 1`` and ``1.0``, which a client cannot have meant."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in digits 0-9")
    return value


PlainDigits = pydantic.BeforeValidator(_plain_digits)

# PlainDigits after the Query: before it, the bounds reach the OpenAPI document
# as pydantic's own "ge" and "le" keys instead of minimum and maximum.
MinPosition = Annotated[
    int | None,
    fastapi.Query(
        ge=0,
        le=MAX_POSITION,
        description="Answer only once the read model holds every event up to this"
        " log position (a command's Log-Position header).",
    ),
    PlainDigits,
]


class AllocationRowOut(pydantic.BaseModel):
    """One allocated order line."""

    sku: str
    batchref: str


class UserOut(pydantic.BaseModel):
    """A registered user."""

    id: str
    name: str
    email: str


class EventOut(pydantic.BaseModel):
    """An event as the log holds it, its payload in the current schema."""

    position: int
    message_id: str
    name: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    payload: dict[str, Any]
    occurred_at: datetime.datetime
    correlation_id: str | None
    causation_id: str | None
    schema_version: int
    trace_context: str | None


class EventsPage(pydantic.BaseModel):
    """A page of the log; ``next_after`` continues it (None at its end)."""

    events: list[EventOut]
    next_after: int | None


EventNames = Annotated[
    list[str] | None,
    fastapi.Query(
        description="Only events of these names (snake_case TYPE); repeatable.",
        json_schema_extra={"items": {"enum": event_names()}},
    ),
]


async def fresh_enough(
    request: Request, projection: Projection, min_position: int | None
) -> Response | None:
    """None once ``projection`` holds ``min_position``; a 504 problem if it does not
    in time."""
    if min_position is None:
        return None
    bus: MessageBus = request.app.state.bus
    wait = request.app.state.settings.read_wait
    try:
        if await freshness.wait_until_reached(
            bus, projection, min_position, within=wait
        ):
            return None
    except freshness.PositionNotInLog as error:
        return problems.response("unknown-position", str(error))
    return problems.response(
        "not-yet-projected",
        f"{projection.name} has not reached log position {min_position} within"
        f" {wait:g} s",
    )


def json_response(document: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")),
        status_code=status_code,
        media_type="application/json",
    )


@router.get(
    f"/allocations/{{orderid:{paths.IDENTIFIER}}}",
    response_model=list[AllocationRowOut],
    summary="An order's allocated lines (the book's path too)",
    responses=problems.responses(
        "order-not-found",
        "invalid-request",
        "invalid-identifier",
        "unknown-position",
        "not-yet-projected",
        "database-unavailable",
    ),
)
async def allocations(
    orderid: OrderIdPath, request: Request, min_position: MinPosition = None
) -> Response:
    stale = await fresh_enough(request, projections.ALLOCATIONS_VIEW, min_position)
    if stale is not None:
        return stale
    rows = await views.allocations(orderid, request.app.state.bus.uow_factory())
    if not rows:
        return problems.response(
            "order-not-found", f"order {orderid!r} has no allocated lines"
        )
    return json_response([dict(row) for row in rows])


@router.get(
    f"/users/{{user_id:{paths.IDENTIFIER}}}",
    response_model=UserOut,
    summary="A registered user",
    responses=problems.responses(
        "user-not-found",
        "invalid-request",
        "invalid-identifier",
        "unknown-position",
        "not-yet-projected",
        "database-unavailable",
    ),
)
async def user(
    user_id: UserIdPath, request: Request, min_position: MinPosition = None
) -> Response:
    stale = await fresh_enough(request, projections.USERS_VIEW, min_position)
    if stale is not None:
        return stale
    found = await views.user_by_id(user_id, request.app.state.bus.uow_factory())
    if found is None:
        return problems.response("user-not-found", f"no user has id {user_id!r}")
    return json_response(dict(found))


@router.get(
    "/events",
    response_model=EventsPage,
    summary="The event log, oldest first, a page at a time",
    responses=problems.responses("invalid-request", "database-unavailable"),
)
async def event_log(
    request: Request,
    after: Annotated[int, fastapi.Query(ge=0, le=MAX_POSITION), PlainDigits] = 0,
    limit: Annotated[int, fastapi.Query(ge=1, le=MAX_PAGE), PlainDigits] = 100,
    name: EventNames = None,
) -> Response:
    unknown = sorted(set(name or ()) - set(event_names()))
    if unknown:
        return problems.response(
            "invalid-request",
            f"unknown event name {shorten(unknown[0])}",
            errors=[f"name: one of {', '.join(event_names())}"],
        )
    async with request.app.state.bus.uow_factory() as uow:
        batch = await uow.event_log.read(after=after, names=name, limit=limit)
    documents = [event_document(logged) for logged in batch]
    next_after = batch[-1].position if len(batch) == limit else None
    return json_response({"events": documents, "next_after": next_after})
