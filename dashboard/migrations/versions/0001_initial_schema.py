"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 08:16:46.904358
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_rules',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('min_severity', sa.String(length=16), nullable=False),
    sa.Column('meter_id', sa.String(length=128), nullable=True),
    sa.Column('feeder_id', sa.String(length=128), nullable=True),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('webhook_url', sa.Text(), nullable=True),
    sa.Column('email_to', sa.String(length=320), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('anomalies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('meter_id', sa.String(length=128), nullable=False),
    sa.Column('feeder_id', sa.String(length=128), nullable=False),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('observed', sa.Float(), nullable=False),
    sa.Column('expected', sa.Float(), nullable=True),
    sa.Column('lower', sa.Float(), nullable=True),
    sa.Column('upper', sa.Float(), nullable=True),
    sa.Column('residual', sa.Float(), nullable=True),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=True),
    sa.Column('causes', sa.JSON(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('detected_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('meter_id', 'timestamp_ms', name='uq_anomalies_meter_ts')
    )
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.create_index('ix_anomalies_feeder_ts', ['feeder_id', 'timestamp_ms'], unique=False)
        batch_op.create_index('ix_anomalies_ts', ['timestamp_ms'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('consumer_offsets',
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('topic', 'partition')
    )
    op.create_table('forecasts',
    sa.Column('meter_id', sa.String(length=128), nullable=False),
    sa.Column('feeder_id', sa.String(length=128), nullable=False),
    sa.Column('generated_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('interval_seconds', sa.Integer(), nullable=False),
    sa.Column('points', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('meter_id')
    )
    op.create_table('meters',
    sa.Column('meter_id', sa.String(length=128), nullable=False),
    sa.Column('feeder_id', sa.String(length=128), nullable=False),
    sa.Column('last_reading_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('meter_id')
    )
    with op.batch_alter_table('meters', schema=None) as batch_op:
        batch_op.create_index('ix_meters_feeder', ['feeder_id'], unique=False)

    op.create_table('readings',
    sa.Column('meter_id', sa.String(length=128), nullable=False),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.Column('feeder_id', sa.String(length=128), nullable=False),
    sa.Column('kwh', sa.Float(), nullable=False),
    sa.Column('interval_seconds', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('meter_id', 'timestamp_ms')
    )
    with op.batch_alter_table('readings', schema=None) as batch_op:
        batch_op.create_index('ix_readings_feeder_ts', ['feeder_id', 'timestamp_ms'], unique=False)
        batch_op.create_index('ix_readings_ts', ['timestamp_ms'], unique=False)

    op.create_table('alerts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('rule_name', sa.String(length=128), nullable=False),
    sa.Column('anomaly_id', sa.Integer(), nullable=False),
    sa.Column('meter_id', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('sent_at_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['anomaly_id'], ['anomalies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('rule_id', 'anomaly_id', 'channel', name='uq_alerts_rule_anomaly_channel')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_rule_meter_sent', ['rule_id', 'meter_id', 'sent_at_ms'], unique=False)

    op.create_table('web_sessions',
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('expires_at_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_hash')
    )


def downgrade() -> None:
    op.drop_table('web_sessions')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_rule_meter_sent')

    op.drop_table('alerts')
    with op.batch_alter_table('readings', schema=None) as batch_op:
        batch_op.drop_index('ix_readings_ts')
        batch_op.drop_index('ix_readings_feeder_ts')

    op.drop_table('readings')
    with op.batch_alter_table('meters', schema=None) as batch_op:
        batch_op.drop_index('ix_meters_feeder')

    op.drop_table('meters')
    op.drop_table('forecasts')
    op.drop_table('consumer_offsets')
    op.drop_table('api_tokens')
    with op.batch_alter_table('anomalies', schema=None) as batch_op:
        batch_op.drop_index('ix_anomalies_ts')
        batch_op.drop_index('ix_anomalies_feeder_ts')

    op.drop_table('anomalies')
    op.drop_table('alert_rules')
