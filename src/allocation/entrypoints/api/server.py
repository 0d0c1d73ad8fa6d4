"""``allocation serve``: the API on uvicorn, in the foreground, until SIGINT or SIGTERM.

Before listening it checks what would otherwise fail inside uvicorn with a
traceback (the settings, the database and its schema, the address), so a user
mistake is one line. A signal stops it cleanly: no new connections, requests in
flight finish (event streams end), the bus closes, exit status 0.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn

from allocation import config
from allocation.adapters import database, migrations
from allocation.entrypoints.api.app import create_app

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger(__name__)

# Requests still running this long after a stop signal are cut off.
GRACEFUL_SHUTDOWN_SECONDS = 10


class CannotListen(Exception):
    """Raised when the address to serve on cannot be bound."""


class _Server(uvicorn.Server):
    """uvicorn, except that a stop signal ends the process with status 0 after a
    clean shutdown instead of being raised again (and killing it)."""

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        with self.capture_signals():
            await self._serve(sockets)
            self._captured_signals.clear()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket for ``host``:``port``, or CannotListen in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise CannotListen(f"cannot listen on {host}:{port}: {error}") from None
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def address_url(host: str, port: int) -> str:
    """The URL of ``host``:``port``, an IPv6 literal in brackets (RFC 3986)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(args: argparse.Namespace) -> int:
    """Run the API until a stop signal; the CLI's ``serve`` action."""
    settings = config.Settings.from_environment()
    engine = database.create_engine(settings.database_url, pool_size=1)
    try:
        await migrations.ensure_up_to_date(engine)
    finally:
        await engine.dispose()
    sock = listening_socket(args.host, args.port)
    server: _Server | None = None

    def stopping() -> bool:
        return server is not None and server.should_exit

    app = create_app(settings=settings, stopping=stopping)
    server = _Server(
        uvicorn.Config(
            app,
            log_level="debug" if args.verbose else "info",
            access_log=args.access_log,
            # A dependency: named, so that a missing install fails at start
            # instead of falling back to h11, which costs more CPU per request.
            http="httptools",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            server_header=False,
        )
    )
    where = address_url(args.host, args.port)
    print(
        f"allocation: serving {where} (OpenAPI at {where}/docs); Ctrl-C stops it",
        file=sys.stderr,
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1
