"""The article's own extension example runs against our bus as it is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from allocation.service_layer import services

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus


async def test_the_articles_coupon_handler_runs_unchanged(
    bus: MessageBus, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 8: subscribing by the event's name and reading event.payload work."""

    # The article's handler, exactly as its readers write it: it knows the event's
    # name and its payload dict, nothing of our classes.
    async def handle_send_coupon(event):  # type: ignore[no-untyped-def]  # as the article writes it
        print(f"[Coupon Service] Отправка купона пользователю {event.payload['email']}")  # noqa: T201 - the article prints

    bus.subscribe("user_registered", handle_send_coupon)
    await services.register_user(bus, "Иван", "ivan@example.com")

    assert capsys.readouterr().out.splitlines() == [
        "[Coupon Service] Отправка купона пользователю ivan@example.com"
    ]


async def test_subscribing_to_a_name_no_event_has_lists_the_event_names(
    bus: MessageBus,
) -> None:
    async def handler(event: object) -> None:
        pass

    with pytest.raises(ValueError, match="user_registered"):
        bus.subscribe("user_registred", handler)
