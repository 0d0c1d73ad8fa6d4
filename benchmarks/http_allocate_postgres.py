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

HTTP: ``python -m allocation serve --no-access-log`` (one process, its stdout
discarded, ``ALLOCATION_DATABASE_POOL_SIZE=32``, uvicorn's defaults otherwise)
on the same database; the client runs in this process: 32 tasks sharing one
``httpx.AsyncClient`` whose pool keeps 32 connections alive (``--client-per-task``:
one client of one connection per task instead, which spares httpcore's scan of
its whole pool on every request). Each request must answer 201. Catch-up stays on
on both sides, as in production (a pass every 5 s, which finds nothing to do).
``--access-log`` keeps uvicorn's access log on (to the discarded stdout).

Printed: each side's throughput (median over blocks) and p50/p99 latency (over
every timed operation), the ratio HTTP/direct (the median of the per-block
ratios), and CPU per operation: this process's event-loop thread (the bus
directly, or the HTTP client), the server process, and PostgreSQL's backends on
the benchmark database. Everything shares this machine's cores, the client
included. ``--profile`` instead runs the server under pyinstrument for one
block of HTTP requests and prints where its time went.

The server is ``BENCH_POSTGRES`` (default: trust auth as postgres on
127.0.0.1:5432); the database (``BENCH_DATABASE`` or ``allocation_bench_<pid>``) is
dropped and created at the start and dropped at the end.

Run: .venv/bin/python benchmarks/http_allocate_postgres.py [--quick] [--profile]
     [--client-per-task] [--access-log]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import signal
import socket
import statistics
import subprocess
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

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from allocation.service_layer.messagebus import MessageBus

TARGET = 0.6
TASKS = 32
SKUS = 1000
STOCK = 10**9
_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """Seconds of CPU (user and system, every thread) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class _CpuMeter:
    """CPU per operation of the server process and of PostgreSQL's backends on
    the benchmark database (read from /proc: the server must be on this machine)."""

    def __init__(self, admin: Any, server_pid: int) -> None:
        self._admin = admin
        self.server_pid = server_pid

    async def backends(self) -> float:
        pids = await self._admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", DATABASE
        )
        total = 0.0
        for (pid,) in pids:
            with contextlib.suppress(OSError):  # a backend that just ended
                total += _process_cpu(pid)
        return total

    def measured(
        self,
        run: Callable[[int], Awaitable[None]],
        server: list[float],
        database: list[float],
    ) -> Callable[[int], Awaitable[None]]:
        """``run``, appending the server's and the backends' CPU per op of each call."""

        async def timed(n: int) -> None:
            server_before = _process_cpu(self.server_pid)
            database_before = await self.backends()
            await run(n)
            database.append((await self.backends() - database_before) / n)
            server.append((_process_cpu(self.server_pid) - server_before) / n)

        return timed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(
    url: str, port: int, *, access_log: bool, profile_to: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    """``allocation serve`` on ``url`` in a child process; SIGTERM at the end."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALLOCATION_", "SMTP_", "BROKER_"))
    }
    env |= {"DATABASE_URL": url, "ALLOCATION_DATABASE_POOL_SIZE": str(TASKS)}
    serve = ["serve", "--port", str(port)]
    if not access_log:
        serve.append("--no-access-log")
    if profile_to is None:
        command = [sys.executable, "-m", "allocation", *serve]
    else:
        command = [
            *(sys.executable, "-m", "pyinstrument", "-i", "0.0005"),
            *("-r", "pyisession", "-o", str(profile_to), "-m", "allocation", *serve),
        ]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            if process.returncode != 0 or "Traceback" in text:
                print(f"the server failed ({process.returncode}):\n{text[-3000:]}")


async def _until_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError("allocation serve exited before answering")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return
            await anyio.sleep(0.1)
    raise RuntimeError("allocation serve did not answer within 60 s")


@contextlib.asynccontextmanager
async def _clients(base_url: str, per_task: bool) -> AsyncIterator[list[Any]]:
    """One client with a keep-alive pool of TASKS connections, or TASKS clients of
    one connection each."""
    count, size = (TASKS, 1) if per_task else (1, TASKS)
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


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _variants(
    bus: MessageBus, clients: list[Any], latencies: dict[str, list[float]]
) -> tuple[Variant, Variant]:
    orders = itertools.count()
    direct_skus, http_skus = random.Random(1), random.Random(2)
    idle = list(clients)

    async def allocate_directly() -> None:
        sku = f"sku-{direct_skus.randrange(SKUS)}"
        started = time.perf_counter()
        batchref = await services.allocate(bus, f"direct-{next(orders)}", sku, 1)
        latencies["direct"].append(time.perf_counter() - started)
        assert batchref is not None

    async def allocate_over_http() -> None:
        body = {
            "orderid": f"http-{next(orders)}",
            "sku": f"sku-{http_skus.randrange(SKUS)}",
            "qty": 1,
        }
        # One shared client, or a client of this task's own while it waits.
        client = idle.pop() if len(clients) > 1 else clients[0]
        started = time.perf_counter()
        try:
            response = await client.post("/allocations", json=body)
        finally:
            if len(clients) > 1:
                idle.append(client)
        latencies["http"].append(time.perf_counter() - started)
        if response.status_code != 201:
            raise AssertionError(f"{response.status_code}: {response.text}")

    async def direct(n: int) -> None:
        await spread(n, TASKS, allocate_directly)

    async def over_http(n: int) -> None:
        await spread(n, TASKS, allocate_over_http)

    return Variant("direct: services.allocate", direct), Variant(
        "HTTP: POST /allocations", over_http
    )


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
            settings=settings,
            notifications=FakeNotifications(),
            console=FakeConsole(),
        ) as bus:
            await _add_batches(bus)
            port = _free_port()
            base_url = f"http://127.0.0.1:{port}"
            with _server(
                url, port, access_log=args.access_log, profile_to=profile_to
            ) as process:
                await _until_ready(base_url, process)
                async with _clients(base_url, args.client_per_task) as clients:
                    await _measure(args, bus, clients, _CpuMeter(admin, process.pid))
    finally:
        await admin.close()
        await drop_database()
    if profile_to is not None:
        _print_profile(profile_to)


async def _measure(
    args: argparse.Namespace, bus: MessageBus, clients: list[Any], meter: _CpuMeter
) -> None:
    latencies: dict[str, list[float]] = {"direct": [], "http": []}
    direct, http = _variants(bus, clients, latencies)
    if args.profile:
        await http.run(max(1, args.ops // 4))
        await http.run(args.ops * args.blocks)
        return
    server_cpu: list[float] = []
    database_cpu: dict[str, list[float]] = {"direct": [], "http": []}
    unused: list[float] = []
    direct.run = meter.measured(direct.run, unused, database_cpu["direct"])
    http.run = meter.measured(http.run, server_cpu, database_cpu["http"])
    await interleave([direct, http], args.blocks, args.ops)
    warm_up = max(1, args.ops // 4)
    for side in latencies.values():
        del side[:warm_up]
    report([direct, http])
    achieved = ratio(direct, http)
    verdict = "meets" if achieved >= TARGET else "misses"
    print(f"HTTP/direct throughput {achieved:.3f} ({verdict} the >= {TARGET} target)")
    for name, variant in (("direct", direct), ("http", http)):
        samples = latencies[name]
        print(
            f"  {name:<6} {1e6 / variant.median_us():6.0f} requests/s,"
            f" latency p50 {_percentile(samples, 0.5) * 1e3:6.1f} ms,"
            f" p99 {_percentile(samples, 0.99) * 1e3:6.1f} ms"
        )
    median_us = {name: statistics.median(v) * 1e6 for name, v in database_cpu.items()}
    loop = {v.name: statistics.median(v.loop_cpu_per_op) * 1e6 for v in (direct, http)}
    server = statistics.median(server_cpu) * 1e6
    print(
        "CPU per operation (µs): direct: bus"
        f" {loop[direct.name]:.0f} + PostgreSQL {median_us['direct']:.0f};"
        f" HTTP: client {loop[http.name]:.0f} + server {server:.0f}"
        f" + PostgreSQL {median_us['http']:.0f}; server/direct bus"
        f" {server / loop[direct.name]:.2f}"
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
        "--client-per-task",
        action="store_true",
        help="a client of one connection per task instead of one pool of 32",
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
        f" x {args.ops} allocations per side at concurrency {TASKS}, {SKUS} skus;"
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
