"""anomaly baseline and band residual: Anomaly schema version 2 splits the meter's usual usage from the forecast

Version 1 anomalies put the baseline in ``expected`` when no forecast covered the reading; version 2
keeps ``expected`` for the forecast alone and sends the baseline (and the residual in band widths)
separately, so an operator can tell the two apart. Both columns are nullable: anomalies stored
before this migration (and any a version 1 writer still sends) have neither.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("band_residual", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("baseline", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.drop_column("baseline")
        batch_op.drop_column("band_residual")
