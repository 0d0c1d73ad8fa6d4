"""Metrics for Prometheus: what the bus handled, how long it took, and how far
delivery lags, on a registry of the observer's own.

Counters and histograms are updated as the bus works; the gauges are set from
``service_layer.status`` each time the metrics are rendered, so a scrape shows the
event store as it is, the same figures ``allocation status`` prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from allocation.service_layer import status as status_figures
from allocation.service_layer.observability import CompositeObserver, Observer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from allocation.service_layer.messagebus import MessageBus

# Handlers run from microseconds (in memory) to seconds (SMTP, a slow database).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class PrometheusObserver(Observer):
    """Counts and times every handler call on ``registry`` (a new one by default).

    Combine it with tracing through ``CompositeObserver``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        on = self.registry
        self._commands = Counter(
            "allocation_commands_handled",
            "Commands handled, by how their handler ended",
            ["command", "outcome"],
            registry=on,
        )
        self._command_seconds = Histogram(
            "allocation_command_handler_seconds",
            "Time in a command's handler (its events are dispatched after)",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=on,
        )
        self._events = Counter(
            "allocation_event_handler_calls",
            "Event handler calls (a retry is another), by how they ended",
            ["subscriber", "event", "outcome"],
            registry=on,
        )
        self._event_seconds = Histogram(
            "allocation_event_handler_seconds",
            "Time in one event handler call",
            ["subscriber", "event"],
            buckets=LATENCY_BUCKETS,
            registry=on,
        )
        self._retries = Counter(
            "allocation_event_handler_retries",
            "Failed event handler calls that are tried again after a back-off",
            ["subscriber"],
            registry=on,
        )
        self._dead_lettered = Counter(
            "allocation_event_handler_dead_lettered",
            "Events given up on after the last attempt (recorded as dead letters)",
            ["subscriber"],
            registry=on,
        )
        self._head = Gauge(
            "allocation_log_head_position",
            "Position of the newest event in the log",
            registry=on,
        )
        self._checkpoint = Gauge(
            "allocation_subscriber_checkpoint_position",
            "Log position up to which catch-up has settled the subscriber",
            ["subscriber"],
            registry=on,
        )
        self._lag = Gauge(
            "allocation_subscriber_lag_events",
            "Events of the subscriber's names past its checkpoint that it has "
            "neither recorded as handled nor dead-lettered",
            ["subscriber"],
            registry=on,
        )
        self._dead_letters = Gauge(
            "allocation_dead_letters",
            "Dead letters waiting, per subscriber",
            ["subscriber"],
            registry=on,
        )
        self._relay_position = Gauge(
            "allocation_relay_position",
            "Last log position the relay published to the destination",
            ["destination"],
            registry=on,
        )
        self._relay_lag = Gauge(
            "allocation_relay_lag_events",
            "Events logged and not yet published to the destination",
            ["destination"],
            registry=on,
        )
        # Each label set's counter and histogram, found once: looking them up
        # again on every handler call costs more than counting.
        self._command_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._event_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def command_handled(self, name: str, seconds: float, outcome: str) -> None:
        key = (name, outcome)
        children = self._command_children.get(key)
        if children is None:
            children = self._command_children[key] = (
                self._commands.labels(name, outcome),
                self._command_seconds.labels(name),
            )
        children[0].inc()
        children[1].observe(seconds)

    def event_handled(
        self, subscriber: str, event_name: str, seconds: float, outcome: str
    ) -> None:
        key = (subscriber, event_name, outcome)
        children = self._event_children.get(key)
        if children is None:
            children = self._event_children[key] = (
                self._events.labels(subscriber, event_name, outcome),
                self._event_seconds.labels(subscriber, event_name),
            )
        children[0].inc()
        children[1].observe(seconds)

    def retried(self, subscriber: str) -> None:
        self._retries.labels(subscriber).inc()

    def dead_lettered(self, subscriber: str) -> None:
        self._dead_lettered.labels(subscriber).inc()

    def show(self, figures: status_figures.Status) -> None:
        """Set the gauges to ``figures``; a subscriber or destination no longer
        there disappears from them."""
        self._head.set(figures.head)
        for gauge in (
            self._checkpoint,
            self._lag,
            self._dead_letters,
            self._relay_position,
            self._relay_lag,
        ):
            gauge.clear()
        for subscriber in figures.subscribers:
            if subscriber.checkpoint is not None:
                self._checkpoint.labels(subscriber.name).set(subscriber.checkpoint)
            self._lag.labels(subscriber.name).set(subscriber.lag)
            self._dead_letters.labels(subscriber.name).set(subscriber.dead_letters)
        for relayed in figures.relays:
            if relayed.position is not None:
                self._relay_position.labels(relayed.destination).set(relayed.position)
            self._relay_lag.labels(relayed.destination).set(relayed.lag)


async def render_metrics(
    bus: MessageBus,
    *,
    accept: str | None = None,
    destinations: Iterable[str] = (),
) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` response for ``bus``.

    The gauges are refreshed from the event store first (``status.status``),
    once what this process's handlers completed is recorded.

    Args:
        bus: bootstrapped with a PrometheusObserver (alone or in a
            CompositeObserver).
        accept: the request's Accept header: OpenMetrics when it asks for it,
            else Prometheus's text format.
        destinations: the relay's destinations, shown even before it first
            publishes to them (``Settings.broker_stream``).

    Raises:
        ValueError: the bus has no PrometheusObserver.
    """
    observer = prometheus_observer(bus.observer)
    if observer is None:
        raise ValueError(
            "the bus has no PrometheusObserver to render: "
            "bootstrap(observer=PrometheusObserver()) first"
        )
    # What this process handled without a commit of its own (an email) counts as
    # handled once recorded: record it first, or it would show as lag.
    await bus.flush_completions()
    observer.show(await status_figures.status(bus, destinations=destinations))
    encode, content_type = choose_encoder(accept or "")
    return encode(observer.registry), content_type


def prometheus_observer(observer: Observer) -> PrometheusObserver | None:
    """The PrometheusObserver that is ``observer`` or one of its parts, if any."""
    if isinstance(observer, PrometheusObserver):
        return observer
    if isinstance(observer, CompositeObserver):
        for part in observer.observers:
            found = prometheus_observer(part)
            if found is not None:
                return found
    return None
