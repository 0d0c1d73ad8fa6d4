"""HTTP idempotency keys, and the trace context of every logged event.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Both are new and empty: events logged before this revision have no trace context.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(512), nullable=True))
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("token", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("message_ids", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("trace_context")
