"""oversight: abuse flags

Revision ID: 3b9cf929ea60
Revises: 1c5f029b3623
Create Date: 2026-11-22 02:39:58.373222

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3b9cf929ea60'
down_revision = '1c5f029b3623'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('abuse_flags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('window_start', sa.DateTime(), nullable=False),
    sa.Column('window_end', sa.DateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('acknowledged_by_id', sa.Integer(), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['acknowledged_by_id'], ['users.id'], name=op.f('fk_abuse_flags_acknowledged_by_id_users')),
    sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_abuse_flags_store_id_stores')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_abuse_flags_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_abuse_flags'))
    )
    with op.batch_alter_table('abuse_flags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_abuse_flags_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_abuse_flags_store_id'), ['store_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_abuse_flags_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('abuse_flags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_abuse_flags_user_id'))
        batch_op.drop_index(batch_op.f('ix_abuse_flags_store_id'))
        batch_op.drop_index(batch_op.f('ix_abuse_flags_created_at'))

    op.drop_table('abuse_flags')
