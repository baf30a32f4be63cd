"""Deliveries know when they were due and when their day ends, so every sender can skip a stale one.

``due_at`` is the reader's send moment for the issue, ``day_ends_at`` the reader's local midnight that
ends the issue's date (both UTC). Records written before this revision have neither and stay
deliverable as before.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("due_at", TZ))
        batch.add_column(sa.Column("day_ends_at", TZ))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("day_ends_at")
        batch.drop_column("due_at")
