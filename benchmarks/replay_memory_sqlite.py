"""Peak memory of a replay on a SQLite file, at growing log sizes: it must stay flat.

One file grows to each size in turn (25,000, 50,000, then 100,000 Allocated events,
appended in chunks of 10,000 as in ``event_log_sqlite.py``). At each size a fresh
Python process opens a bus on the file and replays ``allocations_view`` twice:

1. untraced: how far its resident set peaks above where it stood before the replay,
   and its speed in events/s. On Linux the high-water mark is reset first (writing 5
   to /proc/self/clear_refs), since start-up (the schema check loads alembic) peaks
   higher than a replay does; elsewhere it is the growth of ``ru_maxrss``. This first
   replay also pays one-off costs (SQLAlchemy compiling and caching its statements),
   the same at every size;
2. under ``tracemalloc``: the peak of Python allocations made during the replay and
   still alive at that moment, over what was allocated before it.

Last, it times an idle catch-up pass (nothing to deliver; a first pass settles the
subscribers met for the first time): what the background loop costs every
``catch_up_interval`` seconds when there is no work, at that log size.

Replay reads the log in batches (1,000 events by default) and commits the projection
once per batch, so both figures should not depend on the log's length.

Run: .venv/bin/python benchmarks/replay_memory_sqlite.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import anyio
from event_log_sqlite import PROJECTION, append_allocated, open_bus
from register_user_sqlite import migrate

from allocation.service_layer import catchup

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """What one fresh process measured on a log of ``events`` events."""

    events: int
    rate: float
    rss_before: int
    rss_growth: int
    traced_peak: int
    idle_pass: float
    rss_reset: bool


def _status_kib(field: str) -> int:
    found = re.search(
        rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE
    )
    if found is None:
        raise LookupError(field)
    return int(found.group(1)) * 1024


def _start_rss_watch() -> tuple[int, bool]:
    """The resident set now, and whether its high-water mark could be reset to it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS"), True
    except OSError:
        return _max_rss(), False


def _max_rss() -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    unit = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


def _rss_peak(reset: bool) -> int:
    return _status_kib("VmHWM") if reset else _max_rss()


async def _measure(url: str, events_count: int) -> Measurement:
    async with open_bus(url) as bus:
        rss_before, reset = _start_rss_watch()
        start = time.perf_counter()
        applied = await catchup.replay(bus, PROJECTION)
        took = time.perf_counter() - start
        rss_growth = _rss_peak(reset) - rss_before
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            again = await catchup.replay(bus, PROJECTION)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await catchup.catch_up(bus)
        start = time.perf_counter()
        await catchup.catch_up(bus)
        idle_pass = time.perf_counter() - start
    if applied != events_count or again != events_count:
        raise RuntimeError(f"replayed {applied} and {again} of {events_count} events")
    return Measurement(
        events=events_count,
        rate=applied / took,
        rss_before=rss_before,
        rss_growth=rss_growth,
        traced_peak=peak - before,
        idle_pass=idle_pass,
        rss_reset=reset,
    )


def _child(url: str, events_count: int) -> None:
    measurement = anyio.run(_measure, url, events_count, backend="asyncio")
    print(json.dumps(dataclasses.asdict(measurement)))


async def _grow(url: str, have: int, want: int) -> None:
    async with open_bus(url) as bus:
        await append_allocated(bus, have, want)


def _measure_in_fresh_process(url: str, events_count: int) -> Measurement:
    finished = subprocess.run(
        [sys.executable, __file__, "--child", url, str(events_count)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Measurement(**json.loads(finished.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="log sizes, ascending"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    sizes: list[int] = args.sizes or (
        [5_000, 10_000, 20_000] if args.quick else [25_000, 50_000, 100_000]
    )
    print(f"python {sys.version.split()[0]}, replay of allocations_view at {sizes}")
    start = time.perf_counter()
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        anyio.run(migrate, url, backend="asyncio")
        have = 0
        for size in sizes:
            began = time.perf_counter()
            anyio.run(_grow, url, have, size, backend="asyncio")
            grown = time.perf_counter() - began
            have = size
            result = _measure_in_fresh_process(url, size)
            results.append(result)
            print(
                f"{size:>8} events: tracemalloc peak {result.traced_peak / MIB:6.2f} MiB,"
                f" peak RSS growth {result.rss_growth / MIB:6.2f} MiB"
                f" (from {result.rss_before / MIB:.0f} MiB"
                f"{'' if result.rss_reset else ', ru_maxrss'}),"
                f" replay {result.rate:6.0f} events/s"
                f"; idle catch-up pass {result.idle_pass * 1e3:5.1f} ms"
                f"  [log grown in {grown:.1f} s]"
            )
    first, last = results[0], results[-1]
    print(
        f"x{last.events / first.events:.0f} the events:"
        f" tracemalloc peak x{last.traced_peak / first.traced_peak:.2f},"
        f" RSS growth {first.rss_growth / MIB:.2f} -> {last.rss_growth / MIB:.2f} MiB"
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
