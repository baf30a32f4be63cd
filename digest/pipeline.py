"""The only module that wires the stages together: fetch -> store -> tag -> build issues -> send.

Each stage lives in its own module (sources/, tagger.py, issues.py with selection.py, compose.py with
render.py and message.py, send_engine.py with mail/); a Pipeline holds one configured set of them
(settings, store, mailer, clock) and runs them in order. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from digest import dkim
from digest.compose import Composer, MimeRenderer, topic_labels
from digest.config import Settings
from digest.errors import DigestError, SourceError, UsageError
from digest.issue_feed import IssueFeed
from digest.issues import IssueBuilder
from digest.links import LinkBuilder
from digest.mail import Mailer, build_mailer
from digest.models import DeliveryStatus, Issue, OutgoingMessage, Paper, Subscriber, SubscriberStatus
from digest.selection import Pool, SelectionContext, is_due
from digest.send_engine import NoProgress, Progress, SendEngine, SendSummary
from digest.signing_key import SigningKey, signing_key
from digest.store import Store
from digest.tagger import Tagger

if TYPE_CHECKING:
    import httpx

    from digest.bounces.verp import ReturnPath
    from digest.render import Renderer
    from digest.sources.base import Source

__all__ = ["FetchSummary", "Pipeline", "Progress", "SendSummary", "utc_now"]

log = logging.getLogger("digest")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class FetchSummary:
    source: str
    new: int = 0
    updated: int = 0
    errors: int = 0
    reason: str = ""
    not_modified: bool = False

    def line(self) -> str:
        return f"source={self.source} new={self.new} updated={self.updated} errors={self.errors}"


class Pipeline:
    """One configured instance of the service: settings, store, mailer and clock, injected."""

    # Readers from which a send builds its issues in a process of its own (digest.build_process): its
    # start costs about half a second of CPU, building a thousand readers in the sending process more.
    build_process_from = 1000
    # Fewer issues than this to build (two of the builder's chunks): built before the send loop starts.
    build_alongside_from = 200

    def __init__(
        self,
        settings: Settings,
        store: Store,
        mailer: Mailer | None = None,
        clock: Clock = utc_now,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._mailer = mailer
        self.clock = clock
        self._http_client = http_client
        self.stop_requested = threading.Event()

    # ---- wiring ---------------------------------------------------------------------------------

    @cached_property
    def tagger(self) -> Tagger:
        return Tagger(self.settings.enabled_topics, examples=self.example_text)

    def example_text(self, paper_id: str) -> tuple[str, str] | None:
        """(title, abstract) of a stored paper: the examples of topics defined in words."""
        found = self.store.list_papers(ids=[paper_id])
        return (found[0].title, found[0].abstract) if found else None

    @cached_property
    def signing_key(self) -> SigningKey:
        """The installation's link-signing key (made and stored on first use, see digest.signing_key)."""
        return signing_key(self.settings, self.store)

    @cached_property
    def composer(self) -> Composer:
        # Links are signed: the key is read (or made) here, never inside the issue-writing transaction.
        return Composer(self.settings, self.signing_key)

    @cached_property
    def labels(self) -> dict[str, str]:
        return topic_labels(self.settings)

    @cached_property
    def selection_context(self) -> SelectionContext:
        sel = self.settings.selection
        return SelectionContext(labels=self.labels, include_other=sel.include_other,
                                daily_window_days=sel.daily_window_days)

    @cached_property
    def issues(self) -> IssueBuilder:
        return IssueBuilder(self.settings, self.store, self.selection_context, self.composer, self.stop_requested)

    @cached_property
    def engine(self) -> SendEngine:
        return SendEngine(self.settings, self.store, self.composer, lambda: self.mailer, self.clock,
                          self.stop_requested)

    @property
    def links(self) -> LinkBuilder:
        return self.composer.links

    @property
    def return_path(self) -> ReturnPath:
        return self.composer.return_path

    @property
    def renderer(self) -> Renderer:
        return self.composer.fast_renderer

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = build_mailer(self.settings)
        return self._mailer

    # ---- fetch and tag --------------------------------------------------------------------------

    def fetch(self, names: list[str] | None = None, day: date | None = None) -> list[FetchSummary]:
        """Run each enabled source (or those named); a failing source is recorded and the rest go on.

        A failure is not logged here but returned (``FetchSummary.reason``): the caller reports it
        once, the CLI as an ``error:`` line, the daemon in its log."""
        import httpx  # here: only a fetch needs HTTP (status, send and the rest start faster without it)

        from digest.sources import build_sources

        client = self._http_client or httpx.Client(
            headers={"User-Agent": self.settings.user_agent}, follow_redirects=True,
            timeout=httpx.Timeout(30.0),
        )
        try:
            sources = build_sources(self.settings, client, names)
            # A stopping daemon finishes the source in hand and starts no other.
            summaries = [self._fetch_one(source, day) for source in sources if not self.stop_requested.is_set()]
        finally:
            if self._http_client is None:
                client.close()
        self.tag_pending()
        return summaries

    def _fetch_one(self, source: Source, day: date | None) -> FetchSummary:
        name = source.name
        try:
            result = source.fetch(day, self.store.source_state(name))
        except SourceError as err:
            self.store.record_fetch(name, ok=False, error=err.reason, now=self.clock())
            return FetchSummary(name, errors=1, reason=err.reason)
        except DigestError as err:
            self.store.record_fetch(name, ok=False, error=str(err), now=self.clock())
            return FetchSummary(name, errors=1, reason=str(err))
        new, updated = self.store.upsert_papers(result.papers, now=self.clock())
        self.store.record_fetch(name, ok=True, new=new, updated=updated, state=result.state, now=self.clock())
        log.info("fetched source=%s papers=%d new=%d updated=%d%s", name, len(result.papers), new, updated,
                 " (not modified)" if result.not_modified else "")
        return FetchSummary(name, new=new, updated=updated, not_modified=result.not_modified)

    def tag_pending(self, progress: Progress | None = None, batch: int = 2000) -> int:
        """Tag every stored paper that has not been tagged since its text last changed, saving them
        ``batch`` at a time (an interrupted re-tag keeps what it finished)."""
        progress = progress or NoProgress()
        papers = self.store.papers_needing_tags()
        progress.start(len(papers))
        saved = 0
        for start in range(0, len(papers), batch):
            chunk = [self.tagger.tag_paper(p) for p in papers[start:start + batch]]
            saved += self.store.save_tags(chunk, now=self.clock())
            progress.advance(len(chunk))
        return saved

    # ---- issues and messages --------------------------------------------------------------------

    def build_issue(
        self, sub: Subscriber, issue_date: date, now: datetime, papers: list[Paper] | Pool | None = None
    ) -> Issue:
        """Select ``sub``'s issue as it would be built now (see IssueBuilder.build)."""
        return self.issues.build(sub, issue_date, now, papers)

    def preview_issue(self, sub: Subscriber, issue_date: date) -> Issue:
        """The issue stored for that date if one was built (exactly what was sent), else a fresh one."""
        if sub.id is not None:
            stored = self.store.find_issue(sub.id, issue_date, self.labels)
            if stored is not None:
                return stored
        return self.build_issue(sub, issue_date, self.clock())

    def message_id(self, issue_id: int) -> str:
        return self.composer.message_id(issue_id)

    def render_message(self, issue: Issue, message_id: str, now: datetime,
                       renderer: MimeRenderer | None = None) -> OutgoingMessage:
        """The complete message for one issue; ``renderer`` replaces the fast one (e.g. the plain
        reference renderer, which gives the same bytes)."""
        composer = self.composer if renderer is None else Composer(self.settings, self.signing_key, renderer)
        return composer.compose(issue, message_id, now)

    def _everyone(self, only: str | None) -> Iterator[Subscriber]:
        if only is None:
            yield from self.store.iter_subscribers(batch_size=self.settings.delivery.batch_size)
            return
        sub = self.store.get_subscriber(only)
        if sub is None:
            raise UsageError(f"no subscriber {only}")
        yield sub

    def due_subscribers(self, issue_date: date, only: str | None = None) -> Iterator[Subscriber]:
        if only is not None:
            sub = self.store.get_subscriber(only)
            if sub is None:
                raise UsageError(f"no subscriber {only}")
            if sub.active and is_due(sub, issue_date):
                yield sub
            return
        yield from self.issues.due(issue_date)

    # ---- send -----------------------------------------------------------------------------------

    def send(
        self,
        issue_date: date | None = None,
        only: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
        subscribers: Callable[[], Iterator[Subscriber]] | None = None,
        due_since: datetime | None = None,
    ) -> SendSummary:
        """Build and deliver the issue dated ``issue_date`` to every subscriber due on it.

        Safe to re-run and to kill at any moment: each subscriber's issue and delivery record are
        written before the message is handed over and updated after, so a re-run sends only what
        was not delivered. ``subscribers`` narrows who is considered (the daemon passes those whose
        local send time has come); with ``due_since`` (the daemon's) a pending record whose reader's
        send moment is older, or whose reader's day is over, is left alone (see Store.claim_deliveries).
        """
        now = self.clock()
        issue_date = issue_date or now.date()
        summary = SendSummary()
        progress = progress or NoProgress()
        if dry_run:
            # Every reader, so that the plan says why each one who gets nothing gets nothing.
            self.issues.plan(self._everyone(only), issue_date, now, summary)
            return summary

        dkim.signer_for(self.settings)  # a bad DKIM set-up stops the run before anything is claimed
        run_id = self.store.start_send_run(issue_date, now)
        summary.unknown += self.engine.recover(now)
        with self.engine.session() as session:
            listed: list[Subscriber] | None = None
            unbuilt = 0
            if only is None:
                listed = list(subscribers()) if subscribers is not None else None
                expected = len(listed) if listed is not None else self.store.count_subscribers().get(
                    SubscriberStatus.CONFIRMED.value, 0)
                session.expect(expected)  # a large run's render process starts now
                # Readers whose issue is not built yet (each built issue has its delivery record): a run
                # after a crash, or over issues built beforehand, has little building left to do.
                unbuilt = max(0, expected - sum(self.store.delivery_counts(issue_date).values()))
            if only is not None or unbuilt < self.build_alongside_from:
                # One reader (--subscriber), or little to build (a small send, a re-run, issues built
                # beforehand): built first, in a blink, rather than beside the send loop, whose looking
                # over every reader's issue would only compete with the delivery for the interpreter.
                targets = iter(listed) if listed is not None else self.due_subscribers(issue_date, only)
                only_id = self.issues.store_issues(targets, issue_date, now, summary, only)
                progress.start(self.store.delivery_counts(issue_date).get(DeliveryStatus.PENDING.value, 0))
                session.deliver(issue_date, summary, progress, subscriber_id=only_id, due_since=due_since)
            else:
                # The issues are built by chunks beside the send loop, which delivers each chunk once it
                # is stored: the first messages go out within seconds however many readers there are.
                # The progress bar starts with the records already pending and grows by each chunk.
                progress.start(self.store.delivery_counts(issue_date).get(DeliveryStatus.PENDING.value, 0))
                with self._building(listed, unbuilt, issue_date, now, summary, session.writing) as feed:
                    session.deliver(issue_date, summary, progress, due_since=due_since, feed=feed)
                summary.skipped += session.skipped(feed)
        self.store.finish_send_run(run_id, self.clock(), summary.sent, summary.skipped,
                                   summary.failed + summary.unknown)
        log.info("send done date=%s %s deferred=%d", issue_date, summary.line(), summary.deferred)
        return summary

    def _building(self, listed: list[Subscriber] | None, unbuilt: int, issue_date: date, now: datetime,
                  summary: SendSummary, writing: AbstractContextManager[object]) -> AbstractContextManager[IssueFeed]:
        """Where a send's issues are built beside its send loop: in a process of their own when many are
        still to build (``unbuilt``) on a machine with a core to spare (digest.build_process says why),
        else in a thread (looking over issues already built costs less than starting a process)."""
        if unbuilt >= self.build_process_from and (os.cpu_count() or 1) >= 2:
            from digest.build_process import build_alongside

            return build_alongside(self.settings, issue_date, now, listed, summary)
        targets = iter(listed) if listed is not None else self.issues.due(issue_date)
        return self.issues.alongside(targets, issue_date, now, summary, writing)

    def deliver_pending(self, issue_dates: Iterable[date] = (), progress: Progress | None = None) -> SendSummary:
        """Deliver the pending records that exist, building no issue: the work of an extra sender.

        The daemon decides who is due and builds their issues; any number of processes running this
        (``digest send --deliver-only``) claim and send those records alongside it, by the daemon's
        rules: none whose reader's send moment is more than ``[schedule] max_lateness_hours`` ago or
        whose reader's day is over. ``issue_dates`` defaults to yesterday, today and tomorrow (UTC),
        which holds every reader's local issue date. Same claims, leases and recovery as ``send``; a
        send run is recorded for each date that had work, so a sender polling every minute leaves no
        trail of empty runs.
        """
        now = self.clock()
        due_since = now - timedelta(hours=self.settings.schedule.max_lateness_hours)
        dates = sorted(set(issue_dates)) or [now.date() + timedelta(days=k) for k in (-1, 0, 1)]
        summary = SendSummary()
        progress = progress or NoProgress()
        dkim.signer_for(self.settings)
        summary.unknown += self.engine.recover(now)
        counts = [self.store.delivery_counts(day).get(DeliveryStatus.PENDING.value, 0) for day in dates]
        progress.start(sum(counts))
        with self.engine.session() as session:
            session.expect(sum(counts))
            for day, pending in zip(dates, counts, strict=True):
                if not pending:
                    continue
                if self.stop_requested.is_set() or summary.relay_refusing:
                    summary.pending += self.store.count_pending(day, self.clock(), due_since=due_since)
                    continue
                started, part = self.clock(), SendSummary()
                session.deliver(day, part, progress, due_since=due_since)
                if part.sent or part.failed or part.deferred:
                    run_id = self.store.start_send_run(day, started)
                    self.store.finish_send_run(run_id, self.clock(), part.sent, 0, part.failed + part.unknown)
                summary.add(part)
        summary.stopped = summary.stopped or self.stop_requested.is_set()
        log.info("deliver done dates=%s %s deferred=%d", ",".join(map(str, dates)), summary.line(), summary.deferred)
        return summary
