"""``allocation history``: an aggregate's events, and its state after each, from the log.

The state is the domain's own fold of the events (the apply steps the aggregate
uses itself), so what is printed is what a load of that version returns.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from allocation.bootstrap import bootstrap
from allocation.domain import model, users
from allocation.domain.exceptions import AllocationError, shorten
from allocation.entrypoints import cli_args

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from allocation.domain.aggregate import Aggregate

AGGREGATES: dict[str, type[model.Product | users.User]] = {
    "product": model.Product,
    "user": users.User,
}


class UnknownAggregate(AllocationError):
    """Raised when ``allocation history`` names an aggregate the log has no event of."""

    def __init__(self, kind: str, aggregate_id: str, version: int | None) -> None:
        self.kind = kind
        self.aggregate_id = aggregate_id
        self.version = version
        super().__init__(f"the log holds no {kind} {shorten(aggregate_id)}")


class VersionBeforeTheLog(AllocationError):
    """Raised when ``allocation history --at-version`` asks for a version that
    predates the log: the stream starts with a baseline standing for it."""

    def __init__(self, kind: str, aggregate_id: str, version: int, first: int) -> None:
        self.kind = kind
        self.aggregate_id = aggregate_id
        self.version = version
        self.first = first
        super().__init__(
            f"{kind} {shorten(aggregate_id)} starts the log at version {first}, the"
            f" state its earlier events led to: version {version} predates the log"
        )


def add_parsers(subcommands: argparse._SubParsersAction[Any]) -> None:
    """Add the ``history`` subcommand to the ``allocation`` parser."""
    history = subcommands.add_parser(
        "history",
        help="print an aggregate's events and its state after each, from the log",
    )
    history.add_argument(
        "kind", choices=sorted(AGGREGATES), help="the aggregate's type"
    )
    history.add_argument(
        "aggregate_id",
        metavar="ID",
        help="the product's sku, or the user's id",
    )
    history.add_argument(
        "--at-version",
        type=cli_args.whole_number("version", minimum=1, maximum=2**31 - 1),
        metavar="N",
        help="stop after the aggregate's N-th event: its state as it was then",
    )
    history.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per event: the event and the state after it",
    )


async def _history(args: argparse.Namespace) -> int:
    kind = AGGREGATES[args.kind]
    async with (
        bootstrap(read_only=True) as bus,
        bus.uow_factory() as uow,
    ):
        logged = await uow.event_log.read_stream(
            kind.AGGREGATE_TYPE, args.aggregate_id, up_to_version=args.at_version
        )
        if not logged and args.at_version is not None:
            later = await uow.event_log.read_stream(
                kind.AGGREGATE_TYPE, args.aggregate_id, after_version=args.at_version
            )
            if later:
                first = later[0].aggregate_version
                raise VersionBeforeTheLog(
                    args.kind, args.aggregate_id, args.at_version, first
                )
    if not logged:
        raise UnknownAggregate(args.kind, args.aggregate_id, args.at_version)
    state: Aggregate = kind.blank(args.aggregate_id)
    for entry in logged:
        state = kind.replayed(args.aggregate_id, [entry.event], start=state)  # type: ignore[arg-type]  # the class's own instance
        after = state.snapshot_state()
        if args.json:
            print(
                json.dumps(
                    {
                        "version": entry.aggregate_version,
                        "position": entry.position,
                        "occurred_at": entry.occurred_at.isoformat(),
                        "name": entry.event.TYPE,
                        "payload": entry.event.to_payload(),
                        "state": after,
                    },
                    ensure_ascii=False,
                )
            )
            continue
        payload = json.dumps(entry.event.to_payload(), ensure_ascii=False)
        print(
            f"v{entry.aggregate_version}\t"
            f"{entry.occurred_at.isoformat(timespec='seconds')}\t"
            f"{entry.event.TYPE}\t{payload}"
        )
        print(f"\tstate: {json.dumps(after, ensure_ascii=False, sort_keys=True)}")
    last = logged[-1].aggregate_version
    if args.at_version is not None and last < args.at_version:
        print(
            f"{args.kind} {shorten(args.aggregate_id)} has {last} events:"
            f" version {args.at_version} is not reached yet",
            file=sys.stderr,
        )
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "history": _history,
}
