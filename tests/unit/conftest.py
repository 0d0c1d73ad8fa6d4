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
async def bus() -> AsyncIterator[MessageBus]:
    """A bus on fakes, with the default settings."""
    async with bootstrap(
        uow=FakeUnitOfWork(),
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(),
    ) as bus:
        yield bus
