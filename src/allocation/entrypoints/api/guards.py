"""What every request passes before a route: HEAD answered as GET without a body,
bodies bounded in size, paths that are UTF-8.

One pure ASGI middleware rather than three, since it sits in front of every
request, ``GET /health`` included.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import anyio

from allocation.entrypoints.api import problems

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Command bodies are a few hundred bytes; this leaves room, and keeps a client
# from making the server hold a body of any size in memory.
MAX_BODY_BYTES = 1024 * 1024


class PayloadTooLarge(Exception):
    """Raised when a request's body grows past MAX_BODY_BYTES while it is read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"a request body may hold at most {limit} bytes")


class Guard:
    """The ASGI middleware that applies these rules before the app sees a request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The server decodes a path's %XX escapes with replacement characters.
        if "\ufffd" in scope["path"] and not _utf8_path(scope):
            await problems.response(
                "invalid-request",
                "the path is not UTF-8 once its %XX escapes are decoded",
                errors=["path: not UTF-8"],
            )(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _too_large(self.max_body_bytes)(scope, receive, send)
            return
        if declared is None:
            receive = _bounded(receive, self.max_body_bytes)
        if scope["method"] == "HEAD":
            await _as_get(self.app, scope, receive, send)
            return
        await self.app(scope, receive, send)


def too_large_response(error: PayloadTooLarge) -> Response:
    """The 413 problem for a body found too large while it was read."""
    return _too_large(error.limit)


def _too_large(limit: int) -> Response:
    return problems.response(
        "payload-too-large", f"a request body may hold at most {limit} bytes"
    )


def _utf8_path(scope: Scope) -> bool:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    try:
        urllib.parse.unquote_to_bytes(raw.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The HTTP server has checked it is digits; in process, the client has.
            return int(value) if value.isdigit() else None
    return None


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive``, raising PayloadTooLarge once the body passes ``limit`` bytes
    (a chunked body declares no length to check first)."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(limit)
        return message

    return bounded


async def _as_get(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the GET route and send its status and headers alone. A streamed answer
    (the event stream) is stopped after its first part instead of running on."""
    answered = False
    with anyio.CancelScope() as stop:

        async def headers_only(message: Message) -> None:
            nonlocal answered
            if message["type"] != "http.response.body":
                await send(message)
                return
            if answered:
                return
            answered = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                stop.cancel()

        await app({**scope, "method": "GET"}, receive, headers_only)
