"""What observing the bus costs: register_user on the fakes, unobserved and observed.

The same workload as ``bus_in_memory.py``'s first line (the command, its commit and
its three event handlers), through buses that differ only in their observer: none
(the default), Prometheus counters and histograms, OpenTelemetry's API with no SDK
installed (spans that record nothing), the SDK recording every span with nowhere
to export it, and Prometheus with the SDK together.

Run: .venv/bin/python benchmarks/bus_observed.py [--quick]
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from typing import TYPE_CHECKING

import anyio
from _harness import Variant, interleave, parse_args, ratio, report
from opentelemetry.sdk.trace import TracerProvider

from allocation.adapters.metrics import PrometheusObserver
from allocation.adapters.tracing import OpenTelemetryObserver
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.service_layer.observability import CompositeObserver, Observer
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus


def _observers() -> dict[str, Observer]:
    return {
        "unobserved": Observer(),
        "prometheus": PrometheusObserver(),
        "otel API, no SDK": OpenTelemetryObserver(),
        "otel SDK, recording": OpenTelemetryObserver(TracerProvider()),
        "prometheus + otel SDK": CompositeObserver(
            PrometheusObserver(), OpenTelemetryObserver(TracerProvider())
        ),
    }


def _variant(name: str, bus: MessageBus) -> Variant:
    numbers = itertools.count()

    async def register(n: int) -> None:
        for _ in range(n):
            await services.register_user(bus, "Ivan", f"u{next(numbers)}@example.com")

    return Variant(f"register_user, {name}", register)


async def _main(blocks: int, ops: int, backend: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        variants = []
        for name, observer in _observers().items():
            bus = await stack.enter_async_context(
                bootstrap(
                    uow=FakeUnitOfWork(),
                    notifications=FakeNotifications(),
                    console=FakeConsole(),
                    observer=observer,
                )
            )
            variants.append(_variant(name, bus))
        await interleave(variants, blocks, ops)
    report(variants, backend)
    unobserved = variants[0]
    print(
        f"[{backend}] time over unobserved (median of per-block ratios): "
        + ", ".join(
            f"{variant.name.split(', ')[1]} {ratio(variant, unobserved):.3f}"
            for variant in variants[1:]
        )
    )


def main() -> None:
    args = parse_args(__doc__ or "", blocks=20, ops=2000)
    print(
        f"python {sys.version.split()[0]}, {args.blocks} blocks x {args.ops} ops,"
        " medians over blocks"
    )
    for backend in ("asyncio", "trio"):
        start = time.perf_counter()
        anyio.run(_main, args.blocks, args.ops, backend, backend=backend)
        print(f"[{backend}] took {time.perf_counter() - start:.1f} s\n")


if __name__ == "__main__":
    main()
