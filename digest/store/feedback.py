"""Store I/O for reader feedback ("more like this" / "less like this", imported libraries). Mixed into
``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, insert, select, update

from digest.models import Feedback, Verdict
from digest.store import schema as t

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["FeedbackStore"]

# Ids per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500


class FeedbackStore:
    engine: Engine

    def set_feedback(self, subscriber_id: int, verdicts: Iterable[tuple[str, Verdict]], now: datetime) -> int:
        """Record each ``(paper_id, verdict)`` for the reader, replacing an earlier verdict on the same
        paper; how many rows changed (the same verdict again changes nothing: a second click, a
        reloaded page, an import run twice). One transaction."""
        wanted = dict(verdicts)
        if not wanted:
            return 0
        f = t.feedback.c
        changed = 0
        with self.engine.begin() as conn:
            known = self._verdicts(conn, subscriber_id, list(wanted))
            for paper_id, verdict in wanted.items():
                old = known.get(paper_id)
                if old == verdict.value:
                    continue
                if old is None:
                    conn.execute(insert(t.feedback).values(subscriber_id=subscriber_id, paper_id=paper_id,
                                                           verdict=verdict.value, at=now))
                else:
                    conn.execute(update(t.feedback).where(and_(f.subscriber_id == subscriber_id,
                                                               f.paper_id == paper_id))
                                 .values(verdict=verdict.value, at=now))
                changed += 1
        return changed

    @staticmethod
    def _verdicts(conn: Connection, subscriber_id: int, paper_ids: Sequence[str]) -> dict[str, str]:
        f = t.feedback.c
        found: dict[str, str] = {}
        for start in range(0, len(paper_ids), _CHUNK):
            chunk = paper_ids[start:start + _CHUNK]
            rows = conn.execute(select(f.paper_id, f.verdict).where(
                and_(f.subscriber_id == subscriber_id, f.paper_id.in_(chunk))))
            found.update({r.paper_id: r.verdict for r in rows})
        return found

    def clear_feedback(self, subscriber_id: int, paper_id: str | None = None) -> int:
        """Forget the reader's verdict on ``paper_id`` (all their verdicts when None); how many went."""
        f = t.feedback.c
        where = f.subscriber_id == subscriber_id
        if paper_id is not None:
            where = and_(where, f.paper_id == paper_id)
        with self.engine.begin() as conn:
            return conn.execute(delete(t.feedback).where(where)).rowcount or 0

    def list_feedback(self, subscriber_id: int) -> list[Feedback]:
        """The reader's verdicts, oldest first."""
        return self.feedback_of([subscriber_id]).get(subscriber_id, [])

    def feedback_of(self, subscriber_ids: Sequence[int]) -> dict[int, list[Feedback]]:
        """The verdicts of each of these readers (oldest first); readers without any are left out, so a
        send costs one query per chunk of readers and nothing more for those who never gave feedback."""
        f = t.feedback.c
        out: dict[int, list[Feedback]] = {}
        ids = list(subscriber_ids)
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                rows = conn.execute(select(f.subscriber_id, f.paper_id, f.verdict, f.at)
                                    .where(f.subscriber_id.in_(chunk))
                                    .order_by(f.subscriber_id, f.at, f.paper_id))
                for r in rows:
                    out.setdefault(r.subscriber_id, []).append(Feedback(r.paper_id, Verdict(r.verdict), r.at))
        return out

    def readers_with_feedback(self) -> set[int]:
        """Ids of the readers who gave any feedback (a send asks once, then reads only theirs)."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(t.feedback.c.subscriber_id).distinct())}

    def paper_ids_known(self, paper_ids: Sequence[str]) -> set[str]:
        """Which of these paper ids the store holds."""
        p = t.papers.c
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(paper_ids), _CHUNK):
                chunk = list(paper_ids[start:start + _CHUNK])
                found.update(r[0] for r in conn.execute(select(p.id).where(p.id.in_(chunk))))
        return found

    def paper_ids_by_title_key(self, keys: Sequence[str]) -> dict[str, str]:
        """title_key -> the id of a stored paper with that normalised title (digest.sources.normalize)."""
        p = t.papers.c
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start:start + _CHUNK])
                for r in conn.execute(select(p.title_key, p.id).where(p.title_key.in_(chunk)).order_by(p.id)):
                    found.setdefault(r.title_key, r.id)
        return found
