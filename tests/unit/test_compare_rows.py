"""Comparing a read model with its rebuild: a merge of two key-ordered page reads."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from allocation.service_layer.projections import SHOWN_ROWS, compare_rows

if TYPE_CHECKING:
    from allocation.service_layer.projections import Key, PageReader, Row


class Page(list["Row"]):
    """A page of rows, which (unlike a plain list) can be watched by a weak reference."""


class FakeReadModel:
    """Rows read a page at a time, recording how the pages were asked for."""

    def __init__(self, rows: dict[int, str]) -> None:
        self.rows = sorted(rows.items())
        self.largest_limit = 0
        self.reads = 0
        self.pages_held_at_a_read = 0
        self._pages: list[weakref.ref[Page]] = []

    async def read(self, after: Key | None, limit: int) -> list[Row]:
        self.reads += 1
        self.largest_limit = max(self.largest_limit, limit)
        held = sum(page() is not None for page in self._pages)
        self.pages_held_at_a_read = max(self.pages_held_at_a_read, held)
        page = Page(
            [row for row in self.rows if after is None or row[:1] > after][:limit]
        )
        self._pages.append(weakref.ref(page))
        return page


async def differences(
    stored: FakeReadModel, replayed: FakeReadModel, page_size: int = 2
) -> list[str]:
    return await compare_rows(
        "view",
        stored=stored.read,
        replayed=replayed.read,
        columns=("n", "value"),
        key_size=1,
        page_size=page_size,
    )


async def test_agreeing_read_models_have_no_differences() -> None:
    rows = {number: f"v{number}" for number in range(10)}

    assert await differences(FakeReadModel(rows), FakeReadModel(rows)) == []


async def test_each_side_holds_at_most_one_page_while_the_next_is_read() -> None:
    rows = {number: f"v{number}" for number in range(10)}
    stored, replayed = FakeReadModel(rows), FakeReadModel(rows)

    await differences(stored, replayed, page_size=2)

    for side in (stored, replayed):
        assert side.largest_limit == 2
        assert side.reads == 6  # five full pages, then an empty one
        assert side.pages_held_at_a_read == 0


async def test_missing_extra_and_changed_rows_are_named_in_key_order() -> None:
    stored = FakeReadModel({1: "a", 2: "b", 4: "d", 5: "old", 9: "i"})
    replayed = FakeReadModel({1: "a", 3: "c", 4: "d", 5: "new", 9: "i", 12: "l"})

    assert await differences(stored, replayed) == [
        "view n=2: stored value='b'; the replayed log has no such row",
        "view n=3: missing; the replayed log gives value='c'",
        "view n=5: stored value='old'; the replayed log gives value='new'",
        "view n=12: missing; the replayed log gives value='l'",
    ]


async def test_differences_past_the_shown_ones_are_counted() -> None:
    stored = FakeReadModel({})
    replayed = FakeReadModel(dict.fromkeys(range(SHOWN_ROWS + 4), "x"))

    problems = await differences(stored, replayed)

    assert len(problems) == SHOWN_ROWS + 1
    assert problems[0] == "view n=0: missing; the replayed log gives value='x'"
    assert problems[-1] == "view: 4 more rows differ from the replayed log"


def _reader(rows: list[Row], key_size: int) -> PageReader:
    async def read(after: Key | None, limit: int) -> list[Row]:
        return [row for row in rows if after is None or row[:key_size] > after][:limit]

    return read


async def test_a_key_of_several_columns_is_compared_whole() -> None:
    stored: list[Row] = [("a", 1, "x"), ("a", 2, "y"), ("b", 1, "z")]
    replayed: list[Row] = [("a", 1, "x"), ("a", 3, "y"), ("b", 1, "w")]

    assert await compare_rows(
        "view",
        stored=_reader(stored, 2),
        replayed=_reader(replayed, 2),
        columns=("k", "n", "value"),
        key_size=2,
        page_size=2,
    ) == [
        "view k='a' n=2: stored value='y'; the replayed log has no such row",
        "view k='a' n=3: missing; the replayed log gives value='y'",
        "view k='b' n=1: stored value='z'; the replayed log gives value='w'",
    ]
