"""One FakeUnitOfWork shared by concurrent handler calls: each entry is its own
transaction (the store contract suite covers everything else, on every engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from allocation.domain import events, users
from allocation.domain.exceptions import AllocationError
from allocation.service_layer import tracking
from allocation.service_layer.ports import Claim
from allocation.testing import FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def test_concurrent_entries_of_one_instance_see_only_their_own_writes() -> None:
    uow = FakeUnitOfWork()
    first_wrote = anyio.Event()
    second_done = anyio.Event()
    seen_by_second: list[object] = []

    async def first() -> None:
        async with uow:
            await uow.users_view.add("u1", "Ann", "ann@example.com")
            first_wrote.set()
            await second_done.wait()
            await uow.commit()

    async def second() -> None:
        await first_wrote.wait()
        async with uow:
            seen_by_second.append(await uow.users_view.by_id("u1"))
            await uow.users_view.add("u2", "Bob", "bob@example.com")
            await uow.commit()
        second_done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        group.start_soon(second)

    assert seen_by_second == [None]
    assert set(uow.users_view.rows) == {"u1", "u2"}
    assert uow.commits == 2


async def _race(
    uow: FakeUnitOfWork, stage: Callable[[str], Awaitable[None]]
) -> list[str]:
    """Two entries stage a write each, then both commit; returns the failures."""
    both_staged = anyio.Event()
    staged = 0
    failures: list[str] = []

    async def writer(name: str) -> None:
        nonlocal staged
        try:
            async with uow:
                await stage(name)
                staged += 1
                if staged == 2:
                    both_staged.set()
                await both_staged.wait()
                await uow.commit()
        except AllocationError as error:
            failures.append(type(error).__name__)

    async with anyio.create_task_group() as group:
        group.start_soon(writer, "u1")
        group.start_soon(writer, "u2")
    return failures


async def test_of_two_staged_claims_of_one_email_the_later_commit_fails() -> None:
    uow = FakeUnitOfWork()

    async def claim(owner: str) -> None:
        await uow.event_log.claim([Claim("email", "ann@example.com", owner)])

    assert await _race(uow, claim) == ["EmailAlreadyRegistered"]
    assert await uow.event_log.claim_owner("email", "ann@example.com") in {"u1", "u2"}


async def test_of_two_staged_exactly_once_marks_the_later_commit_fails() -> None:
    uow = FakeUnitOfWork()

    async def mark(_: str) -> None:
        await uow.event_log.mark_processed("handler", ["m1"], exactly_once=True)

    assert await _race(uow, mark) == ["AlreadyProcessed"]


async def test_each_handler_call_collects_the_events_it_committed() -> None:
    uow = FakeUnitOfWork()
    collected: dict[str, list[events.Event]] = {}
    both_committed = anyio.Event()
    committed = 0

    async def handler_call(user_id: str) -> None:
        nonlocal committed
        message = events.OutOfStock(sku="sku1", orderid=user_id, qty=1)
        tracking.handling.set(tracking.Handling(message))
        async with uow:
            uow.users.add(users.User.register(user_id, "Ann", f"{user_id}@example.com"))
            await uow.commit()
        committed += 1
        if committed == 2:
            both_committed.set()
        await both_committed.wait()
        collected[user_id] = uow.collect_new_events()

    async with anyio.create_task_group() as group:
        group.start_soon(handler_call, "u1")
        group.start_soon(handler_call, "u2")

    for user_id, (event,) in collected.items():
        assert isinstance(event, events.UserRegistered)
        assert event.user_id == user_id


async def test_a_stream_lock_of_one_entry_holds_a_concurrent_entry() -> None:
    uow = FakeUnitOfWork()
    order: list[str] = []

    async def writer(name: str) -> None:
        async with uow:
            await uow.event_log.lock_stream("product", "sku1")
            order.append(f"{name} locked")
            await anyio.lowlevel.checkpoint()
            order.append(f"{name} done")

    async with anyio.create_task_group() as group:
        group.start_soon(writer, "first")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(writer, "second")

    assert order == ["first locked", "first done", "second locked", "second done"]


async def test_outside_an_entry_each_store_call_commits_at_once() -> None:
    uow = FakeUnitOfWork()

    await uow.event_log.set_checkpoint("handler", 3)

    async with uow:
        assert await uow.event_log.checkpoint("handler") == 3
