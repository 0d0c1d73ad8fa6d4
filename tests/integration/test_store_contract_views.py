"""The read models and their shadow tables, one contract for every engine.

View writes join the unit of work's transaction like every other write; a
rebuild goes to a shadow table, which a swap makes the live one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allocation.service_layer import projections
from allocation.service_layer.ports import LineState

if TYPE_CHECKING:
    from allocation.service_layer.unit_of_work import AbstractUnitOfWork
    from tests.integration.store_fixtures import StoreDatabase

ALLOCATIONS = projections.ALLOCATIONS_VIEW


def line(orderid: str, version: int | None = 1, *, allocated: bool = True) -> LineState:
    return LineState(orderid, "sku1", 2, "b1", version, allocated)


async def lines_of(store: StoreDatabase) -> list[LineState]:
    async with store.unit_of_work() as uow:
        return await uow.allocations_view.lines()


async def write_lines(uow: AbstractUnitOfWork, *lines: LineState) -> None:
    await uow.allocations_view.write_many(lines)


# ---- the live views


async def test_view_writes_stay_unseen_by_others_until_the_commit(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as writer:
        await write_lines(writer, line("o1"))
        await writer.users_view.add("u1", "Ann", "ann@example.com")
        async with store.unit_of_work() as reader:
            assert await reader.allocations_view.for_order("o1") == []
            assert await reader.users_view.by_email("ann@example.com") is None
        await writer.commit()

    async with store.unit_of_work() as reader:
        rows = await reader.allocations_view.for_order("o1")
        assert rows == [{"sku": "sku1", "batchref": "b1"}]
        assert await reader.users_view.by_email("ann@example.com") is not None


async def test_a_unit_of_work_reads_its_own_view_writes(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1"))
        await uow.users_view.add("u1", "Ann", "ann@example.com")

        assert await uow.allocations_view.lines() == [line("o1")]
        assert await uow.users_view.by_id("u1") is not None


async def test_rolled_back_view_writes_are_gone(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1"))
        await uow.commit()
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o2"))
        await uow.allocations_view.clear()
        await uow.users_view.add("u1", "Ann", "ann@example.com")

    assert await lines_of(store) == [line("o1")]
    async with store.unit_of_work() as uow:
        assert await uow.users_view.all_rows() == []


async def test_an_older_line_version_leaves_the_row_alone(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1", 3, allocated=False))
        await uow.commit()
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1", 2), line("o1", 3))
        await uow.commit()

    assert await lines_of(store) == [line("o1", 3, allocated=False)]


async def test_a_line_without_a_version_is_written_as_version_zero(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1", 5), line("o1", None, allocated=False))
        await uow.commit()

    assert await lines_of(store) == [line("o1", 0, allocated=False)]


async def test_users_are_found_by_id_and_by_email_and_listed_by_email(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        await uow.users_view.add("u2", "Zoe", "zoe@example.com")
        await uow.users_view.add("u1", "Ann", "ann@example.com")
        await uow.users_view.add("u1", "Anna", "ann@example.com")  # overwrites
        await uow.commit()

    async with store.unit_of_work() as uow:
        anna = {"id": "u1", "name": "Anna", "email": "ann@example.com"}
        assert await uow.users_view.by_id("u1") == anna
        assert await uow.users_view.by_email("ann@example.com") == anna
        assert [row["id"] for row in await uow.users_view.all_rows()] == ["u1", "u2"]
        assert await uow.users_view.by_id("u3") is None


# ---- paged reads by key (what verify and a replay compare)

# Code-point order, Python's: capitals, then small letters, then accented ones
# (a natural-language collation would put them otherwise).
IDS_IN_ORDER = ["Z", "a", "b", "é"]


def keyed_line(orderid: str, sku: str = "sku1", qty: int = 2) -> LineState:
    return LineState(orderid, sku, qty, "b1", 1, allocated=True)


async def test_lines_are_read_in_key_order_by_code_point(store: StoreDatabase) -> None:
    in_order = [
        keyed_line("Z"),
        keyed_line("a", "sku1", 9),
        keyed_line("a", "sku1", 10),  # a number, not text: 9 before 10
        keyed_line("a", "Éclair"),  # the sku follows the order id
        keyed_line("a", "éclair"),
        keyed_line("é"),
    ]
    async with store.unit_of_work() as uow:
        await write_lines(uow, *reversed(in_order))
        await uow.commit()

    assert in_order == sorted(in_order)  # Python's order
    assert await lines_of(store) == in_order


async def test_lines_page_past_a_key_up_to_a_limit(store: StoreDatabase) -> None:
    lines = [keyed_line(orderid) for orderid in IDS_IN_ORDER]
    async with store.unit_of_work() as uow:
        await write_lines(uow, *lines)
        await uow.commit()

    async with store.unit_of_work() as uow:
        view = uow.allocations_view
        assert await view.lines(limit=2) == lines[:2]
        assert await view.lines(after=("a", "sku1", 2), limit=2) == lines[2:]
        assert await view.lines(after=("a", "sku1", 1)) == lines[1:]
        assert await view.lines(after=("a", "sku1", 2), limit=1) == lines[2:3]
        assert await view.lines(after=("é", "sku1", 2)) == []


async def test_users_are_paged_by_id_in_code_point_order(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        for user_id in reversed(IDS_IN_ORDER):
            await uow.users_view.add(user_id, "Ann", f"{user_id}@example.com")
        await uow.commit()

    async with store.unit_of_work() as uow:
        view = uow.users_view
        assert [row["id"] for row in await view.page()] == IDS_IN_ORDER
        assert [row["id"] for row in await view.page(limit=2)] == ["Z", "a"]
        assert [row["id"] for row in await view.page(after="a")] == ["b", "é"]
        assert [row["id"] for row in await view.page(after="a", limit=1)] == ["b"]
        assert await view.page(after="é") == []
        assert await view.page(after="Z", limit=1) == [
            {"id": "a", "name": "Ann", "email": "a@example.com"}
        ]


# ---- shadows


async def test_a_shadow_starts_empty_and_leaves_the_live_view_alone(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1"))
        await uow.commit()

    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        assert await uow.allocations_view.lines() == []
        await write_lines(uow, line("o2"))
        await uow.commit()

    assert await lines_of(store) == [line("o1")]


async def test_a_shadow_keeps_its_rows_until_it_is_swapped_in(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"))
        await uow.commit()

    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS)
        assert await uow.allocations_view.lines() == [line("o2")]


async def test_a_swapped_in_shadow_replaces_the_live_rows(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1"), line("o3", 4, allocated=False))
        await uow.commit()
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"), line("o3", 7))
        await uow.swap_in_shadow(ALLOCATIONS)
        await uow.commit()

    assert await lines_of(store) == [line("o2"), line("o3", 7)]


async def test_a_swap_goes_back_with_its_rollback(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await write_lines(uow, line("o1"))
        await uow.commit()
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"))
        await uow.commit()

    async with store.unit_of_work() as uow:
        await uow.swap_in_shadow(ALLOCATIONS)

    assert await lines_of(store) == [line("o1")]
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS)
        assert await uow.allocations_view.lines() == [line("o2")]


async def test_a_swapped_in_shadow_is_gone(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"))
        await uow.swap_in_shadow(ALLOCATIONS)
        await uow.commit()

    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS)
        assert await uow.allocations_view.lines() == []


async def test_a_dropped_shadow_comes_back_empty(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"))
        await uow.commit()
    async with store.unit_of_work() as uow:
        await uow.drop_shadow(ALLOCATIONS)
        await uow.drop_shadow(ALLOCATIONS)  # dropping none is fine
        await uow.commit()

    async with store.unit_of_work() as uow:
        await uow.use_shadow(ALLOCATIONS)
        assert await uow.allocations_view.lines() == []


async def test_the_live_view_is_back_when_the_unit_of_work_ends(
    store: StoreDatabase,
) -> None:
    uow = store.unit_of_work()
    async with uow:
        await uow.use_shadow(ALLOCATIONS, empty=True)
        await write_lines(uow, line("o2"))
        await uow.commit()
    async with uow:
        await write_lines(uow, line("o1"))
        await uow.commit()

    assert await lines_of(store) == [line("o1")]


async def test_the_users_view_has_a_shadow_too(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        await uow.users_view.add("u1", "Ann", "ann@example.com")
        await uow.commit()
    async with store.unit_of_work() as uow:
        await uow.use_shadow(projections.USERS_VIEW, empty=True)
        await uow.users_view.add("u2", "Bob", "bob@example.com")
        await uow.swap_in_shadow(projections.USERS_VIEW)
        await uow.commit()

    async with store.unit_of_work() as uow:
        assert [row["id"] for row in await uow.users_view.all_rows()] == ["u2"]
