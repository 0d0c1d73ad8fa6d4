"""The book's API paths, answering as its Flask app does, for its clients.

``POST /add_batch`` (201), ``POST /allocate`` (202 with the batchref; 400 with
``{"message": ...}`` for an unknown sku or no stock) and ``GET /allocations/<orderid>``
(served by the query routes: 200 or 404). They run through the same commands,
Idempotency-Key handling and log positions as the API's own routes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import fastapi
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response

from allocation.domain import commands, events
from allocation.domain.exceptions import AllocationError
from allocation.entrypoints.api import command_routes, problems, running
from allocation.service_layer.exceptions import InvalidSku

if TYPE_CHECKING:
    from collections.abc import Sequence

router = fastapi.APIRouter(tags=["the book's API"])

_MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}


def _message(text: str, status_code: int = 400) -> Response:
    return Response(
        json.dumps({"message": text}, ensure_ascii=False),
        status_code=status_code,
        media_type="application/json",
    )


# Failures of the service rather than refusals of the request: they stay problems
# with their own status (503, 409), which tells a client to send it again.
_NOT_REFUSALS = frozenset(
    {"database-unavailable", "schema-out-of-date", "concurrent-change"}
)


def _refusal(error: AllocationError) -> Response | None:
    if isinstance(error, InvalidSku):
        return _message(f"Invalid sku {error.sku}")
    slug = problems.slug_of(error)
    if slug is None or slug in _NOT_REFUSALS:
        return None
    return _message(str(error))


def _book_responses(status_code: int, description: str, schema: Any) -> dict[Any, Any]:
    listed = problems.responses(
        "invalid-idempotency-key",
        "idempotency-key-in-use",
        "idempotency-key-reused",
        "concurrent-change",
        "payload-too-large",
        "unsupported-media-type",
        "database-unavailable",
        "schema-out-of-date",
    )
    # The book's own refusals share 400 with a bad Idempotency-Key's problem.
    refused = listed[400]
    refused["description"] = (
        f"Invalid sku, out of stock, or a body that is not valid; {refused['description']}"
    )
    refused["content"]["application/json"] = {"schema": _MESSAGE_SCHEMA}
    return {
        status_code: {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        },
        **listed,
    }


async def _body(request: Request, command: type[commands.Command]) -> Any:
    refused = running.unsupported_media_type(request)
    if refused is not None:
        return refused
    try:
        body = await running.json_body(request, command.TYPE)
        return command_routes.decoded(command, body)
    except AllocationError as error:
        return _message(str(error))


@router.post(
    "/add_batch",
    status_code=201,
    summary="Add a batch (the book's path)",
    openapi_extra=command_routes.request_body(commands.CreateBatch),
    responses=_book_responses(201, "Added", {"type": "string", "const": "OK"}),
)
async def add_batch(request: Request) -> Response:
    command = await _body(request, commands.CreateBatch)
    if isinstance(command, Response):
        return command

    def render(_found: Sequence[events.Event]) -> tuple[int, str]:
        return 201, json.dumps("OK")

    return await running.run(
        request,
        request.app.state.bus,
        command,
        render,
        refusal=_refusal,
        error_media_type="application/json",
    )


@router.post(
    "/allocate",
    status_code=202,
    summary="Allocate an order line (the book's path)",
    openapi_extra=command_routes.request_body(commands.Allocate),
    responses=_book_responses(
        202,
        "Allocated",
        {
            "type": "object",
            "properties": {"batchref": {"type": "string"}},
            "required": ["batchref"],
        },
    ),
)
async def allocate(request: Request) -> Response:
    command = await _body(request, commands.Allocate)
    if isinstance(command, Response):
        return command

    def render(found: Sequence[events.Event]) -> tuple[int, str]:
        for event in found:
            if isinstance(event, events.Allocated):
                return 202, json.dumps({"batchref": event.batchref})
        sku = command.sku
        return 400, json.dumps({"message": f"Out of stock for sku {sku}"})

    def already_allocated(batchref: str | None) -> tuple[int, str]:
        if batchref is None:
            return render(())
        return 202, json.dumps({"batchref": batchref})

    return await running.run(
        request,
        request.app.state.bus,
        command,
        render,
        refusal=_refusal,
        error_media_type="application/json",
        unchanged=already_allocated,
    )
