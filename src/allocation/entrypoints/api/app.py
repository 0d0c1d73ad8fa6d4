"""The HTTP API: a FastAPI app with one message bus per process, built in its lifespan.

``create_app()`` reads the settings from the environment (or takes them), and the
bus, its database pool and its background catch-up live exactly as long as the app
serves. Every answer that is not a success is RFC 9457 problem details.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from typing import TYPE_CHECKING, Any

import fastapi
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from allocation import config
from allocation.adapters import database, tracing
from allocation.adapters.metrics import PrometheusObserver
from allocation.bootstrap import bootstrap
from allocation.domain.exceptions import AllocationError, shorten
from allocation.entrypoints.api import (
    book_routes,
    command_routes,
    event_stream,
    guards,
    ops_routes,
    problems,
    query_routes,
)
from allocation.service_layer.observability import CompositeObserver, Observer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from allocation.service_layer import unit_of_work

logger = logging.getLogger(__name__)

# Expired Idempotency-Keys are answered as new ones at once; deleting their rows
# is only upkeep.
PURGE_KEYS_EVERY = 600.0

_DESCRIPTION = """\
Commands and queries of the allocation service. Command routes take an
`Idempotency-Key` header (repeats get the first response, never a second effect) and
answer with a `Log-Position` header; queries take `min_position` to read their own
writes. Failures are `application/problem+json` (RFC 9457): `GET /problems` lists the
types.
"""


def create_app(
    *,
    settings: config.Settings | None = None,
    uow: unit_of_work.AbstractUnitOfWork | None = None,
    stopping: Callable[[], bool] | None = None,
    observer: Observer | None = None,
    **dependencies: Any,
) -> fastapi.FastAPI:
    """The API app; its lifespan builds the bus (``bootstrap``) and closes it.

    Args:
        settings: read from the environment when not given.
        uow: a shared unit of work (a test's fake) instead of the database's.
        stopping: tells long-lived answers (the event stream) that the server is
            shutting down, so they end and let it stop.
        observer: what hears the bus; by default ``api_observer(settings)``
            (``GET /metrics`` needs a PrometheusObserver among its parts).
        dependencies: further handler dependencies, as for ``bootstrap``.
    """
    settings = settings or config.Settings.from_environment()

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        # Pre-ping: a pooled connection the database dropped would otherwise
        # fail the first /ready after the database came back.
        engine = database.create_engine(
            settings.database_url, pool_size=1, pre_ping=True
        )
        try:
            async with bootstrap(
                settings=settings,
                uow=uow,
                purge_keys_every=PURGE_KEYS_EVERY,
                observer=observer or api_observer(settings),
                **dependencies,
            ) as bus:
                app.state.bus = bus
                app.state.schema_engine = engine
                yield
        finally:
            await engine.dispose()

    app = fastapi.FastAPI(
        title="allocation",
        version=importlib.metadata.version("allocation"),
        description=_DESCRIPTION,
        lifespan=lifespan,
        # /batches/ is no path of the API: a 404, not a redirect to a URL built
        # from the client's Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.stopping = stopping
    for router in (
        command_routes.router,
        query_routes.router,
        event_stream.router,
        book_routes.router,
        ops_routes.router,
    ):
        app.include_router(router)
    app.add_middleware(guards.Guard)
    app.add_exception_handler(guards.PayloadTooLarge, _payload_too_large)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(AllocationError, _allocation_error)
    app.add_exception_handler(Exception, _unexpected)
    return app


def api_observer(settings: config.Settings) -> Observer:
    """Prometheus metrics for ``/metrics``, and OpenTelemetry spans: recorded as
    OTEL_TRACES_EXPORTER says, and a caller's ``traceparent`` carried into the
    log (and across the relay) even when nothing records them."""
    tracer = tracing.from_exporters(settings.traces_exporter)
    return CompositeObserver(
        PrometheusObserver(), tracer or tracing.OpenTelemetryObserver()
    )


async def _invalid_request(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    lines = [
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    ]
    return problems.response(
        "invalid-request", "; ".join(lines) or "invalid request", errors=lines
    )


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code)
    if slug is None:
        return problems.from_document(
            {
                "type": "about:blank",
                "title": str(error.detail),
                "status": error.status_code,
                "detail": str(error.detail),
            },
            headers=error.headers,
        )
    detail = f"{request.method} {shorten(request.url.path)}: {error.detail}"
    return problems.response(slug, detail, headers=error.headers)


async def _payload_too_large(request: Request, error: Exception) -> Response:
    assert isinstance(error, guards.PayloadTooLarge)
    return guards.too_large_response(error)


async def _allocation_error(request: Request, error: Exception) -> Response:
    answer = problems.for_error(error)
    if answer is not None:
        return answer
    return await _unexpected(request, error)


async def _unexpected(request: Request, error: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return problems.response(
        "internal-error", f"{type(error).__name__} while handling the request"
    )
