"""The read models' contract: the in-memory fakes keep exactly the rows the tables do.

``verify`` replays the log into the fakes and compares them with the tables, so every
rule here holds alike for the fake, a SQLite file and PostgreSQL (on its driver
path, and through SQLAlchemy for batches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from allocation import views
from allocation.service_layer.ports import LineState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork
    from tests.integration.store_fixtures import StoreDatabase

    UowFactory = Callable[[], AbstractUnitOfWork]


@pytest.fixture
def uow_factory(store: StoreDatabase) -> UowFactory:
    """Fresh units of work of the store under test (fake, SQLite, PostgreSQL)."""
    return store.unit_of_work


def _line(
    orderid: str = "o1",
    sku: str = "LAMP",
    qty: int = 5,
    batchref: str = "b1",
    version: int | None = 2,
    *,
    allocated: bool = True,
) -> LineState:
    return LineState(orderid, sku, qty, batchref, version, allocated)


async def _write(uow_factory: UowFactory, *lines: LineState) -> None:
    """Each line in a transaction of its own, as the bus's handlers write them."""
    for line in lines:
        async with uow_factory() as uow:
            write = (
                uow.allocations_view.add
                if line.allocated
                else uow.allocations_view.remove
            )
            await write(
                orderid=line.orderid,
                sku=line.sku,
                qty=line.qty,
                batchref=line.batchref,
                version=line.version,
            )
            await uow.commit()


async def _write_many(uow_factory: UowFactory, lines: Sequence[LineState]) -> None:
    async with uow_factory() as uow:
        await uow.allocations_view.write_many(lines)
        await uow.commit()


async def _lines(uow_factory: UowFactory) -> list[LineState]:
    async with uow_factory() as uow:
        return await uow.allocations_view.lines()


async def test_an_order_keeps_its_lines_of_one_sku_in_several_batches(
    uow_factory: UowFactory,
) -> None:
    """Regression (issue 8): keyed by (orderid, sku), the second line replaced the first."""
    await _write(
        uow_factory,
        _line("ox", "CHAIR", 3, "s1", 2),
        _line("ox", "CHAIR", 50, "s2", 3),
    )

    assert await views.allocations("ox", uow_factory()) == [
        {"sku": "CHAIR", "batchref": "s1"},
        {"sku": "CHAIR", "batchref": "s2"},
    ]


async def test_two_lines_of_one_sku_in_one_batch_are_two_entries(
    uow_factory: UowFactory,
) -> None:
    await _write(uow_factory, _line(qty=3, version=2), _line(qty=4, version=3))

    assert await views.allocations("o1", uow_factory()) == [
        {"sku": "LAMP", "batchref": "b1"},
        {"sku": "LAMP", "batchref": "b1"},
    ]


async def test_an_orders_lines_come_by_sku_then_batch_in_code_point_order(
    uow_factory: UowFactory,
) -> None:
    await _write(
        uow_factory,
        _line(sku="lamp", qty=1, batchref="b2"),
        _line(sku="Lamp", qty=2, batchref="b1"),
        _line(sku="ćma", qty=3, batchref="b1"),
        _line(sku="lamp", qty=4, batchref="B9"),
        _line(orderid="other", sku="A"),
    )

    assert await views.allocations("o1", uow_factory()) == [
        {"sku": "Lamp", "batchref": "b1"},
        {"sku": "lamp", "batchref": "B9"},
        {"sku": "lamp", "batchref": "b2"},
        {"sku": "ćma", "batchref": "b1"},
    ]


async def test_a_line_moved_to_another_batch_shows_once(
    uow_factory: UowFactory,
) -> None:
    await _write(
        uow_factory,
        _line(batchref="b1", version=2),
        _line(batchref="b1", version=3, allocated=False),
        _line(batchref="b2", version=4),
    )

    assert await views.allocations("o1", uow_factory()) == [
        {"sku": "LAMP", "batchref": "b2"}
    ]


async def test_an_older_or_repeated_event_changes_nothing(
    uow_factory: UowFactory,
) -> None:
    await _write(
        uow_factory,
        _line(batchref="b2", version=4),
        _line(batchref="b1", version=3, allocated=False),
        _line(batchref="b1", version=2),
        _line(batchref="b9", version=4),
    )

    assert await _lines(uow_factory) == [_line(batchref="b2", version=4)]


async def test_a_deallocated_line_stays_as_a_row_marked_so(
    uow_factory: UowFactory,
) -> None:
    await _write(uow_factory, _line(version=2), _line(version=3, allocated=False))

    assert await views.allocations("o1", uow_factory()) == []
    assert await _lines(uow_factory) == [_line(version=3, allocated=False)]


async def test_a_write_without_version_applies_and_leaves_version_0(
    uow_factory: UowFactory,
) -> None:
    await _write(uow_factory, _line(version=5), _line(batchref="b2", version=None))

    assert await _lines(uow_factory) == [_line(batchref="b2", version=0)]


async def test_a_batch_keeps_the_newest_state_of_each_line_whatever_its_order(
    uow_factory: UowFactory,
) -> None:
    await _write_many(
        uow_factory,
        [
            _line(batchref="b2", version=4),
            _line(batchref="b1", version=2),
            _line(batchref="b1", version=3, allocated=False),
            _line("o2", "CHAIR", 1, "s1", 7),
            _line("o2", "CHAIR", 2, "s1", 8),
        ],
    )

    assert await _lines(uow_factory) == [
        _line(batchref="b2", version=4),
        _line("o2", "CHAIR", 1, "s1", 7),
        _line("o2", "CHAIR", 2, "s1", 8),
    ]


async def test_a_batch_respects_what_is_already_stored(
    uow_factory: UowFactory,
) -> None:
    await _write(uow_factory, _line(batchref="b3", version=6))

    await _write_many(
        uow_factory, [_line(batchref="b1", version=5), _line(qty=9, version=1)]
    )

    assert await _lines(uow_factory) == [
        _line(batchref="b3", version=6),
        _line(qty=9, version=1),
    ]


async def test_lines_come_by_order_sku_and_quantity(uow_factory: UowFactory) -> None:
    await _write(
        uow_factory,
        _line("o2", "A", 1),
        _line("o1", "B", 10),
        _line("o1", "B", 9),
        _line("O3", "A", 1),
    )

    assert [
        (line.orderid, line.sku, line.qty) for line in await _lines(uow_factory)
    ] == [
        ("O3", "A", 1),
        ("o1", "B", 9),
        ("o1", "B", 10),
        ("o2", "A", 1),
    ]


async def test_clear_forgets_every_line(uow_factory: UowFactory) -> None:
    await _write(uow_factory, _line(), _line(version=3, allocated=False))

    async with uow_factory() as uow:
        await uow.allocations_view.clear()
        await uow.commit()

    assert await _lines(uow_factory) == []


async def test_a_user_is_found_by_email_and_overwritten_by_id(
    uow_factory: UowFactory,
) -> None:
    async with uow_factory() as uow:
        await uow.users_view.add("u2", "Мария", "maria@example.com")
        await uow.users_view.add("u1", "Ivan", "ivan@example.com")
        await uow.users_view.add("u3", "Zoe", "Zoe@example.com")
        await uow.users_view.add("u1", "Иван", "ivan@example.com")
        await uow.commit()

    assert await views.user_by_email("ivan@example.com", uow_factory()) == {
        "id": "u1",
        "name": "Иван",
        "email": "ivan@example.com",
    }
    assert await views.user_by_email("nobody@example.com", uow_factory()) is None
    assert [row["id"] for row in await views.users_list(uow_factory())] == [
        "u3",
        "u1",
        "u2",
    ]


async def test_clear_forgets_every_user(uow_factory: UowFactory) -> None:
    async with uow_factory() as uow:
        await uow.users_view.add("u1", "Ivan", "ivan@example.com")
        await uow.commit()
    async with uow_factory() as uow:
        await uow.users_view.clear()
        await uow.commit()

    assert await views.users_list(uow_factory()) == []
