"""The read models are paged in code-point order along their primary keys on
PostgreSQL, whatever the database's collation: each page is a range of the index,
not a sort of the whole table (issue 9's leftovers)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from allocation.adapters import tables
from allocation.adapters.postgres import views
from tests.integration.postgres_fixtures import (  # noqa: F401 - fixtures
    admin_fixture,
    schema_fixture,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Table

pytestmark = pytest.mark.postgres


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plan(admin: Any, sql: str, *arguments: object) -> list[dict[str, Any]]:
    """The plan's nodes, with sorts and sequential scans priced out: a plan that
    still sorts has no index to read the order from."""
    async with admin.transaction():
        await admin.execute("SET LOCAL enable_seqscan = off")
        await admin.execute("SET LOCAL enable_sort = off")
        found = await admin.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *arguments)
    return list(_nodes(json.loads(found)[0]["Plan"]))


def _reads_its_key_index(nodes: list[dict[str, Any]], table: Table) -> bool:
    return not any(node["Node Type"] == "Sort" for node in nodes) and any(
        node["Node Type"] in ("Index Scan", "Index Only Scan")
        and node["Index Name"] == table.primary_key.name
        for node in nodes
    )


@pytest.mark.parametrize("shadow", [False, True], ids=["live", "shadow"])
async def test_a_page_of_allocations_is_a_range_of_the_primary_key(
    admin: Any, shadow: bool
) -> None:
    table = tables.allocations_view
    if shadow:  # a replay compares its rebuild with the live table
        await admin.execute(views.shadow_sql(table).create)
        table = views.shadow_of(table)
    statements = views.allocations_sql(table)

    first = await _plan(admin, statements.lines, 500)
    later = await _plan(admin, statements.lines_after, "o1", "LAMP", 1, 500)

    assert _reads_its_key_index(first, table), first
    assert _reads_its_key_index(later, table), later


async def test_a_page_of_users_is_a_range_of_the_primary_key(admin: Any) -> None:
    statements = views.users_sql(tables.users_view)

    first = await _plan(admin, statements.page, 500)
    later = await _plan(admin, statements.page_after, "u1", 500)

    assert _reads_its_key_index(first, tables.users_view), first
    assert _reads_its_key_index(later, tables.users_view), later


async def test_the_key_order_is_code_point_order(admin: Any) -> None:
    """What the index gives is what Python's sort gives the same keys."""
    orderids = ["b", "B", "a", "ä", "Z", "é", "e", "𝔸", "_", "1"]
    await admin.executemany(
        "INSERT INTO allocations_view (orderid, sku, qty, batchref, version,"
        " allocated) VALUES ($1, 'LAMP', 1, 'b1', 1, true)",
        [(orderid,) for orderid in orderids],
    )
    statements = views.allocations_sql(tables.allocations_view)

    rows = await admin.fetch(statements.lines, None)

    assert [row["orderid"] for row in rows] == sorted(orderids)
