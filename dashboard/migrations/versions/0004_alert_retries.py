"""alert retries: a failed delivery is tried again with backoff; its attempts and next time are stored

Rows from before have made one attempt and wait for none.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("next_attempt_ms", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_alerts_status_next", ["status", "next_attempt_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_status_next")
        batch_op.drop_column("next_attempt_ms")
        batch_op.drop_column("attempts")
