"""register_user through our bus on the fakes, beside the article's minimal bus.

The article's bus keeps handlers by event name and, for every event, opens a task
group and starts each handler as a task. Ours validates the user, runs the command in
a unit of work, collects the event after the commit and dispatches it to three real
handlers (welcome email, log line, coupon) eagerly. A third line dispatches a
ready-made UserRegistered through our bus, which isolates the bus from the command.

Run: .venv/bin/python benchmarks/bus_in_memory.py [--quick] [--profile]
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
from _harness import Variant, interleave, parse_args, profile, ratio, report

from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications, FakeUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from allocation.service_layer.messagebus import MessageBus


@dataclasses.dataclass(frozen=True, slots=True)
class ArticleEvent:
    name: str
    payload: dict[str, Any]


class ArticleBus:
    """The article's bus: handlers by event name, each event's handlers as tasks."""

    def __init__(self) -> None:
        self._handlers: dict[
            str, list[Callable[[ArticleEvent], Coroutine[Any, Any, None]]]
        ] = collections.defaultdict(list)

    def subscribe(
        self, name: str, handler: Callable[[ArticleEvent], Coroutine[Any, Any, None]]
    ) -> None:
        self._handlers[name].append(handler)

    async def publish(self, event: ArticleEvent) -> None:
        async with anyio.create_task_group() as task_group:
            for handler in self._handlers[event.name]:
                task_group.start_soon(handler, event)


async def _no_op(event: ArticleEvent) -> None:
    pass


def _article_variant() -> Variant:
    bus = ArticleBus()
    for _ in range(3):
        bus.subscribe("user_registered", _no_op)
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            i = next(numbers)
            payload = {"name": "Ivan", "email": f"a{i}@example.com"}
            await bus.publish(ArticleEvent("user_registered", payload))

    return Variant("article bus, 3 no-op tasks", run)


def _our_variants(bus: MessageBus) -> tuple[Variant, Variant]:
    numbers = itertools.count()

    async def register(n: int) -> None:
        for _ in range(n):
            await services.register_user(bus, "Ivan", f"u{next(numbers)}@example.com")

    async def dispatch(n: int) -> None:
        for _ in range(n):
            i = next(numbers)
            event = events.UserRegistered(
                user_id=str(i), name="Ivan", email=f"e{i}@example.com"
            )
            await bus.handle(event)

    return (
        Variant("ours: services.register_user", register),
        Variant("ours: bus.handle(event)", dispatch),
    )


async def _main(blocks: int, ops: int, backend: str, profiling: bool) -> None:
    uow = FakeUnitOfWork()
    notifications = FakeNotifications()
    async with bootstrap(
        uow=uow, notifications=notifications, console=FakeConsole()
    ) as bus:
        register, dispatch = _our_variants(bus)
        if profiling:
            await profile(register, blocks * ops)
            return
        article = _article_variant()
        variants = [register, article, dispatch]
        await interleave(variants, blocks, ops)
    report(variants, backend)
    print(
        f"[{backend}] throughput ours/article (article µs / our µs, higher is better):"
        f" register_user {ratio(article, register):.3f},"
        f" bus.handle(event) {ratio(article, dispatch):.3f}"
    )
    times = register.seconds_per_op
    quarter = max(1, len(times) // 4)
    first = statistics.median(times[:quarter])
    last = statistics.median(times[-quarter:])
    print(
        f"[{backend}] O(1) check: register_user median of the first {quarter} blocks"
        f" {first * 1e6:.1f} µs/op, of the last {quarter} {last * 1e6:.1f} µs/op"
        f" (x{last / first:.2f}) after {uow.commits} commits; the fake's seen set"
        f" holds {len(uow.users.seen)} users (isolated slow blocks are gen-2 GC"
        " passes over the users and emails the fakes keep)"
    )


def main() -> None:
    args = parse_args(__doc__ or "", blocks=20, ops=4000)
    print(
        f"python {sys.version.split()[0]}, {args.blocks} blocks x {args.ops} ops,"
        " medians over blocks"
    )
    for backend in ("asyncio",) if args.profile else ("asyncio", "trio"):
        start = time.perf_counter()
        anyio.run(_main, args.blocks, args.ops, backend, args.profile, backend=backend)
        print(f"[{backend}] took {time.perf_counter() - start:.1f} s\n")


if __name__ == "__main__":
    main()
