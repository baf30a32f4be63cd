"""The project's database: one ``Store`` made of a part per table group (papers, subscribers,
issues, deliveries, bounces, feedback, the daemon's jobs; each in its own module here) plus sources'
state, send runs and the installation's secrets, kept below."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from digest.errors import StoreError
from digest.store import schema as t
from digest.store.bounces import BounceStore
from digest.store.deliveries import DeliveryStore
from digest.store.feedback import FeedbackStore
from digest.store.issues import IssueStore
from digest.store.jobs import JobStore
from digest.store.papers import PaperStore
from digest.store.records import SendRun, SourceRecord
from digest.store.rows import inserted_id, utc_now
from digest.store.subscribers import SubscriberStore


class Store(PaperStore, SubscriberStore, IssueStore, DeliveryStore, BounceStore, FeedbackStore, JobStore):
    """The project's database. Construct with a SQLAlchemy URL; ``migrate()`` brings the schema up to date.

    Every method is a complete transaction. Datetimes must be aware; they come back in UTC.
    """

    # ---- sources --------------------------------------------------------------------------------

    def source_state(self, source: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.source_state.c.state).where(t.source_state.c.source == source)).first()
        return dict(row.state or {}) if row else {}

    def record_fetch(
        self,
        source: str,
        *,
        ok: bool,
        new: int = 0,
        updated: int = 0,
        error: str | None = None,
        state: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Remember one fetch's outcome; ``state`` replaces the stored state only when ``ok``."""
        now = now or utc_now()
        with self.engine.begin() as conn:
            exists = conn.execute(select(t.source_state.c.source).where(t.source_state.c.source == source)).first()
            values: dict[str, Any] = {
                "last_fetch_at": now, "last_result": "ok" if ok else "error",
                "last_error": error, "last_new": new, "last_updated": updated,
            }
            if ok:
                values["last_ok_at"] = now
                if state is not None:
                    values["state"] = dict(state)
            if exists:
                conn.execute(update(t.source_state).where(t.source_state.c.source == source).values(**values))
            else:
                values.setdefault("state", dict(state or {}) if ok else {})
                conn.execute(insert(t.source_state).values(source=source, **values))

    def source_records(self) -> list[SourceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.source_state).order_by(t.source_state.c.source)).mappings().all()
        return [SourceRecord(r["source"], dict(r["state"] or {}), r["last_fetch_at"], r["last_ok_at"],
                             r["last_result"], r["last_error"], r["last_new"], r["last_updated"]) for r in rows]

    # ---- send runs ------------------------------------------------------------------------------

    def start_send_run(self, issue_date: date, now: datetime, dry_run: bool = False) -> int:
        with self.engine.begin() as conn:
            return inserted_id(conn.execute(insert(t.send_runs).values(
                issue_date=issue_date, started_at=now, sent=0, skipped=0, failed=0, dry_run=dry_run,
            )))

    def finish_send_run(self, run_id: int, now: datetime, sent: int, skipped: int, failed: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.send_runs).where(t.send_runs.c.id == run_id).values(
                finished_at=now, sent=sent, skipped=skipped, failed=failed))

    def last_send_run(self) -> SendRun | None:
        query = (select(t.send_runs).where(t.send_runs.c.dry_run.is_(False))
                 .order_by(t.send_runs.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            r = conn.execute(query).mappings().first()
        if r is None:
            return None
        return SendRun(r["id"], r["issue_date"], r["started_at"], r["finished_at"], r["sent"], r["skipped"],
                       r["failed"])

    # ---- installation secrets -------------------------------------------------------------------

    def installation_secret(self, name: str) -> str | None:
        """The stored value of the installation secret ``name``, or None if there is none yet."""
        query = select(t.installation_secrets.c.value).where(t.installation_secrets.c.name == name)
        with self._reading() as conn:
            value: str | None = conn.execute(query).scalar_one_or_none()
        return value

    def ensure_installation_secret(self, name: str, make: Callable[[], str], now: datetime | None = None) -> str:
        """The value of ``name``; if there is none, ``make()`` one and store it first.

        Processes starting together on a fresh database may each make a value: only the first stored
        one is kept (insert-or-ignore), and every caller returns that one.
        """
        existing = self.installation_secret(name)
        if existing is not None:
            return existing
        dialect_insert = self._dialect_insert()
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(t.installation_secrets)
                         .values(name=name, value=make(), created_at=now or utc_now())
                         .on_conflict_do_nothing(index_elements=["name"]))
        stored = self.installation_secret(name)
        if stored is None:  # pragma: no cover - the row was just written in a committed transaction
            raise StoreError(f"installation secret {name!r} could not be stored")
        return stored

    def rotate_installation_secret(self, name: str, value: str, previous: str, keep: bool,
                                   now: datetime | None = None) -> bool:
        """Store ``value`` as ``name`` in one transaction. With ``keep`` the value it replaces is kept
        under the name ``previous``; either way what ``previous`` held before is dropped. Returns
        whether there was a value to replace."""
        now = now or utc_now()
        table = t.installation_secrets
        with self.engine.begin() as conn:
            old = conn.execute(select(table.c.value).where(table.c.name == name)).scalar_one_or_none()
            conn.execute(delete(table).where(table.c.name.in_([name, previous])))
            if keep and old is not None:
                conn.execute(insert(table).values(name=previous, value=old, created_at=now))
            conn.execute(insert(table).values(name=name, value=value, created_at=now))
        return old is not None

    def drop_installation_secret(self, name: str) -> bool:
        """Delete the installation secret ``name``; returns whether there was one."""
        with self.engine.begin() as conn:
            table = t.installation_secrets
            return conn.execute(delete(table).where(table.c.name == name)).rowcount > 0
