"""Rows written by hand into a database of an earlier revision (migration tests)."""

from __future__ import annotations

import datetime
import uuid

import sqlalchemy as sa

# The event log as revisions 0003 and later hold it, for plain inserts.
LOG = sa.table(
    "event_log",
    sa.column("message_id", sa.String()),
    sa.column("aggregate_type", sa.String()),
    sa.column("aggregate_id", sa.String()),
    sa.column("aggregate_version", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("payload", sa.JSON()),
    sa.column("schema_version", sa.Integer()),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
)


def product_event(version: int, name: str, **payload: object) -> dict[str, object]:
    """A log row of a product's event, its payload in schema version 1."""
    return {
        "message_id": str(uuid.uuid4()),
        "aggregate_type": "product",
        "aggregate_id": payload["sku"],
        "aggregate_version": version,
        "name": name,
        "payload": payload,
        "schema_version": 1,
        "occurred_at": datetime.datetime.now(datetime.UTC),
    }
