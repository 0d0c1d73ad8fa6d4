"""Handlers and services end to end through the bus, with the fakes of allocation.testing."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import TYPE_CHECKING

import anyio.lowlevel
import pytest

from allocation import config, views
from allocation.bootstrap import bootstrap
from allocation.domain import events, exceptions
from allocation.service_layer import services
from allocation.service_layer.exceptions import InvalidSku, UnknownBatch
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork
from tests.conftest import random_batchref, random_orderid, random_sku

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.domain import model
    from allocation.service_layer.messagebus import MessageBus

STOCK_DESK = "stock@example.com"
TOMORROW = datetime.date.today() + datetime.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class App:
    """A bus on fakes, and the fakes to look at."""

    bus: MessageBus
    uow: FakeUnitOfWork
    notifications: FakeNotifications
    console: FakeConsole


@pytest.fixture
async def app() -> AsyncIterator[App]:
    uow = FakeUnitOfWork()
    notifications = FakeNotifications()
    console = FakeConsole()
    # Default settings, so no environment variable changes what these tests see.
    async with bootstrap(
        uow=uow,
        notifications=notifications,
        console=console,
        settings=config.Settings(),
    ) as bus:
        yield App(bus=bus, uow=uow, notifications=notifications, console=console)


async def get_product(uow: FakeUnitOfWork, sku: str) -> model.Product | None:
    # Inside a block, so what the test looked at is forgotten again on the way out.
    async with uow:
        return await uow.products.get(sku)


def sent_count(notifications: FakeNotifications) -> int:
    return sum(len(messages) for messages in notifications.sent.values())


# add_batch


async def test_add_batch_for_new_product(app: App) -> None:
    sku, ref = random_sku(), random_batchref()

    await services.add_batch(app.bus, ref, sku, 100)

    product = await get_product(app.uow, sku)
    assert product is not None
    assert [batch.reference for batch in product.batches] == [ref]
    assert app.uow.committed


async def test_add_batch_for_existing_product(app: App) -> None:
    sku, first, second = random_sku(), random_batchref("1"), random_batchref("2")

    await services.add_batch(app.bus, first, sku, 100)
    await services.add_batch(app.bus, second, sku, 99, eta=TOMORROW)

    product = await get_product(app.uow, sku)
    assert product is not None
    assert [batch.reference for batch in product.batches] == [first, second]
    assert product.batches[1].eta == TOMORROW


async def test_duplicate_batch_ref_raises_batch_already_exists(app: App) -> None:
    sku, ref = random_sku(), random_batchref()
    await services.add_batch(app.bus, ref, sku, 100)

    with pytest.raises(exceptions.BatchAlreadyExists, match=ref):
        await services.add_batch(app.bus, ref, sku, 5)


async def test_duplicate_batch_ref_changes_nothing(app: App) -> None:
    sku, ref = random_sku(), random_batchref()
    await services.add_batch(app.bus, ref, sku, 100)
    product = await get_product(app.uow, sku)
    assert product is not None
    version = product.version_number
    commits = app.uow.commits
    other_sku = random_sku("other")

    with pytest.raises(exceptions.BatchAlreadyExists):
        await services.add_batch(app.bus, ref, other_sku, 5)

    assert [batch.purchased_quantity for batch in product.batches] == [100]
    assert product.version_number == version
    assert await get_product(app.uow, other_sku) is None
    assert app.uow.commits == commits


async def test_add_batch_with_bad_quantity_raises_invalid_quantity(app: App) -> None:
    sku = random_sku()

    with pytest.raises(exceptions.InvalidQuantity, match="-1"):
        await services.add_batch(app.bus, random_batchref(), sku, -1)

    assert await get_product(app.uow, sku) is None


# allocate


async def test_allocate_returns_the_batch_ref(app: App) -> None:
    sku, ref = random_sku(), random_batchref()
    await services.add_batch(app.bus, ref, sku, 100)

    batchref = await services.allocate(app.bus, random_orderid(), sku, 10)

    assert batchref == ref


async def test_allocate_updates_the_read_model(app: App) -> None:
    sku, ref, orderid = random_sku(), random_batchref(), random_orderid()
    await services.add_batch(app.bus, ref, sku, 100)

    await services.allocate(app.bus, orderid, sku, 10)

    assert await views.allocations(orderid, app.bus.uow_factory()) == [
        {"sku": sku, "batchref": ref}
    ]


async def test_read_model_lists_every_sku_of_an_order(app: App) -> None:
    orderid = random_orderid()
    chair, table = random_sku("chair"), random_sku("table")
    chair_ref, table_ref = random_batchref("chair"), random_batchref("table")
    await services.add_batch(app.bus, chair_ref, chair, 10)
    await services.add_batch(app.bus, table_ref, table, 10)

    await services.allocate(app.bus, orderid, chair, 1)
    await services.allocate(app.bus, orderid, table, 1)

    assert await views.allocations(orderid, app.bus.uow_factory()) == [
        {"sku": chair, "batchref": chair_ref},
        {"sku": table, "batchref": table_ref},
    ]


async def test_read_model_of_an_unknown_order_is_empty(app: App) -> None:
    assert await views.allocations(random_orderid(), app.bus.uow_factory()) == []


async def test_allocating_the_same_line_twice_returns_the_same_batch(
    app: App,
) -> None:
    sku, orderid = random_sku(), random_orderid()
    await services.add_batch(app.bus, random_batchref("small"), sku, 10)
    await services.add_batch(app.bus, random_batchref("big"), sku, 100, eta=TOMORROW)
    first = await services.allocate(app.bus, orderid, sku, 10)

    second = await services.allocate(app.bus, orderid, sku, 10)

    assert second == first
    assert await views.allocations(orderid, app.bus.uow_factory()) == [
        {"sku": sku, "batchref": first}
    ]


async def test_allocate_unknown_sku_raises_invalid_sku(app: App) -> None:
    await services.add_batch(app.bus, random_batchref(), random_sku("real"), 100)
    unknown = random_sku("unknown")

    with pytest.raises(InvalidSku, match=unknown):
        await services.allocate(app.bus, random_orderid(), unknown, 10)


async def test_allocate_commits(app: App) -> None:
    sku = random_sku()
    await services.add_batch(app.bus, random_batchref(), sku, 100)
    commits = app.uow.commits

    await services.allocate(app.bus, random_orderid(), sku, 10)

    assert app.uow.commits > commits


async def test_out_of_stock_returns_none(app: App) -> None:
    sku = random_sku()
    await services.add_batch(app.bus, random_batchref(), sku, 9)

    assert await services.allocate(app.bus, random_orderid(), sku, 10) is None


async def test_out_of_stock_sends_one_email_to_the_stock_desk(app: App) -> None:
    sku, orderid = random_sku(), random_orderid()
    await services.add_batch(app.bus, random_batchref(), sku, 9)

    await services.allocate(app.bus, orderid, sku, 10)

    assert list(app.notifications.sent) == [STOCK_DESK]
    [email] = app.notifications.sent[STOCK_DESK]
    assert sku in email.subject
    assert orderid in email.body


async def test_out_of_stock_leaves_the_read_model_empty(app: App) -> None:
    sku, orderid = random_sku(), random_orderid()
    await services.add_batch(app.bus, random_batchref(), sku, 9)

    await services.allocate(app.bus, orderid, sku, 10)

    assert await views.allocations(orderid, app.bus.uow_factory()) == []


# change_batch_quantity


async def test_change_batch_quantity_reallocates_to_another_batch(app: App) -> None:
    sku, orderid = random_sku(), random_orderid()
    in_stock, shipment = random_batchref("in-stock"), random_batchref("shipment")
    await services.add_batch(app.bus, in_stock, sku, 50)
    await services.add_batch(app.bus, shipment, sku, 50, eta=TOMORROW)
    assert await services.allocate(app.bus, orderid, sku, 20) == in_stock

    await services.change_batch_quantity(app.bus, in_stock, 10)

    product = await get_product(app.uow, sku)
    assert product is not None
    moved = {batch.reference: batch.allocated_quantity for batch in product.batches}
    assert moved == {in_stock: 0, shipment: 20}


async def test_read_model_follows_a_reallocation(app: App) -> None:
    sku, orderid = random_sku(), random_orderid()
    in_stock, shipment = random_batchref("in-stock"), random_batchref("shipment")
    await services.add_batch(app.bus, in_stock, sku, 50)
    await services.add_batch(app.bus, shipment, sku, 50, eta=TOMORROW)
    await services.allocate(app.bus, orderid, sku, 20)

    await services.change_batch_quantity(app.bus, in_stock, 10)

    assert await views.allocations(orderid, app.bus.uow_factory()) == [
        {"sku": sku, "batchref": shipment}
    ]


async def test_change_batch_quantity_keeps_lines_that_still_fit(app: App) -> None:
    sku, kept, dropped = random_sku(), "order-1", "order-2"
    in_stock, shipment = random_batchref("in-stock"), random_batchref("shipment")
    await services.add_batch(app.bus, in_stock, sku, 50)
    await services.add_batch(app.bus, shipment, sku, 50, eta=TOMORROW)
    await services.allocate(app.bus, kept, sku, 20)
    await services.allocate(app.bus, dropped, sku, 20)

    await services.change_batch_quantity(app.bus, in_stock, 25)

    assert await views.allocations(kept, app.bus.uow_factory()) == [
        {"sku": sku, "batchref": in_stock}
    ]
    assert await views.allocations(dropped, app.bus.uow_factory()) == [
        {"sku": sku, "batchref": shipment}
    ]


async def test_a_line_that_fits_nowhere_after_a_change_is_out_of_stock(
    app: App,
) -> None:
    sku, orderid, ref = random_sku(), random_orderid(), random_batchref()
    await services.add_batch(app.bus, ref, sku, 50)
    await services.allocate(app.bus, orderid, sku, 20)

    await services.change_batch_quantity(app.bus, ref, 10)

    assert await views.allocations(orderid, app.bus.uow_factory()) == []
    assert len(app.notifications.sent[STOCK_DESK]) == 1


async def test_change_quantity_of_unknown_batch_raises_unknown_batch(
    app: App,
) -> None:
    unknown = random_batchref("unknown")

    with pytest.raises(UnknownBatch, match=unknown):
        await services.change_batch_quantity(app.bus, unknown, 10)


# register_user


async def test_register_user_returns_the_user_id(app: App) -> None:
    user_id = await services.register_user(app.bus, "Алиса", "alice@example.com")

    async with app.uow:
        user = await app.uow.users.get(user_id)
    assert user is not None
    assert user.id == user_id


async def test_register_user_commits(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    assert app.uow.committed


async def test_register_user_stores_the_normalised_email(app: App) -> None:
    user_id = await services.register_user(app.bus, "Алиса", " Alice@Example.com ")

    assert await views.user_by_email("alice@example.com", app.bus.uow_factory()) == {
        "id": user_id,
        "name": "Алиса",
        "email": "alice@example.com",
    }


async def test_register_user_writes_the_articles_console_lines(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    assert app.console.lines == [
        "[User Service] Регистрируем пользователя Алиса с email alice@example.com",
        "[Log Service] Пользователь зарегистрирован: alice@example.com",
    ]


async def test_register_user_sends_welcome_email_and_coupon(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "Alice@Example.com")

    assert list(app.notifications.sent) == ["alice@example.com"]
    subjects = {email.subject for email in app.notifications.sent["alice@example.com"]}
    assert subjects == {"Добро пожаловать!", "Ваш купон"}


async def test_welcome_email_greets_the_user_by_name(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    [welcome] = [
        email
        for email in app.notifications.sent["alice@example.com"]
        if "Добро пожаловать" in email.subject
    ]
    assert "Алиса" in welcome.body
    assert welcome.console_line.endswith("alice@example.com")


async def test_duplicate_email_raises_email_already_registered(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    with pytest.raises(
        exceptions.EmailAlreadyRegistered, match=re.escape("alice@example.com")
    ):
        await services.register_user(app.bus, "Alice", "ALICE@example.COM")


async def test_duplicate_email_sends_nothing_more(app: App) -> None:
    await services.register_user(app.bus, "Алиса", "alice@example.com")
    sent, lines = sent_count(app.notifications), list(app.console.lines)

    with pytest.raises(exceptions.EmailAlreadyRegistered):
        await services.register_user(app.bus, "Alice", "ALICE@example.COM")

    assert sent_count(app.notifications) == sent
    assert app.console.lines == lines


async def test_duplicate_email_keeps_the_first_user(app: App) -> None:
    first = await services.register_user(app.bus, "Алиса", "alice@example.com")

    with pytest.raises(exceptions.EmailAlreadyRegistered):
        await services.register_user(app.bus, "Alice", "Alice@example.com")

    user = await views.user_by_email("alice@example.com", app.bus.uow_factory())
    assert user is not None
    assert user["id"] == first
    assert user["name"] == "Алиса"


@pytest.mark.parametrize(
    ("name", "email", "error"),
    [
        ("Алиса", "not-an-email", exceptions.InvalidEmail),
        ("Алиса", "alice@example", exceptions.InvalidEmail),
        ("Алиса", "", exceptions.InvalidEmail),
        ("", "alice@example.com", exceptions.InvalidName),
        ("   ", "alice@example.com", exceptions.InvalidName),
        ("x" * 201, "alice@example.com", exceptions.InvalidName),
    ],
)
async def test_invalid_registration_raises_the_domain_error(
    app: App, name: str, email: str, error: type[exceptions.AllocationError]
) -> None:
    with pytest.raises(error):
        await services.register_user(app.bus, name, email)


@pytest.mark.parametrize(
    ("name", "email"), [("Алиса", "not-an-email"), ("", "alice@example.com")]
)
async def test_invalid_registration_sends_nothing(
    app: App, name: str, email: str
) -> None:
    with pytest.raises(exceptions.AllocationError):
        await services.register_user(app.bus, name, email)

    assert sent_count(app.notifications) == 0
    assert app.console.lines == []
    assert not app.uow.committed


# the bus and the fakes


async def test_a_subscribed_plain_handler_receives_the_event(app: App) -> None:
    received: list[events.UserRegistered] = []

    async def remember(event: events.UserRegistered) -> None:
        received.append(event)

    app.bus.subscribe(events.UserRegistered, remember)
    user_id = await services.register_user(app.bus, "Алиса", "Alice@example.com")

    assert received == [
        events.UserRegistered(user_id=user_id, name="Алиса", email="alice@example.com")
    ]


async def test_a_subscribed_handler_that_waits_finishes_before_handle_returns(
    app: App,
) -> None:
    received: list[str] = []

    async def remember_later(event: events.UserRegistered) -> None:
        await anyio.lowlevel.checkpoint()
        received.append(event.email)

    app.bus.subscribe(events.UserRegistered, remember_later)
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    assert received == ["alice@example.com"]


async def test_a_subscribed_handler_runs_beside_the_built_in_ones(app: App) -> None:
    async def ignore(event: events.UserRegistered) -> None:
        pass

    app.bus.subscribe(events.UserRegistered, ignore)
    await services.register_user(app.bus, "Алиса", "alice@example.com")

    assert len(app.notifications.sent["alice@example.com"]) == 2
    assert len(app.console.lines) == 2


async def run_many_commands(bus: MessageBus, rounds: int) -> None:
    for number in range(rounds):
        sku, ref = random_sku(), random_batchref()
        await services.add_batch(bus, ref, sku, 10)
        await services.allocate(bus, random_orderid(), sku, 5)
        await services.allocate(bus, random_orderid(), sku, 50)  # out of stock
        await services.change_batch_quantity(bus, ref, 4)
        email = f"user{number}@example.com"
        await services.register_user(bus, f"User {number}", email)
        with pytest.raises(exceptions.EmailAlreadyRegistered):
            await services.register_user(bus, "Again", email.upper())
        with pytest.raises(InvalidSku):
            await services.allocate(bus, random_orderid(), random_sku("none"), 1)


async def test_fake_unit_of_work_forgets_what_it_has_seen(app: App) -> None:
    await run_many_commands(app.bus, 20)

    assert app.uow.products.seen == {}
    assert app.uow.users.seen == {}


async def test_fake_unit_of_work_holds_no_events_once_handled(app: App) -> None:
    await run_many_commands(app.bus, 20)

    assert app.uow.collect_new_events() == []


async def test_an_unknown_sku_error_quotes_at_most_about_eighty_characters(
    app: App,
) -> None:
    """Issue 8: error lines echoed the whole input."""
    with pytest.raises(InvalidSku) as caught:
        await services.allocate(app.bus, "o1", "x" * 255, 1)

    assert "255 characters" in str(caught.value)
    assert len(str(caught.value)) < 150
