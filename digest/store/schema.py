"""The database schema as SQLAlchemy Core tables (the migrations create exactly these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zone type and hands back naive values; storing UTC and re-attaching it on read
    keeps comparisons correct on both SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


papers = Table(
    "papers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("title", Text, nullable=False),
    Column("title_key", String(64), nullable=False, index=True),
    Column("abstract", Text, nullable=False, default=""),
    Column("authors", JSON, nullable=False, default=list),
    Column("published", UTCDateTime()),
    Column("version", Integer),
    Column("url", Text),
    Column("pdf_url", Text),
    Column("code_url", Text),
    Column("project_url", Text),
    Column("upvotes", Integer),
    Column("ai_summary", Text),
    Column("ai_keywords", JSON, nullable=False, default=list),
    Column("categories", JSON, nullable=False, default=list),
    Column("sources", JSON, nullable=False, default=list),
    Column("first_seen", UTCDateTime(), nullable=False, index=True),
    # The day of the listing that carried the paper (earliest known); NULL only in rows written before
    # revision 0009 that its backfill could not date.
    Column("listed_on", Date, index=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    # NULL until the tagger has run on the current title/abstract; reset when they change.
    Column("tagged_at", UTCDateTime()),
)

paper_topics = Table(
    "paper_topics",
    metadata,
    Column("paper_id", String(64), ForeignKey("papers.id", ondelete="CASCADE", onupdate="CASCADE"),
           primary_key=True),
    Column("topic", String(64), primary_key=True),
    Column("score", Float, nullable=False),
    Column("why", JSON, nullable=False, default=list),
    Index("ix_paper_topics_topic", "topic"),
)

source_state = Table(
    "source_state",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("state", JSON, nullable=False, default=dict),
    Column("last_fetch_at", UTCDateTime()),
    Column("last_ok_at", UTCDateTime()),
    Column("last_result", String(16)),
    Column("last_error", Text),
    Column("last_new", Integer, nullable=False, default=0),
    Column("last_updated", Integer, nullable=False, default=0),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", Text, nullable=False, default=""),
    Column("topics", JSON, nullable=False, default=list),
    Column("keywords", JSON, nullable=False, default=list),
    Column("exclude", JSON, nullable=False, default=list),
    Column("authors", JSON, nullable=False, default=list),
    Column("frequency", String(16), nullable=False, default="daily"),
    Column("send_at", String(5), nullable=False, default="08:00"),
    Column("tz", String(64), nullable=False, default="UTC"),
    Column("max_papers", Integer, nullable=False, default=20),
    Column("send_empty", Boolean, nullable=False, default=False),
    Column("weekday", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False, default="confirmed", index=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("hard_bounces", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),
    # Bounces and complaints (migration 0005): counts, the latest one, and why the status last changed.
    Column("soft_bounces", Integer, nullable=False, default=0, server_default="0"),
    Column("complaints", Integer, nullable=False, default=0, server_default="0"),
    Column("status_reason", Text),
    Column("status_changed_at", UTCDateTime()),
    Column("last_bounce_at", UTCDateTime()),
    Column("last_bounce_kind", String(16)),
    Column("last_bounce_status", String(16)),
    Column("last_bounce_diagnostic", Text),
)

issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("paper_count", Integer, nullable=False, default=0),
    UniqueConstraint("subscriber_id", "issue_date", name="uq_issues_subscriber_date"),
    Index("ix_issues_date", "issue_date"),
)

issue_papers = Table(
    "issue_papers",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("paper_id", String(64), ForeignKey("papers.id", onupdate="CASCADE"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("section", String(64), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("score", Float, nullable=False, default=0.0),
    Index("ix_issue_papers_paper", "paper_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("message_id", String(255), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", UTCDateTime()),
    Column("claimed_by", String(128)),
    Column("lease_until", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("in_doubt", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The reader's send moment and the local midnight that ends the issue's date: a sender that keeps
    # the daemon's rules (deliver_pending, the daemon itself) claims none past either.
    Column("due_at", UTCDateTime()),
    Column("day_ends_at", UTCDateTime()),
    # The bounce or complaint that came back for this message, if any (migration 0005).
    Column("bounce_kind", String(16)),
    Column("bounce_status", String(16)),
    Column("bounce_diagnostic", Text),
    Column("bounced_at", UTCDateTime()),
    Index("ix_deliveries_status", "status", "next_attempt_at"),
    Index("ix_deliveries_subscriber", "subscriber_id"),
)

send_runs = Table(
    "send_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issue_date", Date, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("sent", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("dry_run", Boolean, nullable=False, default=False),
)

# Values made once per installation and shared by every process on the database: the link-signing
# key (``digest.signing_key``) and, after a rotation, the key it replaced.
installation_secrets = Table(
    "installation_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Per reader, the last refusal of their address that named no reason (a bare 5xx at RCPT, or a bounce
# such as a bare 5.0.0 DSN, digest.bounces): one alone never suppresses (a misconfigured relay says the
# same of every address); a second on a later issue, by either path, counts as a hard bounce.
address_refusals = Table(
    "address_refusals",
    metadata,
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("issue_date", Date, nullable=False),
    Column("detail", Text, nullable=False),
    Column("refused_at", UTCDateTime(), nullable=False),
)

bounce_events = Table(
    "bounce_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # One event per (incoming message, delivery): ingesting the same message again changes nothing.
    Column("report_key", String(64), nullable=False, unique=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(16), nullable=False),  # stdin | imap | webhook
    Column("kind", String(16), nullable=False),  # hard | soft | delayed | unexplained | refused | complaint
    Column("action", String(16), nullable=False),  # recorded | counted | suppressed | unsubscribed
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="SET NULL")),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE")),
    Column("issue_date", Date),
    Column("email", String(320), nullable=False),
    Column("status", String(16)),
    Column("diagnostic", Text, nullable=False, default="", server_default=""),
    Index("ix_bounce_events_subscriber", "subscriber_id", "kind", "received_at"),
    Index("ix_bounce_events_date", "issue_date"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# What each reader told the digest about a paper ("more like this" / "less like this", or a paper of
# their own library, counted as "more"): one row per (reader, paper), a later verdict replacing an
# earlier one; it goes with the reader (and with the paper, should one ever be deleted).
feedback = Table(
    "feedback",
    metadata,
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("paper_id", String(64), ForeignKey("papers.id", ondelete="CASCADE", onupdate="CASCADE"),
           primary_key=True),
    Column("verdict", String(8), nullable=False),  # more | less
    Column("at", UTCDateTime(), nullable=False),
)
