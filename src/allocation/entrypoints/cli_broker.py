"""The broker commands of ``allocation``: the command stream's dead letters and its
consumer group, on the Redis at ``BROKER_URL``."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from allocation import config
from allocation.adapters.broker_admin import CommandStreamAdmin
from allocation.domain.exceptions import shorten
from allocation.domain.values import printable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_ENTRY_ID = re.compile(r"[0-9]+-[0-9]+")


_MAX_ID_PART = 2**64 - 1  # Redis: milliseconds-sequence, each a 64-bit number


def _entry_id(raw: str) -> str:
    if not _ENTRY_ID.fullmatch(raw) or any(
        int(part) > _MAX_ID_PART for part in raw.split("-")
    ):
        raise argparse.ArgumentTypeError(
            f"invalid entry id {shorten(raw)}: expected one as "
            "`broker dead-letters list` shows it, e.g. 1700000000000-0"
        )
    return raw


def add_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the broker subcommands to the ``allocation`` parser."""
    broker = commands.add_parser(
        "broker", help="the command stream on the broker (needs BROKER_URL)"
    )
    actions = broker.add_subparsers(dest="action", required=True)
    letters = actions.add_parser(
        "dead-letters", help="entries of the command stream the worker gave up on"
    )
    letters_actions = letters.add_subparsers(dest="letters_action", required=True)
    letters_actions.add_parser(
        "list", help="show them: id, original id, name, reason (tab separated)"
    )
    retry = letters_actions.add_parser(
        "retry", help="send one to the command stream again"
    )
    retry.add_argument("id", type=_entry_id, help="its id, as `list` shows it")
    discard = letters_actions.add_parser("discard", help="give up on one for good")
    discard.add_argument("id", type=_entry_id, help="its id, as `list` shows it")
    actions.add_parser(
        "pending",
        help="the consumer group's members: unacknowledged entries and idle time",
    )


async def _broker(args: argparse.Namespace) -> int:
    settings = config.Settings.from_environment()
    if not settings.broker_url:
        raise config.ConfigurationError(
            "BROKER_URL",
            "",
            "the Redis URL the worker uses, e.g. redis://127.0.0.1:6379/0",
            reason="BROKER_URL is not set: the broker commands need the Redis URL "
            "the worker uses, e.g. redis://127.0.0.1:6379/0",
        )
    admin = CommandStreamAdmin(
        settings.broker_url, settings.command_stream, settings.consumer_group
    )
    try:
        if args.action == "pending":
            return await _pending(admin)
        return await _DEAD_LETTER_ACTIONS[args.letters_action](admin, args)
    finally:
        await admin.aclose()


async def _list(admin: CommandStreamAdmin, args: argparse.Namespace) -> int:
    shown = 0
    async for letter in admin.dead_letters():
        # Fields come from other services: escaped, they can neither add a column
        # nor a line, nor steer the terminal.
        print(
            f"{letter.entry_id}\t{printable(letter.original_id) or '-'}\t"
            f"{printable(letter.name) or '-'}\t{printable(letter.reason)}"
        )
        shown += 1
    print(f"{shown} dead letters in {printable(admin.dead_stream)}", file=sys.stderr)
    return 0


async def _retry(admin: CommandStreamAdmin, args: argparse.Namespace) -> int:
    new_id = await admin.retry(args.id)
    print(f"dead letter {args.id} sent to {printable(admin.stream)} again as {new_id}")
    return 0


async def _discard(admin: CommandStreamAdmin, args: argparse.Namespace) -> int:
    await admin.discard(args.id)
    print(f"dead letter {args.id} discarded")
    return 0


async def _pending(admin: CommandStreamAdmin) -> int:
    where = f"group {printable(admin.group)} of {printable(admin.stream)}"
    members = await admin.members()
    if members is None:
        print(f"no {where} yet: no worker has read it", file=sys.stderr)
        return 0
    for member in members:
        print(
            f"{printable(member.name)}\t{member.pending} pending\t"
            f"idle {member.idle_ms / 1000:.1f}s"
        )
    total = sum(member.pending for member in members)
    print(
        f"{total} entries pending, {len(members)} consumers in {where}",
        file=sys.stderr,
    )
    return 0


_DEAD_LETTER_ACTIONS: dict[
    str, Callable[[CommandStreamAdmin, argparse.Namespace], Awaitable[int]]
] = {"list": _list, "retry": _retry, "discard": _discard}

ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "broker": _broker,
}
