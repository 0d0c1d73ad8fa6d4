"""The unit of work's commit rules and the repositories, on every engine.

A commit writes the claims, the inline projections, the snapshots due, the
tracking row and the new events in one transaction: all of it or nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest

from allocation.domain import events, model, users
from allocation.domain.exceptions import (
    AlreadyProcessed,
    BatchAlreadyExists,
    ConcurrencyConflict,
    EmailAlreadyRegistered,
)
from allocation.service_layer import repository, tracking
from allocation.service_layer.ports import Snapshot
from tests.integration.store_fixtures import batch_created, committing, reading

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.store_fixtures import StoreDatabase


def new_product(sku: str, *batches: tuple[str, int]) -> model.Product:
    product = model.Product(sku)
    for ref, qty in batches:
        product.add_batch(model.Batch(ref, sku, qty))
    return product


async def save(store: StoreDatabase, *aggregates: model.Product | users.User) -> None:
    async with store.unit_of_work() as uow:
        for aggregate in aggregates:
            if isinstance(aggregate, users.User):
                uow.users.add(aggregate)
            else:
                uow.products.add(aggregate)
        await uow.commit()


# ---- what a commit writes


async def test_a_new_aggregate_is_logged_with_its_claims_on_commit(
    store: StoreDatabase,
) -> None:
    await save(store, new_product("sku1", ("b1", 10)))

    async with reading(store) as log:
        [logged] = await log.read_stream("product", "sku1")
        assert isinstance(logged.event, events.BatchCreated)
        assert logged.aggregate_version == logged.event.aggregate_version == 1
        assert await log.claim_owner(repository.BATCH_REFERENCE, "b1") == "sku1"


async def test_nothing_is_written_without_a_commit(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        uow.products.add(new_product("sku1", ("b1", 10)))
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))

    async with store.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 0
        assert await uow.event_log.claim_owner(repository.BATCH_REFERENCE, "b1") is None
        assert await uow.users_view.by_id("u1") is None


async def test_an_error_in_the_block_leaves_nothing_committed(
    store: StoreDatabase,
) -> None:
    async def register_then_fail() -> None:
        async with store.unit_of_work() as uow:
            uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
            raise LookupError

    with pytest.raises(LookupError):
        await register_then_fail()

    async with reading(store) as log:
        assert await log.last_position() == 0


async def test_a_second_writer_of_a_version_conflicts_and_nothing_of_it_remains(
    store: StoreDatabase,
) -> None:
    await save(store, new_product("sku1", ("b1", 10)))

    with pytest.raises(ConcurrencyConflict):
        # A writer that did not see version 1: its claims, its users-view row
        # and its other aggregate's events all go with its version 1.
        await save(
            store,
            new_product("sku1", ("b2", 5)),
            users.User.register("u1", "Ann", "ann@example.com"),
        )

    async with store.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1
        assert await uow.event_log.claim_owner(repository.BATCH_REFERENCE, "b2") is None
        assert (
            await uow.event_log.claim_owner(repository.EMAIL, "ann@example.com") is None
        )
        assert await uow.users_view.by_id("u1") is None


async def test_a_registered_email_is_email_already_registered(
    store: StoreDatabase,
) -> None:
    await save(store, users.User.register("u1", "Ann", "ann@example.com"))

    with pytest.raises(EmailAlreadyRegistered):
        await save(store, users.User.register("u2", "Annie", " ANN@example.com "))


async def test_a_refused_registration_leaves_nothing(store: StoreDatabase) -> None:
    await save(store, users.User.register("u1", "Ann", "ann@example.com"))

    with pytest.raises(EmailAlreadyRegistered):
        await save(
            store,
            users.User.register("u2", "Annie", "ann@example.com"),
            new_product("sku1", ("b1", 10)),
        )

    async with store.unit_of_work() as uow:
        assert await uow.event_log.last_position() == 1
        assert await uow.users_view.by_id("u2") is None
        assert await uow.event_log.claim_owner(repository.BATCH_REFERENCE, "b1") is None


async def test_a_taken_batch_reference_is_batch_already_exists(
    store: StoreDatabase,
) -> None:
    await save(store, new_product("sku1", ("b1", 10)))

    with pytest.raises(BatchAlreadyExists):
        await save(store, new_product("sku2", ("b1", 5)))


async def test_the_users_view_is_current_once_the_registration_commits(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work() as writer:
        writer.users.add(users.User.register("u1", "Ann", " Ann@Example.com"))
        async with store.unit_of_work() as reader:
            assert await reader.users_view.by_id("u1") is None
        await writer.commit()

    async with store.unit_of_work() as reader:
        expected = {"id": "u1", "name": "Ann", "email": "ann@example.com"}
        assert await reader.users_view.by_id("u1") == expected


@contextlib.contextmanager
def handling(message: events.Event, subscriber: str) -> Iterator[None]:
    """Inside: a call of handler ``subscriber`` on ``message``, as the bus marks it."""
    token = tracking.handling.set(tracking.Handling(message, subscriber))
    try:
        yield
    finally:
        tracking.handling.reset(token)


async def test_a_handled_message_commits_once_per_subscriber(
    store: StoreDatabase,
) -> None:
    message = events.OutOfStock(sku="sku1", orderid="o1", qty=1)
    with handling(message, "handler"):
        await save(store, users.User.register("u1", "Ann", "ann@example.com"))

    with pytest.raises(AlreadyProcessed), handling(message, "handler"):
        await save(store, users.User.register("u2", "Bob", "bob@example.com"))

    async with reading(store) as log:
        assert await log.stream_ids("user") == ["u1"]
        ids = [message.message_id]
        assert await log.processed_among("handler", ids) == set(ids)


async def test_committed_events_are_collected_once(store: StoreDatabase) -> None:
    uow = store.unit_of_work()
    async with uow:
        uow.users.add(users.User.register("u1", "Ann", "ann@example.com"))
        await uow.commit()

    [collected] = uow.collect_new_events()
    assert isinstance(collected, events.UserRegistered)
    assert collected.aggregate_version == 1
    assert uow.collect_new_events() == []


async def test_the_events_of_a_failed_commit_are_never_collected(
    store: StoreDatabase,
) -> None:
    await save(store, users.User.register("u1", "Ann", "ann@example.com"))
    uow = store.unit_of_work()

    async def register_again() -> None:
        async with uow:
            uow.users.add(users.User.register("u2", "Ann", "ann@example.com"))
            await uow.commit()

    with pytest.raises(EmailAlreadyRegistered):
        await register_again()

    assert uow.collect_new_events() == []


# ---- loading


async def test_an_aggregate_loads_from_its_events(store: StoreDatabase) -> None:
    await save(store, new_product("sku1", ("b1", 10), ("b2", 5)))

    async with store.unit_of_work() as uow:
        product = await uow.products.get("sku1")

    assert product is not None
    assert product.version_number == 2
    assert [(b.reference, b.purchased_quantity) for b in product.batches] == [
        ("b1", 10),
        ("b2", 5),
    ]


async def test_an_unknown_aggregate_is_none(store: StoreDatabase) -> None:
    async with store.unit_of_work() as uow:
        assert await uow.products.get("sku1") is None
        assert await uow.users.get("u1") is None
        assert await uow.products.get_by_batchref("b1") is None
        assert await uow.users.get_by_email("ann@example.com") is None


async def test_aggregates_are_found_by_their_claimed_values(
    store: StoreDatabase,
) -> None:
    await save(
        store,
        new_product("sku1", ("b1", 10)),
        users.User.register("u1", "Ann", "ann@example.com"),
    )

    async with store.unit_of_work() as uow:
        product = await uow.products.get_by_batchref("b1")
        user = await uow.users.get_by_email(" ANN@example.com")

    assert product is not None
    assert product.sku == "sku1"
    assert user is not None
    assert user.id == "u1"


async def test_every_aggregate_id_is_listed_sorted(store: StoreDatabase) -> None:
    await save(store, new_product("sku2", ("b2", 1)), new_product("sku1", ("b1", 1)))

    async with store.unit_of_work() as uow:
        assert await uow.products.all_ids() == ["sku1", "sku2"]
        assert await uow.users.all_ids() == []


async def test_a_loaded_aggregate_appends_after_its_version(
    store: StoreDatabase,
) -> None:
    await save(store, new_product("sku1", ("b1", 10)))
    async with store.unit_of_work() as uow:
        product = await uow.products.get("sku1")
        assert product is not None
        product.allocate(model.OrderLine("o1", "sku1", 2))
        await uow.commit()

    async with reading(store) as log:
        stream = await log.read_stream("product", "sku1")
        assert [type(e.event) for e in stream] == [
            events.BatchCreated,
            events.Allocated,
        ]
        assert [e.aggregate_version for e in stream] == [1, 2]


async def test_at_version_loads_the_aggregate_as_it_was(store: StoreDatabase) -> None:
    await save(store, new_product("sku1", ("b1", 10), ("b2", 5), ("b3", 1)))

    async with store.unit_of_work() as uow:
        then = await uow.products.at_version("sku1", 2)
        never = await uow.products.at_version("sku2", 1)

    assert then is not None
    assert then.version_number == 2
    assert [b.reference for b in then.batches] == ["b1", "b2"]
    assert never is None


# ---- snapshots


async def test_a_snapshot_is_taken_when_a_commit_crosses_every_n_events(
    store: StoreDatabase,
) -> None:
    async with store.unit_of_work(snapshot_every=2) as uow:
        uow.products.add(new_product("sku1", ("b1", 10), ("b2", 5), ("b3", 1)))
        await uow.commit()

    async with reading(store) as log:
        taken = await log.latest_snapshot("product", "sku1")
    assert taken is not None
    assert taken.version == 3
    assert taken.schema_version == model.Product.SNAPSHOT_VERSION


async def test_no_snapshot_is_taken_below_every_n_events(store: StoreDatabase) -> None:
    async with store.unit_of_work(snapshot_every=3) as uow:
        uow.products.add(new_product("sku1", ("b1", 10), ("b2", 5)))
        await uow.commit()

    async with reading(store) as log:
        assert await log.latest_snapshot("product", "sku1") is None


async def test_snapshot_every_zero_takes_none(store: StoreDatabase) -> None:
    async with store.unit_of_work(snapshot_every=0) as uow:
        uow.products.add(new_product("sku1", *((f"b{n}", 1) for n in range(5))))
        await uow.commit()

    async with reading(store) as log:
        assert await log.latest_snapshot("product", "sku1") is None


async def _snapshot_saying_b1_holds_99(
    store: StoreDatabase, schema_version: int
) -> None:
    """Stream: b1 (10), b2 (5), b3 (1). Snapshot at version 2: b1 holds 99, so a
    load that used it shows it."""
    await save(store, new_product("sku1", ("b1", 10), ("b2", 5)))
    async with committing(store) as log:
        await log.append([batch_created("sku1", 3, ref="b3")])
        state = repository.snapshot_of(new_product("sku1", ("b1", 99), ("b2", 5)))
        await log.save_snapshot(
            Snapshot(
                aggregate_type="product",
                aggregate_id="sku1",
                version=2,
                schema_version=schema_version,
                state_json=state.state_json,
            )
        )


async def test_an_aggregate_loads_from_its_snapshot_and_the_later_events(
    store: StoreDatabase,
) -> None:
    await _snapshot_saying_b1_holds_99(store, model.Product.SNAPSHOT_VERSION)

    async with store.unit_of_work() as uow:
        product = await uow.products.get("sku1")

    assert product is not None
    assert product.version_number == 3
    assert [(b.reference, b.purchased_quantity) for b in product.batches] == [
        ("b1", 99),
        ("b2", 5),
        ("b3", 10),
    ]


async def test_a_snapshot_of_another_schema_version_is_ignored(
    store: StoreDatabase,
) -> None:
    await _snapshot_saying_b1_holds_99(store, model.Product.SNAPSHOT_VERSION + 1)

    async with store.unit_of_work() as uow:
        product = await uow.products.get("sku1")

    assert product is not None
    assert [b.purchased_quantity for b in product.batches] == [10, 5, 10]


async def test_a_snapshot_newer_than_the_version_asked_for_is_ignored(
    store: StoreDatabase,
) -> None:
    await _snapshot_saying_b1_holds_99(store, model.Product.SNAPSHOT_VERSION)

    async with store.unit_of_work() as uow:
        then = await uow.products.at_version("sku1", 1)

    assert then is not None
    assert [(b.reference, b.purchased_quantity) for b in then.batches] == [("b1", 10)]


async def test_a_snapshot_past_the_end_of_its_stream_is_ignored(
    store: StoreDatabase,
) -> None:
    """Issue 9: a snapshot at version 5000 of a 3-event stream was trusted, and the
    next command appended version 5001: a gap in the log for good."""
    await save(store, new_product("sku1", ("b1", 10), ("b2", 5)))
    async with committing(store) as log:
        state = repository.snapshot_of(new_product("sku1", ("b1", 99)))
        await log.save_snapshot(
            Snapshot(
                aggregate_type="product",
                aggregate_id="sku1",
                version=5000,
                schema_version=model.Product.SNAPSHOT_VERSION,
                state_json=state.state_json,
            )
        )

    async with store.unit_of_work() as uow:
        product = await uow.products.get("sku1")
        assert product is not None
        assert product.version_number == 2
        product.allocate(model.OrderLine("o1", "sku1", 1))
        await uow.commit()

    async with reading(store) as log:
        stream = await log.read_stream("product", "sku1")
    assert [logged.aggregate_version for logged in stream] == [1, 2, 3]
