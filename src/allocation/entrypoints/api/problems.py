"""RFC 9457 problem details: one problem type per error the API can answer with.

Each type's URI is relative to the API (``/problems/out-of-stock``) and resolves:
``GET /problems/{slug}`` describes it. Every answer that is not a success is
``application/problem+json`` with ``type``, ``title``, ``status`` and ``detail``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pydantic
from starlette.responses import Response

from allocation.adapters.exceptions import SchemaOutOfDate
from allocation.domain import exceptions as domain_errors
from allocation.service_layer import exceptions as service_errors
from allocation.service_layer.masking import mask_secrets

if TYPE_CHECKING:
    from collections.abc import Mapping

MEDIA_TYPE = "application/problem+json"


@dataclasses.dataclass(frozen=True, slots=True)
class ProblemType:
    """A kind of failure: its URI slug, HTTP status, title, and when it happens."""

    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return f"/problems/{self.slug}"


def _types(*kinds: ProblemType) -> dict[str, ProblemType]:
    return {kind.slug: kind for kind in kinds}


TYPES = _types(
    ProblemType(
        "invalid-request",
        422,
        "The request is not valid",
        "The body, a path or a query parameter does not fit the route's schema:"
        " `errors` names each field that is wrong. Nothing was changed.",
    ),
    ProblemType(
        "invalid-quantity",
        422,
        "Invalid quantity",
        "A quantity is not a whole number in the allowed range.",
    ),
    ProblemType(
        "invalid-email", 422, "Invalid email", "The email address is not usable."
    ),
    ProblemType(
        "invalid-name",
        422,
        "Invalid name",
        "A user's name is blank, too long or holds control characters.",
    ),
    ProblemType(
        "invalid-identifier",
        422,
        "Invalid identifier",
        "A reference, sku, order id or user id is empty, too long, padded or holds"
        " control characters.",
    ),
    ProblemType(
        "invalid-sku",
        422,
        "Invalid sku",
        "An order line names a sku that no batch holds. Nothing was changed.",
    ),
    ProblemType(
        "data-refused",
        422,
        "The database refused the data",
        "A value does not fit what the database holds. Nothing was changed.",
    ),
    ProblemType(
        "unknown-position",
        422,
        "Unknown log position",
        "min_position is past the newest event of the log: no command answered with"
        " it (a Log-Position header names a committed one).",
    ),
    ProblemType("unknown-batch", 404, "Unknown batch", "No batch has this reference."),
    ProblemType("user-not-found", 404, "User not found", "No user has this id."),
    ProblemType(
        "order-not-found",
        404,
        "Order not found",
        "The order has no allocated lines (it may never have been allocated).",
    ),
    ProblemType("not-found", 404, "Not found", "No route has this path."),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        "The route exists, but not for this method.",
    ),
    ProblemType(
        "out-of-stock",
        409,
        "Out of stock",
        "No batch of the sku can take the order line. The attempt is recorded"
        " (an out_of_stock event) and the stock desk is told.",
    ),
    ProblemType(
        "email-already-registered",
        409,
        "Email already registered",
        "Another user has this email (compared lower-cased). Nothing was changed.",
    ),
    ProblemType(
        "batch-already-exists",
        409,
        "Batch already exists",
        "A batch with this reference exists. Nothing was changed.",
    ),
    ProblemType(
        "concurrent-change",
        409,
        "Concurrent change",
        "Other requests kept changing the same aggregate while this one was retried."
        " Nothing was changed; send it again.",
    ),
    ProblemType(
        "idempotency-key-in-use",
        409,
        "Idempotency key in use",
        "A request with this Idempotency-Key is still being handled. Send it again"
        " after Retry-After seconds: it then gets that request's response.",
    ),
    ProblemType(
        "idempotency-key-reused",
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used for a request with another method, path or"
        " body. Use a new key for a new request.",
    ),
    ProblemType(
        "invalid-idempotency-key",
        400,
        "Invalid Idempotency-Key",
        "The Idempotency-Key header must be one key of 1 to 255 printable ASCII"
        " characters, not all spaces: a quoted string (without quotes or"
        " backslashes inside) or a bare token (without spaces or quotes).",
    ),
    ProblemType(
        "payload-too-large",
        413,
        "Payload too large",
        "The request body is larger than the API takes (`detail` says how large a"
        " body may be). Nothing was changed.",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "Command bodies are JSON (Content-Type: application/json), sent as they are"
        " (no Content-Encoding but identity).",
    ),
    ProblemType(
        "not-yet-projected",
        504,
        "Not yet projected",
        "The read model has not reached the log position asked for (min_position)"
        " in time. Ask again after Retry-After seconds.",
    ),
    ProblemType(
        "database-unavailable",
        503,
        "Database unavailable",
        "The database cannot be reached. Nothing was changed; try again later.",
    ),
    ProblemType(
        "schema-out-of-date",
        503,
        "Schema out of date",
        "The database needs `allocation db upgrade`.",
    ),
    ProblemType(
        "not-ready",
        503,
        "Not ready",
        "A dependency the service needs (database, schema, broker) does not answer"
        " as it should: `checks` says which.",
    ),
    ProblemType(
        "internal-error",
        500,
        "Internal error",
        "The server failed in a way it did not expect; the log has the details.",
    ),
)

# The problem type of each error a command or query may raise, most specific first.
_BY_ERROR: tuple[tuple[type[Exception], str], ...] = (
    (domain_errors.InvalidMessage, "invalid-request"),
    (domain_errors.InvalidQuantity, "invalid-quantity"),
    (domain_errors.InvalidEmail, "invalid-email"),
    (domain_errors.InvalidName, "invalid-name"),
    (domain_errors.BlankIdentifier, "invalid-identifier"),
    (domain_errors.EmailAlreadyRegistered, "email-already-registered"),
    (domain_errors.BatchAlreadyExists, "batch-already-exists"),
    (domain_errors.ConcurrencyConflict, "concurrent-change"),
    (service_errors.InvalidSku, "invalid-sku"),
    (service_errors.UnknownBatch, "unknown-batch"),
    (service_errors.DataRefused, "data-refused"),
    (service_errors.DatabaseUnavailable, "database-unavailable"),
    (SchemaOutOfDate, "schema-out-of-date"),
)

# How long a client should wait before sending again, where waiting helps.
RETRY_AFTER = {
    "idempotency-key-in-use": 1,
    "not-yet-projected": 1,
    "database-unavailable": 5,
    "concurrent-change": 1,
    "not-ready": 5,
}


class Problem(pydantic.BaseModel):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[str] | None = None


def slug_of(error: Exception) -> str | None:
    """The problem type of an error the API answers, or None for an unexpected one."""
    for kind, slug in _BY_ERROR:
        if isinstance(error, kind):
            return slug
    return None


def body(slug: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem document of type ``slug``."""
    kind = TYPES[slug]
    document: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": mask_secrets(detail),
    }
    document.update({key: value for key, value in extra.items() if value is not None})
    return document


def response(
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response of type ``slug``."""
    return from_document(body(slug, detail, **extra), headers=headers)


def from_document(
    document: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> Response:
    """A problem+json response from a problem document (a stored one, too)."""
    all_headers = dict(headers or {})
    slug = str(document["type"]).rsplit("/", 1)[-1]
    if slug in RETRY_AFTER:
        all_headers.setdefault("Retry-After", str(RETRY_AFTER[slug]))
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")),
        status_code=int(document["status"]),
        media_type=MEDIA_TYPE,
        headers=all_headers,
    )


def for_error(error: Exception) -> Response | None:
    """The problem response of an error the API knows, or None."""
    slug = slug_of(error)
    if slug is None:
        return None
    problems = (
        error.problems if isinstance(error, domain_errors.InvalidMessage) else None
    )
    return response(slug, str(error), errors=problems)


def responses(*slugs: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of a route that may answer these problems."""
    listed: dict[int | str, dict[str, Any]] = {}
    for slug in slugs:
        kind = TYPES[slug]
        entry = listed.setdefault(
            kind.status,
            {
                "description": "",
                "content": {MEDIA_TYPE: {"schema": Problem.model_json_schema()}},
            },
        )
        entry["description"] = "; ".join(
            part
            for part in (entry["description"], f"{kind.title} ({kind.uri})")
            if part
        )
    return listed
