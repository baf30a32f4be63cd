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


# Plain ADD/DROP COLUMN, never a batch "move and copy": on SQLite that drops and re-creates the table,
# and dropping ``subscribers`` with foreign keys on would cascade to every issue and delivery.
def _subscriber_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"),
        sa.Column("complaints", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status_reason", sa.Text),
        sa.Column("status_changed_at", TZ),
        sa.Column("last_bounce_at", TZ),
        sa.Column("last_bounce_kind", sa.String(16)),
        sa.Column("last_bounce_status", sa.String(16)),
        sa.Column("last_bounce_diagnostic", sa.Text),
    )


def _delivery_columns() -> tuple[sa.Column[object], ...]:
    return (
        sa.Column("bounce_kind", sa.String(16)),
        sa.Column("bounce_status", sa.String(16)),
        sa.Column("bounce_diagnostic", sa.Text),
        sa.Column("bounced_at", TZ),
    )


def upgrade() -> None:
    for column in _subscriber_columns():
        op.add_column("subscribers", column)
    for column in _delivery_columns():
        op.add_column("deliveries", column)
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
    for column in reversed(_delivery_columns()):
        op.drop_column("deliveries", column.name)
    for column in reversed(_subscriber_columns()):
        op.drop_column("subscribers", column.name)
