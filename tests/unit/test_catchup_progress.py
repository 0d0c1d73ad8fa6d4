"""What catch-up and replay report while they go, and what they say when misnamed."""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

import pytest

from allocation.domain import users
from allocation.entrypoints import cli_log
from allocation.service_layer import catchup, rebuild
from allocation.service_layer.exceptions import UnknownSubscriber

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.service_layer.messagebus import MessageBus
    from allocation.testing import FakeUnitOfWork


async def _register_without_dispatch(uow: FakeUnitOfWork, count: int) -> None:
    for number in range(count):
        async with uow:
            uow.users.add(
                users.User.register(f"u{number}", "Ann", f"ann{number}@example.com")
            )
            await uow.commit()
        uow.collect_new_events()  # the dispatch that never happened


async def test_catch_up_reports_each_subscriber_from_its_checkpoint_to_the_end(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await catchup.catch_up(bus)  # every subscriber gets a checkpoint
    await _register_without_dispatch(uow, 3)
    reports: dict[str, list[tuple[int, int]]] = {}

    def record(subscriber: str, position: int, last: int) -> None:
        reports.setdefault(subscriber, []).append((position, last))

    await catchup.catch_up(bus, batch_size=2, progress=record)

    # The three article handlers take user_registered (the users view is inline):
    # a batch of two events, then the last one.
    for subscriber in ("send_welcome_email", "log_registration", "send_coupon"):
        assert reports[subscriber] == [(0, 3), (2, 3), (3, 3)], subscriber


async def test_replay_reports_from_the_start_of_the_log(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await _register_without_dispatch(uow, 3)
    reports: list[tuple[int, int]] = []

    def record(position: int, last: int) -> None:
        reports.append((position, last))

    replayed = await rebuild.replay(bus, "users_view", batch_size=2, progress=record)
    assert replayed.applied == 3
    assert replayed.differences == []  # the inline view was written by each commit
    assert reports == [(0, 3), (2, 3), (3, 3)]


async def test_a_replay_reports_how_the_live_read_model_differed(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await _register_without_dispatch(uow, 2)
    async with uow:
        await uow.users_view.add("u0", "Mallory", "ann0@example.com")
        await uow.commit()

    replayed = await rebuild.replay(bus, "users_view", dry_run=True)

    assert replayed.differences == [
        (
            "users_view user_id='u0': stored name='Mallory' email='ann0@example.com';"
            " the replayed log gives name='Ann' email='ann0@example.com'"
        )
    ]
    assert not replayed.swapped
    async with uow:
        assert (await uow.users_view.by_id("u0") or {}).get("name") == "Mallory"


async def test_a_replay_swaps_the_rebuild_in(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await _register_without_dispatch(uow, 2)
    async with uow:
        await uow.users_view.add("u0", "Mallory", "ann0@example.com")
        await uow.commit()

    replayed = await rebuild.replay(bus, "users_view")

    assert replayed.swapped
    async with uow:
        assert (await uow.users_view.by_id("u0") or {}).get("name") == "Ann"
        assert len(await uow.users_view.all_rows()) == 2


async def test_replaying_an_unknown_subscriber_names_the_valid_ones(
    bus: MessageBus,
) -> None:
    """Regression (issue 8): `allocation replay foo` did not say what would do."""
    with pytest.raises(UnknownSubscriber) as refused:
        await rebuild.replay(bus, "foo")

    assert str(refused.value) == (
        "no subscriber 'foo': valid names: allocations_view, users_view"
    )
    assert refused.value.known == ("allocations_view", "users_view")


async def test_the_catch_up_command_reads_batches_of_the_configured_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: ``allocation catch-up`` read 500 events a batch whatever
    ALLOCATION_CATCH_UP_BATCH said (the worker and the start-up pass heeded it)."""
    monkeypatch.setenv("ALLOCATION_CATCH_UP_BATCH", "7")
    asked: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def no_database(**options: Any) -> AsyncIterator[object]:
        yield object()

    async def recording(bus: object, **options: Any) -> int:
        asked.update(options)
        return 0

    monkeypatch.setattr(cli_log, "bootstrap", no_database)
    monkeypatch.setattr(catchup, "catch_up", recording)

    assert await cli_log._catch_up(argparse.Namespace()) == 0
    assert asked["batch_size"] == 7
