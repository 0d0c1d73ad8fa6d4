"""Revision 0007: a product whose first events predate the log gets its baseline,
so its stream folds from its start (issue 9's leftovers)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import text

from allocation.adapters import migrations
from allocation.entrypoints import cli
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork
from tests.integration import old_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest
    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.unit_of_work import AbstractUnitOfWork

# What LAMP held before the log began (versions 1 to 3: l1 and l2 created, o2
# allocated), as its baseline must say.
LAMP_BEFORE_THE_LOG = {
    "l1": {
        "sku": "LAMP",
        "purchased_quantity": 10,
        "eta": None,
        "allocations": [{"orderid": "o2", "sku": "LAMP", "qty": 4}],
    },
    "l2": {
        "sku": "LAMP",
        "purchased_quantity": 5,
        "eta": "2031-01-02",
        "allocations": [],
    },
}


async def _populate_revision_0004(engine: AsyncEngine) -> None:
    """State tables as the previous layout left them, with a log that began while
    LAMP was at version 3 and PEN at version 1; the views as catch-up kept them."""
    await migrations.downgrade(engine, "base")
    await migrations.upgrade(engine, "0004")
    async with engine.begin() as connection:
        for statement in (
            "INSERT INTO products (sku, version_number) VALUES ('LAMP', 9), ('PEN', 2)",
            (
                "INSERT INTO batches (id, reference, sku, purchased_quantity, eta)"
                " VALUES (1, 'l1', 'LAMP', 10, NULL), (2, 'l2', 'LAMP', 5, '2031-01-02'),"
                " (3, 'l3', 'LAMP', 3, NULL), (4, 'p1', 'PEN', 4, NULL)"
            ),
            (
                "INSERT INTO allocations (batch_id, orderid, sku, qty)"
                " VALUES (1, 'o2', 'LAMP', 4), (3, 'o4', 'LAMP', 2)"
            ),
            (
                "INSERT INTO allocations_view (orderid, sku, qty, batchref, version,"
                " allocated) VALUES ('o2', 'LAMP', 4, 'l1', 0, true),"
                " ('o3', 'LAMP', 1, 'l1', 8, false), ('o4', 'LAMP', 2, 'l3', 7, true)"
            ),
        ):
            await connection.execute(text(statement))
        lamp = {"sku": "LAMP"}
        await connection.execute(
            old_rows.LOG.insert(),
            [
                old_rows.product_event(
                    4, "allocated", orderid="o3", qty=1, batchref="l1", **lamp
                ),
                old_rows.product_event(
                    5, "batch_created", ref="l3", qty=7, eta=None, **lamp
                ),
                old_rows.product_event(
                    6, "batch_quantity_changed", ref="l3", qty=3, **lamp
                ),
                old_rows.product_event(
                    7, "allocated", orderid="o4", qty=2, batchref="l3", **lamp
                ),
                old_rows.product_event(
                    8, "deallocated", orderid="o3", qty=1, batchref="l1", **lamp
                ),
                old_rows.product_event(9, "out_of_stock", orderid="o9", qty=99, **lamp),
                # PEN's p1 held some quantity before the log: no event says which.
                old_rows.product_event(
                    2, "batch_quantity_changed", ref="p1", sku="PEN", qty=4
                ),
            ],
        )


def _history(
    database_url: str, monkeypatch: pytest.MonkeyPatch, *args: str
) -> Callable[[], int]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return lambda: cli.main(["history", "product", *args])


async def test_a_partly_logged_product_verifies_after_the_migration(
    engine: AsyncEngine, uow_factory: Callable[[], AbstractUnitOfWork]
) -> None:
    await _populate_revision_0004(engine)

    await migrations.upgrade(engine)

    problems = await verify(uow_factory(), scratch=FakeUnitOfWork())
    # LAMP folds from its baseline; PEN's state before the log is not known, so
    # it got none and is still named, with the batch no logged event created.
    assert len(problems) == 2
    assert problems[0].startswith("product PEN: event at position")
    assert problems[0].endswith("has version 2, expected 1")
    assert problems[1] == (
        "claim batch 'p1': held by 'PEN'; the log's fold makes no such claim"
    )
    async with uow_factory() as uow:
        lamp = await uow.products.get("LAMP")
        baseline = await uow.event_log.read_stream("product", "LAMP", up_to_version=3)
        assert await uow.products.at_version("LAMP", 2) is None
    assert lamp is not None
    assert lamp.version_number == 9
    assert {b.reference: b.available_quantity for b in lamp.batches} == {
        "l1": 6,
        "l2": 5,
        "l3": 1,
    }
    [imported] = baseline
    assert (imported.aggregate_version, imported.event.TYPE) == (3, "product_imported")


async def test_history_prints_a_partly_logged_product_from_its_baseline(
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _populate_revision_0004(engine)
    await migrations.upgrade(engine)
    capsys.readouterr()

    status = await anyio.to_thread.run_sync(
        _history(database_url, monkeypatch, "LAMP", "--json")
    )

    out = capsys.readouterr().out
    assert status == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(entry["version"], entry["name"]) for entry in entries] == [
        (3, "product_imported"),
        (4, "allocated"),
        (5, "batch_created"),
        (6, "batch_quantity_changed"),
        (7, "allocated"),
        (8, "deallocated"),
        (9, "out_of_stock"),
    ]
    assert entries[0]["state"]["batches"] == LAMP_BEFORE_THE_LOG
    assert entries[-1]["state"]["batches"]["l3"]["allocations"] == [
        {"orderid": "o4", "sku": "LAMP", "qty": 2}
    ]


async def test_history_says_when_a_version_predates_the_log(
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _populate_revision_0004(engine)
    await migrations.upgrade(engine)
    capsys.readouterr()

    status = await anyio.to_thread.run_sync(
        _history(database_url, monkeypatch, "LAMP", "--at-version", "2")
    )

    assert status == 1
    assert capsys.readouterr().err == (
        "allocation: error: product 'LAMP' starts the log at version 3, the state"
        " its earlier events led to: version 2 predates the log\n"
    )


async def test_the_baseline_goes_with_a_downgrade_and_comes_back(
    engine: AsyncEngine, uow_factory: Callable[[], AbstractUnitOfWork]
) -> None:
    await _populate_revision_0004(engine)
    await migrations.upgrade(engine)

    await migrations.downgrade(engine, "0006", allow_data_loss=True)
    async with engine.connect() as connection:
        names = await connection.scalars(text("SELECT name FROM event_log"))
        assert "product_imported" not in set(names)
    await migrations.upgrade(engine)

    problems = await verify(uow_factory(), scratch=FakeUnitOfWork())
    assert not [problem for problem in problems if "LAMP" in problem]
