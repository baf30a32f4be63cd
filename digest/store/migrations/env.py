"""Alembic environment: runs migrations on the connection digest's Store hands over."""

from __future__ import annotations

from alembic import context

from digest.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode rebuilds tables where needed.
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=lambda name, type_, _parent: type_ != "table" or not (name or "").startswith("apscheduler"),
)
with context.begin_transaction():
    context.run_migrations()
