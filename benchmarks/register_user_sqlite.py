"""register_user on a SQLite file (WAL): ours through the public API, against raw
aiosqlite doing the same durable writes in one transaction.

Ours: ``services.register_user`` through ``bootstrap`` on a migrated file, with the
welcome email, log line and coupon going to fakes. One transaction: the email
claim, the users view (an inline projection) and the UserRegistered event in the
log; the three handlers that write nothing are recorded in ``processed_messages``
in one batch every 1,000 completions, as the bus does. "ours: uow commit" is the
handler's body alone on a unit of work from ``bus.uow_factory()``
(``User.register``, ``uow.users.add``, ``commit``): the same transaction without
the bus.

Raw: one aiosqlite connection with the engine's PRAGMAs (WAL, synchronous=NORMAL,
foreign keys, busy timeout): BEGIN IMMEDIATE, INSERT claims, upsert users_view,
INSERT event_log (the JSON payload built by the message library, as ours is),
COMMIT, plus the batched completions; through aiosqlite's API that is five calls
handed to its worker thread. "raw, one trip" sends the same transaction as one
function, as our engine does: the floor for any design on aiosqlite. All write to
the same file, in alternating blocks; a "trip" is one call handed to aiosqlite's
worker thread (a thread hand-off and a wake-up of the event loop). Background
catch-up is off (the blocks time the write path).

Run: .venv/bin/python benchmarks/register_user_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import _sqlite
import aiosqlite
import anyio
from _harness import (
    Variant,
    count_trips,
    interleave,
    parse_args,
    profile,
    quiet_bus,
    ratio,
    report,
)

from allocation.domain import events
from allocation.domain.users import User
from allocation.service_layer import handlers, services

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

TARGET, AIM = 0.5, 0.7
# The handlers of UserRegistered, whose completions the bus records in batches.
_UNTRACKED = tuple(
    handler.__name__ for handler in handlers.EVENT_HANDLERS[events.UserRegistered]
)


class _RawRegistration:
    """register_user's writes on one aiosqlite connection, nothing else."""

    def __init__(self, connection: aiosqlite.Connection, *, in_one_trip: bool):
        self._connection = connection
        self._in_one_trip = in_one_trip
        self._completions = _sqlite.RawCompletions(connection, _UNTRACKED)
        self._numbers = itertools.count()
        self._label = "trip" if in_one_trip else "raw"

    async def register(self) -> None:
        user_id = str(uuid.uuid4())
        name, email = "Ivan", f"{self._label}{next(self._numbers)}@example.com"
        # Built as ours is: the event and its JSON by the message library.
        event = events.UserRegistered(user_id=user_id, name=name, email=email)
        command_id = str(uuid.uuid4())
        statements = (
            (_sqlite.INSERT_CLAIM, ("email", email, user_id)),
            (_sqlite.UPSERT_USER, (user_id, name, email)),
            (
                _sqlite.INSERT_EVENT,
                (
                    event.message_id,
                    "user",
                    user_id,
                    1,
                    event.TYPE,
                    event.payload_json(),
                    event.SCHEMA_VERSION,
                    _sqlite.now_text(),
                    command_id,
                    command_id,
                ),
            ),
        )
        if self._in_one_trip:
            await _sqlite.one_trip(self._connection, statements)
        else:
            await _sqlite.transaction(self._connection, statements)
        await self._completions.completed(
            event.message_id, in_one_trip=self._in_one_trip
        )

    async def run(self, n: int) -> None:
        for _ in range(n):
            await self.register()


def _our_variants(bus: MessageBus) -> tuple[Variant, Variant]:
    numbers = itertools.count()

    async def through_the_bus(n: int) -> None:
        for _ in range(n):
            email = f"ours{next(numbers)}@example.com"
            await services.register_user(bus, "Ivan", email)

    async def through_a_unit_of_work(n: int) -> None:
        for _ in range(n):
            email = f"uow{next(numbers)}@example.com"
            user = User.register(str(uuid.uuid4()), "Ivan", email)
            async with bus.uow_factory() as uow:
                uow.users.add(user)
                await uow.commit()

    return (
        Variant("ours: register_user", through_the_bus),
        Variant("ours: uow commit of a User", through_a_unit_of_work),
    )


async def _main(blocks: int, ops: int, trip_ops: int, profiling: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = _sqlite.url_of(path)
        await _sqlite.migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(quiet_bus(url))
            connection = await _sqlite.open_raw(path)
            stack.push_async_callback(connection.close)
            ours, uow = _our_variants(bus)
            raw_registration = _RawRegistration(connection, in_one_trip=False)
            floor_registration = _RawRegistration(connection, in_one_trip=True)
            raw = Variant("raw aiosqlite, same writes", raw_registration.run)
            floor = Variant("raw, one trip (the floor)", floor_registration.run)
            if profiling:
                await profile(ours, blocks * ops)
                return
            variants = [ours, uow, raw, floor]
            await interleave(variants, blocks, ops)
            report(variants)
            achieved = ratio(raw, ours)
            verdict = (
                "meets the aim"
                if achieved >= AIM
                else "meets the target"
                if achieved >= TARGET
                else "misses the target"
            )
            print(
                f"tx/s: ours {1e6 / ours.median_us():,.0f}, raw"
                f" {1e6 / raw.median_us():,.0f}; ours/raw throughput (raw µs / our"
                f" µs): {achieved:.3f}, {verdict} (target >= {TARGET}, aim {AIM})"
            )
            print(
                f"uow/raw {ratio(raw, uow):.3f}; ours/(raw in one trip)"
                f" {ratio(floor, ours):.3f}, uow/(raw in one trip)"
                f" {ratio(floor, uow):.3f}; the bus costs"
                f" {ours.median_us() - uow.median_us():.1f} µs/op"
            )
            print(f"trips (calls handed to aiosqlite's thread), over {trip_ops} ops:")
            for variant in variants:
                await count_trips(variant.name, variant.run, trip_ops)


def main() -> None:
    args = parse_args(__doc__ or "", blocks=20, ops=500)
    print(
        f"python {sys.version.split()[0]}, aiosqlite {aiosqlite.__version__},"
        f" sqlite {aiosqlite.sqlite_version}, {args.blocks} blocks x {args.ops} ops,"
        " medians over blocks"
    )
    start = time.perf_counter()
    anyio.run(
        _main,
        args.blocks,
        args.ops,
        # A multiple of 334 ops includes the batched completions as they come.
        334 if args.quick else 668,
        args.profile,
        backend="asyncio",
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
