"""The event-log commands of ``allocation``: events, dead letters, replay, verify."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import anyio

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.domain.exceptions import shorten
from allocation.entrypoints import cli_args
from allocation.service_layer import catchup, rebuild
from allocation.service_layer.masking import mask_url
from allocation.service_layer.verify import verify
from allocation.testing import FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from allocation.service_layer.ports import LoggedEvent


def add_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the event-log subcommands to the ``allocation`` parser."""
    position = cli_args.whole_number(
        "position", minimum=0, maximum=cli_args.MAX_POSITION
    )
    events = commands.add_parser("events", help="the event log")
    events_actions = events.add_subparsers(dest="action", required=True)
    listing = events_actions.add_parser("list", help="show logged events, oldest first")
    listing.add_argument(
        "--after",
        type=position,
        default=0,
        metavar="N",
        help=f"after this position, from 0 to {cli_args.MAX_POSITION}",
    )
    listing.add_argument(
        "--name",
        type=cli_args.event_name,
        # The type explains a wrong name; the choices feed shell completion.
        choices=cli_args.event_names(),
        metavar="NAME",
        help="only events of this name, snake_case: "
        + ", ".join(cli_args.event_names()),
    )
    listing.add_argument(
        "--limit",
        type=cli_args.whole_number("limit", minimum=0, maximum=cli_args.MAX_POSITION),
        metavar="N",
        help=f"at most this many, from 0 to {cli_args.MAX_POSITION}",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object a line")

    letters = commands.add_parser("dead-letters", help="messages handlers gave up on")
    letters_actions = letters.add_subparsers(dest="action", required=True)
    letters_actions.add_parser("list", help="show the dead letters")
    dead_letter_id = cli_args.whole_number(
        "dead-letter id", minimum=1, maximum=cli_args.MAX_DEAD_LETTER_ID
    )
    id_help = f"a dead letter's id, as listed (1 to {cli_args.MAX_DEAD_LETTER_ID})"
    retry = letters_actions.add_parser("retry", help="deliver one again")
    retry.add_argument("id", type=dead_letter_id, metavar="ID", help=id_help)
    discard = letters_actions.add_parser("discard", help="give up on one for good")
    discard.add_argument("id", type=dead_letter_id, metavar="ID", help=id_help)

    replay = commands.add_parser(
        "replay",
        help="rebuild a read model from the log beside the live one, compare, swap",
    )
    replay.add_argument(
        "subscriber",
        metavar="SUBSCRIBER",
        help="the read model's name: allocations_view or users_view",
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="only report how the live read model differs from the rebuild",
    )

    commands.add_parser("verify", help="compare the folded log with the stored state")
    worker = commands.add_parser(
        "worker", help="run background work (catch-up) until SIGINT or SIGTERM"
    )
    worker.add_argument(
        "--interval",
        type=_interval,
        help="seconds between catch-up passes (default ALLOCATION_CATCH_UP_INTERVAL)",
    )
    commands.add_parser("catch-up", help="deliver what the log holds undelivered, once")


def _interval(raw: str) -> float:
    try:
        value = config.parse_seconds(raw)
    except ValueError:
        value = math.nan
    if not 0.001 <= value <= config.MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"invalid interval {shorten(raw)}: must be a number of seconds from "
            f"0.001 to {config.MAX_SECONDS}"
        )
    return value


async def _events(args: argparse.Namespace) -> int:
    shown = 0
    async with bootstrap(read_only=True) as bus:
        after = args.after
        while args.limit is None or shown < args.limit:
            want = 500 if args.limit is None else min(500, args.limit - shown)
            async with bus.uow_factory() as uow:
                names = None if args.name is None else [args.name]
                batch = await uow.event_log.read(after=after, names=names, limit=want)
            if not batch:
                break
            for logged in batch:
                print(_as_json(logged) if args.json else _as_line(logged))
            shown += len(batch)
            after = batch[-1].position
    if not args.json:
        print(_count(shown, "event"), file=sys.stderr)
    return 0


def _as_line(logged: LoggedEvent) -> str:
    payload = json.dumps(logged.event.to_payload(), ensure_ascii=False)
    return (
        f"{logged.position}\t{logged.occurred_at.isoformat(timespec='seconds')}\t"
        f"{logged.event.TYPE}\t{logged.aggregate_type}:{logged.aggregate_id}"
        f" v{logged.aggregate_version}\t{payload}"
    )


def event_document(logged: LoggedEvent) -> dict[str, Any]:
    """A logged event as JSON shows it (``events list --json``, the HTTP API)."""
    event = logged.event
    return {
        "position": logged.position,
        "message_id": event.message_id,
        "name": event.TYPE,
        "aggregate_type": logged.aggregate_type,
        "aggregate_id": logged.aggregate_id,
        "aggregate_version": logged.aggregate_version,
        "payload": event.to_payload(),
        "occurred_at": logged.occurred_at.isoformat(),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        # The payload above is in the current shape, older rows upcast.
        "schema_version": event.SCHEMA_VERSION,
        # The W3C traceparent it was written under, when traces were on.
        "trace_context": logged.trace_context,
    }


def _as_json(logged: LoggedEvent) -> str:
    return json.dumps(event_document(logged), ensure_ascii=False)


async def _dead_letters(args: argparse.Namespace) -> int:
    async with bootstrap(catch_up=False, read_only=args.action == "list") as bus:
        if args.action == "list":
            async with bus.uow_factory() as uow:
                letters = await uow.event_log.dead_letters()
            for letter in letters:
                print(
                    f"{letter.id}\t{letter.subscriber}\t{letter.message_id}\t"
                    f"{letter.attempts} attempts, last "
                    f"{letter.last_tried.isoformat(timespec='seconds')}\t{letter.error}"
                )
            print(_count(len(letters), "dead letter"), file=sys.stderr)
            return 0
        if args.action == "retry":
            still = await catchup.retry_dead_letter(bus, args.id)
            if still is not None:
                print(f"dead letter {args.id} failed again: {still.error}")
                return 1
            print(f"dead letter {args.id} handled and removed")
            return 0
        letter = await catchup.discard_dead_letter(bus, args.id)
        print(
            f"dead letter {args.id} discarded: {letter.subscriber} will not handle "
            f"{letter.message_id}"
        )
        return 0


async def _replay(args: argparse.Namespace) -> int:
    with _progress("replay") as show:
        shown = None if show is None else functools.partial(show, args.subscriber)
        async with bootstrap(catch_up=False) as bus:
            replayed = await rebuild.replay(
                bus, args.subscriber, dry_run=args.dry_run, progress=shown
            )
    for line in replayed.differences:
        print(line)
    agreed = (
        "the live read model agreed"
        if not replayed.differences
        else ("the live read model differed (above)")
    )
    action = "nothing swapped (dry run)" if args.dry_run else "swapped in"
    print(
        f"replayed {args.subscriber}: {_count(replayed.applied, 'event')} applied;"
        f" {agreed}; {action}"
    )
    return 0


@contextlib.contextmanager
def _progress(verb: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """Progress bars on stderr when it is a terminal; None (no bars) otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    # rich is loaded only to draw on a terminal: output to a pipe or a file has no
    # bars, and those runs start without it.
    from allocation.entrypoints import cli_progress

    with cli_progress.bars(verb) as show:
        yield show


async def _verify(args: argparse.Namespace) -> int:
    async with bootstrap(read_only=True) as bus:
        problems = await verify(bus.uow_factory(), scratch=FakeUnitOfWork())
    for problem in problems:
        print(problem)
    if problems:
        print(f"verify: {_count(len(problems), 'difference')}", file=sys.stderr)
        return 1
    print("verify: the event log and the stored state agree")
    return 0


async def _worker(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    interval = (
        args.interval if args.interval is not None else settings.catch_up_interval
    )
    if interval <= 0:
        raise config.ConfigurationError(
            "ALLOCATION_CATCH_UP_INTERVAL",
            f"{interval:g}",
            "seconds > 0 for a worker (or --interval)",
        )
    settings = dataclasses.replace(settings, catch_up_interval=interval)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with bootstrap(settings=settings, relay=True):
            relaying = (
                f", relaying to {mask_url(settings.broker_url)}"
                if settings.broker_url
                else ""
            )
            print(
                f"worker {os.getpid()} running: catch-up every {interval:g}s"
                f"{relaying} (SIGINT or SIGTERM stops it)",
                file=sys.stderr,
                flush=True,
            )
            async for signum in signals:
                print(
                    f"worker {os.getpid()} stopping on {signal.Signals(signum).name}",
                    file=sys.stderr,
                    flush=True,
                )
                break
    return 0


async def _catch_up(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    with _progress("catch-up") as show:
        async with bootstrap(settings=settings, catch_up=False) as bus:
            delivered = await catchup.catch_up(
                bus, batch_size=settings.catch_up_batch, progress=show
            )
    print(f"catch-up delivered {_count(delivered, 'event')}")
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "events": _events,
    "dead-letters": _dead_letters,
    "replay": _replay,
    "verify": _verify,
    "catch-up": _catch_up,
    "worker": _worker,
}
