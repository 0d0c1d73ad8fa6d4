"""The unit of work knows whether it is open from a state of its own."""

from __future__ import annotations

from typing import Any

import pytest

from allocation.service_layer import repository
from allocation.service_layer.unit_of_work import AbstractUnitOfWork


class _BareUnitOfWork(AbstractUnitOfWork):
    """A unit of work without storage: only its opening and closing matter here."""

    def __init__(self) -> None:
        super().__init__(inline_projections=())
        self.rollbacks = 0

    async def _start(self) -> None:
        self.event_log = None  # type: ignore[assignment]  # never read by these tests

    async def _commit(self) -> None:
        pass

    async def _rollback(self) -> None:
        self.rollbacks += 1

    async def _shadow_view(self, attribute: str) -> Any:
        raise NotImplementedError

    async def _swap_shadow(self, attribute: str) -> None:
        raise NotImplementedError

    async def _drop_shadow(self, attribute: str) -> None:
        raise NotImplementedError


class _BookStyleUnitOfWork(_BareUnitOfWork):
    """Sets a repository up front, as the book's FakeUnitOfWork does."""

    def __init__(self) -> None:
        super().__init__()
        self.products = repository.ProductRepository(None)  # type: ignore[arg-type]  # never read


async def test_a_unit_of_work_is_open_only_inside_its_async_with_block() -> None:
    uow = _BareUnitOfWork()
    assert not uow._opened

    async with uow:
        assert uow._opened

    assert not uow._opened


async def test_a_repository_set_up_front_does_not_open_the_unit_of_work() -> None:
    uow = _BookStyleUnitOfWork()

    assert not uow._opened
    await uow.rollback()  # before entering: nothing seen to forget

    assert uow.rollbacks == 1


async def test_a_failed_start_leaves_the_unit_of_work_closed() -> None:
    class Failing(_BareUnitOfWork):
        async def _start(self) -> None:
            raise OSError("no database")

    uow = Failing()
    with pytest.raises(OSError, match="no database"):
        async with uow:
            pass

    assert not uow._opened
