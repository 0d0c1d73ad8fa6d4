"""Aggregates are their events: the fold of what they recorded rebuilds them exactly."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocation.domain import events, exceptions, messages, model, users, values
from allocation.domain.aggregate import Aggregate, applies

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SKU = "LAMP"
TODAY = datetime.date(2030, 1, 1)
AGGREGATE_CLASSES: dict[str, type[Aggregate]] = {
    "product": model.Product,
    "user": users.User,
}

# Few references and order ids, so commands meet the same batches and lines often.
_refs = st.sampled_from(["b1", "b2", "b3"])
_orderids = st.sampled_from(["o1", "o2", "o3", "o4", "o5"])
_etas = st.none() | st.integers(0, 5).map(lambda days: TODAY + datetime.timedelta(days))
# Commands as (name, batch ref or order id, quantity, eta, sku).
_add_batch = st.tuples(
    st.just("add_batch"), _refs, st.integers(0, 30), _etas, st.just(SKU)
)
_allocate = st.tuples(
    st.just("allocate"), _orderids, st.integers(1, 8), st.none(), st.just(SKU)
)
# A line of another sku fits no batch: out of stock.
_other_sku = st.tuples(
    st.just("allocate"), _orderids, st.just(1), st.none(), st.just("SOFA")
)
# Mostly below what is allocated, so lines are deallocated.
_change = st.tuples(
    st.just("change"), _refs, st.integers(0, 6), st.none(), st.just(SKU)
)
_product_commands = st.lists(
    st.one_of(_add_batch, _allocate, _allocate, _other_sku, _change),
    max_size=40,
)


@st.composite
def products(draw: st.DrawFn) -> model.Product:
    """A product after random commands, holding every event it recorded."""
    product = model.Product(SKU)
    first_batches = st.lists(_add_batch, max_size=3, unique_by=lambda each: each[1])
    for name, key, qty, eta, sku in draw(first_batches) + draw(_product_commands):
        try:
            if name == "add_batch":
                product.add_batch(model.Batch(key, sku, qty, eta))
            elif name == "allocate":
                product.allocate(model.OrderLine(key, sku, qty))
            else:
                product.change_batch_quantity(key, qty)
        except (exceptions.BatchAlreadyExists, ValueError):
            pass  # refused by a rule: nothing recorded
    return product


@st.composite
def registered_users(draw: st.DrawFn) -> users.User:
    """A registered user, with a name and email of any valid shape."""
    name = draw(st.text(min_size=1, max_size=20).filter(_is_valid_name))
    email = draw(st.emails().filter(_is_valid_email))
    return users.User.register(str(draw(st.uuids())), name, email)


def _is_valid_name(name: str) -> bool:
    return _refused(values.check_name, name) is None


def _is_valid_email(email: str) -> bool:
    return _refused(values.normalise_email, email) is None


def _refused(
    check: Callable[[str], str], value: str
) -> exceptions.AllocationError | None:
    try:
        check(value)
    except exceptions.AllocationError as error:
        return error
    return None


# Every aggregate type, built by random commands: a new type must be added here.
aggregates = st.one_of(products(), registered_users())


def _stamped(recorded: Sequence[events.Event], after: int = 0) -> list[events.Event]:
    """The events as the log hands them back: each stamped with its version."""
    return [
        event.stamped(aggregate_version=after + number)
        for number, event in enumerate(recorded, start=1)
    ]


def _through_the_log(event: events.Event) -> events.Event:
    decoded = messages.decode(event.TYPE, event.payload_json())
    assert isinstance(decoded, events.Event)
    return decoded


def _as_json(state: dict[str, Any]) -> dict[str, Any]:
    """The state after a trip through JSON text, as a snapshot store keeps it."""
    decoded: dict[str, Any] = json.loads(json.dumps(state))
    return decoded


def test_the_strategies_cover_every_aggregate_type() -> None:
    assert {cls.AGGREGATE_TYPE: cls for cls in Aggregate.__subclasses__()} == (
        AGGREGATE_CLASSES
    )


@settings(max_examples=150, deadline=None)
@given(aggregates)
def test_replaying_the_recorded_events_rebuilds_the_aggregate(live: Aggregate) -> None:
    cls = type(live)

    replayed = cls.replayed(live.aggregate_id, _stamped(live.events))

    assert replayed.snapshot_state() == live.snapshot_state()
    assert replayed.version_number == live.version_number == len(live.events)
    assert replayed.events == []


@settings(max_examples=150, deadline=None)
@given(aggregates, st.data())
def test_a_snapshot_taken_midway_plus_the_rest_rebuilds_the_aggregate(
    live: Aggregate, data: st.DataObject
) -> None:
    cls = type(live)
    recorded = _stamped(live.events)
    midway = data.draw(st.integers(0, len(recorded)), label="midway")
    head = cls.replayed(live.aggregate_id, recorded[:midway])

    restored = cls.from_snapshot(
        live.aggregate_id, head.version_number, _as_json(head.snapshot_state())
    )
    rebuilt = cls.replayed(live.aggregate_id, recorded[midway:], start=restored)

    assert rebuilt.snapshot_state() == live.snapshot_state()
    assert rebuilt.version_number == live.version_number


@settings(max_examples=150, deadline=None)
@given(aggregates)
def test_a_snapshot_restores_exactly(live: Aggregate) -> None:
    state = live.snapshot_state()

    restored = type(live).from_snapshot(
        live.aggregate_id, live.version_number, _as_json(state)
    )

    assert restored.snapshot_state() == state
    assert json.dumps(state) == json.dumps(restored.snapshot_state())  # same order
    assert restored.version_number == live.version_number
    assert restored.events == []


@settings(max_examples=150, deadline=None)
@given(aggregates)
def test_the_recorded_events_survive_the_log(live: Aggregate) -> None:
    """What is replayed is what the log gives back: each event encoded, decoded."""
    decoded = [_through_the_log(event) for event in live.events]

    replayed = type(live).replayed(live.aggregate_id, decoded)

    assert replayed.snapshot_state() == live.snapshot_state()


@pytest.mark.parametrize("cls", AGGREGATE_CLASSES.values())
def test_blank_is_version_zero_with_nothing_recorded(cls: type[Aggregate]) -> None:
    blank = cls.blank("x-1")

    assert (blank.aggregate_id, blank.version_number, blank.events) == ("x-1", 0, [])


def test_every_event_type_has_an_apply_step_in_exactly_one_aggregate() -> None:
    # Read from the module: other tests register throwaway message types.
    event_types = {
        member
        for member in vars(events).values()
        if isinstance(member, type)
        and issubclass(member, events.Event)
        and member is not events.Event
    }
    applied = [cls.event_types() for cls in AGGREGATE_CLASSES.values()]

    assert set().union(*applied) == event_types
    assert sum(len(types) for types in applied) == len(event_types)


def test_an_event_without_an_apply_step_is_refused() -> None:
    product = model.Product(SKU)
    event = events.UserRegistered(user_id="u1", name="Ann", email="ann@example.com")

    with pytest.raises(exceptions.EventNotApplicable, match="user_registered"):
        product.apply(event)
    with pytest.raises(exceptions.EventNotApplicable, match="product"):
        model.Product.replayed(SKU, [event])


def test_recording_an_event_without_an_apply_step_changes_nothing() -> None:
    product = model.Product(SKU)

    with pytest.raises(exceptions.EventNotApplicable):
        product._record(
            events.UserRegistered(user_id="u1", name="Ann", email="ann@example.com")
        )

    assert (product.version_number, product.events) == (0, [])


@pytest.mark.parametrize(
    ("versions", "found", "kind"),
    [([1, 3], 3, "a gap"), ([1, 1], 1, "a duplicate"), ([2], 2, "a gap")],
)
def test_a_stream_out_of_sequence_is_refused(
    versions: list[int], found: int, kind: str
) -> None:
    stream = [
        events.OutOfStock(sku=SKU, orderid="o1", qty=1).stamped(aggregate_version=v)
        for v in versions
    ]

    with pytest.raises(exceptions.EventOutOfSequence, match=kind) as caught:
        model.Product.replayed(SKU, stream)

    assert (caught.value.found, caught.value.aggregate_id) == (found, SKU)


def test_replaying_onto_a_start_continues_from_its_version() -> None:
    start = model.Product.from_snapshot(SKU, 7, {"batches": {}})
    event = events.OutOfStock(sku=SKU, orderid="o1", qty=1)

    replayed = model.Product.replayed(
        SKU, [event.stamped(aggregate_version=8)], start=start
    )

    assert replayed.version_number == 8


def test_a_start_with_unsaved_events_is_refused() -> None:
    product = model.Product(SKU)
    product.add_batch(model.Batch("b1", SKU, 5))

    with pytest.raises(ValueError, match="not saved"):
        model.Product.replayed(SKU, [], start=product)


def test_out_of_stock_changes_nothing_but_the_version() -> None:
    product = model.Product(SKU)
    product.add_batch(model.Batch("b1", SKU, 5))
    before = product.snapshot_state()

    product.allocate(model.OrderLine("o1", SKU, 6))

    assert product.snapshot_state() == before
    assert product.version_number == 2


@pytest.mark.parametrize(
    "event",
    [
        events.Allocated(orderid="o1", sku=SKU, qty=1, batchref="nosuch"),
        events.Deallocated(orderid="o1", sku=SKU, qty=1, batchref="b1"),
        events.BatchQuantityChanged(ref="nosuch", sku=SKU, qty=1),
    ],
    ids=["allocated-to-unknown-batch", "deallocated-line-not-held", "unknown-batch"],
)
def test_an_event_that_does_not_fit_the_product_is_refused(
    event: events.Event,
) -> None:
    created = events.BatchCreated(ref="b1", sku=SKU, purchased_quantity=5)

    with pytest.raises(exceptions.EventNotApplicable, match=event.TYPE):
        model.Product.replayed(SKU, [created, event])


def test_a_product_snapshot_is_plain_sorted_data() -> None:
    product = model.Product(SKU)
    product.add_batch(model.Batch("b2", SKU, 9, eta=TODAY))
    product.add_batch(model.Batch("b1", SKU, 9))
    product.allocate(model.OrderLine("o2", SKU, 1))
    product.allocate(model.OrderLine("o1", SKU, 2))

    assert product.snapshot_state() == {
        "batches": {
            "b1": {
                "sku": SKU,
                "purchased_quantity": 9,
                "eta": None,
                "allocations": [
                    {"orderid": "o1", "sku": SKU, "qty": 2},
                    {"orderid": "o2", "sku": SKU, "qty": 1},
                ],
            },
            "b2": {
                "sku": SKU,
                "purchased_quantity": 9,
                "eta": "2030-01-01",
                "allocations": [],
            },
        }
    }
    assert list(product.snapshot_state()["batches"]) == ["b1", "b2"]


@pytest.mark.parametrize(
    ("cls", "state"),
    [
        (model.Product, {}),
        (model.Product, {"batches": []}),
        (model.Product, {"batches": {"b1": {"sku": SKU}}}),
        (model.Product, {"batches": {"b1": {"sku": SKU, "purchased_quantity": -1}}}),
        (users.User, {"name": "Ann"}),
        (users.User, {"name": 1, "email": "a@example.com"}),
    ],
)
def test_a_snapshot_of_another_shape_is_refused(
    cls: type[Aggregate], state: dict[str, Any]
) -> None:
    with pytest.raises(exceptions.InvalidSnapshot, match=cls.AGGREGATE_TYPE):
        cls.from_snapshot("x-1", 3, state)


def test_two_apply_steps_for_one_event_type_are_refused() -> None:
    with pytest.raises(TypeError, match="a second step"):

        class _Twice(users.User):
            @applies(events.UserRegistered)
            def _first(self, event: events.UserRegistered) -> None:
                pass

            @applies(events.UserRegistered)
            def _second(self, event: events.UserRegistered) -> None:
                pass
