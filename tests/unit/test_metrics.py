"""Prometheus metrics of a bus on fakes: counters and histograms as it works, gauges
refreshed from the status figures when rendered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from allocation import config
from allocation.adapters import metrics, tracing
from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.service_layer import catchup, services
from allocation.service_layer.observability import CompositeObserver
from allocation.service_layer.ports import NewEvent
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from allocation.service_layer.messagebus import MessageBus


@pytest.fixture
async def bus() -> AsyncIterator[MessageBus]:
    async with bootstrap(
        uow=FakeUnitOfWork(),
        notifications=FakeNotifications(),
        console=FakeConsole(),
        settings=config.Settings(retry_delay=0),
        observer=CompositeObserver(
            tracing.OpenTelemetryObserver(), metrics.PrometheusObserver()
        ),
    ) as bus:
        yield bus


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bus: MessageBus) -> Samples:
    body, content_type = await metrics.render_metrics(bus)
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_handled_commands_and_events_are_counted_and_timed(
    bus: MessageBus,
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    await services.register_user(bus, "Bob", "bob@example.com")
    samples = await scrape(bus)
    command = {"command": "register_user"}
    assert (
        value(samples, "allocation_commands_handled_total", **command, outcome="ok")
        == 2
    )
    assert value(samples, "allocation_command_handler_seconds_count", **command) == 2
    coupon = {"event": "user_registered", "subscriber": "send_coupon"}
    assert (
        value(samples, "allocation_event_handler_calls_total", **coupon, outcome="ok")
        == 2
    )
    assert value(samples, "allocation_event_handler_seconds_count", **coupon) == 2


async def test_retries_and_dead_letters_are_counted_and_shown(bus: MessageBus) -> None:
    await catchup.catch_up(bus)  # the new subscriber gets its checkpoint

    async def broken(event: events.UserRegistered) -> None:
        raise RuntimeError("smtp down")

    bus.subscribe(events.UserRegistered, broken)
    await services.register_user(bus, "Ann", "ann@example.com")
    samples = await scrape(bus)
    assert (
        value(samples, "allocation_event_handler_retries_total", subscriber="broken")
        == 2
    )
    assert (
        value(
            samples, "allocation_event_handler_dead_lettered_total", subscriber="broken"
        )
        == 1
    )
    assert value(samples, "allocation_dead_letters", subscriber="broken") == 1
    # Given up on, it is no longer to do.
    assert value(samples, "allocation_subscriber_lag_events", subscriber="broken") == 0


async def test_the_gauges_show_the_log_and_what_each_subscriber_has_left(
    bus: MessageBus,
) -> None:
    lag, checkpoint = (
        "allocation_subscriber_lag_events",
        "allocation_subscriber_checkpoint_position",
    )
    await catchup.catch_up(bus)
    # Handled at once; an email handler's record of it is written at the scrape.
    await services.register_user(bus, "Ann", "ann@example.com")
    # Logged, never dispatched (its process died): catch-up's to deliver.
    registered = events.UserRegistered(user_id="u2", name="Bob", email="b@example.com")
    async with bus.uow_factory() as uow:
        await uow.event_log.append([NewEvent(registered, "user", "u2", 1)])
        await uow.commit()

    samples = await scrape(bus)
    assert value(samples, "allocation_log_head_position") == 2
    assert value(samples, lag, subscriber="send_coupon") == 1
    assert value(samples, checkpoint, subscriber="send_coupon") == 0

    await catchup.catch_up(bus)
    samples = await scrape(bus)
    assert value(samples, lag, subscriber="send_coupon") == 0
    assert value(samples, checkpoint, subscriber="send_coupon") == 2


async def test_a_relay_destination_is_shown_before_it_is_published_to(
    bus: MessageBus,
) -> None:
    await services.register_user(bus, "Ann", "ann@example.com")
    body, _ = await metrics.render_metrics(bus, destinations=["allocation:events"])
    lines = body.decode().splitlines()
    assert 'allocation_relay_lag_events{destination="allocation:events"} 1.0' in lines
    assert not any(line.startswith("allocation_relay_position{") for line in lines)


async def test_openmetrics_is_rendered_when_asked_for(bus: MessageBus) -> None:
    body, content_type = await metrics.render_metrics(
        bus, accept="application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_rendering_needs_a_prometheus_observer() -> None:
    async with bootstrap(
        uow=FakeUnitOfWork(), notifications=FakeNotifications(), console=FakeConsole()
    ) as bus:
        with pytest.raises(ValueError, match="PrometheusObserver"):
            await metrics.render_metrics(bus)


def test_each_observer_has_a_registry_of_its_own() -> None:
    first, second = metrics.PrometheusObserver(), metrics.PrometheusObserver()
    first.command_handled("allocate", 0.01, "ok")
    assert (
        second.registry.get_sample_value(
            "allocation_commands_handled_total",
            {"command": "allocate", "outcome": "ok"},
        )
        is None
    )
    assert (
        first.registry.get_sample_value(
            "allocation_commands_handled_total",
            {"command": "allocate", "outcome": "ok"},
        )
        == 1
    )
