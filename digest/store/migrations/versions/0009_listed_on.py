"""Papers know the day of the listing that carried them (``listed_on``), not only when they were fetched.

A day fetched later (``fetch --date``, a replayed recording) used to look like that day's news in
``papers list``. Rows written before this revision are dated by the day (UTC) they were first seen:
the best the store knows, and right for a store that fetched each day's listing on its day.

Plain ADD/DROP COLUMN, never a batch "move and copy": on SQLite that drops and re-creates ``papers``,
and with foreign keys on that would cascade to every topic, issue entry and feedback of its papers.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEX = "ix_papers_listed_on"


def upgrade() -> None:
    op.add_column("papers", sa.Column("listed_on", sa.Date))
    papers = sa.table("papers", sa.column("first_seen", sa.DateTime(timezone=True)), sa.column("listed_on", sa.Date))
    if op.get_bind().dialect.name == "postgresql":
        # The UTC day, whatever the session's time zone (the store writes and reads first_seen in UTC).
        first_day: sa.ColumnElement[object] = sa.cast(sa.func.timezone("UTC", papers.c.first_seen), sa.Date)
    else:
        # SQLite keeps first_seen as naive UTC text ("YYYY-MM-DD HH:MM:SS..."); date() takes its day.
        first_day = sa.func.date(papers.c.first_seen)
    op.execute(papers.update().values(listed_on=first_day))
    op.create_index(_INDEX, "papers", ["listed_on"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="papers")
    op.drop_column("papers", "listed_on")
