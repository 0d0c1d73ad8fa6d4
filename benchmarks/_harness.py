"""Shared helpers for the benchmarks: interleaved timing blocks, aiosqlite trip counts,
and a bus that delivers nothing by itself.

Variants are timed side by side in one process, in blocks that alternate their order
(A,B then B,A, ...), so drift and noise on a busy machine hit every variant alike. A
figure is the median over blocks; a ratio is the median of the per-block ratios.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import statistics
import time
from typing import TYPE_CHECKING, Any

import aiosqlite.core

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from allocation.service_layer.messagebus import MessageBus


@dataclasses.dataclass
class Variant:
    """A named workload: ``run(n)`` performs ``n`` operations back to back."""

    name: str
    run: Callable[[int], Awaitable[None]]
    seconds_per_op: list[float] = dataclasses.field(default_factory=list)
    # CPU time of the event-loop thread only (not aiosqlite's worker threads).
    loop_cpu_per_op: list[float] = dataclasses.field(default_factory=list)

    def median_us(self) -> float:
        return statistics.median(self.seconds_per_op) * 1e6


def quiet_bus(
    url: str, *, catch_up: bool = True, **settings: Any
) -> contextlib.AbstractAsyncContextManager[MessageBus]:
    """A bus on ``url`` with fakes for email and console and no background catch-up
    (timed blocks measure the commands, not a loop beside them); ``catch_up=False``
    also skips the pass at start. ``settings`` are further ``config.Settings``."""
    return bootstrap(
        settings=config.Settings(database_url=url, catch_up_interval=0, **settings),
        notifications=FakeNotifications(),
        console=FakeConsole(),
        catch_up=catch_up,
    )


def parse_args(description: str, blocks: int, ops: int) -> argparse.Namespace:
    """The common command line: ``--quick``, ``--blocks`` and ``--ops`` per block."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--blocks", type=int, default=None, help="timed blocks")
    parser.add_argument("--ops", type=int, default=None, help="operations per block")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, profile our variant with pyinstrument (dev extra)",
    )
    args = parser.parse_args()
    if args.blocks is None:
        args.blocks = max(4, blocks // 4) if args.quick else blocks
    if args.ops is None:
        args.ops = max(20, ops // 4) if args.quick else ops
    return args


async def interleave(variants: list[Variant], blocks: int, ops: int) -> None:
    """Time every variant ``blocks`` times, alternating the order; one warm-up first."""
    for variant in variants:
        await variant.run(max(1, ops // 4))
    for block in range(blocks):
        order = variants if block % 2 == 0 else variants[::-1]
        for variant in order:
            start, cpu = time.perf_counter(), time.thread_time()
            await variant.run(ops)
            variant.seconds_per_op.append((time.perf_counter() - start) / ops)
            variant.loop_cpu_per_op.append((time.thread_time() - cpu) / ops)


async def profile(variant: Variant, ops: int) -> None:
    """Print a pyinstrument profile of ``ops`` operations of ``variant`` (one warm-up).

    Only the event-loop thread is sampled; SQLAlchemy's greenlet frames show up as
    separate roots (``Session.commit``, ``Session.execute``).
    """
    from pyinstrument import Profiler  # the dev extra; only this mode needs it

    await variant.run(max(1, ops // 10))
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    await variant.run(ops)
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False))


def ratio(numerator: Variant, denominator: Variant) -> float:
    """Median over blocks of numerator time / denominator time (same block)."""
    pairs = zip(numerator.seconds_per_op, denominator.seconds_per_op, strict=True)
    return statistics.median(a / b for a, b in pairs)


def report(variants: list[Variant], label: str = "") -> None:
    """Print one line per variant: median µs/op, ops/s, loop CPU, first/last block."""
    prefix = f"[{label}] " if label else ""
    for variant in variants:
        times = variant.seconds_per_op
        us = variant.median_us()
        cpu = statistics.median(variant.loop_cpu_per_op) * 1e6
        print(
            f"{prefix}{variant.name:<28} {us:8.1f} µs/op {1e6 / us:8.0f} ops/s"
            f"  loop-thread CPU {cpu:7.1f} µs/op"
            f"  first block {times[0] * 1e6:.1f} µs, last {times[-1] * 1e6:.1f} µs"
            f"  (spread {min(times) * 1e6:.1f}..{max(times) * 1e6:.1f})"
        )


# The method every aiosqlite call goes through on its way to the worker thread.
_FUNNEL_CLASS, _FUNNEL = aiosqlite.core.Connection, "_execute"


class TripCounter:
    """Counts calls handed to aiosqlite's worker thread, by the function's name.

    Every aiosqlite call (connection and cursor alike) funnels through
    ``aiosqlite.core.Connection._execute``; only connecting and SQLAlchemy's
    isolation-level setter bypass it, and both happen once per connection. Counting
    adds overhead, so it runs in its own pass, never inside timed blocks.
    """

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.statements: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def installed(self) -> Iterator[TripCounter]:
        original: Callable[..., Awaitable[Any]] = getattr(_FUNNEL_CLASS, _FUNNEL)
        counter = self

        async def counting(
            connection: aiosqlite.core.Connection,
            fn: Callable[..., Any],
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            name = getattr(fn, "__name__", type(fn).__name__)
            counter.calls[name] += 1
            # aiosqlite passes the SQL first; our one-trip adapter passes the sqlite3
            # connection first and the SQL second.
            sql = next((arg for arg in args[:2] if isinstance(arg, str)), None)
            if sql is not None:
                counter.statements[" ".join(sql.split()[:3])] += 1
            return await original(connection, fn, *args, **kwargs)

        # Patched on the class, so every connection (ours and raw) is counted.
        setattr(_FUNNEL_CLASS, _FUNNEL, counting)
        try:
            yield self
        finally:
            setattr(_FUNNEL_CLASS, _FUNNEL, original)

    def total(self) -> int:
        return sum(self.calls.values())


async def count_trips(
    name: str, run: Callable[[int], Awaitable[None]], ops: int
) -> float:
    """Run ``ops`` operations under a TripCounter; print and return trips per op."""
    with TripCounter().installed() as counter:
        await run(ops)
    per_op = counter.total() / ops
    calls = ", ".join(f"{fn} {n / ops:.2f}" for fn, n in counter.calls.most_common())
    statements = ", ".join(
        f"{sql!r} {n / ops:.2f}" for sql, n in counter.statements.most_common()
    )
    print(f"  {name:<28} {per_op:5.2f} trips/op   by call: {calls}")
    print(f"  {'':<28} statements/op: {statements}")
    return per_op


def explain_gap(
    ours: Variant, our_trips: float, raw: Variant, raw_trips: float
) -> None:
    """Split our extra time per op into extra trips (an upper bound) and the rest."""
    per_trip = raw.median_us() / raw_trips
    extra = our_trips - raw_trips
    gap = ours.median_us() - raw.median_us()
    cpu_gap = statistics.median(ours.loop_cpu_per_op) - statistics.median(
        raw.loop_cpu_per_op
    )
    cpu = f"our event-loop thread burns {cpu_gap * 1e6:.0f} µs/op more CPU than raw's"
    if extra <= 0:
        print(
            f"  {-extra:.2f} fewer trips/op than raw, a gap of {gap:.0f} µs/op all"
            f" the same: {cpu}"
        )
        return
    print(
        f"  {extra:.2f} extra trips/op. Raw spends {per_trip:.1f} µs per trip all told"
        f" (its time / its trips), so they cost at most ~{extra * per_trip:.0f} µs of"
        f" our {gap:.0f} µs/op gap; {cpu}"
    )
