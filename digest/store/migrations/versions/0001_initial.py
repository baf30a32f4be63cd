"""Initial schema: papers, topics, source state, subscribers, issues, deliveries, send runs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "papers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("title_key", sa.String(64), nullable=False, index=True),
        sa.Column("abstract", sa.Text, nullable=False),
        sa.Column("authors", sa.JSON, nullable=False),
        sa.Column("published", TZ),
        sa.Column("version", sa.Integer),
        sa.Column("url", sa.Text),
        sa.Column("pdf_url", sa.Text),
        sa.Column("code_url", sa.Text),
        sa.Column("project_url", sa.Text),
        sa.Column("upvotes", sa.Integer),
        sa.Column("ai_summary", sa.Text),
        sa.Column("ai_keywords", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("first_seen", TZ, nullable=False, index=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("tagged_at", TZ),
    )
    op.create_table(
        "paper_topics",
        sa.Column("paper_id", sa.String(64),
                  sa.ForeignKey("papers.id", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
        sa.Column("topic", sa.String(64), primary_key=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("why", sa.JSON, nullable=False),
    )
    op.create_index("ix_paper_topics_topic", "paper_topics", ["topic"])
    op.create_table(
        "source_state",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("last_fetch_at", TZ),
        sa.Column("last_ok_at", TZ),
        sa.Column("last_result", sa.String(16)),
        sa.Column("last_error", sa.Text),
        sa.Column("last_new", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.Integer, nullable=False),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("topics", sa.JSON, nullable=False),
        sa.Column("keywords", sa.JSON, nullable=False),
        sa.Column("exclude", sa.JSON, nullable=False),
        sa.Column("authors", sa.JSON, nullable=False),
        sa.Column("frequency", sa.String(16), nullable=False),
        sa.Column("send_at", sa.String(5), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("max_papers", sa.Integer, nullable=False),
        sa.Column("send_empty", sa.Boolean, nullable=False),
        sa.Column("weekday", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("hard_bounces", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("confirmed_at", TZ),
    )
    op.create_table(
        "issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("paper_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("subscriber_id", "issue_date", name="uq_issues_subscriber_date"),
    )
    op.create_index("ix_issues_date", "issues", ["issue_date"])
    op.create_table(
        "issue_papers",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("paper_id", sa.String(64), sa.ForeignKey("papers.id", onupdate="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("section", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_index("ix_issue_papers_paper", "issue_papers", ["paper_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", TZ),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("lease_until", TZ),
        sa.Column("sent_at", TZ),
        sa.Column("in_doubt", sa.Boolean, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_deliveries_status", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_subscriber", "deliveries", ["subscriber_id"])
    op.create_table(
        "send_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("sent", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in ("send_runs", "deliveries", "issue_papers", "issues", "subscribers", "source_state",
                  "paper_topics", "papers"):
        op.drop_table(table)
