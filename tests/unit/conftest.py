"""Unit tests run on both AnyIO backends: the core must not depend on asyncio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.service_layer.messagebus import MessageBus


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    """The fake unit of work every handler call of ``bus`` shares."""
    return FakeUnitOfWork()


@pytest.fixture
async def bus(uow: FakeUnitOfWork) -> AsyncIterator[MessageBus]:
    """A bus on fakes, with the default settings but no wait between retries."""
    async with bootstrap(
        uow=uow,
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(retry_delay=0),
    ) as bus:
        yield bus
