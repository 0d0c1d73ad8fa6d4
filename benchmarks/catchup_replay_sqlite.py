"""Catch-up and replay on a SQLite file (WAL): events/s and memory against log length.

Issue 9's figure: at least 50,000 events/s each, memory flat in log length. Only the
public surface is used, so the script runs unchanged on either persistence design:

- the log: ``services.add_batch`` for 100 skus (ample stock), then Allocated events
  recorded by ``Product.allocate`` in units of work from ``bus.uow_factory()``, 1,000
  per commit, round-robin over the skus, never dispatched by the bus: what a process
  that died after its commits leaves for catch-up. One file grows to each size in
  turn and is copied at each (copies are taken with no connection open);
- catch-up: the ``allocation catch-up`` command on a fresh copy of a size: it hands
  every undelivered event to its subscribers (the ``allocations_view`` projection
  is the only one of Allocated);
- replay: the ``allocation replay allocations_view`` command on that caught-up copy:
  it rebuilds the read model from the whole log;
- ids: each log as written (message ids are time-ordered UUIDs) and, beside it, the
  same log with every message id replaced by a random UUID4, as versions before
  time-ordered ids wrote them (the index of what each subscriber handled then takes
  its inserts at random pages). Both kinds are measured in the same run, in
  alternating order.

Each command runs in a fresh child process, in-process through
``allocation.entrypoints.cli.main`` (what the ``allocation`` command runs), so the
figures leave out interpreter start-up and imports: the child first runs the same
command twice on a copy of the log before any Allocated event (a warm-up, then a
timed run: the command's fixed cost, shown), then once on the measured copy. Rate =
events the command reports / its wall time. Memory: how far the child's resident set
peaks above where it stood before that command (on Linux the high-water mark is reset
first by writing 5 to /proc/self/clear_refs; elsewhere it is the growth of
ru_maxrss), and, in a separate child of each kind per size, the ``tracemalloc`` peak
of Python allocations during the command. Rates are medians over runs; runs visit the
sizes in alternating order.

Run: .venv/bin/python benchmarks/catchup_replay_sqlite.py [--quick] [--sizes N ...] [--runs R]
     [--ids ordered|random|both]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from allocation import config
from allocation.adapters import database, migrations
from allocation.bootstrap import bootstrap
from allocation.domain import model
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

PROJECTION = "allocations_view"
SKUS = 100
CHUNK = 1_000
TARGET = 50_000
MIB = 1024 * 1024
# The kinds of message ids a log is measured with (see the module's docstring).
IDS = {
    "ordered": "message ids as written (time-ordered)",
    "random": "message ids made random (as older versions wrote them)",
}
# What each command prints once done, and the events it counts.
COMMANDS = {
    "catch-up": (["catch-up"], re.compile(r"catch-up delivered ([\d,]+) event")),
    "replay": (["replay", PROJECTION], re.compile(r"replayed \S+: ([\d,]+) event")),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """What one child measured: one command on a log of ``size`` Allocated events."""

    command: str
    size: int
    events: int
    seconds: float
    fixed_seconds: float
    rss_growth: int
    traced_peak: int | None
    ids: str = "ordered"

    @property
    def rate(self) -> float:
        return self.events / self.seconds


# --- building the log (parent) ---------------------------------------------------


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _open_bus(path: Path) -> contextlib.AbstractAsyncContextManager[MessageBus]:
    """A bus that delivers nothing by itself (no catch-up at start, no loop)."""
    return bootstrap(
        settings=config.Settings(database_url=_url(path), catch_up_interval=0),
        notifications=FakeNotifications(),
        console=FakeConsole(),
        catch_up=False,
    )


async def _seed(path: Path) -> None:
    """A migrated file holding the skus' batches and no Allocated event."""
    engine = database.create_engine(_url(path))
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    async with _open_bus(path) as bus:
        for i in range(SKUS):
            await services.add_batch(bus, f"SKU-{i:03d}-batch", f"SKU-{i:03d}", 10**9)


async def _grow(path: Path, have: int, want: int) -> None:
    """Record Allocated events ``have`` to ``want - 1``, CHUNK per commit, undelivered."""
    async with _open_bus(path) as bus:
        for first in range(have, want, CHUNK):
            sku = f"SKU-{first // CHUNK % SKUS:03d}"
            async with bus.uow_factory() as uow:
                product = await uow.products.get(sku)
                if product is None:
                    raise LookupError(sku)
                for number in range(first, min(want, first + CHUNK)):
                    line = model.OrderLine(orderid=f"order-{number}", sku=sku, qty=1)
                    product.allocate(line)
                await uow.commit()


def _copy(source: Path, target: Path) -> Path:
    """Copy a SQLite file no connection holds open (with its WAL, if one is left)."""
    for suffix in ("", "-wal"):
        origin = source.with_name(source.name + suffix)
        if origin.exists():
            shutil.copyfile(origin, target.with_name(target.name + suffix))
    return target


def _with_random_ids(source: Path, target: Path) -> Path:
    """A copy of a log whose message ids are random UUID4s, as older versions made."""
    _copy(source, target)
    connection = sqlite3.connect(target)
    try:
        connection.create_function("random_id", 0, lambda: str(uuid.uuid4()))
        with connection:
            connection.execute("UPDATE event_log SET message_id = random_id()")
        connection.execute("VACUUM")  # laid out as a log written that way would be
    finally:
        connection.close()
    return target


# --- one command in a child process ------------------------------------------------


def _status_bytes(field: str) -> int:
    found = re.search(
        rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE
    )
    if found is None:
        raise LookupError(field)
    return int(found.group(1)) * 1024


def _max_rss() -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    unit = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


def _start_rss_watch() -> tuple[int, bool]:
    """The resident set now, and whether its high-water mark could be reset to it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS"), True
    except OSError:
        return _max_rss(), False


def _run_command(command: str, path: Path) -> tuple[int, float]:
    """Run the ``allocation`` command on ``path``; its event count and wall time."""
    from allocation.entrypoints import cli  # what the `allocation` command runs

    argv, done = COMMANDS[command]
    os.environ["DATABASE_URL"] = _url(path)  # the child's own environment
    # A text stream that says UTF-8, as the CLI wants of standard output.
    output = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    start = time.perf_counter()
    with contextlib.redirect_stdout(output):
        status = cli.main(argv)
    took = time.perf_counter() - start
    output.seek(0)
    printed = output.read()
    found = done.search(printed)
    if status != 0 or found is None:
        raise RuntimeError(f"{command} exited {status}: {printed!r}")
    return int(found.group(1).replace(",", "")), took


def _child(command: str, size: int, empty: Path, target: Path, traced: bool) -> None:
    _run_command(command, empty)  # warm-up: imports, the schema check's first load
    _, fixed = _run_command(command, empty)
    rss_before, reset = _start_rss_watch()
    traced_peak = None
    if traced:
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
    try:
        events, seconds = _run_command(command, target)
    finally:
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            traced_peak = peak - before
            tracemalloc.stop()
    peak_rss = _status_bytes("VmHWM") if reset else _max_rss()
    measurement = Measurement(
        command=command,
        size=size,
        events=events,
        seconds=seconds,
        fixed_seconds=fixed,
        rss_growth=peak_rss - rss_before,
        traced_peak=traced_peak,
    )
    print(json.dumps(dataclasses.asdict(measurement)))


class _Children:
    """Runs each measured command in a fresh child process."""

    def __init__(self, folder: Path, pristine: dict[tuple[int, str], Path]) -> None:
        self._folder = folder
        self._pristine = pristine
        self._scratch = folder / "scratch"
        self._scratch.mkdir()

    def measure(
        self, command: str, size: int, ids: str, target: Path, *, traced: bool = False
    ) -> Measurement:
        empty = _copy(self._pristine[0, ids], self._scratch / f"empty-{command}.db")
        argv = [sys.executable, __file__, "--child", command, str(size)]
        argv += [str(empty), str(target)] + (["--traced"] if traced else [])
        # UTF-8 output whatever the locale: the CLI insists on it.
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        finished = subprocess.run(
            argv, check=False, capture_output=True, text=True, env=env
        )
        if finished.returncode != 0:
            raise RuntimeError(f"{command} on {size}: {finished.stderr[-2000:]}")
        for leftover in self._scratch.iterdir():
            leftover.unlink()
        measured = Measurement(**json.loads(finished.stdout.splitlines()[-1]))
        return dataclasses.replace(measured, ids=ids)

    def fresh(self, size: int, ids: str) -> Path:
        """A copy of the log of ``size`` events, nothing delivered yet."""
        target = self._folder / f"work-{size}-{ids}.db"
        for leftover in self._folder.glob(f"{target.name}*"):
            leftover.unlink()
        return _copy(self._pristine[size, ids], target)


# --- the parent ----------------------------------------------------------------------


def _build(
    folder: Path, sizes: list[int], kinds: list[str]
) -> dict[tuple[int, str], Path]:
    seed = folder / "seed.db"
    anyio.run(_seed, seed, backend="asyncio")
    pristine: dict[tuple[int, str], Path] = {}
    have = 0
    for size in [0, *sizes]:
        began = time.perf_counter()
        anyio.run(_grow, seed, have, size, backend="asyncio")
        have = size
        written = _copy(seed, folder / f"pristine-{size}.db")
        for kind in kinds:
            pristine[size, kind] = (
                written
                if kind == "ordered"
                else _with_random_ids(written, folder / f"pristine-{size}-{kind}.db")
            )
        took = time.perf_counter() - began
        if size:
            print(f"  log grown to {size} Allocated events in {took:.1f} s", flush=True)
    return pristine


def _report(sizes: list[int], kinds: list[str], results: list[Measurement]) -> None:
    def of(command: str, size: int, ids: str, traced: bool) -> list[Measurement]:
        return [
            m
            for m in results
            if (m.command, m.size, m.ids) == (command, size, ids)
            and (m.traced_peak is not None) == traced
        ]

    for command in COMMANDS:
        for ids in kinds:
            print(f"{command}, {IDS[ids]}:")
            for size in sizes:
                timed, traced = (
                    of(command, size, ids, False),
                    of(command, size, ids, True),
                )
                rates = [m.rate for m in timed]
                rss = statistics.median(m.rss_growth for m in timed) / MIB
                peak = statistics.median(m.traced_peak or 0 for m in traced) / MIB
                fixed = statistics.median(m.fixed_seconds for m in timed) * 1e3
                print(
                    f"  {size:>8} events: {statistics.median(rates):7.0f} events/s"
                    f" (spread {min(rates):.0f}..{max(rates):.0f}; {timed[0].events}"
                    f" counted), peak RSS growth {rss:6.2f} MiB, tracemalloc peak"
                    f" {peak:6.2f} MiB; the command's fixed cost {fixed:.0f} ms"
                )
            first = of(command, sizes[0], ids, True)
            last = of(command, sizes[-1], ids, True)
            big = statistics.median(m.rate for m in of(command, sizes[-1], ids, False))
            verdict = "meets" if big >= TARGET else "misses"
            print(
                f"  x{sizes[-1] / sizes[0]:.0f} the log: tracemalloc peak"
                f" x{(last[0].traced_peak or 0) / max(1, first[0].traced_peak or 0):.2f};"
                f" at {sizes[-1]} events {big:.0f}/s {verdict} the {TARGET:,}/s target"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--sizes", type=int, nargs="+", help="log sizes, ascending")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per size")
    parser.add_argument(
        "--ids",
        choices=["ordered", "random", "both"],
        default="both",
        help="logs with message ids as written (ordered), made random, or both",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        command, size, empty, target = args.child
        _child(command, int(size), Path(empty), Path(target), args.traced)
        return
    sizes: list[int] = args.sizes or (
        [5_000, 10_000, 20_000] if args.quick else [25_000, 50_000, 100_000]
    )
    runs: int = args.runs or (1 if args.quick else 3)
    kinds = ["ordered", "random"] if args.ids == "both" else [args.ids]
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, logs of"
        f" {sizes} Allocated events over {SKUS} skus, {runs} timed runs of each"
        " command per size and kind of ids (alternating sizes and kinds), one traced"
        " run each; medians over runs"
    )
    start = time.perf_counter()
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as name:
        folder = Path(name)
        children = _Children(folder, _build(folder, sizes, kinds))
        for run in range(runs):
            for size in sizes if run % 2 == 0 else sizes[::-1]:
                for ids in kinds if run % 2 == 0 else kinds[::-1]:
                    target = children.fresh(size, ids)
                    results.extend(
                        children.measure(command, size, ids, target)
                        for command in COMMANDS
                    )
        for size in sizes:
            for ids in kinds:
                target = children.fresh(size, ids)
                results.extend(
                    children.measure(command, size, ids, target, traced=True)
                    for command in COMMANDS
                )
    _report(sizes, kinds, results)
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
