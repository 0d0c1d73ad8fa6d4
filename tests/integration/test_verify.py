"""``verify`` replays the log through the projections' own code and compares, row by row."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from allocation import config, views
from allocation.bootstrap import bootstrap
from allocation.domain.exceptions import AllocationError
from allocation.service_layer import repository, services
from allocation.service_layer.projections import SHOWN_ROWS
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus


async def _order_with_two_chair_lines(bus: MessageBus) -> None:
    """Issue 8's scenario: order ox holds CHAIR lines in two batches."""
    await services.add_batch(bus, "s1", "CHAIR", 3)
    await services.add_batch(bus, "s2", "CHAIR", 100, eta=datetime.date(2030, 1, 1))
    assert await services.allocate(bus, "ox", "CHAIR", 3) == "s1"
    assert await services.allocate(bus, "ox", "CHAIR", 50) == "s2"


async def _tamper(engine: AsyncEngine, statement: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement))


async def _scalar(engine: AsyncEngine, query: str) -> object:
    async with engine.connect() as connection:
        return await connection.scalar(text(query))


async def test_the_allocations_view_keeps_every_line_of_an_order(
    bus: MessageBus,
) -> None:
    """Regression (issue 8): the CHAIR 3 line in s1 vanished from the view."""
    await _order_with_two_chair_lines(bus)

    assert await views.allocations("ox", bus.uow_factory()) == [
        {"sku": "CHAIR", "batchref": "s1"},
        {"sku": "CHAIR", "batchref": "s2"},
    ]
    await services.change_batch_quantity(bus, "s2", 0)  # 50 fits nowhere now
    assert await views.allocations("ox", bus.uow_factory()) == [
        {"sku": "CHAIR", "batchref": "s1"}
    ]
    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == []


async def test_verify_names_a_tampered_view_row(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)
    await _tamper(
        engine, "UPDATE allocations_view SET batchref = 'forged' WHERE qty = 3"
    )

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            "allocations_view orderid='ox' sku='CHAIR' qty=3: stored batchref='forged'"
            " version=3 allocated=True; the replayed log gives batchref='s1'"
            " version=3 allocated=True"
        )
    ]


async def test_verify_names_a_missing_and_an_unexpected_view_row(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)
    await _tamper(engine, "DELETE FROM allocations_view WHERE qty = 50")
    await _tamper(
        engine,
        "INSERT INTO allocations_view (orderid, sku, qty, batchref, version,"
        " allocated) VALUES ('oz', 'CHAIR', 1, 's1', 9, false)",
    )

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            "allocations_view orderid='ox' sku='CHAIR' qty=50: missing; the replayed"
            " log gives batchref='s2' version=4 allocated=True"
        ),
        (
            "allocations_view orderid='oz' sku='CHAIR' qty=1: stored batchref='s1'"
            " version=9 allocated=False; the replayed log has no such row"
        ),
    ]


async def test_verify_names_a_tampered_user_row(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    user_id = await services.register_user(bus, "Иван", "ivan@example.com")
    await _tamper(engine, "UPDATE users_view SET name = 'Mallory'")

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            f"users_view user_id='{user_id}': stored name='Mallory'"
            " email='ivan@example.com'; the replayed log gives name='Иван'"
            " email='ivan@example.com'"
        )
    ]


async def test_verify_sees_a_claimed_email_whose_case_was_changed(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    """Regression: a changed email in stored state was hidden by normalising it."""
    user_id = await services.register_user(bus, "Ann", "ann@example.com")
    await _tamper(engine, "UPDATE claims SET value = 'ANN@example.com'")

    problems = await verify(bus.uow_factory(), scratch=FakeUnitOfWork())

    assert problems == [
        (
            f"claim email 'ANN@example.com': held by '{user_id}'; the log's fold makes no"
            " such claim"
        ),
        f"claim email 'ann@example.com': missing; the log's fold gives '{user_id}'",
    ]


async def test_verify_names_a_claim_no_event_made(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    """Issue 9: an orphan claim passed verify and refused the email it held."""
    await _tamper(
        engine,
        "INSERT INTO claims (kind, value, owner) VALUES ('email', 'ghost@example.com', 'x')",
    )

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        "claim email 'ghost@example.com': held by 'x'; the log's fold makes no such claim"
    ]


async def test_verify_names_a_claim_held_by_another_aggregate(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)
    await _tamper(engine, "UPDATE claims SET owner = 'TABLE' WHERE value = 's1'")

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        "claim batch 's1': held by 'TABLE'; the log's fold gives 'CHAIR'"
    ]


async def test_verify_shows_a_few_differing_rows_and_counts_the_rest(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await services.add_batch(bus, "s1", "CHAIR", 100)
    for index in range(SHOWN_ROWS + 3):
        await services.allocate(bus, f"o{index}", "CHAIR", 1)
    await _tamper(engine, "DELETE FROM allocations_view")

    problems = await verify(bus.uow_factory(), scratch=FakeUnitOfWork())

    assert len(problems) == SHOWN_ROWS + 1
    assert problems[-1] == "allocations_view: 3 more rows differ from the replayed log"


async def test_verify_is_clean_after_refused_inputs(bus: MessageBus) -> None:
    await _order_with_two_chair_lines(bus)
    await services.register_user(bus, "Иван", "ivan@example.com")
    refused: list[Awaitable[object]] = [
        services.add_batch(bus, "s1", "CHAIR", 5),  # the batch exists
        services.add_batch(bus, "s9", "CHAIR", -1),
        services.add_batch(bus, "s\n9", "CHAIR", 1),
        services.allocate(bus, "ox", "NOSUCH", 1),
        services.allocate(bus, "ox", "CHAIR", 0),
        services.allocate(bus, "", "CHAIR", 1),
        services.change_batch_quantity(bus, "nosuch", 1),
        services.change_batch_quantity(bus, "s1", -5),
        services.register_user(bus, "Ivan", "IVAN@example.com"),  # taken
        services.register_user(bus, "Bob", "bob@nowhere"),
        services.register_user(bus, "\x1b[2J", "bob@example.com"),
    ]
    for attempt in refused:
        with pytest.raises(AllocationError):
            await attempt

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == []


async def test_verify_reads_through_a_read_only_database(
    bus: MessageBus, database_url: str
) -> None:
    """Regression: on PostgreSQL, loading a product asked for FOR UPDATE, which a
    read-only transaction refuses, so `allocation verify` failed on any product."""
    await _order_with_two_chair_lines(bus)
    settings = config.Settings(database_url=database_url)

    async with bootstrap(settings=settings, read_only=True) as reader:
        problems = await verify(reader.uow_factory(), scratch=FakeUnitOfWork())

    assert problems == []


async def _tamper_snapshot(
    bus: MessageBus, engine: AsyncEngine, change: Callable[[dict[str, Any]], None]
) -> None:
    """Store CHAIR's snapshot at its current version, changed by ``change``."""
    async with bus.uow_factory() as uow:
        product = await uow.products.get("CHAIR")
        assert product is not None
        snapshot = repository.snapshot_of(product)
        state = json.loads(snapshot.state_json)
        change(state)
        await uow.event_log.save_snapshot(
            dataclasses.replace(snapshot, state_json=json.dumps(state))
        )
        await uow.commit()


async def test_verify_names_a_tampered_batch_quantity(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)

    def change(state: dict[str, Any]) -> None:
        state["batches"]["s1"]["purchased_quantity"] = 7

    await _tamper_snapshot(bus, engine, change)

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            "product CHAIR: stored batches['s1']['purchased_quantity']=7; the log's"
            " fold gives 3"
        )
    ]


async def test_verify_names_a_line_missing_from_a_stored_batch(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)

    def change(state: dict[str, Any]) -> None:
        lines = state["batches"]["s1"]["allocations"]
        state["batches"]["s1"]["allocations"] = [
            line for line in lines if line["qty"] != 3
        ]

    await _tamper_snapshot(bus, engine, change)

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            "product CHAIR: stored batches['s1']['allocations'] lacks"
            " [{'orderid': 'ox', 'sku': 'CHAIR', 'qty': 3}] of the log's fold"
        )
    ]


async def test_verify_names_the_event_after_a_gap_in_a_stream(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    await _order_with_two_chair_lines(bus)
    await _tamper(
        engine,
        "DELETE FROM event_log WHERE name = 'batch_created' AND aggregate_version = 2",
    )
    position = await _scalar(
        engine, "SELECT position FROM event_log WHERE aggregate_version = 3"
    )

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        f"product CHAIR: event at position {position} has version 3, expected 2",
        "claim batch 's2': held by 'CHAIR'; the log's fold makes no such claim",
    ]


async def test_verify_reports_events_of_an_aggregate_type_the_domain_lacks(
    bus: MessageBus, engine: AsyncEngine
) -> None:
    user_id = await services.register_user(bus, "Ann", "ann@example.com")
    await _tamper(engine, "UPDATE event_log SET aggregate_type = 'customer'")

    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == [
        (
            "aggregate type 'customer': 1 event(s) in the log, but the domain has no"
            " such aggregate to fold them"
        ),
        (
            f"claim email 'ann@example.com': held by '{user_id}'; the log's fold makes"
            " no such claim"
        ),
    ]
