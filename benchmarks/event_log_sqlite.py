"""Catch-up and replay throughput on a SQLite file (WAL): events/s from the log.

A migrated file gets N Allocated events appended straight through units of work
(``uow.event_log.append`` in large chunks) and never delivered, as if the process that
committed them had died. Then, in alternating blocks on the same file:

- catch-up: ``catchup.catch_up(bus)``, one pass over every subscriber, after the
  ``allocations_view`` projection's rows, tracking and checkpoint were reset (not
  timed); the projection is the only subscriber of Allocated, so it applies all N;
- replay: ``catchup.replay(bus, "allocations_view")``, which empties the read model
  and its tracking itself (timed: it is part of a replay) and applies all N.

Each uses its default batch size (``--batch-size`` overrides both). Figures are
medians over blocks of events applied per second; the bus comes from ``bootstrap``
with ``catch_up=False``, so nothing is delivered before the timing starts. A last,
untimed run of each counts the calls handed to aiosqlite's worker thread per event
and the statements behind them.

Run: .venv/bin/python benchmarks/event_log_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite
import anyio
from _harness import TripCounter
from allocation.adapters.eventlog import NewEvent
from register_user_sqlite import migrate

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.service_layer import catchup
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Awaitable, Callable

    from allocation.service_layer.messagebus import MessageBus

PROJECTION = "allocations_view"
SKUS = 100
APPEND_CHUNK = 10_000
TARGET = 5_000


def open_bus(url: str) -> contextlib.AbstractAsyncContextManager[MessageBus]:
    """A bus on ``url`` that delivers nothing by itself: no catch-up, no loop."""
    return bootstrap(
        settings=config.Settings(database_url=url, catch_up_interval=0),
        notifications=FakeNotifications(),
        console=FakeConsole(),
        catch_up=False,
    )


def _allocated(i: int) -> NewEvent:
    sku = f"SKU-{i % SKUS:03d}"
    return NewEvent(
        event=events.Allocated(
            orderid=f"order-{i}", sku=sku, qty=1, batchref=f"{sku}-batch"
        ),
        aggregate_type="product",
        aggregate_id=sku,
        # Event i is the (i // SKUS + 1)th of its product: unique per aggregate.
        aggregate_version=i // SKUS + 1,
    )


async def append_allocated(bus: MessageBus, start: int, stop: int) -> None:
    """Log Allocated events ``start`` to ``stop - 1`` without delivering them."""
    for first in range(start, stop, APPEND_CHUNK):
        batch = [_allocated(i) for i in range(first, min(stop, first + APPEND_CHUNK))]
        async with bus.uow_factory() as uow:
            await uow.event_log.append(batch)
            await uow.commit()


async def _reset_projection(bus: MessageBus) -> None:
    """Make allocations_view look brand new to catch-up: no rows, no tracking."""
    async with bus.uow_factory() as uow:
        await uow.allocations_view.clear()
        await uow.event_log.forget(PROJECTION)
        await uow.commit()


async def _rows(bus: MessageBus) -> int:
    async with bus.uow_factory() as uow:
        return sum(line.allocated for line in await uow.allocations_view.lines())


class _Run:
    """One timed workload: applies the whole log to the projection once."""

    def __init__(
        self,
        name: str,
        prepare: Callable[[], Awaitable[None]],
        run: Callable[[], Awaitable[int]],
    ) -> None:
        self.name = name
        self.prepare = prepare
        self.run = run
        self.rates: list[float] = []
        self.cpu_per_event: list[float] = []

    async def timed(self, expected: int) -> None:
        await self.prepare()
        start, cpu = time.perf_counter(), time.thread_time()
        applied = await self.run()
        took, cpu_took = time.perf_counter() - start, time.thread_time() - cpu
        if applied != expected:
            raise RuntimeError(f"{self.name} applied {applied} of {expected} events")
        self.rates.append(applied / took)
        self.cpu_per_event.append(cpu_took / applied)

    def report(self) -> None:
        rate = statistics.median(self.rates)
        cpu = statistics.median(self.cpu_per_event) * 1e6
        verdict = "meets" if rate >= TARGET else "misses"
        print(
            f"{self.name:<10} {rate:8.0f} events/s ({1e6 / rate:5.1f} µs/event,"
            f" loop-thread CPU {cpu:5.1f} µs/event)"
            f"  spread {min(self.rates):.0f}..{max(self.rates):.0f}"
            f"  {verdict} the {TARGET:,}/s target"
        )


def _runs(bus: MessageBus, batch_size: int | None) -> tuple[_Run, _Run]:
    async def reset() -> None:
        await _reset_projection(bus)

    async def nothing() -> None:
        pass

    async def catch_up() -> int:
        if batch_size is None:
            return await catchup.catch_up(bus)
        return await catchup.catch_up(bus, batch_size=batch_size)

    async def replay() -> int:
        if batch_size is None:
            return await catchup.replay(bus, PROJECTION)
        return await catchup.replay(bus, PROJECTION, batch_size=batch_size)

    return _Run("catch-up", reset, catch_up), _Run("replay", nothing, replay)


async def _count_trips(run: _Run, events_count: int) -> None:
    """Run once (untimed) under a TripCounter; print trips and statements per event."""
    await run.prepare()
    with TripCounter().installed() as counter:
        await run.run()
    statements = ", ".join(
        f"{sql!r} {n / events_count:.3f}" for sql, n in counter.statements.most_common()
    )
    print(
        f"  {run.name:<10} {counter.total() / events_count:.3f} trips/event;"
        f" statements/event: {statements}"
    )


async def _profile(run: _Run, events: int) -> None:
    from pyinstrument import Profiler  # the dev extra; only this mode needs it

    await run.prepare()
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    applied = await run.run()
    profiler.stop()
    print(f"--- {run.name}: {applied} of {events} events")
    print(profiler.output_text(unicode=True, color=False))


async def _main(
    events_count: int, blocks: int, batch_size: int | None, prof: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        await migrate(url)
        async with open_bus(url) as bus:
            subscribers = [
                name
                for name, handlers in bus.subscriptions().items()
                if events.Allocated.TYPE in handlers
            ]
            print(f"subscribers of {events.Allocated.TYPE!r}: {subscribers}")
            start = time.perf_counter()
            await append_allocated(bus, 0, events_count)
            took = time.perf_counter() - start
            print(
                f"appended {events_count} events in {took:.2f} s"
                f" ({events_count / took:.0f}/s, chunks of {APPEND_CHUNK})"
            )
            # The first pass also meets the other subscribers (their checkpoints go
            # to the end of the log); every later pass is the projection's alone.
            start = time.perf_counter()
            first = await catchup.catch_up(bus)
            took = time.perf_counter() - start
            print(
                f"first catch-up pass (a warm-up, outside the figures): {first} events"
                f" in {took:.2f} s ({first / took:.0f}/s)"
            )
            catch_up, replay = _runs(bus, batch_size)
            if prof:
                await _profile(catch_up, events_count)
                await _profile(replay, events_count)
                return
            for block in range(blocks):
                order = (catch_up, replay) if block % 2 == 0 else (replay, catch_up)
                for run in order:
                    await run.timed(events_count)
            rows = await _rows(bus)
            if rows != events_count:
                raise RuntimeError(f"allocations_view holds {rows} rows")
            catch_up.report()
            replay.report()
            print("trips (calls handed to aiosqlite's thread), one run of each:")
            for run in (catch_up, replay):
                await _count_trips(run, events_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--events", type=int, default=None, help="events in the log")
    parser.add_argument("--blocks", type=int, default=None, help="runs of each")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="override both default batches"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, profile one of each with pyinstrument (dev extra)",
    )
    args = parser.parse_args()
    events_count = args.events or (5_000 if args.quick else 20_000)
    blocks = args.blocks or (2 if args.quick else 4)
    print(
        f"python {sys.version.split()[0]}, aiosqlite {aiosqlite.__version__},"
        f" {events_count} Allocated events over {SKUS} skus, {blocks} runs of each,"
        " medians over runs"
    )
    start = time.perf_counter()
    anyio.run(
        _main, events_count, blocks, args.batch_size, args.profile, backend="asyncio"
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
