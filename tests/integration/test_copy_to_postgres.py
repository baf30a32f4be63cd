"""scripts/copy_sqlite_to_postgres.py: a used SQLite database moves to PostgreSQL whole, and work goes on there."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from digest.models import Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from digest.store import schema as t
from tests.conftest import REPO, make_settings

pytestmark = pytest.mark.postgres

SCRIPT = REPO / "scripts" / "copy_sqlite_to_postgres.py"
DAY = date(2026, 8, 19)


def _copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), source, target], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def _counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in t.metadata.sorted_tables}


def test_a_used_sqlite_database_moves_to_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path)
    source = Store(settings.database.url)
    pipeline = Pipeline(settings, source)
    pipeline.fetch(["seed"])
    for i in range(5):
        source.add_subscriber(Subscriber(email=f"move{i}@example.org"))
    assert pipeline.send(DAY).sent == 5
    before = _counts(source)
    issue_id = source.issue_id_for(1, DAY)
    assert issue_id is not None
    sent_issue = source.load_issue(issue_id, pipeline.labels)
    source.close()

    done = _copy(settings.database.url, postgres_url)
    assert done.returncode == 0, done.stderr
    assert f"table=deliveries rows={before['deliveries']}" in done.stdout

    target = Store(postgres_url)
    try:
        assert _counts(target) == before
        assert target.load_issue(issue_id, pipeline.labels) == sent_issue
        assert target.delivery_counts(DAY) == {"sent": 5}
        # The id sequences continue after the copied ids.
        added = target.add_subscriber(Subscriber(email="after@example.org"), datetime.now(UTC))
        assert added.id == max(s.id or 0 for s in target.list_subscribers() if s.email != "after@example.org") + 1

        again = _copy(settings.database.url, postgres_url)
        assert again.returncode == 2 and "not empty" in again.stderr
        assert again.stderr.count("\n") == 1  # one line, no traceback
    finally:
        target.close()
