"""Building issues: who gets which papers on a date, stored as an issue and a pending delivery record.

Selection itself is pure (digest.selection); this module reads what the store knows of each reader
(papers already received, the last issue), runs selection over the candidate papers, and writes the
issues a send will deliver. It renders and sends nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from datetime import date, datetime, timedelta
from itertools import groupby

from digest.compose import Composer
from digest.config import Settings
from digest.issue_feed import IssueFeed
from digest.models import DeliveryStatus, Feedback, Issue, Paper, Subscriber, SubscriberStatus
from digest.selection import Pool, SelectionContext, is_due, select, window_start
from digest.send_engine import SendSummary
from digest.store import Store
from digest.taste import Taste, Vector, build_taste, paper_vector

__all__ = ["IssueBuilder"]

log = logging.getLogger("digest")

# Subscribers (by id) whose issues one sender builds under one lock: enough to make the lock cheap,
# few enough that senders starting together soon spread over different chunks.
_BUILD_CHUNK = 100
# Papers readers gave feedback on kept in memory (with their vectors) while building.
_FEEDBACK_PAPERS = 50_000

_WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")
_ALREADY = {
    DeliveryStatus.SENT: "already sent",
    DeliveryStatus.SENDING: "being sent now",
    DeliveryStatus.FAILED: "already tried: failed (see digest status)",
    DeliveryStatus.UNKNOWN: "already handed over, outcome unknown (digest send --retry-unknown)",
}


def _not_considered(sub: Subscriber, issue_date: date) -> str | None:
    """Why a send would not consider ``sub`` for ``issue_date`` at all; None if it would."""
    if sub.status is not SubscriberStatus.CONFIRMED:
        return {SubscriberStatus.PENDING: "not confirmed yet"}.get(sub.status, sub.status.value)
    if sub.paused:
        return "paused"
    if not is_due(sub, issue_date):
        return f"not due: weekly, on {_WEEKDAYS[sub.weekday]}"
    return None


class IssueBuilder:
    """Selects and stores issues; ``stop_requested`` ends a long build between chunks."""

    def __init__(self, settings: Settings, store: Store, context: SelectionContext, composer: Composer,
                 stop_requested: threading.Event) -> None:
        self.settings = settings
        self.store = store
        self.context = context
        self.composer = composer  # message ids and subjects are stored with the issue
        self.stop_requested = stop_requested
        # The papers readers gave feedback on, and their vectors, read once per process (bounded).
        self._feedback_papers: dict[str, Paper] = {}
        self._vectors: dict[str, Vector] = {}

    def tastes(self, feedback: dict[int, list[Feedback]]) -> dict[int, Taste]:
        """Each reader's taste from their verdicts (readers without any are not in ``feedback``)."""
        wanted = {f.paper_id for items in feedback.values() for f in items}
        missing = [pid for pid in wanted if pid not in self._feedback_papers]
        if missing:
            if len(self._feedback_papers) + len(missing) > _FEEDBACK_PAPERS:
                self._feedback_papers.clear()
                self._vectors.clear()
                missing = list(wanted)
            for stored in self.store.list_papers(ids=missing):
                self._feedback_papers[stored.id] = stored
        for pid in wanted:
            liked = self._feedback_papers.get(pid)
            if liked is not None and pid not in self._vectors:
                self._vectors[pid] = paper_vector(liked)
        found: dict[int, Taste] = {}
        for sub_id, items in feedback.items():
            taste = build_taste(items, self._feedback_papers, self._vectors)
            if taste is not None:
                found[sub_id] = taste
        return found

    def due(self, issue_date: date) -> Iterator[Subscriber]:
        """Every confirmed reader, not paused, whose issue is due on ``issue_date``."""
        for sub in self.store.iter_subscribers(status=SubscriberStatus.CONFIRMED,
                                               batch_size=self.settings.delivery.batch_size):
            if not sub.paused and is_due(sub, issue_date):
                yield sub

    def candidates_since(self, now: datetime) -> datetime:
        """The oldest first-seen time of a paper an issue built at ``now`` may hold."""
        return now - timedelta(days=max(7, self.settings.selection.daily_window_days))

    def candidate_papers(self, now: datetime) -> list[Paper]:
        return self.store.list_papers(since=self.candidates_since(now))

    def build(self, sub: Subscriber, issue_date: date, now: datetime,
              papers: list[Paper] | Pool | None = None) -> Issue:
        """Select ``sub``'s issue as it would be built now (pure apart from reading the store); pass a
        Pool of the candidate papers when building many."""
        if sub.id is None:
            received: set[str] = set()
            last = None
        else:
            received = self.store.received_paper_ids(sub.id, exclude_date=issue_date)
            last = self.store.last_issue_time(sub.id, before=issue_date)
        since = window_start(sub, now, last, self.context)
        pool = papers if papers is not None else self.candidate_papers(now)
        taste = None
        if sub.id is not None:
            taste = self.tastes(self.store.feedback_of([sub.id])).get(sub.id)
        return select(pool, sub, received, now, issue_date, self.context, since=since, taste=taste)

    @contextmanager
    def alongside(self, targets: Iterator[Subscriber], issue_date: date, now: datetime, summary: SendSummary,
                  writing: AbstractContextManager[object]) -> Iterator[IssueFeed]:
        """``store_issues`` in a thread of its own for the block, which delivers what it stores meanwhile
        (see digest.issue_feed). Leaving the block stops the building after the chunk in hand and waits
        for it; then the readers it skipped for having nothing new are counted in ``summary`` (those
        found served already are in ``feed.already``) and an error it met is raised."""
        feed = IssueFeed()
        part = SendSummary()
        failed: list[BaseException] = []

        def build() -> None:
            try:
                self.store_issues(targets, issue_date, now, part, None, built=feed.stored, writing=writing,
                                  stop=feed.cancelled.is_set, already=feed.already)
            except BaseException as err:  # raised in the sending thread, once the building has stopped
                failed.append(err)
            finally:
                feed.finish()

        thread = threading.Thread(target=build, name="digest-build", daemon=True)
        thread.start()
        try:
            yield feed
        finally:
            feed.cancel()
            thread.join()
            summary.skipped += part.skipped
        if failed:
            raise failed[0]

    def store_issues(
        self, targets: Iterator[Subscriber], issue_date: date, now: datetime, summary: SendSummary,
        only: str | None, built: Callable[[int], None] = lambda count: None,
        writing: AbstractContextManager[object] | None = None, stop: Callable[[], bool] = lambda: False,
        already: list[int] | None = None,
    ) -> int | None:
        """Store an issue and a pending delivery record for each target who has none for the date yet;
        the id of the subscriber named ``only`` if one was among them.

        By chunks of neighbouring subscribers: what the store knows of a chunk (issues built, papers
        received, last issue) is read in three queries and its new issues written in one transaction
        (under ``writing``, the send loop's write lock when it runs beside one: SQLite then never makes
        this process wait on itself); selection runs on the candidate papers prepared once for the whole
        run. ``built`` hears the running count of issues stored, after each commit; ``stop`` (or the
        pipeline's stop request) ends the building between chunks. A target whose delivery is past
        pending counts as skipped, or, with ``already``, goes there by id: a send loop running beside
        the building may have delivered it meanwhile, and then it is not skipped but sent.
        """
        writing = writing or nullcontext()
        pool: Pool | None = None
        papers_since = self.candidates_since(now)
        only_id: int | None = None
        created = 0
        # Readers who gave feedback, asked once: the others cost nothing more than before.
        with_feedback = self.store.readers_with_feedback()
        with closing(self._building_order(targets, issue_date)) as order:
            for subs in order:
                if self.stop_requested.is_set() or stop():
                    break
                if only is not None and subs:
                    only_id = subs[0].id
                histories = self.store.issue_histories([sub.id or 0 for sub in subs], issue_date, papers_since)
                learning = [sub.id for sub in subs if sub.id in with_feedback]
                tastes = self.tastes(self.store.feedback_of(learning)) if learning else {}
                new: list[Issue] = []
                for sub in subs:
                    assert sub.id is not None
                    history = histories[sub.id]
                    if history.issue_id is not None:
                        if history.delivery is not None and history.delivery is not DeliveryStatus.PENDING:
                            if already is None:
                                summary.skipped += 1
                            else:
                                already.append(sub.id)
                        continue
                    if pool is None:
                        pool = Pool(self.candidate_papers(now), self.context)
                    since = window_start(sub, now, history.last_issue_at, self.context)
                    issue = select(pool, sub, set(history.received), now, issue_date, self.context, since=since,
                                   taste=tastes.get(sub.id))
                    if issue.count == 0 and not sub.send_empty:
                        log.info("no issue subscriber=%s reason=nothing new matches their preferences", sub.email)
                        summary.skipped += 1
                        continue
                    new.append(issue)
                if new:
                    with writing:
                        created += self.store.create_issues(
                            new, message_id=lambda i, _: self.composer.message_id(i), now=now,
                            subject=self.composer.subject)
                    built(created)
        return only_id

    def _building_order(self, targets: Iterator[Subscriber], issue_date: date,
                        ) -> Generator[list[Subscriber], None, None]:
        """``targets`` by chunks of neighbouring ids, each yielded while this sender holds its build lock.

        Chunks another sender is building come last, once that sender is done with them (their issues
        stored, their records claimable): senders running at once share the building instead of all
        selecting the same issues, and none ends its run while a chunk is still being built, which
        would leave that chunk's records looking pending to it.
        """
        put_off: list[tuple[int, list[Subscriber]]] = []
        for chunk, group in groupby(targets, key=lambda sub: (sub.id or 0) // _BUILD_CHUNK):
            subs = list(group)
            with self.store.building(issue_date, chunk) as ours:
                if ours:
                    yield subs
                else:
                    put_off.append((chunk, subs))
        for chunk, subs in put_off:
            with self.store.building(issue_date, chunk, wait=True):
                yield subs

    def plan(self, targets: Iterator[Subscriber], issue_date: date, now: datetime, summary: SendSummary) -> None:
        """What a send would do (``--dry-run``): each target's paper count in ``summary.planned``, stored
        issues as they are; every other target in ``summary.passed_over`` with why (counted as
        skipped). Targets may be any readers: those a send would not consider are named too.
        Nothing is written."""
        papers = Pool(self.candidate_papers(now), self.context)
        for sub in targets:
            assert sub.id is not None
            reason = _not_considered(sub, issue_date)
            issue: Issue | None = None
            if reason is None:
                existing = self.store.issue_id_for(sub.id, issue_date)
                if existing is not None:
                    delivery = self.store.delivery_for_issue(existing)
                    if delivery is not None and delivery.status is not DeliveryStatus.PENDING:
                        reason = _ALREADY.get(delivery.status, delivery.status.value)
                    else:
                        issue = self.store.load_issue(existing, self.composer.labels)
                else:
                    issue = self.build(sub, issue_date, now, papers)
                if reason is None and (issue is None or (issue.count == 0 and not sub.send_empty)):
                    reason = "nothing new matches their preferences"
            if reason is not None or issue is None:
                summary.skipped += 1
                summary.passed_over.append((sub.email, reason or "no issue"))
                continue
            summary.planned.append((sub.email, issue.count))
