"""The allocations view has one row per order line: (orderid, sku, qty).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Keyed by (orderid, sku), the view kept one line per sku of an order, although an
order may hold lines of one sku in several batches: the others were overwritten.
Those lost lines are only in the event log, so the rows that events wrote are
rebuilt from it, by the projection's rule (the newest event of each line wins),
with the versions a replay would give them; backfilling a quantity onto the rows
that survived would have kept the loss. Rows no event wrote (version 0, from before
the log) keep their line, with its quantity taken from the allocations table.

The downgrade keeps, of the lines of one (orderid, sku), the one changed last, as
the old key did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_view = sa.table(
    "allocations_view",
    sa.column("orderid", sa.String()),
    sa.column("sku", sa.String()),
    sa.column("qty", sa.Integer()),
    sa.column("batchref", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("allocated", sa.Boolean()),
)
_log = sa.table(
    "event_log",
    sa.column("position", sa.Integer()),
    sa.column("aggregate_type", sa.String()),
    sa.column("aggregate_version", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("payload", sa.JSON()),
)
_allocations = sa.table(
    "allocations",
    sa.column("batch_id", sa.Integer()),
    sa.column("orderid", sa.String()),
    sa.column("sku", sa.String()),
    sa.column("qty", sa.Integer()),
)
_batches = sa.table("batches", sa.column("id", sa.Integer()), sa.column("reference"))


def upgrade() -> None:
    with op.batch_alter_table("allocations_view") as batch:
        batch.add_column(sa.Column("qty", sa.Integer(), nullable=True))
    _keep_rows_from_before_the_log()
    with op.batch_alter_table("allocations_view") as batch:
        batch.alter_column("qty", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("pk_allocations_view", type_="primary")
        batch.create_primary_key("pk_allocations_view", ["orderid", "sku", "qty"])
    _rebuild_from_the_log()


def _keep_rows_from_before_the_log() -> None:
    line_qty = (
        sa.select(sa.func.min(_allocations.c.qty))
        .select_from(
            _allocations.join(_batches, _batches.c.id == _allocations.c.batch_id)
        )
        .where(
            _allocations.c.orderid == _view.c.orderid,
            _allocations.c.sku == _view.c.sku,
            _batches.c.reference == _view.c.batchref,
        )
        .scalar_subquery()
    )
    op.execute(_view.update().where(_view.c.version == 0).values(qty=line_qty))
    # Every other row is rebuilt from the log.
    op.execute(_view.delete().where(sa.or_(_view.c.qty.is_(None), _view.c.version > 0)))


def _rebuild_from_the_log() -> None:
    payload = _log.c.payload
    lines = (
        sa.select(
            payload["orderid"].as_string().label("orderid"),
            payload["sku"].as_string().label("sku"),
            payload["qty"].as_integer().label("qty"),
            payload["batchref"].as_string().label("batchref"),
            _log.c.aggregate_version.label("version"),
            (_log.c.name == "allocated").label("allocated"),
            sa.func.row_number()
            .over(
                partition_by=(
                    payload["orderid"].as_string(),
                    payload["sku"].as_string(),
                    payload["qty"].as_integer(),
                ),
                order_by=(
                    _log.c.aggregate_version.desc(),
                    _log.c.position.desc(),
                ),
            )
            .label("newest_first"),
        )
        .where(
            _log.c.aggregate_type == "product",
            _log.c.name.in_(["allocated", "deallocated"]),
        )
        .subquery()
    )
    kept = sa.select(_view.c.orderid).where(
        _view.c.orderid == lines.c.orderid,
        _view.c.sku == lines.c.sku,
        _view.c.qty == lines.c.qty,
    )
    columns = ["orderid", "sku", "qty", "batchref", "version", "allocated"]
    op.execute(
        _view.insert().from_select(
            columns,
            sa.select(*(lines.c[name] for name in columns)).where(
                lines.c.newest_first == 1, ~kept.exists()
            ),
        )
    )


def downgrade() -> None:
    other = _view.alias("other")
    changed_later = sa.exists().where(
        other.c.orderid == _view.c.orderid,
        other.c.sku == _view.c.sku,
        sa.or_(
            other.c.version > _view.c.version,
            sa.and_(other.c.version == _view.c.version, other.c.qty > _view.c.qty),
        ),
    )
    op.execute(_view.delete().where(changed_later))
    with op.batch_alter_table("allocations_view") as batch:
        batch.drop_constraint("pk_allocations_view", type_="primary")
        batch.create_primary_key("pk_allocations_view", ["orderid", "sku"])
        batch.drop_column("qty")
