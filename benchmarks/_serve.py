"""Shared helpers for the HTTP benchmarks: a real ``allocation serve`` in a child
process, and the CPU that it and PostgreSQL's backends use (read from /proc, so
both must run on this machine)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.abc import Process

_TICK = os.sysconf("SC_CLK_TCK")
# The settings of the environment that would change what the server does.
_OURS = ("ALLOCATION_", "SMTP_", "BROKER_", "DATABASE_URL")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user and system, every thread) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(
    url: str, *, pool_size: int, access_log: bool, profile_to: Path | None = None
) -> AsyncIterator[tuple[Process, str]]:
    """``python -m allocation serve`` on database ``url``, answering; yields the
    process and its base URL, and stops it with SIGTERM (as a user would).

    ``profile_to``: run it under pyinstrument, which saves its session there.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env |= {"DATABASE_URL": url, "ALLOCATION_DATABASE_POOL_SIZE": str(pool_size)}
    serve = ["-m", "allocation", "serve", "--port", str(port)]
    if not access_log:
        serve.append("--no-access-log")
    if profile_to is not None:
        profiler = ["-m", "pyinstrument", "-i", "0.0005", "-r", "pyisession"]
        serve = [*profiler, "-o", str(profile_to), *serve]
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as errors:
        process = await anyio.open_process(
            [sys.executable, *serve], env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            await _until_ready(base_url, process)
            yield process, base_url
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            if process.returncode != 0 or "Traceback" in text:
                print(f"the server failed ({process.returncode}):\n{text[-3000:]}")


async def _until_ready(base_url: str, process: Process) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError("allocation serve exited before answering")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return
            await anyio.sleep(0.1)
    raise RuntimeError("allocation serve did not answer within 60 s")


async def _stop(process: Process) -> None:
    process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(60):
        await process.wait()
        return
    process.kill()
    await process.wait()


class CpuMeter:
    """CPU per operation of the server process and of PostgreSQL's backends on
    ``database`` (through ``admin``, an asyncpg connection to another database)."""

    def __init__(self, admin: Any, database: str, server_pid: int) -> None:
        self._admin = admin
        self._database = database
        self._server_pid = server_pid

    async def backends(self) -> float:
        pids = await self._admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._database
        )
        total = 0.0
        for (pid,) in pids:
            with contextlib.suppress(OSError):  # a backend that just ended
                total += process_cpu(pid)
        return total

    def measured(
        self,
        run: Callable[[int], Awaitable[None]],
        server: list[float],
        database: list[float],
    ) -> Callable[[int], Awaitable[None]]:
        """``run``, appending the server's and the backends' CPU per op of each call."""

        async def timed(n: int) -> None:
            server_before = process_cpu(self._server_pid)
            database_before = await self.backends()
            await run(n)
            database.append((await self.backends() - database_before) / n)
            server.append((process_cpu(self._server_pid) - server_before) / n)

        return timed
