"""The command routes: batches, allocations and users, each one command of the bus.

Request bodies are the commands' own schemas (``Command.from_json`` validates them,
``payload_schema`` documents them): one definition for the bus, the broker, the
command line and HTTP.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import TYPE_CHECKING, Any, TypeVar

import fastapi
import pydantic
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response  # noqa: TC002 - FastAPI reads the annotation

from allocation.domain import commands, events, messages
from allocation.domain.exceptions import InvalidMessage
from allocation.entrypoints.api import paths, problems, running

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

router = fastapi.APIRouter()

CommandT = TypeVar("CommandT", bound=commands.Command)

_COMMAND_FAILURES = (
    "invalid-request",
    "data-refused",
    "payload-too-large",
    "invalid-idempotency-key",
    "idempotency-key-in-use",
    "idempotency-key-reused",
    "unsupported-media-type",
    "database-unavailable",
    "concurrent-change",
)


class BatchOut(pydantic.BaseModel):
    """A batch as it was created."""

    ref: str
    sku: str
    qty: int
    eta: datetime.date | None


class BatchQuantityOut(pydantic.BaseModel):
    """A batch's new quantity."""

    ref: str
    qty: int


class AllocationOut(pydantic.BaseModel):
    """An order line and the batch it was allocated to."""

    orderid: str
    sku: str
    qty: int
    batchref: str


class UserOut(pydantic.BaseModel):
    """A registered user."""

    id: str
    name: str
    email: str


def request_body(
    command: type[commands.Command], *, without: Collection[str] = ()
) -> dict[str, Any]:
    """The OpenAPI request body of a route whose body is ``command``'s payload
    (less the fields the path or the server supply)."""
    schema = command.payload_schema()
    schema.pop("$schema", None)
    for name in without:
        schema.get("properties", {}).pop(name, None)
    if without:
        schema["description"] = _described_without(
            schema.get("description", ""), without
        )
    schema["required"] = [
        name for name in schema.get("required", []) if name not in without
    ]
    schema["examples"] = [
        {key: value for key, value in example.items() if key not in without}
        for example in schema.get("examples", [])
    ]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        },
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Repeats of this key get the first response, never a"
                " second effect (IETF draft-ietf-httpapi-idempotency-key-header).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": running.MAX_KEY_HEADER,
                    "pattern": running.KEY_PATTERN,
                },
            }
        ],
    }


def _described_without(description: str, without: Collection[str]) -> str:
    """The command's description less the clauses about fields the body leaves
    out (a body naming one is refused)."""
    clauses = [clause.strip() for clause in re.split(r"[.;](?:\s+|$)", description)]
    kept = [
        clause
        for clause in clauses
        if clause and not any(f"``{name}``" in clause for name in without)
    ]
    named = ", ".join(f"``{name}``" for name in sorted(without))
    return " ".join(
        [
            *(f"{clause}." for clause in kept),
            f"{named}: from the path or the server, refused in the body.",
        ]
    )


def decoded(
    command: type[CommandT],
    body: Mapping[str, Any],
    *,
    supplied: Mapping[str, Any] | None = None,
) -> CommandT:
    """``command`` from a JSON body, with the fields the path or server supply."""
    fields = dict(body)
    if supplied:
        taken = sorted(set(supplied) & set(fields))
        if taken:
            raise InvalidMessage(
                command.TYPE, [f"{name}: not a body field here" for name in taken]
            )
        fields.update(supplied)
    try:
        text = json.dumps(fields)
    except RecursionError:
        raise InvalidMessage(command.TYPE, [running.TOO_DEEP]) from None
    return command.from_json(text)


def _only(found: Sequence[events.Event], kind: type[events.Event]) -> Any:
    for event in found:
        if isinstance(event, kind):
            return event
    return None


def _json(model: pydantic.BaseModel) -> str:
    return model.model_dump_json()


def render_batch(found: Sequence[events.Event]) -> tuple[int, str]:
    created = _only(found, events.BatchCreated)
    return 201, _json(
        BatchOut(
            ref=created.ref,
            sku=created.sku,
            qty=created.purchased_quantity,
            eta=created.eta,
        )
    )


def render_allocation(found: Sequence[events.Event]) -> tuple[int, str]:
    allocated = _only(found, events.Allocated)
    if allocated is not None:
        return 201, _json(
            AllocationOut(
                orderid=allocated.orderid,
                sku=allocated.sku,
                qty=allocated.qty,
                batchref=allocated.batchref,
            )
        )
    missing = _only(found, events.OutOfStock)
    detail = (
        f"no batch of {missing.sku!r} can take {missing.qty} (order {missing.orderid!r})"
        if missing is not None
        else "no batch can take the order line"
    )
    document = problems.body("out-of-stock", detail)
    return 409, json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _user_location(status_code: int, body: str) -> dict[str, str]:
    if status_code != 201:
        return {}
    return {"Location": f"/users/{json.loads(body)['id']}"}


@router.post(
    "/batches",
    status_code=201,
    response_model=BatchOut,
    summary="Add a batch of stock",
    openapi_extra=request_body(commands.CreateBatch),
    responses=problems.responses(
        *_COMMAND_FAILURES,
        "invalid-quantity",
        "invalid-identifier",
        "batch-already-exists",
    ),
)
async def add_batch(request: Request) -> Response:
    refused = running.unsupported_media_type(request)
    if refused is not None:
        return refused
    body = await running.json_body(request, commands.CreateBatch.TYPE)
    command = decoded(commands.CreateBatch, body)
    return await running.run(request, request.app.state.bus, command, render_batch)


@router.patch(
    f"/batches/{{ref:{paths.IDENTIFIER}}}",
    response_model=BatchQuantityOut,
    summary="Change a batch's quantity (lines that no longer fit are reallocated)",
    openapi_extra=request_body(commands.ChangeBatchQuantity, without=("ref",)),
    responses=problems.responses(
        *_COMMAND_FAILURES, "invalid-quantity", "invalid-identifier", "unknown-batch"
    ),
)
async def change_batch_quantity(ref: str, request: Request) -> Response:
    refused = running.unsupported_media_type(request)
    if refused is not None:
        return refused
    body = await running.json_body(request, commands.ChangeBatchQuantity.TYPE)
    command = decoded(commands.ChangeBatchQuantity, body, supplied={"ref": ref})

    def render(_found: Sequence[events.Event]) -> tuple[int, str]:
        return 200, _json(BatchQuantityOut(ref=command.ref, qty=command.qty))

    return await running.run(request, request.app.state.bus, command, render)


@router.post(
    "/allocations",
    status_code=201,
    response_model=AllocationOut,
    summary="Allocate an order line to a batch",
    openapi_extra=request_body(commands.Allocate),
    responses={
        200: {
            "model": AllocationOut,
            "description": "The line was allocated already: its batch, nothing new",
        },
        **problems.responses(
            *_COMMAND_FAILURES,
            "invalid-quantity",
            "invalid-identifier",
            "invalid-sku",
            "out-of-stock",
        ),
    },
)
async def allocate(request: Request) -> Response:
    refused = running.unsupported_media_type(request)
    if refused is not None:
        return refused
    body = await running.json_body(request, commands.Allocate.TYPE)
    command = decoded(commands.Allocate, body)

    def already_allocated(batchref: str | None) -> tuple[int, str]:
        if batchref is None:
            return render_allocation(())
        # The line was allocated before: nothing new, the same answer.
        return 200, _json(
            AllocationOut(
                orderid=command.orderid,
                sku=command.sku,
                qty=command.qty,
                batchref=batchref,
            )
        )

    return await running.run(
        request,
        request.app.state.bus,
        command,
        render_allocation,
        unchanged=already_allocated,
    )


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    summary="Register a user",
    openapi_extra=request_body(commands.RegisterUser, without=("user_id",)),
    responses=problems.responses(
        *_COMMAND_FAILURES,
        "invalid-name",
        "invalid-email",
        "email-already-registered",
    ),
)
async def register_user(request: Request) -> Response:
    refused = running.unsupported_media_type(request)
    if refused is not None:
        return refused
    body = await running.json_body(request, commands.RegisterUser.TYPE)
    command = decoded(
        commands.RegisterUser, body, supplied={"user_id": messages.new_message_id()}
    )

    def render(found: Sequence[events.Event]) -> tuple[int, str]:
        registered = _only(found, events.UserRegistered)
        return 201, _json(
            UserOut(id=registered.user_id, name=registered.name, email=registered.email)
        )

    return await running.run(
        request, request.app.state.bus, command, render, headers=_user_location
    )
