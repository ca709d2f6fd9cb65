"""incident events: each alertable change of an incident recorded with the incident, and the alert cursor's
position among them, so an incident event stored just before a crash or whose check failed is checked again

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=24), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("stored_at_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("incident_id", "event", name="uq_incident_events_incident_event"),
    )
    with op.batch_alter_table("alert_cursor", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_incident_event_id", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("alert_cursor", schema=None) as batch_op:
        batch_op.drop_column("last_incident_event_id")
    op.drop_table("incident_events")
