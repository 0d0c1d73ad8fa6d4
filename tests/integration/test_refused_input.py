"""Bad input through the library on real databases: refused, nothing written (issue 8)."""

from __future__ import annotations

import datetime
import math
import unicodedata
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from allocation.adapters import tables
from allocation.domain.exceptions import AllocationError, InvalidMessage
from allocation.service_layer import relay, services
from allocation.service_layer.exceptions import UnreadableLogEntry
from allocation.service_layer.verify import verify
from allocation.testing import FakePublisher, FakeUnitOfWork
from tests.conftest import random_suffix

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from allocation.service_layer.messagebus import MessageBus


async def _log_size(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(select(func.count()).select_from(tables.event_log))
            or 0
        )


BAD_CALLS: list[tuple[str, Callable[[MessageBus], Awaitable[object]]]] = [
    (
        "a datetime for the eta",
        lambda bus: services.add_batch(
            bus, "b3", "LAMP", 5, datetime.datetime(2030, 1, 1, 12, 0)
        ),
    ),
    ("a str for the eta", lambda bus: services.add_batch(bus, "b4", "LAMP", 5, "x")),  # type: ignore[arg-type]  # on purpose
    ("an int for the eta", lambda bus: services.add_batch(bus, "b5", "L", 5, 12345)),  # type: ignore[arg-type]  # on purpose
    ("a bool quantity", lambda bus: services.add_batch(bus, "b6", "LAMP", True)),
    ("a NaN quantity", lambda bus: services.allocate(bus, "o1", "LAMP", math.nan)),  # type: ignore[arg-type]  # on purpose
    ("a NUL in a name", lambda bus: services.register_user(bus, "A\x00", "a@b.co")),
    (
        "a lone surrogate in a name",
        lambda bus: services.register_user(bus, "A\ud800", "a@b.co"),
    ),
    ("a newline in a sku", lambda bus: services.add_batch(bus, "b7", "L\nX", 5)),
    (
        "an escape sequence in an order id",
        lambda bus: services.allocate(bus, "\x1b[2J", "LAMP", 1),
    ),
]


@pytest.mark.parametrize(
    ("what", "call"), BAD_CALLS, ids=[what for what, _ in BAD_CALLS]
)
async def test_bad_input_is_refused_and_writes_nothing(
    bus: MessageBus,
    engine: AsyncEngine,
    what: str,
    call: Callable[[MessageBus], Awaitable[object]],
) -> None:
    """Issue 8: a datetime eta poisoned the log; a NUL was "unavailable" on PostgreSQL."""
    before = await _log_size(engine)

    with pytest.raises(AllocationError):
        await call(bus)

    assert await _log_size(engine) == before


async def test_after_refused_input_the_log_reads_verifies_and_relays(
    bus: MessageBus,
) -> None:
    """Issue 8: one datetime eta made events list, verify and the relay fail forever."""
    await services.add_batch(bus, "b1", "LAMP", 5)
    for _, call in BAD_CALLS:
        with pytest.raises(AllocationError):
            await call(bus)
    await services.add_batch(bus, "b2", "LAMP", 5, datetime.date(2030, 1, 1))
    publisher = FakePublisher()

    assert await relay.relay_once(bus, publisher) == 2
    assert [logged.event.TYPE for logged in publisher.published] == [
        "batch_created",
        "batch_created",
    ]
    assert await verify(bus.uow_factory(), scratch=FakeUnitOfWork()) == []


async def test_a_datetime_eta_is_named_in_the_error(bus: MessageBus) -> None:
    with pytest.raises(InvalidMessage, match="eta"):
        await services.add_batch(
            bus, "b3", "LAMP", 5, datetime.datetime(2030, 1, 1, 12, 0)
        )


# Any text at all, surrogates and control characters included.
_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ref=_ANY_TEXT, name=_ANY_TEXT)
async def test_any_text_round_trips_identically_or_is_refused_with_a_domain_error(
    bus: MessageBus, ref: str, name: str
) -> None:
    """The same text is stored alike by SQLite and PostgreSQL, or refused by both."""
    sku = f"sku-{random_suffix()}"
    unique_ref = f"{ref}{random_suffix()}" if ref.strip() == ref else ref
    try:
        await services.add_batch(bus, unique_ref, sku, 3)
    except AllocationError:
        pass
    else:
        async with bus.uow_factory() as uow:
            product = await uow.products.get(sku)
            assert product is not None
            stored = [batch.reference for batch in product.batches]
            [logged] = await uow.event_log.read(
                after=await uow.event_log.last_position() - 1
            )
        assert stored == [unicodedata.normalize("NFC", unique_ref)]
        assert logged.event.payload["ref"] == unicodedata.normalize("NFC", unique_ref)
    try:
        user_id = await services.register_user(
            bus, name, f"u{random_suffix()}@example.com"
        )
    except AllocationError:
        return
    async with bus.uow_factory() as uow:
        user = await uow.users.get(user_id)
        stored_name = None if user is None else user.name
    assert stored_name == unicodedata.normalize("NFC", name.strip())


@pytest.mark.parametrize("read", ["read", "read_events"])
async def test_a_log_row_edited_by_hand_is_named_by_its_position(
    bus: MessageBus, engine: AsyncEngine, read: str
) -> None:
    """Regression: an unreadable row was reported without saying which one."""
    await services.add_batch(bus, "b1", "LAMP", 5)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE event_log SET payload = :bad"), {"bad": '{"qty": "x"}'}
        )
        position = await connection.scalar(text("SELECT max(position) FROM event_log"))

    with pytest.raises(UnreadableLogEntry, match=f"position {position} "):
        async with bus.uow_factory() as uow:
            await getattr(uow.event_log, read)(after=0)
