"""POST /allocations through a real ``allocation serve`` on PostgreSQL at concurrency
32, against the same commands called directly through the service layer, in
alternating blocks of one run.

Set-up: a freshly migrated ``allocation_bench_<pid>`` database; 1,000 skus, each
with one batch of 10^9 units in stock (``services.add_batch``). An operation
allocates one unit to a new orderid on a sku drawn at random (a seeded generator
per side), so the allocations spread over the products; both sides write to the
same database, so their streams grow alike. Each allocation is the command's
transaction (snapshot and stream read, stream lock, append) and the
``allocations_view`` projection's (its row and its exactly-once tracking row).

Direct: ``services.allocate`` on a bus from ``bootstrap`` in this process (a pool
of 32 connections, emails to fakes), 32 tasks sharing each block's operations.

HTTP: ``python -m allocation serve --no-access-log`` (one process, stdout
discarded, ``ALLOCATION_DATABASE_POOL_SIZE=32``, otherwise as a user starts it:
httptools, asyncio's event loop) on the same database. The client runs in this
process, 32 tasks, each request expected to answer 201; ``--client`` picks it:

- ``raw`` (the default): 32 keep-alive connections on asyncio streams
  (``benchmarks/_raw_http.py``), one per task while it waits; a request is one
  write of bytes built for it (request line, Host, Content-Type, Content-Length,
  the JSON body), its answer read as status line, headers and Content-Length body.
  It costs the client's thread little per request, so the ratio measures the HTTP
  layer (uvicorn, FastAPI, the route, the loopback socket) against the bus alone,
  which is what the target is about.
- ``httpx``: one ``httpx.AsyncClient`` whose pool keeps 32 connections alive: what
  a Python caller of the API typically pays, client included (httpcore scans its
  whole pool on every request).
- ``httpx-per-task``: 32 ``httpx.AsyncClient`` of one connection each, which spares
  that scan but still pays httpx's per-request work.

``--access-log`` keeps uvicorn's access log on. Catch-up stays on on both sides, as
in production (a pass every 5 s that finds nothing).

HTTP floor: ``GET /health`` on the same server and clients, which runs no
command: what the server, its framework and the client cost by themselves.

Printed: each variant's throughput (median over blocks) and p50/p99 latency (over
every timed operation), the ratio HTTP/direct (the median of the per-block
ratios), and CPU per operation: this process's event-loop thread (the bus, or
the HTTP client), the server process, and PostgreSQL's backends on the benchmark
database. Everything shares this machine's cores, the client included, so what
the client costs is taken from the server's and PostgreSQL's share.
``--profile`` instead runs the server under pyinstrument for the HTTP requests of
a run and prints where its time went.

The server is ``BENCH_POSTGRES`` (default: trust auth as postgres on
127.0.0.1:5432); the database (``BENCH_DATABASE`` or ``allocation_bench_<pid>``) is
dropped and created at the start and dropped at the end.

Run: .venv/bin/python benchmarks/http_allocate_postgres.py [--quick] [--profile]
     [--client {raw,httpx,httpx-per-task}] [--access-log]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import httpx
import uvicorn
from _harness import Variant, interleave, ratio, report
from _postgres import DATABASE, SERVER, drop_database, fresh_database, spread
from _raw_http import RawConnection
from _serve import CpuMeter, serving

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from allocation.service_layer.messagebus import MessageBus

TARGET = 0.6
TASKS = 32
SKUS = 1000
STOCK = 10**9


@dataclasses.dataclass
class _Side:
    """A variant and what is measured of it beside its time."""

    variant: Variant
    latencies: list[float] = dataclasses.field(default_factory=list)
    server_cpu: list[float] = dataclasses.field(default_factory=list)
    database_cpu: list[float] = dataclasses.field(default_factory=list)

    def median_us(self, samples: list[float]) -> float:
        return statistics.median(samples) * 1e6 if samples else 0.0


CLIENTS = ("raw", "httpx", "httpx-per-task")


@contextlib.asynccontextmanager
async def _clients(base_url: str, kind: str) -> AsyncIterator[list[Any]]:
    """TASKS raw connections, one httpx client with a keep-alive pool of TASKS
    connections, or TASKS httpx clients of one connection each."""
    if kind == "raw":
        url = httpx.URL(base_url)
        connections = [RawConnection(url.host, url.port or 80) for _ in range(TASKS)]
        try:
            yield connections
        finally:
            for connection in connections:
                await connection.close()
        return
    count, size = (TASKS, 1) if kind == "httpx-per-task" else (1, TASKS)
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) ends
    # them: a connection it closes just as a request goes out fails that request.
    limits = httpx.Limits(
        max_connections=size, max_keepalive_connections=size, keepalive_expiry=2.0
    )
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60)
            )
            for _ in range(count)
        ]


async def _send(client: Any, method: str, path: str, body: Any) -> tuple[int, bytes]:
    if isinstance(client, RawConnection):
        return await client.request(method, path, body)
    response = await client.request(method, path, json=body)
    return response.status_code, response.content


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _timed(
    op: Callable[[], Awaitable[None]], latencies: list[float]
) -> Callable[[int], Awaitable[None]]:
    """``n`` calls of ``op`` over TASKS tasks, each call's latency recorded."""

    async def one() -> None:
        started = time.perf_counter()
        await op()
        latencies.append(time.perf_counter() - started)

    async def run(n: int) -> None:
        await spread(n, TASKS, one)

    return run


def _sides(bus: MessageBus, clients: list[Any]) -> tuple[_Side, _Side, _Side]:
    orders = itertools.count()
    direct_skus, http_skus = random.Random(1), random.Random(2)
    idle = list(clients)

    async def allocate_directly() -> None:
        sku = f"sku-{direct_skus.randrange(SKUS)}"
        batchref = await services.allocate(bus, f"direct-{next(orders)}", sku, 1)
        assert batchref is not None

    async def request(method: str, path: str, expected: int, body: Any = None) -> None:
        # One shared client, or a client (connection) of this task's own while it
        # waits.
        client = idle.pop() if len(clients) > 1 else clients[0]
        try:
            status, content = await _send(client, method, path, body)
        finally:
            if len(clients) > 1:
                idle.append(client)
        if status != expected:
            raise AssertionError(f"{status}: {content.decode(errors='replace')}")

    async def allocate_over_http() -> None:
        body = {
            "orderid": f"http-{next(orders)}",
            "sku": f"sku-{http_skus.randrange(SKUS)}",
            "qty": 1,
        }
        await request("POST", "/allocations", 201, body)

    async def health() -> None:
        await request("GET", "/health", 200)

    sides = []
    for name, op in (
        ("direct: services.allocate", allocate_directly),
        ("HTTP: POST /allocations", allocate_over_http),
        ("HTTP floor: GET /health", health),
    ):
        latencies: list[float] = []
        sides.append(_Side(Variant(name, _timed(op, latencies)), latencies))
    direct, http, floor = sides
    return direct, http, floor


async def _add_batches(bus: MessageBus) -> None:
    skus = iter(range(SKUS))

    async def add() -> None:
        i = next(skus)
        await services.add_batch(bus, f"batch-{i}", f"sku-{i}", STOCK)

    await spread(SKUS, TASKS, add)


async def _main(args: argparse.Namespace) -> None:
    url = await fresh_database()
    settings = config.Settings(database_url=url, database_pool_size=TASKS)
    profile_to = (
        Path(tempfile.mkdtemp()) / "server.pyisession" if args.profile else None
    )
    admin = await asyncpg.connect(f"postgresql://{SERVER}/postgres")
    try:
        async with bootstrap(
            settings=settings, notifications=FakeNotifications(), console=FakeConsole()
        ) as bus:
            await _add_batches(bus)
            async with (
                serving(
                    url,
                    pool_size=TASKS,
                    access_log=args.access_log,
                    profile_to=profile_to,
                ) as (process, base_url),
                _clients(base_url, args.client) as clients,
            ):
                meter = CpuMeter(admin, DATABASE, process.pid)
                await _measure(args, _sides(bus, clients), meter)
    finally:
        await admin.close()
        await drop_database()
    if profile_to is not None:
        _print_profile(profile_to)


async def _measure(
    args: argparse.Namespace, sides: tuple[_Side, _Side, _Side], meter: CpuMeter
) -> None:
    direct, http, floor = sides
    if args.profile:
        await http.variant.run(max(1, args.ops // 4))
        await http.variant.run(args.ops * args.blocks)
        return
    for side in sides:
        side.variant.run = meter.measured(
            side.variant.run, side.server_cpu, side.database_cpu
        )
    variants = [side.variant for side in sides]
    await interleave(variants, args.blocks, args.ops)
    report(variants)
    achieved = ratio(direct.variant, http.variant)
    verdict = "meets" if achieved >= TARGET else "misses"
    print(f"HTTP/direct throughput {achieved:.3f} ({verdict} the >= {TARGET} target)")
    warm_up = max(1, args.ops // 4)
    for side in sides:
        samples = side.latencies[warm_up:]
        print(
            f"  {side.variant.name:<26} {1e6 / side.variant.median_us():6.0f}"
            f" requests/s, latency p50 {_percentile(samples, 0.5) * 1e3:6.1f} ms,"
            f" p99 {_percentile(samples, 0.99) * 1e3:6.1f} ms"
        )
    print("CPU per operation, medians over blocks (µs):")
    bus = direct.median_us(direct.variant.loop_cpu_per_op)
    print(
        f"  direct: bus {bus:.0f} + PostgreSQL {direct.median_us(direct.database_cpu):.0f}"
    )
    for side in (http, floor):
        server = side.median_us(side.server_cpu)
        print(
            f"  {side.variant.name}: client"
            f" {side.median_us(side.variant.loop_cpu_per_op):.0f} + server"
            f" {server:.0f} + PostgreSQL {side.median_us(side.database_cpu):.0f}"
            f" (server / direct bus {server / bus:.2f})"
        )


def _print_profile(path: Path) -> None:
    from pyinstrument.renderers import ConsoleRenderer  # the dev extra
    from pyinstrument.session import Session

    session = Session.load(str(path))
    print(ConsoleRenderer(unicode=True, color=False).render(session))
    print(f"the session is kept in {path} (pyinstrument --load {path} --show-all)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--blocks", type=int, default=None, help="timed blocks")
    parser.add_argument("--ops", type=int, default=None, help="operations per block")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="the HTTP client: raw asyncio streams (default), one httpx client with"
        " a pool of 32, or 32 httpx clients of one connection (see the docstring)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="keep uvicorn's access log on"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the server with pyinstrument (dev extra) instead of timing",
    )
    args = parser.parse_args()
    args.blocks = args.blocks or (4 if args.quick else 8)
    args.ops = args.ops or (400 if args.quick else 1000)
    print(
        f"python {sys.version.split()[0]}, uvicorn {uvicorn.__version__}, httpx"
        f" {httpx.__version__}, asyncpg {asyncpg.__version__}; {args.blocks} blocks"
        f" x {args.ops} operations per variant at concurrency {TASKS}, {SKUS} skus,"
        f" client {args.client};"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    start = time.perf_counter()
    anyio.run(_main, args, backend="asyncio")
    print(
        f"took {time.perf_counter() - start:.1f} s, load average now"
        f" {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
