"""Store I/O for papers and their topics. Mixed into ``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from digest.models import Paper, TopicAssignment
from digest.sources.normalize import title_key
from digest.store import schema as t
from digest.store.base import StoreBase
from digest.store.rows import Row, row_to_paper, utc_now


def _union(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _merge(old: Paper, new: Paper) -> Paper:
    """Fold what ``new`` reports into ``old``: the newest arXiv version's text wins, fields accumulate."""
    newer = new.version is not None and (old.version is None or new.version > old.version)
    take_text = newer or not old.abstract
    return replace(
        old,
        title=new.title if (take_text and new.title) else old.title,
        abstract=new.abstract if (take_text and new.abstract) else old.abstract,
        version=max(v for v in (old.version, new.version, 0) if v is not None) or None,
        authors=old.authors or new.authors,
        published=old.published or new.published,
        url=old.url or new.url,
        pdf_url=old.pdf_url or new.pdf_url,
        code_url=old.code_url or new.code_url,
        project_url=old.project_url or new.project_url,
        upvotes=new.upvotes if new.upvotes is not None else old.upvotes,
        ai_summary=new.ai_summary or old.ai_summary,
        ai_keywords=_union(old.ai_keywords, new.ai_keywords),
        categories=_union(old.categories, new.categories),
        sources=_union(old.sources, new.sources),
        # The first listing that carried it: a past day fetched later moves it back, never forward.
        listed_on=min((d for d in (old.listed_on, new.listed_on) if d is not None), default=None),
    )


def _differs(a: Paper, b: Paper) -> bool:
    return replace(a, topics=(), first_seen=None) != replace(b, topics=(), first_seen=None)


def _paper_row(p: Paper, key: str, now: datetime) -> dict[str, Any]:
    return {
        "id": p.id, "title": p.title, "title_key": key, "abstract": p.abstract, "authors": list(p.authors),
        "published": p.published, "version": p.version, "url": p.url, "pdf_url": p.pdf_url,
        "code_url": p.code_url, "project_url": p.project_url, "upvotes": p.upvotes,
        "ai_summary": p.ai_summary, "ai_keywords": list(p.ai_keywords), "categories": list(p.categories),
        "sources": list(p.sources), "first_seen": p.first_seen or now, "updated_at": now, "tagged_at": None,
        # A source that knows no listing day (the seed file) lists what it has on the day it is fetched.
        "listed_on": p.listed_on or now.astimezone(UTC).date(),
    }


def paper_topics(conn: Connection, ids: list[str]) -> dict[str, tuple[TopicAssignment, ...]]:
    """Each paper's topics, best first (papers without topics are left out)."""
    out: dict[str, list[TopicAssignment]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for r in conn.execute(select(t.paper_topics).where(t.paper_topics.c.paper_id.in_(chunk))):
            out[r.paper_id].append(TopicAssignment(r.topic, r.score, tuple(r.why or ())))
    return {k: tuple(sorted(v, key=lambda a: -a.score)) for k, v in out.items()}


class PaperStore(StoreBase):
    """Papers and their topics."""

    # ---- papers ---------------------------------------------------------------------------------

    def upsert_papers(self, papers: Iterable[Paper], now: datetime | None = None) -> tuple[int, int]:
        """Insert new papers and merge known ones; return ``(new, updated)``.

        A paper is known by its id, or by its normalised title when one side has no arXiv id; a paper
        first seen without an id takes the arXiv id when a source reports it (its issues follow). A
        newer arXiv version replaces title and abstract; upvotes, AI fields and links are merged; the
        tagger runs again only when title or abstract changed.
        """
        now = now or utc_now()
        incoming: dict[str, Paper] = {}
        for paper in papers:
            prev = incoming.get(paper.id)
            incoming[paper.id] = _merge(prev, paper) if prev else paper
        if not incoming:
            return 0, 0
        new = updated = 0
        with self.engine.begin() as conn:
            keys = {title_key(p.title) for p in incoming.values()}
            rows = conn.execute(
                select(t.papers).where(or_(t.papers.c.id.in_(list(incoming)), t.papers.c.title_key.in_(keys)))
            ).mappings().all()
            by_id: dict[str, Row] = {r["id"]: r for r in rows}
            by_key: dict[str, Any] = {}
            for r in rows:
                by_key.setdefault(r["title_key"], r)
            for paper in incoming.values():
                key = title_key(paper.title)
                row = by_id.get(paper.id)
                if row is None:
                    candidate = by_key.get(key)
                    # Only merge by title across an id-less record; two arXiv ids are two papers.
                    if candidate is not None and (candidate["id"].startswith("title:")
                                                  or paper.id.startswith("title:")):
                        row = candidate
                if row is None:
                    conn.execute(insert(t.papers).values(**_paper_row(paper, key, now)))
                    by_id[paper.id] = {"id": paper.id, "title_key": key}
                    new += 1
                    continue
                old = row_to_paper(row)
                merged = _merge(old, paper)
                if row["id"].startswith("title:") and not paper.id.startswith("title:"):
                    self._rekey(conn, row["id"], paper.id)
                    merged = replace(merged, id=paper.id)
                elif paper.id.startswith("title:"):
                    merged = replace(merged, id=row["id"])
                values = _paper_row(merged, title_key(merged.title), now)
                values.pop("first_seen")
                if (old.title, old.abstract) != (merged.title, merged.abstract):
                    values["tagged_at"] = None
                else:
                    values.pop("tagged_at")
                if _differs(old, merged):
                    conn.execute(update(t.papers).where(t.papers.c.id == merged.id).values(**values))
                    updated += 1
        return new, updated

    @staticmethod
    def _rekey(conn: Connection, old_id: str, new_id: str) -> None:
        for table in (t.paper_topics, t.issue_papers):
            conn.execute(update(table).where(table.c.paper_id == old_id).values(paper_id=new_id))
        conn.execute(update(t.papers).where(t.papers.c.id == old_id).values(id=new_id))

    def papers_needing_tags(self) -> list[Paper]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.papers).where(t.papers.c.tagged_at.is_(None))).mappings().all()
        return [row_to_paper(r) for r in rows]

    def mark_all_untagged(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(update(t.papers).values(tagged_at=None)).rowcount

    def save_tags(self, tagged: Iterable[Paper], now: datetime | None = None) -> int:
        """Replace the topics of each given paper with ``paper.topics``; return how many were saved."""
        now = now or utc_now()
        papers = {p.id: p for p in tagged}  # the last verdict for a paper given twice wins
        if not papers:
            return 0
        ids = list(papers)
        # Statements per batch, not per paper: re-tagging a 100,000-paper store is mostly these writes.
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(delete(t.paper_topics).where(t.paper_topics.c.paper_id.in_(ids[start:start + 500])))
            rows = [{"paper_id": p.id, "topic": a.topic, "score": a.score, "why": list(a.why)}
                    for p in papers.values() for a in p.topics]
            if rows:
                conn.execute(insert(t.paper_topics), rows)
            conn.execute(update(t.papers).where(t.papers.c.id == bindparam("tagged_id")).values(tagged_at=now),
                         [{"tagged_id": i} for i in ids])
        return len(ids)

    def list_papers(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        topic: str | None = None,
        ids: Sequence[str] | None = None,
        listed_since: date | None = None,
    ) -> list[Paper]:
        """Papers first seen in ``[since, until)`` (all when None) and listed on ``listed_since`` or later
        (if given), with their topics, newest first (by ``first_seen``)."""
        query = select(t.papers)
        if listed_since is not None:
            query = query.where(t.papers.c.listed_on >= listed_since)
        if since is not None:
            query = query.where(t.papers.c.first_seen >= since)
        if until is not None:
            query = query.where(t.papers.c.first_seen < until)
        if ids is not None:
            query = query.where(t.papers.c.id.in_(list(ids)))
        if topic is not None:
            query = query.where(t.papers.c.id.in_(
                select(t.paper_topics.c.paper_id).where(t.paper_topics.c.topic == topic)))
        query = query.order_by(t.papers.c.first_seen.desc(), t.papers.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            topics = paper_topics(conn, [r["id"] for r in rows])
        return [row_to_paper(r, topics.get(r["id"], ())) for r in rows]

    def count_papers(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.papers)).scalar_one()
