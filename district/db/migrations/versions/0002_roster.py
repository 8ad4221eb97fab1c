"""The district roster (issue 13): roster_seniors, roster_templates (sealed at rest), roster_changes (the
district-wide version, in commit order), roster_kiosks (each kiosk's model and versions), roster_erasures.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:32:40.368969
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from district.db.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('roster_changes',
    sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('senior_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', UtcDateTime(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_roster_changes'))
    )
    with op.batch_alter_table('roster_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_changes_senior_id_version'), ['senior_id', 'version'], unique=False)

    op.create_table('roster_erasures',
    sa.Column('senior_id', sa.String(length=64), nullable=False),
    sa.Column('district', sa.String(length=64), nullable=False),
    sa.Column('centre_id', sa.String(length=64), nullable=False),
    sa.Column('kiosk_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('confirmed_at', UtcDateTime(), nullable=True),
    sa.Column('templates_erased', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('senior_id', 'district', 'centre_id', 'kiosk_id', name=op.f('pk_roster_erasures'))
    )
    with op.batch_alter_table('roster_erasures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_erasures_confirmed_at'), ['confirmed_at'], unique=False)

    op.create_table('roster_kiosks',
    sa.Column('district', sa.String(length=64), nullable=False),
    sa.Column('centre_id', sa.String(length=64), nullable=False),
    sa.Column('kiosk_id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('applied_version', sa.BigInteger(), nullable=False),
    sa.Column('sent_version', sa.BigInteger(), nullable=False),
    sa.Column('last_sync_at', UtcDateTime(), nullable=True),
    sa.Column('last_receipt_at', UtcDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('district', 'centre_id', 'kiosk_id', name=op.f('pk_roster_kiosks'))
    )
    op.create_table('roster_seniors',
    sa.Column('senior_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=False),
    sa.Column('hukou', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('card_no', sa.String(length=32), nullable=True),
    sa.Column('home_centre', sa.String(length=64), nullable=False),
    sa.Column('centres', sa.JSON(), nullable=True),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('senior_id', name=op.f('pk_roster_seniors'))
    )
    with op.batch_alter_table('roster_seniors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_seniors_version'), ['version'], unique=False)

    op.create_table('roster_templates',
    sa.Column('template_id', sa.String(length=36), nullable=False),
    sa.Column('senior_id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('quality', sa.Float(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=False),
    sa.Column('from_kiosk', sa.String(length=200), nullable=False),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('template_id', name=op.f('pk_roster_templates'))
    )
    with op.batch_alter_table('roster_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roster_templates_senior_id'), ['senior_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('roster_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_templates_senior_id'))

    op.drop_table('roster_templates')
    with op.batch_alter_table('roster_seniors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_seniors_version'))

    op.drop_table('roster_seniors')
    op.drop_table('roster_kiosks')
    with op.batch_alter_table('roster_erasures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_erasures_confirmed_at'))

    op.drop_table('roster_erasures')
    with op.batch_alter_table('roster_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roster_changes_senior_id_version'))

    op.drop_table('roster_changes')
