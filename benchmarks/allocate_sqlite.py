"""services.allocate end to end on a SQLite file, beside raw aiosqlite doing the same.

Each side gets its own skus (two batches of each, one in stock, one arriving), and
allocates one-unit order lines round-robin over them, so lines spread evenly. Ours
loads the Product aggregate, allocates, bumps the version and commits; then the
Allocated event updates the read model in its own transaction. Raw does the same
work with the same guarantees on one aiosqlite connection: BEGIN IMMEDIATE, read the
product, its batches and their allocations, pick the batch in Python, INSERT the
allocation, UPDATE the version where it is unchanged, COMMIT; then BEGIN IMMEDIATE,
upsert the read model, COMMIT.

Run: .venv/bin/python benchmarks/allocate_sqlite.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite
import anyio
from _harness import (
    Variant,
    count_trips,
    explain_gap,
    interleave,
    parse_args,
    profile,
    ratio,
    report,
)
from register_user_sqlite import migrate, open_raw

from allocation import config
from allocation.bootstrap import bootstrap
from allocation.service_layer import services
from allocation.testing import FakeConsole, FakeNotifications

if TYPE_CHECKING:
    from allocation.service_layer.messagebus import MessageBus

SKUS = 50
STOCK = 10_000_000
LATER = datetime.date(2031, 1, 1)


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


async def _raw_allocate(
    connection: aiosqlite.Connection, orderid: str, sku: str, qty: int
) -> str:
    products = await connection.execute_fetchall(
        "SELECT version_number FROM products WHERE sku = ?", (sku,)
    )
    if not products:
        raise LookupError(sku)
    (version,) = next(iter(products))
    batches = list(
        await connection.execute_fetchall(
            "SELECT id, reference, purchased_quantity, eta FROM batches"
            " WHERE sku = ? ORDER BY id",
            (sku,),
        )
    )
    marks = ", ".join("?" * len(batches))
    lines = await connection.execute_fetchall(
        "SELECT batch_id, orderid, sku, qty FROM allocations"
        f" WHERE batch_id IN ({marks})",
        [batch_id for batch_id, *_ in batches],
    )
    allocated: dict[int, int] = {}
    for batch_id, line_orderid, line_sku, line_qty in lines:
        if (line_orderid, line_sku, line_qty) == (orderid, sku, qty):
            raise ValueError(f"{orderid} is already allocated")
        allocated[batch_id] = allocated.get(batch_id, 0) + line_qty
    candidates = [
        (0 if eta is None else 1, eta or "", reference, batch_id)
        for batch_id, reference, purchased, eta in batches
        if purchased - allocated.get(batch_id, 0) >= qty
    ]
    *_, reference, batch_id = min(candidates)
    await connection.execute(
        "INSERT INTO allocations (batch_id, orderid, sku, qty) VALUES (?, ?, ?, ?)",
        (batch_id, orderid, sku, qty),
    )
    cursor = await connection.execute(
        "UPDATE products SET version_number = ? WHERE sku = ? AND version_number = ?",
        (version + 1, sku, version),
    )
    if cursor.rowcount != 1:
        raise RuntimeError(f"{sku} changed since it was read")
    return str(reference)


def _raw_variant(connection: aiosqlite.Connection, skus: list[str]) -> Variant:
    numbers = itertools.count()

    async def transaction(statement: str, *parameters: object) -> None:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            await connection.execute(statement, parameters)
        except BaseException:
            await connection.rollback()
            raise
        await connection.commit()

    async def run(n: int) -> None:
        for _ in range(n):
            i = next(numbers)
            orderid, sku = f"raw-{i}", skus[i % len(skus)]
            await connection.execute("BEGIN IMMEDIATE")
            try:
                reference = await _raw_allocate(connection, orderid, sku, 1)
            except BaseException:
                await connection.rollback()
                raise
            await connection.commit()
            await transaction(
                "INSERT INTO allocations_view (orderid, sku, qty, batchref)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (orderid, sku, qty)"
                " DO UPDATE SET batchref = excluded.batchref",
                orderid,
                sku,
                reference,
            )

    return Variant("raw aiosqlite", run)


async def _main(blocks: int, ops: int, trip_ops: int, profiling: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="allocation-bench-") as folder:
        path = Path(folder) / "bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(
                bootstrap(
                    settings=config.Settings(database_url=url),
                    notifications=FakeNotifications(),
                    console=FakeConsole(),
                )
            )
            raw_connection = await open_raw(path)
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
        f" {SKUS} skus x 2 batches per side, {args.blocks} blocks x {args.ops} ops,"
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
