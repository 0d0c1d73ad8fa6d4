"""What catch-up and replay report while they go, and what they say when misnamed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from allocation.domain import users
from allocation.service_layer import catchup
from allocation.service_layer.exceptions import UnknownSubscriber

if TYPE_CHECKING:
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

    # users_view and the three article handlers take user_registered; a batch of
    # two events, then the last one.
    for subscriber in ("users_view", "send_welcome_email", "send_coupon"):
        assert reports[subscriber] == [(0, 3), (2, 3), (3, 3)], subscriber


async def test_replay_reports_from_the_start_of_the_log(
    bus: MessageBus, uow: FakeUnitOfWork
) -> None:
    await _register_without_dispatch(uow, 3)
    reports: list[tuple[int, int]] = []

    def record(position: int, last: int) -> None:
        reports.append((position, last))

    assert await catchup.replay(bus, "users_view", batch_size=2, progress=record) == 3
    assert reports == [(0, 3), (2, 3), (3, 3)]


async def test_replaying_an_unknown_subscriber_names_the_valid_ones(
    bus: MessageBus,
) -> None:
    """Regression (issue 8): `allocation replay foo` did not say what would do."""
    with pytest.raises(UnknownSubscriber) as refused:
        await catchup.replay(bus, "foo")

    assert str(refused.value) == (
        "no subscriber 'foo': valid names: allocations_view, users_view"
    )
    assert refused.value.known == ("allocations_view", "users_view")
