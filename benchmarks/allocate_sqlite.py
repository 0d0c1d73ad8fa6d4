"""services.allocate end to end on a SQLite file, beside raw aiosqlite doing the same.

Each side gets its own skus (two batches of each, one in stock, one arriving,
created through ``services.add_batch``), and allocates one-unit order lines
round-robin over them, so lines spread evenly. Ours: ``services.allocate``
through ``bootstrap``: the unit of work loads the Product from its latest
snapshot plus the events after it (BEGIN IMMEDIATE first: the stream is written
next), the domain allocates, the Allocated event is appended (a snapshot every
100 events, the default), COMMIT; then the bus hands the event to the
``allocations_view`` projection: its row and its exactly-once tracking row in a
second transaction.

Raw does the same work with the same guarantees on one aiosqlite connection:
BEGIN IMMEDIATE, read the snapshot and the stream's events after it, fold them
in Python (``json.loads``, no validation), pick the batch as the domain does,
INSERT the Allocated event (``json.dumps``), upsert the snapshot on every 100th
version, COMMIT; then BEGIN IMMEDIATE, the guarded upsert of the read model and
its tracking row, COMMIT.

Run: .venv/bin/python benchmarks/allocate_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _sqlite
import aiosqlite
import anyio
from _harness import (
    Variant,
    count_trips,
    explain_gap,
    interleave,
    parse_args,
    profile,
    quiet_bus,
    ratio,
    report,
)

from allocation.domain import events
from allocation.service_layer import services
from allocation.service_layer.unit_of_work import DEFAULT_SNAPSHOT_EVERY

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

SKUS = 20
STOCK = 10_000_000
LATER = datetime.date(2031, 1, 1)
PROJECTION = "allocations_view"


async def _add_stock(bus: MessageBus, prefix: str) -> list[str]:
    skus = [f"{prefix}-SKU-{i:03d}" for i in range(SKUS)]
    for sku in skus:
        await services.add_batch(bus, f"{sku}-in-stock", sku, STOCK)
        await services.add_batch(bus, f"{sku}-shipment", sku, STOCK, LATER)
    return skus


def _our_variant(bus: MessageBus, skus: list[str]) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            i = next(numbers)
            ref = await services.allocate(bus, f"ours-{i}", skus[i % len(skus)], 1)
            assert ref is not None

    return Variant("ours: services.allocate", run)


class _RawProduct:
    """A product's batches folded from raw rows: a snapshot, then events."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self._allocated = {
            ref: sum(line["qty"] for line in batch["allocations"])
            for ref, batch in state["batches"].items()
        }

    def apply(self, name: str, payload: dict[str, Any]) -> None:
        if name == "batch_created":
            self.state["batches"][payload["ref"]] = {
                "sku": payload["sku"],
                "purchased_quantity": payload["purchased_quantity"],
                "eta": payload["eta"],
                "allocations": [],
            }
            self._allocated[payload["ref"]] = 0
        elif name == "allocated":
            line = {k: payload[k] for k in ("orderid", "sku", "qty")}
            self.state["batches"][payload["batchref"]]["allocations"].append(line)
            self._allocated[payload["batchref"]] += payload["qty"]
        else:
            raise ValueError(f"the raw fold knows no {name!r} event")

    def choose(self, qty: int) -> str:
        """In-stock batches first, then the earliest arrival, then the reference."""
        candidates = [
            (0 if batch["eta"] is None else 1, batch["eta"] or "", ref)
            for ref, batch in self.state["batches"].items()
            if batch["purchased_quantity"] - self._allocated[ref] >= qty
        ]
        return min(candidates)[2]


async def _raw_allocate(
    connection: aiosqlite.Connection, orderid: str, sku: str, qty: int
) -> tuple[str, int, str]:
    """Inside BEGIN IMMEDIATE: (batch reference, new version, event id)."""
    snapshots = list(
        await connection.execute_fetchall(_sqlite.LATEST_SNAPSHOT, ("product", sku))
    )
    version, state = (
        (snapshots[0][0], json.loads(snapshots[0][2])) if snapshots else (0, None)
    )
    product = _RawProduct(state or {"batches": {}})
    for row_version, name, payload in await connection.execute_fetchall(
        _sqlite.READ_STREAM, ("product", sku, version)
    ):
        product.apply(name, json.loads(payload))
        version = row_version
    if any(
        line["orderid"] == orderid
        for batch in product.state["batches"].values()
        for line in batch["allocations"]
    ):
        raise ValueError(f"{orderid} is already allocated")
    reference = product.choose(qty)
    payload = {"orderid": orderid, "sku": sku, "qty": qty, "batchref": reference}
    message_id, command_id, version = str(uuid.uuid4()), str(uuid.uuid4()), version + 1
    now = _sqlite.now_text()
    await connection.execute(
        _sqlite.INSERT_EVENT,
        (
            message_id,
            "product",
            sku,
            version,
            events.Allocated.TYPE,
            json.dumps(payload),
            events.Allocated.SCHEMA_VERSION,
            now,
            command_id,
            command_id,
        ),
    )
    if version % DEFAULT_SNAPSHOT_EVERY == 0:
        product.apply(events.Allocated.TYPE, payload)
        await connection.execute(
            _sqlite.SAVE_SNAPSHOT,
            ("product", sku, version, 1, json.dumps(product.state), now),
        )
    return reference, version, message_id


def _raw_variant(connection: aiosqlite.Connection, skus: list[str]) -> Variant:
    numbers = itertools.count()

    async def run(n: int) -> None:
        for _ in range(n):
            i = next(numbers)
            orderid, sku = f"raw-{i}", skus[i % len(skus)]
            await connection.execute("BEGIN IMMEDIATE")
            try:
                reference, version, message_id = await _raw_allocate(
                    connection, orderid, sku, 1
                )
            except BaseException:
                await connection.rollback()
                raise
            await connection.commit()
            await _sqlite.transaction(
                connection,
                (
                    (
                        _sqlite.UPSERT_ALLOCATION,
                        (orderid, sku, 1, reference, version),
                    ),
                    (_sqlite.INSERT_PROCESSED, (PROJECTION, message_id)),
                ),
            )

    return Variant("raw aiosqlite", run)


async def _main(blocks: int, ops: int, trip_ops: int, profiling: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = _sqlite.url_of(path)
        await _sqlite.migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(quiet_bus(url))
            raw_connection = await _sqlite.open_raw(path)
            stack.push_async_callback(raw_connection.close)
            ours = _our_variant(bus, await _add_stock(bus, "OURS"))
            raw = _raw_variant(raw_connection, await _add_stock(bus, "RAW"))
            if profiling:
                await profile(ours, blocks * ops)
                return
            variants = [ours, raw]
            await interleave(variants, blocks, ops)
            report(variants)
            print(
                "ours/raw throughput (raw µs / our µs, higher is better):"
                f" {ratio(raw, ours):.3f}; our extra cost"
                f" {ours.median_us() - raw.median_us():.1f} µs/op"
            )
            print(f"trips (calls handed to aiosqlite's thread), over {trip_ops} ops:")
            our_trips = await count_trips(ours.name, ours.run, trip_ops)
            raw_trips = await count_trips(raw.name, raw.run, trip_ops)
            explain_gap(ours, our_trips, raw, raw_trips)
            lines = (blocks * ops + ops // 4 + trip_ops) / SKUS
            print(f"each product ends with about {lines:.0f} allocated lines")


def main() -> None:
    args = parse_args(__doc__ or "", blocks=16, ops=150)
    print(
        f"python {sys.version.split()[0]}, aiosqlite {aiosqlite.__version__},"
        f" {SKUS} skus x 2 batches per side, snapshot every"
        f" {DEFAULT_SNAPSHOT_EVERY} events, {args.blocks} blocks x {args.ops} ops,"
        " medians over blocks"
    )
    start = time.perf_counter()
    anyio.run(
        _main,
        args.blocks,
        args.ops,
        min(args.ops, 100),
        args.profile,
        backend="asyncio",
    )
    print(f"took {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
