"""The HTTP API in process: the app's lifespan run by hand, httpx on its ASGI side."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import httpx

from allocation import config
from allocation.entrypoints.api.app import create_app
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import fastapi


@contextlib.asynccontextmanager
async def serving(
    database_url: str,
    *,
    stopping: Callable[[], bool] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, fastapi.FastAPI]]:
    """A client of a freshly started app on ``database_url``, and the app."""
    chosen = {"retry_delay": 0.01, "catch_up_interval": 0.05, **settings}
    app = create_app(
        settings=config.Settings(database_url=database_url, **chosen),
        stopping=stopping,
        notifications=FakeNotifications(),
        console=FakeConsole(),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test"
        ) as client,
    ):
        yield client, app
