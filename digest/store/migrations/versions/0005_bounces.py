"""Bounces and complaints: the events, what they did to deliveries and subscribers, suppressed addresses.

``bounce_events`` keeps every bounce or complaint that named a delivery of ours (``report_key`` makes
ingesting the same message twice a no-op); deliveries and subscribers carry the latest one, and
subscribers why their status last changed. ``suppressions`` lists addresses never to mail again.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("complaints", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("status_reason", sa.Text))
        batch.add_column(sa.Column("status_changed_at", TZ))
        batch.add_column(sa.Column("last_bounce_at", TZ))
        batch.add_column(sa.Column("last_bounce_kind", sa.String(16)))
        batch.add_column(sa.Column("last_bounce_status", sa.String(16)))
        batch.add_column(sa.Column("last_bounce_diagnostic", sa.Text))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("bounce_kind", sa.String(16)))
        batch.add_column(sa.Column("bounce_status", sa.String(16)))
        batch.add_column(sa.Column("bounce_diagnostic", sa.Text))
        batch.add_column(sa.Column("bounced_at", TZ))
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_key", sa.String(64), nullable=False, unique=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id", ondelete="SET NULL")),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE")),
        sa.Column("issue_date", sa.Date),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16)),
        sa.Column("diagnostic", sa.Text, nullable=False, server_default=""),
        sa.Index("ix_bounce_events_subscriber", "subscriber_id", "kind", "received_at"),
        sa.Index("ix_bounce_events_date", "issue_date"),
    )
    op.create_table(
        "suppressions",
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_table("bounce_events")
    with op.batch_alter_table("deliveries") as batch:
        for name in ("bounced_at", "bounce_diagnostic", "bounce_status", "bounce_kind"):
            batch.drop_column(name)
    with op.batch_alter_table("subscribers") as batch:
        for name in ("last_bounce_diagnostic", "last_bounce_status", "last_bounce_kind", "last_bounce_at",
                     "status_changed_at", "status_reason", "complaints", "soft_bounces"):
            batch.drop_column(name)
