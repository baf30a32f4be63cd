"""Reader feedback: "more like this" / "less like this" per (reader, paper), the later verdict winning.

A table of its own (never columns on ``subscribers``: rebuilding that table on SQLite would cascade to
every issue); its rows go with their reader through the foreign key (and ``Store.remove_subscriber``
deletes them explicitly too, like the reader's issues).

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("paper_id", sa.String(64),
                  sa.ForeignKey("papers.id", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
