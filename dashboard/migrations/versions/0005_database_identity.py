"""database identity: a random id per database, so the dashboards sharing one database form one consumer group

Replicas on the same database share the topics' partitions in the ingest's Kafka consumer group
``wattsup-dashboard-<id>``; a dashboard on another database (another SQLite file) is in another group
and stores every record itself.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:40:00
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "database_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "database_id": uuid.uuid4().hex[:16]}])


def downgrade() -> None:
    op.drop_table("database_identity")
