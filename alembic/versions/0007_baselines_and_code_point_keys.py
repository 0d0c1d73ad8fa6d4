"""Baselines for products older than the log; read-model keys in code-point order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Revision 0005 kept such a product (its first logged event at a version above 1)
as a snapshot only, so its stream could not be folded from its start: ``verify``
named it and ``history`` refused it. Here each gets a ``product_imported`` event
at the version just before its first logged one, carrying its state as it was then,
which is the latest snapshot with the logged events up to it undone, one by one.
The baseline stands for the versions before it (the log never held them), so the
stream folds from its start and verify holds.

The logged events keep their versions and positions: the relay and the consumers
may have seen them. So the baseline is appended now, at the end of the log, after
the events it precedes; whatever folds a stream (loading, ``verify``, ``history``)
reads it by version, and ``verify`` folds baselines first. Its ``occurred_at`` is
that of the stream's first logged event: the state it describes held then.

A state that cannot be recovered exactly is not guessed: a quantity changed by a
logged event whose earlier value no logged event gives, a gap in the logged
versions, or events that do not undo onto the snapshot leave that product as it
was (``verify`` names it). The allocations view gets the baseline's lines as its
projection would write them, so it stays what a replay of the log gives.

On PostgreSQL the text keys of the read models (``allocations_view``'s orderid
and sku, ``users_view``'s user_id) take the "C" collation: ``verify`` and a replay
page through them in code-point order, which an index in the database's own
collation cannot give, so each page was a sort of the whole table; now it is a
range of the primary key. SQLite's default collation compares by code point
already.

Downgrade deletes the baselines (0006 cannot read them; the snapshots they came
from stay) and gives the keys the database's collation back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BASELINE = "product_imported"
# The snapshot shape this revision reads: Product.SNAPSHOT_VERSION 1.
_PRODUCT_SNAPSHOT_VERSION = 1

_log = sa.table(
    "event_log",
    sa.column("position", sa.Integer()),
    sa.column("message_id", sa.String()),
    sa.column("aggregate_type", sa.String()),
    sa.column("aggregate_id", sa.String()),
    sa.column("aggregate_version", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("payload", sa.JSON()),
    sa.column("schema_version", sa.Integer()),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
)
_view = sa.table(
    "allocations_view",
    sa.column("orderid", sa.String()),
    sa.column("sku", sa.String()),
    sa.column("qty", sa.Integer()),
    sa.column("batchref", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("allocated", sa.Boolean()),
)
_snapshots = sa.table(
    "snapshots",
    sa.column("aggregate_type", sa.String()),
    sa.column("aggregate_id", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("schema_version", sa.Integer()),
    sa.column("state", sa.Text()),
)

# A batch while the logged events are undone: its quantity, eta, sku and lines.
_Batch = dict[str, Any]


# The read models' text keys: (table, column, length).
_KEYS = (
    ("allocations_view", "orderid", 255),
    ("allocations_view", "sku", 255),
    ("users_view", "user_id", 36),
)


def upgrade() -> None:
    connection = op.get_bind()
    for sku, first in _streams_started_late(connection):
        _write_baseline(connection, sku, first)
    if connection.dialect.name == "postgresql":
        for table, column, length in _KEYS:
            op.alter_column(
                table,
                column,
                type_=sa.String(length, collation="C"),
                existing_type=sa.String(length),
                existing_nullable=False,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column, length in _KEYS:
            op.alter_column(
                table,
                column,
                type_=sa.String(length),
                existing_type=sa.String(length, collation="C"),
                existing_nullable=False,
            )
    op.execute(_log.delete().where(_log.c.name == _BASELINE))


def _streams_started_late(connection: sa.Connection) -> list[tuple[str, int]]:
    """Each product whose first logged version is above 1, and that has no
    baseline yet, with that first version."""
    first = sa.func.min(_log.c.aggregate_version)
    has_baseline = sa.func.sum(sa.case((_log.c.name == _BASELINE, 1), else_=0))
    rows = connection.execute(
        sa.select(_log.c.aggregate_id, first)
        .where(_log.c.aggregate_type == "product")
        .group_by(_log.c.aggregate_id)
        .having(sa.and_(first > 1, has_baseline == 0))
        .order_by(_log.c.aggregate_id)
    )
    return [(sku, version) for sku, version in rows]


def _write_baseline(connection: sa.Connection, sku: str, first: int) -> None:
    snapshot = connection.execute(
        sa.select(_snapshots.c.version, _snapshots.c.state).where(
            _snapshots.c.aggregate_type == "product",
            _snapshots.c.aggregate_id == sku,
            _snapshots.c.schema_version == _PRODUCT_SNAPSHOT_VERSION,
        )
    ).first()
    if snapshot is None:
        return
    version, state = snapshot
    logged = connection.execute(
        sa.select(
            _log.c.aggregate_version,
            _log.c.name,
            sa.cast(_log.c.payload, sa.Text),
            _log.c.occurred_at,
        )
        .where(
            _log.c.aggregate_type == "product",
            _log.c.aggregate_id == sku,
            _log.c.aggregate_version <= version,
        )
        .order_by(_log.c.aggregate_version)
    ).all()
    if [row[0] for row in logged] != list(range(first, version + 1)):
        return  # a gap, or a snapshot past the stream: nothing to undo onto
    batches = _state_before(
        sku,
        json.loads(state)["batches"],
        [(name, json.loads(payload)) for _, name, payload, _ in logged],
    )
    if batches is None:
        return
    payload = {
        "sku": sku,
        "batches": [
            {
                "ref": ref,
                "purchased_quantity": batch["purchased_quantity"],
                "eta": batch["eta"],
                "allocations": [
                    {"orderid": orderid, "sku": line_sku, "qty": qty}
                    for orderid, line_sku, qty in sorted(batch["lines"])
                ],
            }
            for ref, batch in sorted(batches.items())
        ],
    }
    connection.execute(
        _log.insert(),
        {
            "message_id": str(uuid.uuid4()),
            "aggregate_type": "product",
            "aggregate_id": sku,
            "aggregate_version": first - 1,
            "name": _BASELINE,
            "payload": payload,
            "schema_version": 1,
            "occurred_at": logged[0][3],
        },
    )
    for batch in payload["batches"]:
        for line in batch["allocations"]:
            _project_line(connection, line, batch["ref"], first - 1)


def _state_before(
    sku: str, stored: dict[str, Any], logged: list[tuple[str, dict[str, Any]]]
) -> dict[str, _Batch] | None:
    """The product's batches before the first of ``logged``: ``stored`` (the state
    after the last of them) with each event undone, newest first; None where an
    event cannot be undone exactly."""
    batches: dict[str, _Batch] = {}
    for ref, batch in stored.items():
        if batch["sku"] != sku:
            return None
        batches[ref] = {
            "purchased_quantity": batch["purchased_quantity"],
            "eta": batch["eta"],
            "lines": {
                (line["orderid"], line["sku"], line["qty"])
                for line in batch["allocations"]
            },
        }
    earlier = _quantities_before(logged)
    for index in reversed(range(len(logged))):
        name, payload = logged[index]
        if name == "out_of_stock":
            continue
        ref = payload.get("batchref", payload.get("ref"))
        batch = batches.get(ref)
        if batch is None or not _undo(name, payload, batch, earlier.get(index)):
            return None
        if name == "batch_created":
            del batches[ref]
    return batches


def _quantities_before(logged: list[tuple[str, dict[str, Any]]]) -> dict[int, int]:
    """For each quantity change, the quantity its batch had before it, where a
    logged event (its creation or an earlier change) gives it."""
    known: dict[str, int] = {}
    before: dict[int, int] = {}
    for index, (name, payload) in enumerate(logged):
        if name == "batch_created":
            known[payload["ref"]] = _created_quantity(payload)
        elif name == "batch_quantity_changed":
            if payload["ref"] in known:
                before[index] = known[payload["ref"]]
            known[payload["ref"]] = payload["qty"]
    return before


def _created_quantity(payload: dict[str, Any]) -> Any:
    # batch_created of schema version 1 called it qty.
    return payload.get("purchased_quantity", payload.get("qty"))


def _undo(
    name: str, payload: dict[str, Any], batch: _Batch, quantity_before: int | None
) -> bool:
    """Undo one event on its batch, in place; False if it cannot be undone."""
    if name in ("allocated", "deallocated"):
        line = (payload["orderid"], payload["sku"], payload["qty"])
        held = line in batch["lines"]
        if held != (name == "allocated"):
            return False
        if held:
            batch["lines"].remove(line)
        else:
            batch["lines"].add(line)
        return True
    if name == "batch_quantity_changed":
        if batch["purchased_quantity"] != payload["qty"] or quantity_before is None:
            return False
        batch["purchased_quantity"] = quantity_before
        return True
    if name == "batch_created":
        # A batch is created as the event says, with no lines; the caller drops it.
        return (
            not batch["lines"]
            and batch["purchased_quantity"] == _created_quantity(payload)
            and batch["eta"] == payload.get("eta")
        )
    return False  # an event this revision does not know how to undo


def _project_line(
    connection: sa.Connection, line: dict[str, Any], batchref: str, version: int
) -> None:
    """The allocations projection's write of an imported line: a row already at
    this version or a later one stays."""
    key = sa.and_(
        _view.c.orderid == line["orderid"],
        _view.c.sku == line["sku"],
        _view.c.qty == line["qty"],
    )
    found = connection.execute(sa.select(_view.c.version).where(key)).first()
    if found is None:
        connection.execute(
            _view.insert(),
            {**line, "batchref": batchref, "version": version, "allocated": True},
        )
    elif found[0] < version:
        connection.execute(
            _view.update()
            .where(key)
            .values(batchref=batchref, version=version, allocated=True)
        )
