"""incidents and suppressed anomalies: the incidents topic's newest record per incident; an anomaly's
``suppressed_by`` (operator feedback), null for those stored before; alerts per incident event (an alert
row names an anomaly or an incident and its event, unique per rule, incident, event and channel)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 19:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suppressed_by", sa.String(length=32), nullable=True))
    op.create_table(
        "incidents",
        sa.Column("incident_id", sa.String(length=64), primary_key=True),
        sa.Column("meter_id", sa.String(length=128), nullable=False),
        sa.Column("feeder_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("closed_by", sa.String(length=16), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("peak_severity", sa.String(length=16), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.Column("energy_delta_kwh", sa.Float(), nullable=False),
        sa.Column("worst_timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("worst_score", sa.Float(), nullable=False),
        sa.Column("causes", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_incidents_status_started", "incidents", ["status", "started_ms"], unique=False)
    op.create_index("ix_incidents_feeder", "incidents", ["feeder_id"], unique=False)
    op.create_index("ix_incidents_meter", "incidents", ["meter_id"], unique=False)
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("anomaly_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("incident_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("incident_event", sa.String(length=24), nullable=True))
        batch_op.create_unique_constraint("uq_alerts_rule_incident_event_channel",
                                          ["rule_id", "incident_id", "incident_event", "channel"])


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_alerts_rule_incident_event_channel", type_="unique")
        batch_op.drop_column("incident_event")
        batch_op.drop_column("incident_id")
        batch_op.alter_column("anomaly_id", existing_type=sa.Integer(), nullable=False)
    op.drop_index("ix_incidents_meter", table_name="incidents")
    op.drop_index("ix_incidents_feeder", table_name="incidents")
    op.drop_index("ix_incidents_status_started", table_name="incidents")
    op.drop_table("incidents")
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.drop_column("suppressed_by")
