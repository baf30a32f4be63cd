"""Store I/O for issues: building them for many readers at once and loading them back exactly as
built. Mixed into ``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from digest.errors import StoreError
from digest.models import DeliveryStatus, Issue, IssueEntry, IssueSection, Paper, Subscriber, rank_order, section_label
from digest.store import schema as t
from digest.store.base import StoreBase
from digest.store.papers import paper_topics
from digest.store.records import IssueHistory, IssueListing
from digest.store.rows import Row, chunks, row_to_paper, row_to_subscriber, utc_now

# How long a sender waits for another to finish building a chunk it put off (a chunk of readers takes
# well under a second to build; a sender stuck longer than this is left to its lease and recovery).
BUILD_WAIT_SECONDS = 30.0

log = logging.getLogger("digest.store")


# Issues whose papers count as "already received": everything except a permanent failure.
_RECEIVED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)

_ISSUE_COLUMNS = ("subscriber_id", "issue_date", "created_at", "subject", "paper_count")

_ISSUE_PAPER_COLUMNS = ("issue_id", "paper_id", "position", "section", "reason", "score")

_DELIVERY_COLUMNS = ("issue_id", "subscriber_id", "issue_date", "status", "message_id", "attempts", "in_doubt",
                     "created_at", "updated_at", "due_at", "day_ends_at")


def _processed(row: tuple[Any, ...], processors: tuple[Any, ...]) -> tuple[Any, ...]:
    if not any(processors):
        return row
    return tuple(value if process is None or value is None else process(value)
                 for value, process in zip(row, processors, strict=True))


class IssueStore(StoreBase):
    """Issues: building them (in batches), loading them back exactly as built."""

    # ---- issues ---------------------------------------------------------------------------------

    def received_paper_ids(self, subscriber_id: int, exclude_date: date | None = None) -> set[str]:
        """Every paper in an issue already sent (or on its way) to this subscriber."""
        query = (
            select(t.issue_papers.c.paper_id)
            .join(t.issues, t.issues.c.id == t.issue_papers.c.issue_id)
            .join(t.deliveries, t.deliveries.c.issue_id == t.issues.c.id)
            .where(t.issues.c.subscriber_id == subscriber_id,
                   t.deliveries.c.status.in_([s.value for s in _RECEIVED]))
        )
        if exclude_date is not None:
            query = query.where(t.issues.c.issue_date != exclude_date)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def last_issue_time(self, subscriber_id: int, before: date) -> datetime | None:
        """When this subscriber's latest earlier issue was built (None if they never had one)."""
        query = (select(func.max(t.issues.c.created_at))
                 .where(t.issues.c.subscriber_id == subscriber_id, t.issues.c.issue_date < before))
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @contextmanager
    def building(self, issue_date: date, chunk: int, wait: bool = False) -> Iterator[bool]:
        """Hold the right to build chunk ``chunk`` of ``issue_date``'s issues; yields False if taken.

        Only saves work (``create_issue`` stays idempotent whoever builds): on PostgreSQL it is a
        session advisory lock, so senders running at once split the building instead of all selecting
        the same issues; it ends with the block, or with the session if the sender dies. With ``wait``
        it waits for the sender that holds it (at most BUILD_WAIT_SECONDS, then yields False): the chunk
        is then built, whoever built it. SQLite takes one writer at a time anyway, so there every
        caller gets True.
        """
        if self.dialect != "postgresql":
            yield True
            return
        key = (issue_date.toordinal(), chunk)
        with self.engine.connect() as conn:
            if wait:
                try:
                    conn.execute(text(f"SET lock_timeout = '{int(BUILD_WAIT_SECONDS * 1000)}ms'"))
                    conn.execute(select(func.pg_advisory_lock(*key)))
                    ours = True
                except OperationalError:  # lock_timeout: the other sender is slow; go on without it
                    conn.rollback()
                    ours = False
                conn.execute(text("SET lock_timeout = 0"))
            else:
                ours = bool(conn.execute(select(func.pg_try_advisory_lock(*key))).scalar())
            conn.commit()  # the lock is the session's: no transaction stays open while building
            try:
                yield ours
            finally:
                if ours:
                    conn.execute(select(func.pg_advisory_unlock(*key)))
                    conn.commit()

    def issue_id_for(self, subscriber_id: int, issue_date: date) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.issues.c.id).where(
                t.issues.c.subscriber_id == subscriber_id, t.issues.c.issue_date == issue_date)).scalar()

    def create_issue(
        self, issue: Issue, subject: str, message_id: Callable[[int], str], now: datetime | None = None
    ) -> int:
        """Store an issue, its papers and a pending delivery record in one transaction.

        Idempotent: if this subscriber already has an issue for that date, its id is returned and
        nothing is written (two senders racing to build the same issue end with one).
        """
        now = now or utc_now()
        if issue.subscriber.id is None:
            raise StoreError("create_issue needs a stored subscriber")
        # ON CONFLICT DO NOTHING, not a caught IntegrityError: racing senders then cost PostgreSQL no
        # aborted transaction and its log no "duplicate key" ERROR per subscriber. A loser waits for
        # the winner's commit and then reads the winner's id.
        dialect_insert = self._dialect_insert()
        head = dialect_insert(t.issues).values(
            subscriber_id=issue.subscriber.id, issue_date=issue.date, created_at=now,
            subject=subject, paper_count=issue.count,
        ).on_conflict_do_nothing(index_elements=["subscriber_id", "issue_date"]).returning(t.issues.c.id)
        try:
            with self.engine.begin() as conn:
                issue_id: int | None = conn.execute(head).scalar()
                if issue_id is None:
                    stored: int = conn.execute(select(t.issues.c.id).where(
                        t.issues.c.subscriber_id == issue.subscriber.id,
                        t.issues.c.issue_date == issue.date)).scalar_one()
                    return stored
                rows = [
                    {"issue_id": issue_id, "paper_id": e.paper.id, "position": pos, "section": s.topic,
                     "reason": e.reason, "score": e.score}
                    for pos, (s, e) in enumerate((s, e) for s in issue.sections for e in s.entries)
                ]
                if rows:
                    conn.execute(insert(t.issue_papers), rows)
                conn.execute(insert(t.deliveries).values(
                    issue_id=issue_id, subscriber_id=issue.subscriber.id, issue_date=issue.date,
                    status=DeliveryStatus.PENDING.value, message_id=message_id(issue_id),
                    attempts=0, in_doubt=False, created_at=now, updated_at=now,
                    due_at=issue.subscriber.send_moment(issue.date), day_ends_at=issue.subscriber.day_end(issue.date),
                ))
        except IntegrityError:
            existing = self.issue_id_for(issue.subscriber.id, issue.date)
            if existing is None:
                raise
            return existing
        return issue_id

    def load_issue(self, issue_id: int, labels: Mapping[str, str]) -> Issue | None:
        """Rebuild a stored issue exactly as it was built (same papers, order, reasons)."""
        return self.load_issues([issue_id], labels).get(issue_id)

    def load_issues(
        self, issue_ids: Sequence[int], labels: Mapping[str, str], papers: dict[str, Paper] | None = None
    ) -> dict[int, Issue]:
        """Many stored issues by id, each exactly as ``load_issue`` rebuilds it, in a few queries.

        ``papers`` is a cache the caller keeps (paper id -> Paper with its topics): papers found there
        are not read again and papers read are added, so issues loaded together or one batch after the
        other share their Paper objects (the renderer then reuses what it made of each paper). Ids
        that are not stored are left out.
        """
        cache = papers if papers is not None else {}
        heads: dict[int, Row] = {}
        subscribers: dict[int, Subscriber] = {}
        entries: dict[int, list[Row]] = defaultdict(list)
        with self._reading() as conn:
            for chunk in chunks(list(dict.fromkeys(issue_ids))):
                for row in conn.execute(select(t.issues).where(t.issues.c.id.in_(chunk))).mappings():
                    heads[row["id"]] = row
                for row in conn.execute(select(t.issue_papers).where(t.issue_papers.c.issue_id.in_(chunk))
                                        .order_by(t.issue_papers.c.issue_id, t.issue_papers.c.position)
                                        ).mappings():
                    entries[row["issue_id"]].append(row)
            wanted = sorted({h["subscriber_id"] for h in heads.values()})
            for chunk in chunks(wanted):
                for row in conn.execute(select(t.subscribers).where(t.subscribers.c.id.in_(chunk))).mappings():
                    subscribers[row["id"]] = row_to_subscriber(row)
            missing = sorted({e["paper_id"] for es in entries.values() for e in es} - cache.keys())
            for chunk in chunks(missing):
                rows = conn.execute(select(t.papers).where(t.papers.c.id.in_(chunk))).mappings().all()
                topics = paper_topics(conn, [r["id"] for r in rows])
                for r in rows:
                    cache[r["id"]] = row_to_paper(r, topics.get(r["id"], ()))
        issues: dict[int, Issue] = {}
        for issue_id, head in heads.items():
            sub = subscribers.get(head["subscriber_id"])
            if sub is None:
                continue
            sections: dict[str, list[IssueEntry]] = {}
            for e in entries.get(issue_id, ()):
                paper = cache.get(e["paper_id"])
                if paper is not None:
                    sections.setdefault(e["section"], []).append(IssueEntry(paper, e["reason"], e["score"]))
            built = tuple(IssueSection(name, section_label(name, labels), tuple(es))
                          for name, es in sections.items())
            # The selection's top pick: the entry that ranks first.
            top = min((e for s in built for e in s.entries), key=lambda e: rank_order(e.score, e.paper.id),
                      default=None)
            issues[issue_id] = Issue(subscriber=sub, date=head["issue_date"], sections=built, top_pick=top,
                                     id=issue_id, created_at=head["created_at"])
        return issues

    def issue_histories(
        self, subscriber_ids: Sequence[int], issue_date: date, papers_since: datetime | None = None
    ) -> dict[int, IssueHistory]:
        """What building each subscriber's issue for ``issue_date`` needs, in three queries for them all.

        Per subscriber id (every one asked for is in the result): the issue already built for that date
        and its delivery status; the papers received in other issues (as ``received_paper_ids`` with
        ``exclude_date=issue_date``); when their latest issue before that date was built (as
        ``last_issue_time``). With ``papers_since``, only papers first seen since then count as
        received (issues built more than two days before it are not read): all that a selection among
        such papers needs, and a year of issues is not read again every day.
        """
        found: dict[int, tuple[int, DeliveryStatus | None]] = {}
        received: dict[int, set[str]] = defaultdict(set)
        last: dict[int, datetime] = {}
        i, ip, d = t.issues.c, t.issue_papers.c, t.deliveries.c
        with self._reading() as conn:
            for chunk in chunks(sorted(set(subscriber_ids))):
                query = (select(i.subscriber_id, i.id, d.status)
                         .select_from(t.issues.outerjoin(t.deliveries, d.issue_id == i.id))
                         .where(i.issue_date == issue_date, i.subscriber_id.in_(chunk)))
                for sub_id, issue_id, status in conn.execute(query):
                    found[sub_id] = (issue_id, DeliveryStatus(status) if status is not None else None)
                papers = (select(i.subscriber_id, ip.paper_id)
                         .select_from(t.issue_papers.join(t.issues, i.id == ip.issue_id)
                                      .join(t.deliveries, d.issue_id == i.id))
                         .where(i.subscriber_id.in_(chunk), i.issue_date != issue_date,
                                d.status.in_([s.value for s in _RECEIVED])))
                if papers_since is not None:
                    papers = papers.where(i.created_at >= papers_since - timedelta(days=2))
                for sub_id, paper_id in conn.execute(papers):
                    received[sub_id].add(paper_id)
                latest = (select(i.subscriber_id, func.max(i.created_at))
                          .where(i.subscriber_id.in_(chunk), i.issue_date < issue_date).group_by(i.subscriber_id))
                for sub_id, value in conn.execute(latest):
                    if value is not None:
                        last[sub_id] = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        histories = {}
        for sub_id in subscriber_ids:
            issue_id, status = found.get(sub_id, (None, None))
            histories[sub_id] = IssueHistory(issue_id, status, frozenset(received.get(sub_id, ())),
                                             last.get(sub_id))
        return histories

    def create_issues(
        self, issues: Sequence[Issue], message_id: Callable[[int, Subscriber], str], now: datetime | None = None,
        subject: Callable[[Issue], str] = lambda issue: "",
    ) -> int:
        """Store many issues, each with its papers and a pending delivery record, in one transaction:
        ``create_issue`` for a batch, as idempotent (a subscriber who already has an issue for its date
        keeps that one and nothing is written for them). ``message_id(issue_id, subscriber)`` names
        each delivery's message, ``subject(issue)`` gives the subject kept with the issue. Returns how
        many issues were written.
        """
        now = now or utc_now()
        if any(issue.subscriber.id is None for issue in issues):
            raise StoreError("create_issues needs stored subscribers")
        # Ascending subscriber ids in every sender: two senders inserting overlapping batches on
        # PostgreSQL wait for each other in one order only, so they never deadlock.
        ordered = sorted(issues, key=lambda issue: (issue.date, issue.subscriber.id or 0))
        head_sql, head_processors = self._bulk_insert(t.issues, _ISSUE_COLUMNS)
        written = 0
        with self.engine.begin() as conn:
            for _, same_day in groupby(ordered, key=lambda issue: issue.date):
                for chunk in chunks(list(same_day), 100):
                    written += self._insert_issues(conn, chunk, head_sql, head_processors, message_id, subject, now)
        return written

    def _insert_issues(self, conn: Connection, chunk: Sequence[Issue], head_sql: str, head_processors: tuple[Any, ...],
                       message_id: Callable[[int, Subscriber], str], subject: Callable[[Issue], str],
                       now: datetime) -> int:
        """One statement for up to 100 issues of one date (ON CONFLICT DO NOTHING: who has one keeps
        it, and racing senders cost PostgreSQL no aborted transaction), then their papers and
        delivery records for the issues it wrote."""
        by_subscriber = {issue.subscriber.id: issue for issue in chunk}
        values, rows = head_sql.split(" VALUES ", 1)
        sql = (f"{values} VALUES {', '.join([rows] * len(chunk))}"
               " ON CONFLICT (subscriber_id, issue_date) DO NOTHING RETURNING id, subscriber_id")
        params = tuple(value for issue in chunk for value in _processed(
            (issue.subscriber.id, issue.date, now, subject(issue), issue.count), head_processors))
        papers: list[tuple[Any, ...]] = []
        deliveries: list[tuple[Any, ...]] = []
        for issue_id, sub_id in conn.exec_driver_sql(sql, params).all():
            issue = by_subscriber[sub_id]
            papers += [
                (issue_id, e.paper.id, pos, s.topic, e.reason, e.score)
                for pos, (s, e) in enumerate((s, e) for s in issue.sections for e in s.entries)
            ]
            sub = issue.subscriber
            deliveries.append((issue_id, sub_id, issue.date, DeliveryStatus.PENDING.value, message_id(issue_id, sub), 0,
                               False, now, now, sub.send_moment(issue.date), sub.day_end(issue.date)))
        for (insert_sql, processors), batch in ((self._bulk_insert(t.issue_papers, _ISSUE_PAPER_COLUMNS), papers),
                                                (self._bulk_insert(t.deliveries, _DELIVERY_COLUMNS), deliveries)):
            if batch:
                conn.exec_driver_sql(insert_sql, [_processed(row, processors) for row in batch])
        return len(deliveries)

    def _bulk_insert(self, table: Table, columns: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """An INSERT of ``columns`` in the driver's own parameter style, with each column's bind processor
        (None where the driver takes the value as it is): for executemany over thousands of plain rows,
        which the expression layer would otherwise process one by one."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        return sql, tuple(table.c[name].type.bind_processor(self.engine.dialect) for name in columns)

    def find_issue(self, subscriber_id: int, issue_date: date, labels: Mapping[str, str]) -> Issue | None:
        issue_id = self.issue_id_for(subscriber_id, issue_date)
        return self.load_issue(issue_id, labels) if issue_id is not None else None

    def list_issues(self, limit: int = 100) -> list[IssueListing]:
        """Recent issues with their delivery status, newest first."""
        query = (select(t.issues.c.id, t.issues.c.issue_date, t.issues.c.subject, t.issues.c.paper_count,
                        t.issues.c.subscriber_id, t.deliveries.c.status, t.deliveries.c.sent_at)
                 .join(t.deliveries, t.deliveries.c.issue_id == t.issues.c.id)
                 .order_by(t.issues.c.issue_date.desc(), t.issues.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [IssueListing(id=r.id, issue_date=r.issue_date, subject=r.subject, paper_count=r.paper_count,
                                 subscriber_id=r.subscriber_id, status=DeliveryStatus(r.status), sent_at=r.sent_at)
                    for r in conn.execute(query)]
