"""The event store's figures for status and metrics, and the trace context it keeps
with each event: one contract for the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.integration.store_fixtures import (
    append,
    batch_created,
    committing,
    reading,
    user_registered,
)

if TYPE_CHECKING:
    from allocation.service_layer.ports import NewEvent
    from tests.integration.store_fixtures import StoreDatabase

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def traced(new: NewEvent, trace_context: str | None) -> NewEvent:
    return type(new)(
        event=new.event,
        aggregate_type=new.aggregate_type,
        aggregate_id=new.aggregate_id,
        aggregate_version=new.aggregate_version,
        trace_context=trace_context,
    )


async def test_a_logged_event_keeps_the_trace_it_was_written_in(
    store: StoreDatabase,
) -> None:
    await append(store, traced(user_registered("u1"), TRACE), user_registered("u2"))

    async with reading(store) as log:
        first, second = await log.read(after=0)
        assert (first.trace_context, second.trace_context) == (TRACE, None)
        found = await log.get(first.event.message_id)
        assert found is not None
        assert found.trace_context == TRACE
        [in_stream] = await log.read_stream("user", "u1")
        assert in_stream.trace_context == TRACE


async def test_every_checkpoint_is_listed_by_subscriber(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.set_checkpoint("second", 7)
        await log.set_checkpoint("first", 3)

    async with reading(store) as log:
        assert await log.all_checkpoints() == {"first": 3, "second": 7}


async def test_unhandled_counts_the_events_of_its_names_past_the_position(
    store: StoreDatabase,
) -> None:
    await append(store, user_registered("u1"), user_registered("u2"))
    await append(store, batch_created("LAMP", 1), user_registered("u3"))

    async with reading(store) as log:
        assert await log.count_unhandled("handler", after=0) == 4
        assert await log.count_unhandled("handler", after=1) == 3
        assert (
            await log.count_unhandled("handler", after=0, names=["user_registered"])
            == 3
        )
        assert (
            await log.count_unhandled("handler", after=2, names=["user_registered"])
            == 1
        )
        assert await log.count_unhandled("handler", after=4) == 0


async def test_handled_and_dead_lettered_events_are_not_unhandled(
    store: StoreDatabase,
) -> None:
    events = [user_registered(f"u{number}") for number in range(1, 5)]
    await append(store, *events)
    first, second, third, _ = (new.event.message_id for new in events)
    async with committing(store) as log:
        await log.mark_processed("handler", [first], exactly_once=True)
        await log.add_dead_letter("handler", second, "boom", 3)
        await log.mark_processed("other", [third], exactly_once=True)

    async with reading(store) as log:
        assert await log.count_unhandled("handler", after=0) == 2
        assert await log.count_unhandled("other", after=0) == 3
        names = ["user_registered"]
        assert await log.count_unhandled("handler", after=0, names=names) == 2


async def test_dead_letters_are_counted_per_subscriber(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("first", "m1", "boom", 3)
        await log.add_dead_letter("first", "m2", "boom", 3)
        await log.add_dead_letter("second", "m1", "boom", 3)
        await log.add_dead_letter("second", "m1", "boom again", 4)  # refreshed

    async with reading(store) as log:
        assert await log.dead_letter_counts() == {"first": 2, "second": 1}


async def test_a_store_without_figures_reports_none(store: StoreDatabase) -> None:
    async with reading(store) as log:
        assert await log.all_checkpoints() == {}
        assert await log.dead_letter_counts() == {}
        assert await log.count_unhandled("handler", after=0) == 0
