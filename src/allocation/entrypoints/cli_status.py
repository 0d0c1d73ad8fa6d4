"""The ``allocation status`` command: how far each subscriber and the relay have got."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain.values import printable
from allocation.service_layer.status import status

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

    from allocation.service_layer.status import Status


def add_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the status subcommand to the ``allocation`` parser."""
    parser = commands.add_parser(
        "status",
        help="each subscriber's checkpoint, lag and dead letters, and the relay's "
        "position per destination",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")


async def _status(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    destinations = [settings.broker_stream] if settings.broker_url else []
    async with bootstrap(settings=settings, read_only=True) as bus:
        figures = await status(bus, destinations=destinations)
    if args.json:
        print(json.dumps(figures.as_json(), ensure_ascii=False))
    else:
        print("\n".join(_table(figures)))
    return 0


def _table(figures: Status) -> list[str]:
    rows = [("SUBSCRIBER", "KIND", "CHECKPOINT", "LAG", "DEAD LETTERS")]
    rows += [
        (
            subscriber.name,
            "projection" if subscriber.projection else "handler",
            _position(subscriber.checkpoint),
            str(subscriber.lag),
            str(subscriber.dead_letters),
        )
        for subscriber in figures.subscribers
    ]
    lines = [f"log head: {figures.head}", *_aligned(rows)]
    if figures.relays:
        relays = [("RELAY TO", "POSITION", "LAG")]
        relays += [
            (
                printable(relayed.destination),
                _position(relayed.position),
                str(relayed.lag),
            )
            for relayed in figures.relays
        ]
        lines += ["", *_aligned(relays)]
    return lines


def _position(position: int | None) -> str:
    # None: catch-up (or the relay) has not started on it yet.
    return "-" if position is None else str(position)


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]


ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "status": _status,
}
