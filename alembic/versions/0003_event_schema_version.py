"""Every logged event records the version of its schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Rows written before this revision were written with the first version of every
event's schema, so they get 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.add_column(
            sa.Column(
                "schema_version", sa.SmallInteger(), server_default="1", nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("schema_version")
