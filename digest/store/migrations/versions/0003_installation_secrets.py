"""The installation's own secrets (the link-signing key), and each reader's last unexplained refusal.

``installation_secrets`` holds values generated once per installation and shared by every process on
the database (sender, daemon, web app): today the link-signing key, and the key it replaced while old
links are still honoured. ``address_refusals`` holds, per reader, the issue date on which their address
was last refused with a 5xx that named no reason: a second such refusal on a later issue counts as a
hard bounce, one alone never does. (A table of its own: rebuilding ``subscribers`` on SQLite would
cascade-delete their issues.)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "installation_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "address_refusals",
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("refused_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("address_refusals")
    op.drop_table("installation_secrets")
