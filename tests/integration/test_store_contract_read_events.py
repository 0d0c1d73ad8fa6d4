"""Reading events alone, as catch-up and replay do: one contract for every engine
(the fake, SQLite, PostgreSQL), held to what a full read of the log gives."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from tests.integration.store_fixtures import (
    append,
    batch_created,
    reading,
    user_registered,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from allocation.domain import events
    from tests.integration.store_fixtures import StoreDatabase


def _envelopes(
    pairs: Sequence[tuple[int, events.Event]],
) -> list[tuple[int, events.Event, str, str | None, str | None, int | None]]:
    # Events compare by type and payload; their envelopes are compared here too.
    return [
        (
            position,
            event,
            event.message_id,
            event.correlation_id,
            event.causation_id,
            event.aggregate_version,
        )
        for position, event in pairs
    ]


@pytest.mark.parametrize(
    ("after", "names", "limit"),
    [
        (0, None, 500),
        (1, None, 2),
        (0, ["batch_created"], 2),
        (0, ["user_registered", "batch_created"], 500),
        (0, ["user_registered"], 500),
        (0, [], 500),
        (4, None, 500),
    ],
)
async def test_read_events_gives_the_positions_and_events_a_read_gives(
    store: StoreDatabase, after: int, names: list[str] | None, limit: int
) -> None:
    await append(store, batch_created("sku1", 1), user_registered("u1"))
    caused = batch_created("sku1", 2)
    caused = dataclasses.replace(
        caused, event=caused.event.stamped(correlation_id="c-1", causation_id="c-2")
    )
    await append(store, caused, batch_created("sku1", 3))

    async with reading(store) as log:
        logged = await log.read(after=after, names=names, limit=limit)
        pairs = await log.read_events(after=after, names=names, limit=limit)

    assert _envelopes(pairs) == _envelopes(
        [(entry.position, entry.event) for entry in logged]
    )
