"""A minimal HTTP/1.1 client for the HTTP benchmarks: keep-alive connections on
asyncio streams, each request one pre-encoded write, each response read by its
status line, its headers and a Content-Length body.

It is there so that a benchmark measures the server, not the client: httpx spends
1.1-1.9 ms of CPU per request on these cores (its pool, its models), about what
the server itself spends. This client does only what the benchmark's requests
need: no chunked bodies, no redirects, no TLS, no pipelining.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

# uvicorn closes a connection idle for 5 s (its keep-alive timeout); one closed just
# as a request goes out would fail that request, so an idle one is replaced first.
_IDLE_LIMIT = 2.0


class RawConnection:
    """One keep-alive connection to ``host:port``, opened on first use."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def request(
        self, method: str, path: str, json_body: Any = None
    ) -> tuple[int, bytes]:
        """Send one request; answer its status and body."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        if json_body is None:
            payload = (head + "\r\n").encode()
        else:
            body = json.dumps(json_body).encode()
            head += (
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            payload = head.encode() + body
        reader, writer = await self._connected()
        writer.write(payload)
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise AssertionError(f"{status} without Content-Length: {lines[1:]!r}")
        body_read = await reader.readexactly(length)
        if close:
            await self.close()
        else:
            self._last_used = time.monotonic()
        return status, body_read

    async def _connected(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if (
            self._writer is not None
            and time.monotonic() - self._last_used > _IDLE_LIMIT
        ):
            await self.close()
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port
            )
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the server may have reset it
                await writer.wait_closed()
