"""The HTTP API in process on the fakes: the app's lifespan run by hand, httpx on
its ASGI side, and a unit of work whose database can be made to stop answering."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import httpx

from allocation import config
from allocation.entrypoints.api.app import create_app
from allocation.service_layer.exceptions import DatabaseUnavailable
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class UnreachableUnitOfWork(FakeUnitOfWork):
    """Answers until ``down`` is set (or ``answers_left`` runs out), then fails as
    a lost database does."""

    down = False
    answers_left: int | None = None

    async def _start(self) -> None:
        if self.answers_left is not None:
            self.down = self.down or self.answers_left <= 0
            self.answers_left -= 1
        if self.down:
            raise DatabaseUnavailable("postgresql://db.example/allocation", "refused")
        await super()._start()


@contextlib.asynccontextmanager
async def serving_fakes(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, UnreachableUnitOfWork]]:
    """A client of a freshly started app on the fakes, and its unit of work."""
    uow = UnreachableUnitOfWork()
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
