"""The durable event log, subscriber tracking, dead letters and the users view.

The allocations view gains the version of the last event applied to each row, so it
no longer depends on the order in which events reach it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Users registered before this revision get version 1 (their registration) and their
UserRegistered event in the log, so the log accounts for them. Products are not
backfilled: `allocation verify` reports any that predate the log.
"""

from __future__ import annotations

import datetime
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "version_number", sa.Integer(), server_default="0", nullable=False
            )
        )
    with op.batch_alter_table("allocations_view") as batch:
        batch.add_column(
            sa.Column("version", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "allocated", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
    op.create_table(
        "event_log",
        sa.Column("position", _position, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("aggregate_type", sa.String(50), nullable=False),
        sa.Column("aggregate_id", sa.String(255), nullable=False),
        sa.Column("aggregate_version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("correlation_id", sa.String(36), nullable=True),
        sa.Column("causation_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("position", name="pk_event_log"),
        sa.UniqueConstraint("message_id", name="uq_event_log_message_id"),
        sa.UniqueConstraint(
            "aggregate_type",
            "aggregate_id",
            "aggregate_version",
            name="uq_event_log_aggregate_type",
        ),
    )
    op.create_table(
        "processed_messages",
        sa.Column("subscriber", sa.String(100), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint(
            "subscriber", "message_id", name="pk_processed_messages"
        ),
    )
    op.create_table(
        "subscriber_checkpoints",
        sa.Column("subscriber", sa.String(100), nullable=False),
        sa.Column("position", _position, nullable=False),
        sa.PrimaryKeyConstraint("subscriber", name="pk_subscriber_checkpoints"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscriber", sa.String(100), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_tried", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "subscriber", "message_id", name="uq_dead_letters_subscriber"
        ),
    )
    op.create_table(
        "users_view",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_users_view"),
    )
    _backfill_users()


def _backfill_users() -> None:
    connection = op.get_bind()
    users = connection.execute(sa.text("SELECT id, name, email FROM users")).all()
    if not users:
        return
    now = datetime.datetime.now(datetime.UTC)
    connection.execute(sa.text("UPDATE users SET version_number = 1"))
    log = sa.table(
        "event_log",
        sa.column("message_id"),
        sa.column("aggregate_type"),
        sa.column("aggregate_id"),
        sa.column("aggregate_version"),
        sa.column("name"),
        sa.column("payload", sa.JSON()),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
    )
    connection.execute(
        log.insert(),
        [
            {
                "message_id": str(uuid.uuid4()),
                "aggregate_type": "user",
                "aggregate_id": user_id,
                "aggregate_version": 1,
                "name": "user_registered",
                "payload": {"user_id": user_id, "name": name, "email": email},
                "occurred_at": now,
            }
            for user_id, name, email in users
        ],
    )


def downgrade() -> None:
    op.drop_table("users_view")
    op.drop_table("dead_letters")
    op.drop_table("subscriber_checkpoints")
    op.drop_table("processed_messages")
    op.drop_table("event_log")
    with op.batch_alter_table("allocations_view") as batch:
        batch.drop_column("allocated")
        batch.drop_column("version")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("version_number")
