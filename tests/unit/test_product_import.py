"""A product imported from before the log: its baseline starts the stream."""

from __future__ import annotations

import datetime

import pytest

from allocation.domain import events, exceptions, model
from allocation.service_layer import projections, repository
from allocation.service_layer.ports import Claim
from allocation.testing import FakeUnitOfWork

ETA = datetime.date(2031, 1, 2)


def _imported(version: int | None = 3) -> events.ProductImported:
    event = events.ProductImported(
        sku="LAMP",
        batches=(
            events.ImportedBatch(
                ref="l1",
                purchased_quantity=10,
                allocations=(events.ImportedLine(orderid="o2", sku="LAMP", qty=4),),
            ),
            events.ImportedBatch(ref="l2", purchased_quantity=5, eta=ETA),
        ),
    )
    return event if version is None else event.stamped(aggregate_version=version)


def test_a_baseline_starts_the_stream_at_its_own_version() -> None:
    later = events.Allocated(
        orderid="o3", sku="LAMP", qty=1, batchref="l1", aggregate_version=4
    )

    product = model.Product.replayed("LAMP", [_imported(3), later])

    assert product.version_number == 4
    assert {b.reference: b.available_quantity for b in product.batches} == {
        "l1": 5,
        "l2": 5,
    }
    assert product.batch("l2") is not None
    assert product.batch("l2").eta == ETA  # type: ignore[union-attr]  # just checked


def test_a_baseline_not_yet_logged_is_version_one() -> None:
    assert model.Product.replayed("LAMP", [_imported(None)]).version_number == 1


def test_a_baseline_after_the_first_event_is_refused() -> None:
    created = events.BatchCreated(
        ref="l0", sku="LAMP", purchased_quantity=1, aggregate_version=1
    )

    with pytest.raises(exceptions.EventNotApplicable, match="starts its stream"):
        model.Product.replayed("LAMP", [created, _imported(2)])


def test_a_gap_after_a_baseline_is_still_refused() -> None:
    later = events.OutOfStock(sku="LAMP", orderid="o9", qty=1, aggregate_version=5)

    with pytest.raises(exceptions.EventOutOfSequence):
        model.Product.replayed("LAMP", [_imported(3), later])


def test_a_baseline_claims_its_batch_references() -> None:
    assert repository.ProductRepository.claims_of("LAMP", _imported()) == [
        Claim("batch", "l1", "LAMP"),
        Claim("batch", "l2", "LAMP"),
    ]


@pytest.mark.parametrize("baseline_first", [True, False])
async def test_the_allocations_view_takes_a_baseline_in_any_order(
    baseline_first: bool,
) -> None:
    """The log holds a baseline after the events it precedes: a later event of
    one of its lines wins whichever arrives first."""
    moved = events.Deallocated(
        orderid="o2", sku="LAMP", qty=4, batchref="l1", aggregate_version=4
    )
    batch = [_imported(3), moved] if baseline_first else [moved, _imported(3)]
    uow = FakeUnitOfWork()

    async with uow:
        await projections.ALLOCATIONS_VIEW.apply_many(batch, uow)
        await uow.commit()
        [line] = await uow.allocations_view.lines()

    assert (line.batchref, line.version, line.allocated) == ("l1", 4, False)


async def test_the_allocations_view_shows_an_imported_line() -> None:
    uow = FakeUnitOfWork()

    async with uow:
        await projections.ALLOCATIONS_VIEW.apply(_imported(3), uow)
        await uow.commit()

    assert await uow.allocations_view.for_order("o2") == [
        {"sku": "LAMP", "batchref": "l1"}
    ]
