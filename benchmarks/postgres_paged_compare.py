"""Paging through a read model in code-point order on PostgreSQL: a range of the
primary key when its text keys are in the "C" collation (revision 0007), a sort of
the whole table per page when they are in the database's own.

A fresh database at head; ``allocations_view`` filled with N lines whose order ids
are random text (so key order is not insertion order), then ANALYZE. Timed, pages
of 5,000 rows (verify's default): the page reads alone (each page's statement on
asyncpg, one after another, to the end of the table), and what ``verify`` and a
replay do with a read model, ``projections.compare_rows`` of the live table against
itself through one unit of work (both sides read, rows decoded and compared). Two
variants, the key columns altered between them (their index rebuilt, then ANALYZE)
and the order alternated over blocks:

- ``database collation``: the keys as before revision 0007 (this server's default
  collation, whatever it is);
- ``"C" collation``: the keys as revision 0007 leaves them.

Before timing, each variant's plan of a later page is printed (EXPLAIN).

Run: .venv/bin/python benchmarks/postgres_paged_compare.py [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import time

import _postgres
import anyio
import asyncpg

from allocation.adapters import tables
from allocation.adapters.postgres import views
from allocation.adapters.postgres.database import PostgresDatabase
from allocation.service_layer import projections

PAGE = 5000
_KEYS = (("orderid", 255), ("sku", 255))


async def _fill(connection: asyncpg.Connection, rows: int) -> None:
    generator = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "äéß"
    lines = [
        (
            "".join(generator.choices(alphabet, k=12)),
            f"SKU-{index % 200}",
            index % 5 + 1,
            "b1",
            1,
            True,
        )
        for index in range(rows)
    ]
    await connection.copy_records_to_table(
        "allocations_view",
        records=lines,
        columns=["orderid", "sku", "qty", "batchref", "version", "allocated"],
    )


async def _collate(connection: asyncpg.Connection, collation: str | None) -> None:
    clause = "" if collation is None else f' COLLATE "{collation}"'
    changes = ", ".join(
        f"ALTER COLUMN {name} TYPE varchar({length}){clause}" for name, length in _KEYS
    )
    await connection.execute(f"ALTER TABLE allocations_view {changes}")
    await connection.execute("ANALYZE allocations_view")


async def _plan(connection: asyncpg.Connection) -> str:
    statement = views.allocations_sql(tables.allocations_view).lines_after
    found = await connection.fetchval(
        f"EXPLAIN (FORMAT JSON) {statement}", "M", "SKU-1", 1, PAGE
    )
    nodes, plan = [], json.loads(found)[0]["Plan"]
    while plan is not None:
        nodes.append(
            plan["Node Type"]
            + (f" {plan['Index Name']}" if "Index Name" in plan else "")
        )
        plan = (plan.get("Plans") or [None])[0]
    return " > ".join(nodes)


async def _read_pages(connection: asyncpg.Connection) -> float:
    statements = views.allocations_sql(tables.allocations_view)
    start = time.perf_counter()
    page = await connection.fetch(statements.lines, PAGE)
    while len(page) == PAGE:
        key = (page[-1]["orderid"], page[-1]["sku"], page[-1]["qty"])
        page = await connection.fetch(statements.lines_after, *key, PAGE)
    return time.perf_counter() - start


async def _compare(database: PostgresDatabase) -> float:
    start = time.perf_counter()
    async with database.unit_of_work() as uow:
        reader = projections.ALLOCATIONS_VIEW.reader(uow)
        problems = await projections.compare_rows(
            "allocations_view", stored=reader, replayed=reader, page_size=PAGE
        )
    assert problems == []
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    url = await _postgres.fresh_database()
    connection = await asyncpg.connect(_postgres.DSN)
    database = await PostgresDatabase.open(url, pool_size=2)
    try:
        collation = await connection.fetchval(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        )
        await _fill(connection, args.rows)
        variants = {f"database collation ({collation})": None, '"C" collation': "C"}
        reads: dict[str, list[float]] = {name: [] for name in variants}
        compares: dict[str, list[float]] = {name: [] for name in variants}
        for name, chosen in variants.items():
            await _collate(connection, chosen)
            print(f"{name}: {await _plan(connection)}")
        for block in range(args.blocks):
            order = list(variants.items())
            for name, chosen in order if block % 2 == 0 else order[::-1]:
                await _collate(connection, chosen)
                await _read_pages(connection)  # warm
                reads[name].append(await _read_pages(connection))
                compares[name].append(await _compare(database))
        print(f"{args.rows} rows, pages of {PAGE}, {args.blocks} blocks:")
        for label, timings in (("page reads", reads), ("compare_rows", compares)):
            for name, times in timings.items():
                print(
                    f"  {label:<12} {name:<28} median"
                    f" {statistics.median(times) * 1e3:8.1f} ms"
                    f"  (spread {min(times) * 1e3:.1f}..{max(times) * 1e3:.1f})"
                )
            before, after = timings.values()
            ratios = [old / new for old, new in zip(before, after, strict=True)]
            print(
                f"  {label:<12} speed-up (median of per-block ratios):"
                f" {statistics.median(ratios):.1f}x"
            )
    finally:
        await database.close()
        await connection.close()
        await _postgres.drop_database()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=None)
    arguments = parser.parse_args()
    if arguments.rows is None:
        arguments.rows = 20_000 if arguments.quick else 200_000
    if arguments.blocks is None:
        arguments.blocks = 2 if arguments.quick else 4
    anyio.run(main, arguments, backend="asyncio")
