"""Fixtures every test may use: settings pointing into a temp folder, a real SQLite store, seed papers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.config import Settings, settings_from_dict
from digest.models import Paper
from digest.sources.seed import parse_listing
from digest.store import Store

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEED_FILE = REPO / "digest" / "defaults" / "hf_papers_search.txt"
NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Defaults with the database and outbox under ``tmp_path``; ``sections`` override per TOML table."""
    data: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path / 'digest.sqlite3'}"},
        "mailer": {"backend": "memory", "path": str(tmp_path / "outbox")},
        "sources": {"seed": {"path": str(SEED_FILE)}},
        "demo": {"subscribers_csv": ""},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return settings_from_dict(data, origin="test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.database.url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def seed_papers() -> list[Paper]:
    return parse_listing(SEED_FILE.read_text(encoding="utf-8"))


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> str | None:
    """None if the local PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as err:  # any failure means: skip with the reason
        return f"PostgreSQL on 127.0.0.1:5432 is not reachable ({err.__class__.__name__}: {err})"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import uuid

    import psycopg

    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same store contract on both backends."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.close()
