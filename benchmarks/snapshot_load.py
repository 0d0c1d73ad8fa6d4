"""Loading a product: its cost follows the events since its last snapshot, not its
stream's length (issue 9). Needs the event store (``config.Settings.snapshot_every``).

One SQLite file (WAL) holds one product per measured point. A point is a snapshot
interval K (``snapshot_every``; 0: never) and a stream length: 10,000 events plus a
tail of fewer than K, so the last snapshot is at 10,000 and the tail is what comes
after it; with K = 0 the whole stream comes after "no snapshot". Two stream shapes:

- ``changes``: one batch, then ChangeBatchQuantity events (raising the quantity): the
  state stays one batch, so a snapshot is small;
- ``allocations``: one batch with ample stock, then Allocated events: every event adds
  an order line, so the snapshot holds as many lines as the stream has events
  (``--quick`` leaves this shape out: the book's model makes building it quadratic).

Each product is created with ``services.add_batch`` on a bus from ``bootstrap`` with
its K (no catch-up); its events are then recorded by the domain's own methods
(``Product.change_batch_quantity`` / ``Product.allocate``) in units of work from
``bus.uow_factory()`` that commit up to 1,000 events at a time, ending on multiples
of 1,000 (so snapshots land on them), then the tail in one commit. Through
``bus.handle`` every event would be its own command, loading the stream each time:
minutes, and quadratic without snapshots.

Timed: ``async with bus.uow_factory() as uow: await uow.products.get(sku)``, one per
point per round, the points in alternating order over rounds; figures are medians
over rounds. A product of one event (its batch) gives the fixed cost of a load;
"µs/event" is (load - that) / events since the snapshot. Last, a least-squares line
of load time against events since the snapshot, and against stream length, per
shape: R² says which of the two the cost follows.

Run: .venv/bin/python benchmarks/snapshot_load.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from allocation import config
from allocation.adapters import database, migrations
from allocation.bootstrap import bootstrap
from allocation.domain import model
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

BASE = 10_000
CHUNK = 1_000
AMPLE_STOCK = 1_000_000_000


@dataclasses.dataclass
class Point:
    """One product to load: its stream shape, K, stream length, and its loads."""

    shape: str
    every: int
    length: int
    sku: str
    loads: list[float] = dataclasses.field(default_factory=list)
    snapshot_version: int | None = None

    @property
    def since_snapshot(self) -> int:
        """Events after the last snapshot, as the snapshot rule places it."""
        return self.length if self.every == 0 else self.length % self.every

    def median_ms(self) -> float:
        return statistics.median(self.loads) * 1e3


def _plan(quick: bool) -> list[tuple[str, int, int]]:
    """(shape, K, stream length) of every point; (changes, 0, 1) is the baseline."""
    # Building an allocations stream is quadratic in the book's model (each
    # allocation sums the batch's lines), so that shape gets the fewest points.
    lengths_without_snapshots = {
        "changes": (1_000, 5_000, BASE),
        "allocations": (1_000, BASE),
    }
    tails = {
        "changes": {1_000: (0, 250, 500, 999), 100: (0, 50, 99)},
        "allocations": {1_000: (0, 999), 100: (0, 99)},
    }
    if quick:
        lengths_without_snapshots = {"changes": (1_000, BASE)}
        tails = {"changes": {1_000: (0, 999), 100: (0, 99)}}
    points = [("changes", 0, 1)]
    for shape, lengths in lengths_without_snapshots.items():
        points += [(shape, 0, length) for length in lengths]
        points += [
            (shape, every, BASE + tail)
            for every, some in tails[shape].items()
            for tail in some
        ]
    return points


async def _record(bus: MessageBus, point: Point, count: int, first: int) -> None:
    """Record events ``first`` to ``first + count - 1`` of the point's product, in one
    unit of work and one commit."""
    async with bus.uow_factory() as uow:
        product = await uow.products.get(point.sku)
        if product is None:
            raise LookupError(point.sku)
        for number in range(first, first + count):
            if point.shape == "changes":
                product.change_batch_quantity(f"{point.sku}-batch", 1_000 + number)
            else:
                product.allocate(
                    model.OrderLine(orderid=f"order-{number}", sku=point.sku, qty=1)
                )
        await uow.commit()


async def _build(bus: MessageBus, point: Point) -> None:
    stock = 1_000 if point.shape == "changes" else AMPLE_STOCK
    await services.add_batch(bus, f"{point.sku}-batch", point.sku, stock)
    version = 1  # the batch's event
    # Commits end on multiples of CHUNK up to the last one not past the length.
    while (version // CHUNK + 1) * CHUNK <= point.length:
        stop = (version // CHUNK + 1) * CHUNK
        await _record(bus, point, stop - version, version + 1)
        version = stop
    if version < point.length:
        await _record(bus, point, point.length - version, version + 1)


async def _check(bus: MessageBus, point: Point) -> None:
    """The product loads at its length; note where its latest snapshot is."""
    async with bus.uow_factory() as uow:
        product = await uow.products.get(point.sku)
        if product is None or product.version_number != point.length:
            raise RuntimeError(
                f"{point.sku} loaded as {product!r}, not v{point.length}"
            )
        # Not public API: shown when the store offers it, to confirm the rule above.
        store: Any = uow.event_log
        latest = getattr(store, "latest_snapshot", None)
        if latest is not None:
            snapshot = await latest("product", point.sku)
            point.snapshot_version = 0 if snapshot is None else snapshot.version


async def _load(bus: MessageBus, sku: str) -> float:
    start = time.perf_counter()
    async with bus.uow_factory() as uow:
        await uow.products.get(sku)
    return time.perf_counter() - start


def _settings(url: str, every: int) -> config.Settings:
    return config.Settings(database_url=url, snapshot_every=every, catch_up_interval=0)


async def _main(plan: list[tuple[str, int, int]], rounds: int) -> list[Point]:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        engine = database.create_engine(url)
        try:
            await migrations.upgrade(engine)
        finally:
            await engine.dispose()
        async with contextlib.AsyncExitStack() as stack:
            buses: dict[int, MessageBus] = {}
            points = [
                Point(shape, every, length, f"SKU-{shape}-{every}-{length}")
                for shape, every, length in plan
            ]
            for point in points:
                if point.every not in buses:
                    buses[point.every] = await stack.enter_async_context(
                        bootstrap(
                            settings=_settings(url, point.every),
                            notifications=FakeNotifications(),
                            console=FakeConsole(),
                            catch_up=False,
                        )
                    )
                began = time.perf_counter()
                await _build(buses[point.every], point)
                await _check(buses[point.every], point)
                print(
                    f"  built {point.sku}: {point.length} events"
                    f" in {time.perf_counter() - began:.1f} s",
                    flush=True,
                )
            for point in points:  # warm-up: statement caches, first decodes
                await _load(buses[point.every], point.sku)
            for number in range(rounds):
                for point in points if number % 2 == 0 else points[::-1]:
                    point.loads.append(await _load(buses[point.every], point.sku))
    return points


def _fit(points: list[Point], x: str) -> str:
    xs = [float(getattr(point, x)) for point in points]
    ys = [point.median_ms() for point in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    r_squared = statistics.correlation(xs, ys) ** 2
    return f"{intercept:.2f} ms + {slope * 1e3:.2f} µs x {x} (R² {r_squared:.3f})"


def _report(points: list[Point]) -> None:
    baseline = points[0].median_ms()
    print(
        f"{'shape':<12} {'K':>5} {'stream':>7} {'since snap':>10} {'snap at':>8}"
        f" {'load ms':>8} {'spread ms':>15} {'µs/event':>9}"
    )
    for point in points:
        since = point.since_snapshot
        per_event = (
            f"{(point.median_ms() - baseline) * 1e3 / since:9.1f}" if since > 1 else ""
        )
        snap_at = "?" if point.snapshot_version is None else point.snapshot_version
        print(
            f"{point.shape:<12} {point.every:>5} {point.length:>7} {since:>10}"
            f" {snap_at!s:>8} {point.median_ms():8.2f}"
            f" {min(point.loads) * 1e3:7.2f}..{max(point.loads) * 1e3:<7.2f}"
            f" {per_event:>9}"
        )
    for shape in dict.fromkeys(point.shape for point in points[1:]):
        mine = [point for point in points if point.shape == shape]
        print(f"{shape}: load = {_fit(mine, 'since_snapshot')}")
        print(f"{'':<{len(shape)}}  load = {_fit(mine, 'length')}")
    misplaced = [
        point.sku
        for point in points
        if point.snapshot_version is not None
        and point.snapshot_version != point.length - point.since_snapshot
    ]
    if misplaced:
        print(f"snapshots not where the rule puts them: {', '.join(misplaced)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rounds", type=int, default=None, help="loads per point")
    args = parser.parse_args()
    if "snapshot_every" not in {f.name for f in dataclasses.fields(config.Settings)}:
        sys.exit(
            "snapshot_load.py needs the event store: config.Settings has no"
            " snapshot_every (ALLOCATION_SNAPSHOT_EVERY) on this branch; nothing"
            " measured."
        )
    rounds: int = args.rounds or (8 if args.quick else 30)
    plan = _plan(args.quick)
    print(
        f"python {sys.version.split()[0]}, {len(plan)} products on one SQLite file,"
        f" {rounds} loads of each, alternating, medians over rounds"
    )
    start = time.perf_counter()
    points = anyio.run(_main, plan, rounds, backend="asyncio")
    _report(points)
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
