"""The allocation rules of the Product aggregate, its batches and order lines."""

from __future__ import annotations

import datetime
import re

import pytest

from allocation.domain import events, exceptions, model
from tests.conftest import random_batchref, random_orderid, random_sku

TODAY = datetime.date(2024, 3, 1)
TOMORROW = TODAY + datetime.timedelta(days=1)
LATER = TODAY + datetime.timedelta(days=10)


def make_batch_and_line(
    sku: str, batch_qty: int, line_qty: int
) -> tuple[model.Batch, model.OrderLine]:
    return (
        model.Batch(random_batchref(), sku, batch_qty),
        model.OrderLine(random_orderid(), sku, line_qty),
    )


def make_product(*batches: model.Batch) -> model.Product:
    """A product already holding ``batches``, with no events recorded yet."""
    return model.Product(batches[0].sku, batches=list(batches))


# Batch


def test_allocating_to_a_batch_reduces_the_available_quantity() -> None:
    batch, line = make_batch_and_line(random_sku(), 20, 2)

    make_product(batch).allocate(line)

    assert batch.available_quantity == 18


def test_cannot_allocate_if_available_smaller_than_required() -> None:
    batch, line = make_batch_and_line(random_sku(), 2, 20)

    assert not batch.can_allocate(line)


def test_can_allocate_if_available_greater_than_required() -> None:
    batch, line = make_batch_and_line(random_sku(), 20, 2)

    assert batch.can_allocate(line)


def test_can_allocate_if_available_equal_to_required() -> None:
    batch, line = make_batch_and_line(random_sku(), 2, 2)

    assert batch.can_allocate(line)


def test_cannot_allocate_if_skus_do_not_match() -> None:
    batch = model.Batch(random_batchref(), random_sku("chair"), 100)
    line = model.OrderLine(random_orderid(), random_sku("toaster"), 10)

    assert not batch.can_allocate(line)


def test_a_batch_that_cannot_take_a_line_is_left_unchanged() -> None:
    batch, line = make_batch_and_line(random_sku(), 2, 20)

    make_product(batch).allocate(line)

    assert batch.available_quantity == 2
    assert batch.allocations == frozenset()


def test_allocating_the_same_line_twice_to_a_batch_counts_once() -> None:
    batch, line = make_batch_and_line(random_sku(), 20, 2)
    product = make_product(batch)

    product.allocate(line)
    product.allocate(line)

    assert batch.available_quantity == 18


# Product.allocate


def test_prefers_in_stock_batches_to_shipments() -> None:
    sku = random_sku()
    in_stock = model.Batch(random_batchref("in-stock"), sku, 100, eta=None)
    shipment = model.Batch(random_batchref("shipment"), sku, 100, eta=TOMORROW)
    product = make_product(shipment, in_stock)

    product.allocate(model.OrderLine(random_orderid(), sku, 10))

    assert in_stock.available_quantity == 90
    assert shipment.available_quantity == 100


def test_prefers_earlier_batches() -> None:
    sku = random_sku()
    earliest = model.Batch(random_batchref("speedy"), sku, 100, eta=TODAY)
    medium = model.Batch(random_batchref("normal"), sku, 100, eta=TOMORROW)
    latest = model.Batch(random_batchref("slow"), sku, 100, eta=LATER)
    product = make_product(latest, medium, earliest)

    product.allocate(model.OrderLine(random_orderid(), sku, 10))

    assert earliest.available_quantity == 90
    assert medium.available_quantity == 100
    assert latest.available_quantity == 100


def test_skips_a_preferred_batch_that_is_too_small() -> None:
    sku = random_sku()
    in_stock = model.Batch(random_batchref("in-stock"), sku, 5)
    shipment = model.Batch(random_batchref("shipment"), sku, 100, eta=TOMORROW)
    product = make_product(in_stock, shipment)

    batchref = product.allocate(model.OrderLine(random_orderid(), sku, 10))

    assert batchref == shipment.reference


def test_returns_the_allocated_batch_ref() -> None:
    sku = random_sku()
    in_stock = model.Batch(random_batchref("in-stock"), sku, 100)
    shipment = model.Batch(random_batchref("shipment"), sku, 100, eta=TOMORROW)
    product = make_product(in_stock, shipment)

    batchref = product.allocate(model.OrderLine(random_orderid(), sku, 10))

    assert batchref == in_stock.reference


def test_records_allocated_event() -> None:
    sku = random_sku()
    batch = model.Batch(random_batchref(), sku, 100)
    product = make_product(batch)
    line = model.OrderLine(random_orderid(), sku, 10)

    product.allocate(line)

    assert product.events == [
        events.Allocated(
            orderid=line.orderid, sku=sku, qty=10, batchref=batch.reference
        )
    ]


def test_records_out_of_stock_event_if_cannot_allocate() -> None:
    sku = random_sku()
    product = make_product(model.Batch(random_batchref(), sku, 10))
    line = model.OrderLine(random_orderid(), sku, 11)

    batchref = product.allocate(line)

    assert batchref is None
    assert product.events == [events.OutOfStock(sku=sku, orderid=line.orderid, qty=11)]


def test_every_recorded_event_is_one_version() -> None:
    """The event log numbers an aggregate's events 1, 2, 3, ... by its version."""
    sku, ref = random_sku(), random_batchref()
    product = model.Product(sku)
    product.add_batch(model.Batch(ref, sku, 10))
    product.allocate(model.OrderLine("o1", sku, 6))
    product.allocate(model.OrderLine("o2", sku, 11))  # out of stock: still an event
    product.change_batch_quantity(ref, 2)  # the change, then one deallocation

    assert product.version_number == len(product.events) == 5


def test_allocating_the_same_line_twice_is_idempotent() -> None:
    sku = random_sku()
    batch = model.Batch(random_batchref(), sku, 100)
    product = make_product(batch)
    line = model.OrderLine(random_orderid(), sku, 10)
    first = product.allocate(line)
    version = product.version_number

    second = product.allocate(line)

    assert second == first == batch.reference
    assert batch.available_quantity == 90
    assert product.version_number == version
    assert [type(event) for event in product.events] == [events.Allocated]


def test_version_number_increments_on_each_change() -> None:
    sku = random_sku()
    product = model.Product(sku)
    assert product.version_number == 0

    product.add_batch(model.Batch(random_batchref(), sku, 100))
    assert product.version_number == 1

    product.allocate(model.OrderLine(random_orderid(), sku, 10))
    assert product.version_number == 2

    product.change_batch_quantity(product.batches[0].reference, 50)
    assert product.version_number == 3


# Product.add_batch and Product.change_batch_quantity


def test_add_batch_records_batch_created() -> None:
    sku = random_sku()
    product = model.Product(sku)
    batch = model.Batch(random_batchref(), sku, 100, eta=TOMORROW)

    product.add_batch(batch)

    assert product.batches == [batch]
    assert product.events == [
        events.BatchCreated(
            ref=batch.reference, sku=sku, purchased_quantity=100, eta=TOMORROW
        )
    ]


def test_cannot_add_a_batch_the_product_already_has() -> None:
    batch = model.Batch(random_batchref(), random_sku(), 10)
    product = make_product(batch)

    with pytest.raises(exceptions.BatchAlreadyExists, match=batch.reference):
        product.add_batch(model.Batch(batch.reference, batch.sku, 99))

    assert product.events == []
    assert [b.purchased_quantity for b in product.batches] == [10]


def test_a_batch_is_added_with_its_stock_only() -> None:
    """BatchCreated carries no lines, so a batch that holds some cannot be added."""
    sku = random_sku()
    holding = model.Batch(random_batchref(), sku, 10)
    make_product(holding).allocate(model.OrderLine(random_orderid(), sku, 1))
    product = model.Product(sku)

    with pytest.raises(ValueError, match="holds no lines"):
        product.add_batch(holding)

    assert product.batches == []
    assert product.events == []


def test_cannot_add_a_batch_of_another_sku() -> None:
    product = model.Product(random_sku("lamp"))

    with pytest.raises(ValueError, match="not"):
        product.add_batch(model.Batch(random_batchref(), random_sku("sofa"), 10))

    assert product.batches == []
    assert product.events == []


def test_change_batch_quantity_records_batch_quantity_changed() -> None:
    sku = random_sku()
    batch = model.Batch(random_batchref(), sku, 100)
    product = make_product(batch)

    product.change_batch_quantity(batch.reference, 80)

    assert batch.purchased_quantity == 80
    assert product.events == [
        events.BatchQuantityChanged(ref=batch.reference, sku=sku, qty=80)
    ]


def test_deallocates_lines_that_no_longer_fit_when_quantity_changes() -> None:
    sku = random_sku()
    batch = model.Batch(random_batchref(), sku, 20)
    product = make_product(batch)
    for _ in range(3):
        product.allocate(model.OrderLine(random_orderid(), sku, 6))
    product.events.clear()

    product.change_batch_quantity(batch.reference, 10)

    assert batch.available_quantity >= 0
    assert batch.allocated_quantity == 6
    assert len(batch.allocations) == 1


def test_change_batch_quantity_records_deallocated_for_lines_that_no_longer_fit() -> (
    None
):
    sku = random_sku()
    batch = model.Batch(random_batchref(), sku, 20)
    product = make_product(batch)
    kept = model.OrderLine("order-1", sku, 8)
    dropped = model.OrderLine("order-2", sku, 8)
    product.allocate(kept)
    product.allocate(dropped)
    product.events.clear()

    product.change_batch_quantity(batch.reference, 10)

    assert product.events == [
        events.BatchQuantityChanged(ref=batch.reference, sku=sku, qty=10),
        events.Deallocated(orderid="order-2", sku=sku, qty=8, batchref=batch.reference),
    ]
    assert batch.allocations == frozenset({kept})


def test_change_batch_quantity_of_an_unknown_batch_is_an_error() -> None:
    product = make_product(model.Batch(random_batchref(), random_sku(), 20))

    with pytest.raises(ValueError, match="no-such-batch"):
        product.change_batch_quantity("no-such-batch", 10)

    assert product.events == []


# Bad input


@pytest.mark.parametrize("qty", [0, -1, 1.5, "3", True, None])
def test_order_line_with_a_bad_quantity_raises_invalid_quantity(qty: object) -> None:
    with pytest.raises(
        exceptions.InvalidQuantity, match=re.escape(repr(qty))
    ) as caught:
        model.OrderLine(random_orderid(), random_sku(), qty)  # type: ignore[arg-type]  # bad input on purpose

    assert caught.value.qty == qty


@pytest.mark.parametrize("qty", [-1, 2.5, "10", False])
def test_batch_with_a_bad_quantity_raises_invalid_quantity(qty: object) -> None:
    with pytest.raises(exceptions.InvalidQuantity, match=re.escape(repr(qty))):
        model.Batch(random_batchref(), random_sku(), qty)  # type: ignore[arg-type]  # bad input on purpose


def test_batch_may_hold_zero_units() -> None:
    batch = model.Batch(random_batchref(), random_sku(), 0)

    assert batch.available_quantity == 0


def test_changing_a_batch_to_a_negative_quantity_raises_invalid_quantity() -> None:
    batch = model.Batch(random_batchref(), random_sku(), 10)
    product = make_product(batch)

    with pytest.raises(exceptions.InvalidQuantity, match="-5"):
        product.change_batch_quantity(batch.reference, -5)

    assert batch.purchased_quantity == 10
    assert product.version_number == 0
    assert product.events == []


@pytest.mark.parametrize("value", ["", "   ", "x" * 256])
def test_blank_or_too_long_sku_raises_blank_identifier(value: str) -> None:
    with pytest.raises(
        exceptions.BlankIdentifier, match=re.escape(repr(value)[:40])
    ) as caught:
        model.Product(value)

    assert caught.value.field == "sku"
    assert caught.value.value == value


@pytest.mark.parametrize("value", ["", "\t\n"])
def test_blank_batch_reference_raises_blank_identifier(value: str) -> None:
    with pytest.raises(exceptions.BlankIdentifier, match="batch reference"):
        model.Batch(value, random_sku(), 10)


@pytest.mark.parametrize("value", ["", " "])
def test_blank_order_id_raises_blank_identifier(value: str) -> None:
    with pytest.raises(exceptions.BlankIdentifier, match="order id"):
        model.OrderLine(value, random_sku(), 1)


@pytest.mark.parametrize("padded", ["  order-1 ", "order-1\n", " order-1"])
def test_padded_identifiers_are_refused(padded: str) -> None:
    """A trimmed write would be missed by every lookup of the same padded text."""
    with pytest.raises(exceptions.BlankIdentifier, match="leading or trailing spaces"):
        model.OrderLine(padded, "sku-1", 1)


def test_a_quantity_beyond_what_the_database_holds_is_refused() -> None:
    """Regression (issue 2): 10**20 crashed the SQLite driver instead of being refused."""
    with pytest.raises(exceptions.InvalidQuantity, match="100000000000000000000"):
        model.Batch("b1", "sku-1", 10**20)
