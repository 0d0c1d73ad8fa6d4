"""The event store: aggregates are their events; the state tables go.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Adds ``claims`` (the unique values aggregates hold: emails, batch references) and
``snapshots``, fills the claims from the state tables, makes sure the log accounts
for every product, brings the users view (inline from now on) up to the log, then
drops ``products``, ``batches``, ``allocations`` and
``users``: from here on an aggregate is loaded from its events.

Products whose rows predate the log (revision 0002 did not backfill them) get
their history written now: one ``batch_created`` per batch at today's quantity and
one ``allocated`` per allocated line. A product with only part of its history
in the log (its first events predate it) keeps its stored state as a snapshot at
its current version, so nothing is lost; revision 0007 gives its stream a baseline
(``product_imported``) from that snapshot.

Downgrade rebuilds the four tables from the log with the domain's own fold.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The snapshot shape this revision writes: Product.SNAPSHOT_VERSION 1.
_PRODUCT_SNAPSHOT_VERSION = 1

_log = sa.table(
    "event_log",
    sa.column("message_id"),
    sa.column("aggregate_type"),
    sa.column("aggregate_id"),
    sa.column("aggregate_version"),
    sa.column("name"),
    sa.column("payload", sa.JSON()),
    sa.column("schema_version"),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
)
_claims = sa.table("claims", sa.column("kind"), sa.column("value"), sa.column("owner"))
_snapshots = sa.table(
    "snapshots",
    sa.column("aggregate_type"),
    sa.column("aggregate_id"),
    sa.column("version"),
    sa.column("schema_version"),
    sa.column("state"),
    sa.column("taken_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="pk_claims"),
    )
    op.create_table(
        "snapshots",
        sa.Column("aggregate_type", sa.String(50), nullable=False),
        sa.Column("aggregate_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("aggregate_type", "aggregate_id", name="pk_snapshots"),
    )
    op.create_index("ix_users_view_email", "users_view", ["email"])
    connection = op.get_bind()
    now = datetime.datetime.now(datetime.UTC)
    _claim_existing(connection)
    _account_for_products(connection, now)
    _users_view_from_the_log(connection)
    op.drop_index("ix_allocations_batch_id", table_name="allocations")
    op.drop_table("allocations")
    op.drop_index("ix_batches_sku", table_name="batches")
    op.drop_table("batches")
    op.drop_table("products")
    op.drop_table("users")


def _claim_existing(connection: sa.Connection) -> None:
    rows = [
        {"kind": "email", "value": email, "owner": user_id}
        for user_id, email in connection.execute(sa.text("SELECT id, email FROM users"))
    ]
    rows += [
        {"kind": "batch", "value": reference, "owner": sku}
        for reference, sku in connection.execute(
            sa.text("SELECT reference, sku FROM batches")
        )
    ]
    if rows:
        connection.execute(_claims.insert(), rows)


def _users_view_from_the_log(connection: sa.Connection) -> None:
    """The users view becomes inline (written by each registration's own
    transaction): it is made current here, as catch-up would have made it, and
    its catch-up bookkeeping goes."""
    rows: dict[str, dict[str, str]] = {}
    for (payload,) in connection.execute(
        sa.select(sa.cast(sa.column("payload"), sa.Text))
        .select_from(sa.table("event_log"))
        .where(sa.column("name") == "user_registered")
        .order_by(sa.column("position"))
    ):
        registered = json.loads(payload)
        rows[registered["user_id"]] = {
            "user_id": registered["user_id"],
            "name": registered["name"],
            "email": registered["email"],
        }
    view = sa.table(
        "users_view", sa.column("user_id"), sa.column("name"), sa.column("email")
    )
    connection.execute(view.delete())
    if rows:
        connection.execute(view.insert(), list(rows.values()))
    for bookkeeping in ("processed_messages", "subscriber_checkpoints", "dead_letters"):
        connection.execute(
            sa.table(bookkeeping, sa.column("subscriber"))
            .delete()
            .where(sa.column("subscriber") == "users_view")
        )


def _account_for_products(connection: sa.Connection, now: datetime.datetime) -> None:
    logged = {
        sku: (first, last)
        for sku, first, last in connection.execute(
            sa.text(
                "SELECT aggregate_id, MIN(aggregate_version), MAX(aggregate_version)"
                " FROM event_log WHERE aggregate_type = 'product'"
                " GROUP BY aggregate_id"
            )
        )
    }
    products = connection.execute(
        sa.text("SELECT sku, version_number FROM products ORDER BY sku")
    ).all()
    for sku, version in products:
        batches = _stored_batches(connection, sku)
        span = logged.get(sku)
        if span is None:
            _write_history(connection, sku, batches, now)
        elif span[0] != 1 or span[1] != version:
            connection.execute(
                _snapshots.insert(),
                {
                    "aggregate_type": "product",
                    "aggregate_id": sku,
                    "version": max(version, span[1]),
                    "schema_version": _PRODUCT_SNAPSHOT_VERSION,
                    "state": json.dumps(
                        _product_state(sku, batches),
                        sort_keys=True,
                        separators=(",", ":"),
                        ensure_ascii=False,
                    ),
                    "taken_at": now,
                },
            )


def _stored_batches(connection: sa.Connection, sku: str) -> list[dict[str, Any]]:
    batches = []
    for batch_id, reference, quantity, eta in connection.execute(
        sa.text(
            "SELECT id, reference, purchased_quantity, eta FROM batches"
            " WHERE sku = :sku ORDER BY id"
        ),
        {"sku": sku},
    ):
        lines = connection.execute(
            sa.text(
                "SELECT orderid, sku, qty FROM allocations WHERE batch_id = :batch"
                " ORDER BY id"
            ),
            {"batch": batch_id},
        ).all()
        batches.append(
            {
                "reference": reference,
                "purchased_quantity": quantity,
                "eta": None if eta is None else _iso_date(eta),
                "allocations": [
                    {"orderid": orderid, "sku": line_sku, "qty": qty}
                    for orderid, line_sku, qty in lines
                ],
            }
        )
    return batches


def _iso_date(value: Any) -> str:
    # SQLite hands a DATE back as text through a plain text() query.
    return value if isinstance(value, str) else value.isoformat()


def _product_state(sku: str, batches: list[dict[str, Any]]) -> dict[str, Any]:
    # Product.snapshot_state() as of SNAPSHOT_VERSION 1: batches by reference,
    # each with its lines sorted.
    return {
        "batches": {
            batch["reference"]: {
                "sku": sku,
                "purchased_quantity": batch["purchased_quantity"],
                "eta": batch["eta"],
                "allocations": sorted(
                    batch["allocations"],
                    key=lambda line: (line["orderid"], line["sku"], line["qty"]),
                ),
            }
            for batch in sorted(batches, key=lambda batch: batch["reference"])
        }
    }


def _write_history(
    connection: sa.Connection,
    sku: str,
    batches: list[dict[str, Any]],
    now: datetime.datetime,
) -> None:
    # Written in the shapes of schema version 1, as the log held them then: the
    # application upcasts them when it reads them.
    payloads: list[tuple[str, dict[str, Any]]] = [
        (
            "batch_created",
            {
                "ref": batch["reference"],
                "sku": sku,
                "qty": batch["purchased_quantity"],
                "eta": batch["eta"],
            },
        )
        for batch in batches
    ]
    payloads += [
        (
            "allocated",
            {
                "orderid": line["orderid"],
                "sku": line["sku"],
                "qty": line["qty"],
                "batchref": batch["reference"],
            },
        )
        for batch in batches
        for line in batch["allocations"]
    ]
    if not payloads:
        return
    # The view's rows of these lines now have events: they take their versions,
    # as catch-up would give them.
    for version, (name, payload) in enumerate(payloads, 1):
        if name == "allocated":
            connection.execute(
                sa.text(
                    "UPDATE allocations_view SET version = :version"
                    " WHERE orderid = :orderid AND sku = :sku AND qty = :qty"
                    " AND batchref = :batchref AND version < :version"
                ),
                {**payload, "version": version},
            )
    connection.execute(
        _log.insert(),
        [
            {
                "message_id": str(uuid.uuid4()),
                "aggregate_type": "product",
                "aggregate_id": sku,
                "aggregate_version": version,
                "name": name,
                "payload": payload,
                "schema_version": 1,
                "occurred_at": now,
            }
            for version, (name, payload) in enumerate(payloads, 1)
        ],
    )


def downgrade() -> None:
    op.create_table(
        "products",
        sa.Column("sku", sa.String(255), nullable=False),
        sa.Column("version_number", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("sku", name="pk_products"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("sku", sa.String(255), nullable=False),
        sa.Column("purchased_quantity", sa.Integer(), nullable=False),
        sa.Column("eta", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sku"], ["products.sku"], name="fk_batches_sku_products"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        sa.UniqueConstraint("reference", name="uq_batches_reference"),
    )
    op.create_index("ix_batches_sku", "batches", ["sku"])
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("orderid", sa.String(255), nullable=False),
        sa.Column("sku", sa.String(255), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name="fk_allocations_batch_id_batches",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_allocations"),
    )
    op.create_index("ix_allocations_batch_id", "allocations", ["batch_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("version_number", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    _restore_state_tables(op.get_bind())
    op.drop_index("ix_users_view_email", table_name="users_view")
    op.drop_table("snapshots")
    op.drop_table("claims")


def _product_from(connection: sa.Connection, sku: str, stream: list[Any]) -> Any:
    """The product as its latest snapshot and the later events make it: a product
    whose first events predate the log has only its snapshot (upgrade wrote it)."""
    # Imported here: only a downgrade of a populated database needs the domain.
    from allocation.domain import model

    row = connection.execute(
        sa.text(
            "SELECT version, schema_version, state FROM snapshots"
            " WHERE aggregate_type = 'product' AND aggregate_id = :sku"
        ),
        {"sku": sku},
    ).first()
    if row is None or row[1] != model.Product.SNAPSHOT_VERSION:
        return model.Product.replayed(sku, stream)
    start = model.Product.from_snapshot(sku, row[0], json.loads(row[2]))
    later = [event for event in stream if (event.aggregate_version or 0) > row[0]]
    return model.Product.replayed(sku, later, start=start)


def _restore_state_tables(connection: sa.Connection) -> None:
    """Fill the state tables from the log, folded by the domain's own apply steps."""
    # Imported here: only a downgrade of a populated database needs the domain.
    from allocation.adapters import log_rows
    from allocation.domain import users

    streams: dict[tuple[str, str], list[Any]] = {}
    for row in connection.execute(
        sa.text(
            "SELECT position, message_id, aggregate_type, aggregate_id,"
            " aggregate_version, name, payload, schema_version, occurred_at,"
            " correlation_id, causation_id FROM event_log ORDER BY position"
        )
    ).mappings():
        record = dict(row)
        if not isinstance(record["payload"], str):
            record["payload"] = json.dumps(record["payload"])
        # SQLite hands the time back as text here; the fold does not read it.
        record["occurred_at"] = datetime.datetime.now(datetime.UTC)
        logged = log_rows.logged_event(record)
        streams.setdefault((logged.aggregate_type, logged.aggregate_id), []).append(
            logged.event
        )
    for (kind, aggregate_id), stream in streams.items():
        if kind == "user":
            user = users.User.replayed(aggregate_id, stream)
            connection.execute(
                sa.text(
                    "INSERT INTO users (id, name, email, version_number)"
                    " VALUES (:id, :name, :email, :version)"
                ),
                {
                    "id": user.id,
                    "name": user.name,
                    "email": user.email,
                    "version": user.version_number,
                },
            )
        elif kind == "product":
            product = _product_from(connection, aggregate_id, stream)
            connection.execute(
                sa.text(
                    "INSERT INTO products (sku, version_number) VALUES (:sku, :version)"
                ),
                {"sku": product.sku, "version": product.version_number},
            )
            for batch in product.batches:
                batch_id = connection.execute(
                    sa.text(
                        "INSERT INTO batches (reference, sku, purchased_quantity, eta)"
                        " VALUES (:reference, :sku, :quantity, :eta) RETURNING id"
                    ),
                    {
                        "reference": batch.reference,
                        "sku": batch.sku,
                        "quantity": batch.purchased_quantity,
                        "eta": batch.eta,
                    },
                ).scalar_one()
                for line in sorted(
                    batch.allocations, key=lambda line: (line.orderid, line.qty)
                ):
                    connection.execute(
                        sa.text(
                            "INSERT INTO allocations (batch_id, orderid, sku, qty)"
                            " VALUES (:batch, :orderid, :sku, :qty)"
                        ),
                        {
                            "batch": batch_id,
                            "orderid": line.orderid,
                            "sku": line.sku,
                            "qty": line.qty,
                        },
                    )
