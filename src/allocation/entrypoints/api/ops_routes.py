"""Operations: liveness, readiness, and the problem types' own documentation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import fastapi
from starlette.requests import Request  # noqa: TC002 - FastAPI reads the annotation
from starlette.responses import Response

from allocation.adapters import broker, migrations
from allocation.adapters.metrics import render_metrics
from allocation.domain.exceptions import AllocationError
from allocation.entrypoints.api import problems

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

router = fastapi.APIRouter()

# A dependency slower than this to answer counts as not ready.
CHECK_SECONDS = 2.0


def _json(document: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(document), status_code=status_code, media_type="application/json"
    )


@router.get("/health", summary="Alive: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Ready: database reachable, schema current, broker reachable if configured",
    responses=problems.responses("not-ready"),
)
async def ready(request: Request) -> Response:
    state = request.app.state
    checks = {
        "database": await _check(lambda: _database_answers(request)),
        "schema": await _check(
            lambda: migrations.ensure_up_to_date(state.schema_engine)
        ),
        "broker": (
            await _check(lambda: broker.ping(state.settings.broker_url))
            if state.settings.broker_url
            else "not configured"
        ),
    }
    failing = [name for name, outcome in checks.items() if outcome not in _FINE]
    if failing:
        return problems.response(
            "not-ready", f"not ready: {', '.join(failing)}", checks=checks
        )
    return _json({"status": "ready", "checks": checks})


_FINE = frozenset({"ok", "not configured"})


async def _database_answers(request: Request) -> None:
    async with request.app.state.bus.uow_factory() as uow:
        await uow.event_log.last_position()


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        with anyio.fail_after(CHECK_SECONDS):
            await probe()
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s"
    except AllocationError as error:
        return str(problems.body("not-ready", str(error))["detail"])
    return "ok"


@router.get(
    "/metrics",
    summary="Prometheus metrics: commands, handlers, retries, dead letters, lag",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format, or OpenMetrics when Accept asks",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        **problems.responses("database-unavailable"),
    },
)
async def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    body, content_type = await render_metrics(
        request.app.state.bus,
        accept=request.headers.get("accept"),
        destinations=[settings.broker_stream] if settings.broker_url else (),
    )
    return Response(body, media_type=content_type)


@router.get("/problems", summary="Every problem type this API answers with")
async def problem_types() -> list[dict[str, Any]]:
    return [_described(kind) for kind in problems.TYPES.values()]


@router.get(
    "/problems/{slug}",
    summary="What a problem type means",
    responses=problems.responses("not-found", "invalid-request"),
)
async def problem_type(
    slug: Annotated[str, fastapi.Path(max_length=100)],
) -> Response:
    kind = problems.TYPES.get(slug)
    if kind is None:
        return problems.response("not-found", f"no problem type {slug!r}")
    return _json(_described(kind))


def _described(kind: problems.ProblemType) -> dict[str, Any]:
    return {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "description": kind.description,
    }
