"""Traces through OpenTelemetry: a span per command and per handler call, and the
W3C trace context (``traceparent``) carried through the event log and the broker.

Only the OpenTelemetry API is used to trace: spans are recorded by whatever
TracerProvider the program installs (the SDK's, with the exporter it chooses).
With none installed the API records nothing, at little cost. ``from_exporters``
installs the SDK with its console exporter for ``OTEL_TRACES_EXPORTER=console``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import sys
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from allocation.service_layer.observability import Observer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from types import TracebackType

logger = logging.getLogger(__name__)

TRACER_NAME = "allocation"
SERVICE_NAME = "allocation"


class OpenTelemetryObserver(Observer):
    """Spans through the OpenTelemetry API, trace contexts through its W3C propagator.

    Args:
        tracer_provider: where spans go; by default the global one
            (``opentelemetry.trace.set_tracer_provider``), looked up when a span
            starts, so one installed later is used too.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(
            TRACER_NAME, _version(), tracer_provider=tracer_provider
        )
        self._propagator = TraceContextTextMapPropagator()

    def span(self, name: str, attributes: Mapping[str, str]) -> _Span:
        return _Span(self._tracer, name, attributes)

    def trace_context(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get("traceparent")

    @contextlib.contextmanager
    def continued(self, trace_context: str | None) -> Iterator[None]:
        if not trace_context:
            yield
            return
        # A malformed value leaves the current context as it is.
        token = otel_context.attach(
            self._propagator.extract(
                {"traceparent": trace_context}, context=otel_context.get_current()
            )
        )
        try:
            yield
        finally:
            otel_context.detach(token)


class _Span:
    """A span, current while the block runs; an exception leaving the block is
    recorded on it and marks it failed.

    What the API's ``start_as_current_span`` does, without its two generator-based
    context managers: the bus opens one of these around every handler call.
    """

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(
        self, tracer: trace.Tracer, name: str, attributes: Mapping[str, str]
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> None:
        self._span = self._tracer.start_span(self._name, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)
        if exc is not None and self._span.is_recording():
            self._span.record_exception(exc)
            self._span.set_status(
                trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            )
        self._span.end()


def from_exporters(exporters: str) -> OpenTelemetryObserver | None:
    """The observer ``OTEL_TRACES_EXPORTER`` asks for (``Settings.traces_exporter``).

    ``none``: no tracing (None). ``console``: the SDK's TracerProvider, installed
    as the global one, printing each span as JSON on standard error (unless a
    provider is installed already: ``opentelemetry-instrument`` sets one up from
    the same variables). Any other exporter (``otlp``, ...): spans go to the
    installed provider, which must have been set up with that exporter.
    """
    names = set(exporters.split(","))
    if names <= {"none"}:
        return None
    installed = trace.get_tracer_provider()
    if not isinstance(installed, trace.ProxyTracerProvider):
        return OpenTelemetryObserver(installed)
    if "console" in names:
        provider = _console_provider()
        trace.set_tracer_provider(provider)
        return OpenTelemetryObserver(provider)
    logger.warning(
        "OTEL_TRACES_EXPORTER=%s, but no tracer provider is installed to export "
        "with: spans are not recorded (run under opentelemetry-instrument, or "
        "install a provider before bootstrap)",
        exporters,
    )
    return OpenTelemetryObserver()


def _console_provider() -> trace.TracerProvider:
    # The SDK is loaded only here: without tracing, no process pays for it.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    # OTEL_SERVICE_NAME, when set, names the service; ours otherwise.
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    # Batched, off the event loop; the SDK flushes what is left at exit.
    provider.add_span_processor(
        # Standard error: the commands' own output stays clean on standard output.
        BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    )
    return provider


def _version() -> str | None:
    try:
        return importlib.metadata.version("allocation")
    except (
        importlib.metadata.PackageNotFoundError
    ):  # pragma: no cover - run from a checkout
        return None
