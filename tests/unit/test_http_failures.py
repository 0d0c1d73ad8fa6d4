"""The HTTP API on the fakes: a database that stops answering is a 503, not a 500."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from allocation import config
from allocation.entrypoints.api.app import create_app
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class _UnreachableUnitOfWork(FakeUnitOfWork):
    """Answers until ``down`` is set, then fails as a lost database does."""

    down = False

    async def _start(self) -> None:
        if self.down:
            raise DatabaseUnavailable("postgresql://db.example/allocation", "refused")
        await super()._start()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and httpx's ASGI transport run the app on asyncio


@pytest.fixture
async def served(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, _UnreachableUnitOfWork]]:
    uow = _UnreachableUnitOfWork()
    app = create_app(
        settings=config.Settings(database_url=f"sqlite:///{tmp_path}/unused.db"),
        uow=uow,
        notifications=FakeNotifications(),
        console=FakeConsole(),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test"
        ) as client,
    ):
        yield client, uow


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/allocations", {"orderid": "o1", "sku": "LAMP", "qty": 1}),
        ("POST", "/users", {"name": "Ann", "email": "ann@example.com"}),
        ("GET", "/allocations/o1", None),
        ("GET", "/events", None),
    ],
)
async def test_an_unreachable_database_is_a_503_with_retry_after(
    served: tuple[httpx.AsyncClient, _UnreachableUnitOfWork],
    method: str,
    path: str,
    body: object,
) -> None:
    client, uow = served
    uow.down = True

    answer = await client.request(method, path, json=body)

    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/database-unavailable"
    assert "db.example" in answer.json()["detail"]
    assert answer.headers["Retry-After"] == "5"
