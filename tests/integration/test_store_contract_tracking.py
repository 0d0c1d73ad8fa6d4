"""The event store's bookkeeping for subscribers, one contract for every engine:
tracking, checkpoints and dead letters on the fake, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import pytest

from allocation.domain.exceptions import AlreadyProcessed
from tests.integration.store_fixtures import committing, reading

if TYPE_CHECKING:
    from tests.integration.store_fixtures import StoreDatabase


# ---- tracking


async def test_a_message_marked_exactly_once_again_is_already_processed(
    store: StoreDatabase,
) -> None:
    async with committing(store) as log:
        await log.mark_processed("handler", ["m1"], exactly_once=True)

    with pytest.raises(AlreadyProcessed):
        async with committing(store) as log:
            await log.mark_processed("handler", ["m1"], exactly_once=True)


async def test_marking_again_without_exactly_once_is_skipped(
    store: StoreDatabase,
) -> None:
    async with committing(store) as log:
        await log.mark_processed("handler", ["m1"], exactly_once=True)
    async with committing(store) as log:
        await log.mark_processed("handler", ["m1", "m2"], exactly_once=False)

    async with reading(store) as log:
        assert await log.processed_among("handler", ["m1", "m2", "m3"]) == {"m1", "m2"}


async def test_tracking_is_per_subscriber(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.mark_processed("first", ["m1"], exactly_once=True)
        await log.mark_processed("second", ["m1"], exactly_once=True)

    async with reading(store) as log:
        assert await log.processed_among("first", ["m1"]) == {"m1"}
        assert await log.processed_among("third", ["m1"]) == set()
        assert await log.processed_among("first", []) == set()


async def test_an_unknown_subscriber_has_no_checkpoint(store: StoreDatabase) -> None:
    async with reading(store) as log:
        assert await log.checkpoint("handler") is None


async def test_a_checkpoint_moves_forward(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.set_checkpoint("handler", 0)
    async with committing(store) as log:
        await log.set_checkpoint("handler", 7)

    async with reading(store) as log:
        assert await log.checkpoint("handler") == 7


async def test_a_checkpoint_never_moves_back(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.set_checkpoint("handler", 7)
    async with committing(store) as log:
        await log.set_checkpoint("handler", 3)

    async with reading(store) as log:
        assert await log.checkpoint("handler") == 7


async def test_forget_drops_what_one_subscriber_has_handled(
    store: StoreDatabase,
) -> None:
    async with committing(store) as log:
        for subscriber in ("gone", "kept"):
            await log.mark_processed(subscriber, ["m1"], exactly_once=True)
            await log.set_checkpoint(subscriber, 4)
            await log.add_dead_letter(subscriber, "m2", "boom", 3)
    async with committing(store) as log:
        await log.forget("gone")

    async with reading(store) as log:
        assert await log.processed_among("gone", ["m1"]) == set()
        assert await log.checkpoint("gone") is None
        assert await log.dead_letters("gone") == []
        assert await log.processed_among("kept", ["m1"]) == {"m1"}
        assert await log.checkpoint("kept") == 4
        assert len(await log.dead_letters("kept")) == 1


async def test_a_message_may_be_marked_again_after_forget(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.mark_processed("handler", ["m1"], exactly_once=True)
    async with committing(store) as log:
        await log.forget("handler")
        await log.mark_processed("handler", ["m1"], exactly_once=True)

    async with reading(store) as log:
        assert await log.processed_among("handler", ["m1"]) == {"m1"}


# ---- dead letters


async def test_a_dead_letter_keeps_what_failed_and_when(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("handler", "m1", "RuntimeError: boom", 3)

    async with reading(store) as log:
        [letter] = await log.dead_letters()
        assert (letter.subscriber, letter.message_id) == ("handler", "m1")
        assert (letter.error, letter.attempts) == ("RuntimeError: boom", 3)
        assert letter.last_tried.utcoffset() == datetime.timedelta(0)
        assert await log.dead_letter(letter.id) == letter


async def test_a_dead_letter_added_again_is_refreshed(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("handler", "m1", "first", 3)
    async with reading(store) as log:
        [first] = await log.dead_letters()
    async with committing(store) as log:
        await log.add_dead_letter("handler", "m1", "second", 5)

    async with reading(store) as log:
        [letter] = await log.dead_letters()
        assert (letter.id, letter.error, letter.attempts) == (first.id, "second", 5)
        assert letter.last_tried >= first.last_tried


async def test_dead_letters_list_oldest_first_by_subscriber(
    store: StoreDatabase,
) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("first", "m1", "boom", 3)
        await log.add_dead_letter("second", "m2", "boom", 3)
        await log.add_dead_letter("first", "m3", "boom", 3)

    async with reading(store) as log:
        every = await log.dead_letters()
        assert [letter.message_id for letter in every] == ["m1", "m2", "m3"]
        assert [letter.id for letter in every] == sorted(letter.id for letter in every)
        mine = await log.dead_letters("first")
        assert [letter.message_id for letter in mine] == ["m1", "m3"]
        limited = await log.dead_letters(limit=2)
        assert [letter.message_id for letter in limited] == ["m1", "m2"]


async def test_an_unknown_dead_letter_is_none(store: StoreDatabase) -> None:
    async with reading(store) as log:
        assert await log.dead_letter(12345) is None


async def test_a_removed_dead_letter_is_gone(store: StoreDatabase) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("handler", "m1", "boom", 3)
        await log.add_dead_letter("handler", "m2", "boom", 3)
    async with reading(store) as log:
        [removed, kept] = await log.dead_letters()
    async with committing(store) as log:
        await log.remove_dead_letter(removed.id)
        await log.remove_dead_letter(removed.id)  # twice is fine

    async with reading(store) as log:
        assert await log.dead_letter(removed.id) is None
        assert await log.dead_letters() == [kept]


async def test_dead_message_ids_names_the_subscribers_dead_messages(
    store: StoreDatabase,
) -> None:
    async with committing(store) as log:
        await log.add_dead_letter("handler", "m1", "boom", 3)
        await log.add_dead_letter("other", "m2", "boom", 3)

    async with reading(store) as log:
        assert await log.dead_message_ids("handler", ["m1", "m2", "m3"]) == {"m1"}
        assert await log.dead_message_ids("handler", []) == set()
