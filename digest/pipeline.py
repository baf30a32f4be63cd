"""The only module that wires the stages together: fetch -> store -> tag -> select -> render -> send."""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from itertools import groupby, islice
from types import FrameType
from typing import TYPE_CHECKING

import httpx

from digest import dkim
from digest.config import Settings
from digest.errors import DigestError, SourceError, UsageError
from digest.gcpause import frozen_heap
from digest.links import LinkBuilder, Signer
from digest.mail import Mailer, build_mailer
from digest.mail.smtp import wire_payload
from digest.message import build_message_wire, list_id_for
from digest.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    Outcome,
    OutgoingMessage,
    Paper,
    SendResult,
    Subscriber,
    SubscriberStatus,
)
from digest.selection import Pool, SelectionContext, is_due, select, window_start
from digest.signing_key import SigningKey, signing_key
from digest.store import Store
from digest.store.store import AttemptEnd
from digest.tagger import Tagger

if TYPE_CHECKING:
    from digest.bounces.verp import ReturnPath
    from digest.render_process import RenderProcess

log = logging.getLogger("digest")

Clock = Callable[[], datetime]

# Messages a render process renders per request: small enough that the first ones go out at once.
_RENDER_BATCH = 16
_RENDER_START_SECONDS = 60.0

# Subscribers (by id) whose issues one sender builds under one lock: enough to make the lock cheap,
# few enough that senders starting together soon spread over different chunks.
_BUILD_CHUNK = 100


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


@dataclass(slots=True)
class SendSummary:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    in_doubt: int = 0
    planned: list[tuple[str, int]] = field(default_factory=list)

    def line(self) -> str:
        return f"sent={self.sent} skipped={self.skipped} failed={self.failed}"


class Progress:
    """What the send loop reports as it goes; the CLI plugs a rich progress bar in."""

    def start(self, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class Pipeline:
    """One configured instance of the service: settings, store, mailer and clock, injected."""

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
    def labels(self) -> dict[str, str]:
        return {name: spec.label or name for name, spec in self.settings.enabled_topics.items()}

    @cached_property
    def selection_context(self) -> SelectionContext:
        sel = self.settings.selection
        return SelectionContext(labels=self.labels, include_other=sel.include_other,
                                daily_window_days=sel.daily_window_days)

    @cached_property
    def links(self) -> LinkBuilder:
        site = self.settings.site
        mailto = site.unsubscribe_mailto or _address_of(site.sender)
        key = self.signing_key
        return LinkBuilder(site.base_url, Signer(key.current, previous=key.previous), mailto)

    @cached_property
    def signing_key(self) -> SigningKey:
        """The installation's link-signing key (made and stored on first use, see digest.signing_key)."""
        return signing_key(self.settings, self.store)

    @cached_property
    def return_path(self) -> ReturnPath:
        from digest.bounces.verp import return_path_for

        return return_path_for(self.settings, self.signing_key)

    @cached_property
    def renderer(self):  # type: ignore[no-untyped-def]
        from digest.render import Renderer

        return Renderer(self.settings)

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = build_mailer(self.settings)
        return self._mailer

    # ---- fetch and tag --------------------------------------------------------------------------

    def fetch(self, names: list[str] | None = None, day: date | None = None) -> list[FetchSummary]:
        """Run each enabled source (or those named); a failing source is recorded and the rest go on."""
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

    def _fetch_one(self, source, day: date | None) -> FetchSummary:  # type: ignore[no-untyped-def]
        name = source.name
        try:
            result = source.fetch(day, self.store.source_state(name))
        except SourceError as err:
            log.warning("fetch failed source=%s reason=%s", name, err.reason)
            self.store.record_fetch(name, ok=False, error=err.reason, now=self.clock())
            return FetchSummary(name, errors=1, reason=err.reason)
        except DigestError as err:
            log.warning("fetch failed source=%s reason=%s", name, err)
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
        progress = progress or Progress()
        papers = self.store.papers_needing_tags()
        progress.start(len(papers))
        saved = 0
        for start in range(0, len(papers), batch):
            chunk = [self.tagger.tag_paper(p) for p in papers[start:start + batch]]
            saved += self.store.save_tags(chunk, now=self.clock())
            progress.advance(len(chunk))
        return saved

    # ---- issues ---------------------------------------------------------------------------------

    def _candidates_since(self, now: datetime) -> datetime:
        """The oldest first-seen time of a paper an issue built at ``now`` may hold."""
        return now - timedelta(days=max(7, self.settings.selection.daily_window_days))

    def _candidate_papers(self, now: datetime) -> list[Paper]:
        return self.store.list_papers(since=self._candidates_since(now))

    def build_issue(
        self, sub: Subscriber, issue_date: date, now: datetime, papers: list[Paper] | Pool | None = None
    ) -> Issue:
        """Select ``sub``'s issue as it would be built now (pure apart from reading the store); pass a
        Pool of the candidate papers when building many."""
        if sub.id is None:
            received: set[str] = set()
            last = None
        else:
            received = self.store.received_paper_ids(sub.id, exclude_date=issue_date)
            last = self.store.last_issue_time(sub.id, before=issue_date)
        since = window_start(sub, now, last, self.selection_context)
        pool = papers if papers is not None else self._candidate_papers(now)
        return select(pool, sub, received, now, issue_date, self.selection_context, since=since)

    def preview_issue(self, sub: Subscriber, issue_date: date) -> Issue:
        """The issue stored for that date if one was built (exactly what was sent), else a fresh one."""
        if sub.id is not None:
            stored = self.store.find_issue(sub.id, issue_date, self.labels)
            if stored is not None:
                return stored
        return self.build_issue(sub, issue_date, self.clock())

    def _subject(self, issue: Issue) -> str:
        from digest.email_view import issue_subject

        return issue_subject(self.settings, issue)

    def message_id(self, issue_id: int, email: str) -> str:
        from digest.message import make_message_id

        return make_message_id(issue_id, email, _domain_of(self.settings.site.sender), self.signing_key.current)

    def render_message(self, issue: Issue, message_id: str, now: datetime, naive: bool = False) -> OutgoingMessage:
        """The complete message for one issue. ``naive`` renders it the slow way (MJML and CSS inlining
        for this one email): the same bytes, for tests and the benchmark."""
        sub = issue.subscriber
        key = str(issue.id) if issue.id is not None else None
        links = self.links.for_subscriber(sub.email, key)
        render = self.renderer.mime_naive if naive else self.renderer.mime
        rendered = render(issue, links, full_issue_url=links.archive)
        data, wire_ready = build_message_wire(rendered, sender=self.settings.site.sender, recipient=sub.email,
                                              message_id=message_id, date=now, list_id=list_id_for(self.settings),
                                              links=links)
        if dkim.configured(self.settings):
            unsigned = len(data)
            data = dkim.sign(data, self.settings)
            # The signature header goes in front; it is as ready as the rest only if its lines are.
            wire_ready = wire_ready and wire_payload(data[:-unsigned]) == data[:-unsigned] + b".\r\n"
        return OutgoingMessage(sender=_address_of(self.settings.site.sender), recipient=sub.email,
                               message_id=message_id, data=data, wire_ready=wire_ready)

    def due_subscribers(self, issue_date: date, only: str | None = None) -> Iterator[Subscriber]:
        if only is not None:
            sub = self.store.get_subscriber(only)
            if sub is None:
                raise UsageError(f"no subscriber {only}")
            if sub.active and is_due(sub, issue_date):
                yield sub
            return
        for sub in self.store.iter_subscribers(status=SubscriberStatus.CONFIRMED,
                                               batch_size=self.settings.delivery.batch_size):
            if not sub.paused and is_due(sub, issue_date):
                yield sub

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
        progress = progress or Progress()
        if dry_run:
            return self._dry_run(issue_date, only, now, summary)

        dkim.signer_for(self.settings)  # a bad DKIM set-up stops the run before anything is claimed
        run_id = self.store.start_send_run(issue_date, now)
        self._recover(now)
        with _stop_on_signals(self.stop_requested), _RenderProcessSlot(self) as render_process, frozen_heap():
            if subscribers is None and only is None:
                # Every confirmed reader may be due: a large run's render process starts now, and is
                # ready by the time the issues are built.
                render_process.expect(self.store.count_subscribers().get(SubscriberStatus.CONFIRMED.value, 0))
            targets = subscribers() if subscribers is not None else self.due_subscribers(issue_date, only)
            only_id = self._build_issues(targets, issue_date, now, summary, only, built=render_process.expect)
            progress.start(self.store.delivery_counts(issue_date).get(DeliveryStatus.PENDING.value))
            self._deliver(issue_date, only_id, summary, progress, render_process, due_since)
        self.store.finish_send_run(run_id, self.clock(), summary.sent, summary.skipped, summary.failed)
        log.info("send done date=%s %s deferred=%d unknown=%d", issue_date, summary.line(), summary.deferred,
                 summary.unknown)
        return summary

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
        progress = progress or Progress()
        dkim.signer_for(self.settings)
        self._recover(now)
        counts = [self.store.delivery_counts(day).get(DeliveryStatus.PENDING.value, 0) for day in dates]
        progress.start(sum(counts))
        with _stop_on_signals(self.stop_requested), _RenderProcessSlot(self) as render_process, frozen_heap():
            render_process.expect(sum(counts))
            for day, pending in zip(dates, counts, strict=True):
                if not pending or self.stop_requested.is_set():
                    continue
                started, part = self.clock(), SendSummary()
                self._deliver(day, None, part, progress, render_process, due_since)
                if part.sent or part.failed or part.deferred:
                    run_id = self.store.start_send_run(day, started)
                    self.store.finish_send_run(run_id, self.clock(), part.sent, 0, part.failed)
                for name in ("sent", "failed", "deferred", "unknown", "in_doubt"):
                    setattr(summary, name, getattr(summary, name) + getattr(part, name))
        log.info("deliver done dates=%s %s deferred=%d unknown=%d", ",".join(map(str, dates)), summary.line(),
                 summary.deferred, summary.unknown)
        return summary

    def _recover(self, now: datetime) -> None:
        """Free what dead senders left: claims of senders known dead here, then expired "sending" leases."""
        dead = [w for w in self.store.claimants() if _is_dead_local_worker(w)]
        if dead:
            # A sender on this machine was killed: no need to wait out its lease.
            log.warning("ending the leases of %d dead sender(s): %s", len(dead), ", ".join(sorted(dead)))
            self.store.expire_claims(dead, now)
        recovered = self.store.recover_interrupted(now, self.settings.delivery.resend_in_doubt)
        if recovered:
            log.warning("recovered %d deliveries interrupted while sending (in doubt)", recovered)

    def _build_issues(
        self, targets: Iterator[Subscriber], issue_date: date, now: datetime, summary: SendSummary,
        only: str | None, built: Callable[[int], None] = lambda count: None,
    ) -> int | None:
        """Store an issue and a pending delivery record for each target who has none for the date yet.

        By chunks of neighbouring subscribers: what the store knows of a chunk (issues built, papers
        received, last issue) is read in three queries and its new issues written in one transaction;
        selection runs on the candidate papers prepared once for the whole run.
        """
        # Message-IDs are signed: read (or make) the key now, not inside the issue-writing transaction.
        _ = self.signing_key
        pool: Pool | None = None
        papers_since = self._candidates_since(now)
        only_id: int | None = None
        created = 0
        with closing(self._building_order(targets, issue_date)) as order:
            for subs in order:
                if self.stop_requested.is_set():
                    break
                if only is not None and subs:
                    only_id = subs[0].id
                histories = self.store.issue_histories([sub.id or 0 for sub in subs], issue_date, papers_since)
                new: list[Issue] = []
                for sub in subs:
                    assert sub.id is not None
                    history = histories[sub.id]
                    if history.issue_id is not None:
                        if history.delivery is not None and history.delivery is not DeliveryStatus.PENDING:
                            summary.skipped += 1
                        continue
                    if pool is None:
                        pool = Pool(self._candidate_papers(now), self.selection_context)
                    since = window_start(sub, now, history.last_issue_at, self.selection_context)
                    issue = select(pool, sub, set(history.received), now, issue_date, self.selection_context,
                                   since=since)
                    if issue.count == 0 and not sub.send_empty:
                        log.info("no issue subscriber=%s reason=nothing new matches their preferences", sub.email)
                        summary.skipped += 1
                        continue
                    new.append(issue)
                if new:
                    created += self.store.create_issues(new, message_id=lambda i, s: self.message_id(i, s.email),
                                                        now=now, subject=self._subject)
                    built(created)
        return only_id

    def _building_order(self, targets: Iterator[Subscriber], issue_date: date) -> Iterator[list[Subscriber]]:
        """``targets`` by chunks of neighbouring ids, each yielded while this sender holds its build lock.

        Chunks another sender is building come last, when their issues are mostly stored: senders
        running at once share the building instead of all selecting the same issues.
        """
        put_off: list[list[Subscriber]] = []
        for chunk, group in groupby(targets, key=lambda sub: (sub.id or 0) // _BUILD_CHUNK):
            subs = list(group)
            with self.store.building(issue_date, chunk) as ours:
                if ours:
                    yield subs
                else:
                    put_off.append(subs)
        yield from put_off

    def _deliver(self, issue_date: date, only_id: int | None, summary: SendSummary, progress: Progress,
                 render_process: _RenderProcessSlot, due_since: datetime | None = None) -> None:
        worker = _worker_id()
        cfg = self.settings.delivery

        def claim() -> list[Delivery]:
            if self.stop_requested.is_set():
                return []
            return self.store.claim_deliveries(worker, self.clock(), cfg.lease_seconds, cfg.batch_size,
                                               issue_date=issue_date, subscriber_id=only_id, due_since=due_since)

        claims = claim()
        if not claims:
            return
        render_process.expect(len(claims))
        try:
            # The mailer opens only once there is work: no SMTP session for nothing, and a server that
            # cannot be reached fails the run here, with every message still pending.
            with self.mailer as mailer:
                _Dispatch(self, mailer, worker, summary, progress, render_process.process).run(claims, claim)
        finally:
            # Also after an error: claims left behind would block a re-run until their lease expires.
            self.store.release_claims(worker)

    def prepare_message(self, delivery: Delivery, issue: Issue | None) -> OutgoingMessage | AttemptEnd:
        """The message for one claimed delivery (``issue`` is its stored issue, None if gone), or the end
        of its attempt if it must not be sent."""
        sub = issue.subscriber if issue else None
        if issue is None or sub is None or not sub.active:
            # Unsubscribed or suppressed since the issue was built: never send it.
            return AttemptEnd(delivery.id, DeliveryStatus.FAILED, "subscriber no longer active")
        try:
            message = self.render_message(issue, delivery.message_id, self.clock())
        except DigestError as err:
            log.error("render failed subscriber=%s reason=%s", sub.email, err)
            return AttemptEnd(delivery.id, DeliveryStatus.FAILED, f"render: {err}")
        # The envelope sender names this delivery (VERP), so a bounce that comes back later through a
        # relay finds its record even when the DSN is mangled (digest.bounces).
        return replace(message, sender=self.return_path.address(delivery.id), delivery_id=delivery.id)

    def _attempt_end(self, delivery: Delivery, recipient: str, result: SendResult) -> AttemptEnd:
        """What the mailer's verdict means for the delivery record (and the log)."""
        now = self.clock()
        smtp = self.settings.smtp
        if result.outcome is Outcome.DELIVERED:
            log.debug("sent subscriber=%s message_id=%s", recipient, delivery.message_id)
            return AttemptEnd(delivery.id, DeliveryStatus.SENT)
        if result.outcome is Outcome.TRANSIENT:
            attempts = delivery.attempts + 1
            if attempts >= smtp.max_attempts:
                log.error("failed subscriber=%s attempts=%d reason=%s", recipient, attempts, result.detail)
                return AttemptEnd(delivery.id, DeliveryStatus.FAILED,
                                  f"gave up after {attempts} attempts: {result.detail}")
            delay = result.retry_after or smtp.retry_backoff_seconds * (2 ** (attempts - 1))
            log.warning("deferred subscriber=%s retry_in=%.0fs reason=%s", recipient, delay, result.detail)
            return AttemptEnd(delivery.id, DeliveryStatus.PENDING, result.detail,
                              next_attempt_at=now + timedelta(seconds=delay))
        if result.outcome is Outcome.PERMANENT:
            return AttemptEnd(delivery.id, DeliveryStatus.FAILED, result.detail)
        log.error("outcome unknown subscriber=%s reason=%s", recipient, result.detail)
        return AttemptEnd(delivery.id, DeliveryStatus.UNKNOWN, result.detail)

    def _refused(self, delivery: Delivery, recipient: str, result: SendResult) -> None:
        if not result.bounce:
            log.error("refused subscriber=%s reason=%s (not a bounce: the reader stays)", recipient, result.detail)
            return
        suppressed = self.store.record_hard_bounce(delivery.subscriber_id, self.settings.smtp.hard_bounces_to_suppress,
                                                   result.detail)
        log.error("bounced subscriber=%s reason=%s%s", recipient, result.detail, " (suppressed)" if suppressed else "")

    def _dry_run(self, issue_date: date, only: str | None, now: datetime, summary: SendSummary) -> SendSummary:
        papers = Pool(self._candidate_papers(now), self.selection_context)
        for sub in self.due_subscribers(issue_date, only):
            assert sub.id is not None
            existing = self.store.issue_id_for(sub.id, issue_date)
            if existing is not None:
                delivery = self.store.delivery_for_issue(existing)
                if delivery is not None and delivery.status is not DeliveryStatus.PENDING:
                    summary.skipped += 1
                    continue
                issue = self.store.load_issue(existing, self.labels)
            else:
                issue = self.build_issue(sub, issue_date, now, papers)
            if issue is None or (issue.count == 0 and not sub.send_empty):
                summary.skipped += 1
                continue
            summary.planned.append((sub.email, issue.count))
        return summary


class _RenderProcessSlot:
    """The render process of one send, started once the run turns out large (``expect``) and stopped
    with the block. ``[delivery] workers`` 0 decides: a process pays for its start (about a second of
    one core) when a full batch of messages or more goes out over several connections on a machine with
    a core to spare; any other value always starts one."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.process: RenderProcess | None = None
        self._decided = False

    def expect(self, messages: int) -> None:
        """About ``messages`` are to be sent: start the process if that pays (once per send)."""
        if self._decided or messages <= 0:
            return
        cfg = self.pipeline.settings.delivery
        pays = messages >= cfg.batch_size and (os.cpu_count() or 1) >= 2 and self.pipeline.mailer.concurrency >= 2
        if not (cfg.workers or pays):
            return
        self._decided = True
        from digest.render_process import RenderProcess

        try:
            self.process = RenderProcess(self.pipeline.settings)
        except OSError as err:
            log.warning("rendering in the sending process: cannot start a render process: %s", err)

    def __enter__(self) -> _RenderProcessSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


@dataclass(frozen=True, slots=True)
class _Ready:
    """A claimed delivery with its message rendered, waiting for a free connection."""

    delivery: Delivery
    message: OutgoingMessage


@dataclass(frozen=True, slots=True)
class _Ended:
    """A delivery whose attempt is over (or was never made), with what to record for it."""

    delivery: Delivery
    recipient: str
    end: AttemptEnd
    result: SendResult | None = None


class _Dispatch:
    """One send loop: this thread claims deliveries and has their messages rendered a little ahead (by
    the send's render process when it has one, else itself); ``mailer.concurrency`` sender threads hand
    them over and record what came back. With one connection and no render process everything runs in
    this thread.

    Each sender records the outcome of its last message and marks its next one "sending" in one
    transaction, right before handing it over: so no more records are "sending" than messages are in
    flight (all that a kill can leave in doubt), rendering stays out of the senders' way, and a message
    costs one commit. A sender with nothing to send next records its last outcome at once. Writes go
    one at a time (a lock), so SQLite never makes this process wait on itself. Issues are read a
    claimed batch at a time, with one Paper object per paper for the whole run.
    """

    def __init__(self, pipeline: Pipeline, mailer: Mailer, worker: str, summary: SendSummary,
                 progress: Progress, render_process: RenderProcess | None = None) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.mailer = mailer
        self.worker = worker
        self.summary = summary
        self.progress = progress
        self.slots = max(1, mailer.concurrency)
        self.ready: queue.Queue[_Ready | None] = queue.Queue(maxsize=self.slots)
        self.papers: dict[str, Paper] = {}
        self.claimed: deque[Delivery] = deque()
        self.issues: dict[int, Issue] = {}
        self.rendered: deque[_Ready | _Ended] = deque()
        self.render_process = render_process
        self.writing = threading.Lock()
        self.local = threading.local()  # a sender thread's own settle (Store.settling)
        self.counting = threading.Lock()
        self.error: BaseException | None = None

    def run(self, claims: list[Delivery], claim: Callable[[], list[Delivery]]) -> None:
        self.claimed.extend(claims)
        if self.slots == 1 and self.render_process is None:
            self._run_inline(claim)
            return
        stop = self.pipeline.stop_requested
        senders = [threading.Thread(target=self._sender, name=f"digest-send-{k}", daemon=True)
                   for k in range(self.slots)]
        for thread in senders:
            thread.start()
        try:
            for prepared in self._prepared(claim):
                if isinstance(prepared, _Ended):
                    self._record([prepared], None)
                    continue
                while not self._offer(prepared):
                    if stop.is_set() or self.error is not None:
                        break
        finally:
            for _ in senders:
                self.ready.put(None)  # senders drain the queue, so this never blocks for long
            for thread in senders:
                thread.join()
        if self.error is not None:
            raise self.error

    def _prepared(self, claim: Callable[[], list[Delivery]]) -> Iterator[_Ready | _Ended]:
        """The claimed messages, rendered, one at a time, until all are done or the run stops."""
        stop = self.pipeline.stop_requested
        while not stop.is_set() and self.error is None:
            prepared = self._prepare_next(claim)
            if prepared is None:
                return
            yield prepared

    def _offer(self, ready: _Ready) -> bool:
        try:
            self.ready.put(ready, timeout=0.2)
            return True
        except queue.Full:
            return False

    def _claim_more(self, claim: Callable[[], list[Delivery]]) -> bool:
        with self.writing:
            more = claim()
        self.claimed.extend(more)
        return bool(more)

    def _prepare_next(self, claim: Callable[[], list[Delivery]]) -> _Ready | _Ended | None:
        """The next claimed message, rendered (claiming more when none is left); None when all are done."""
        if self.rendered:
            return self.rendered.popleft()
        worker = self.render_process
        if worker is not None:
            try:
                # Asked for by configuration: wait for it; chosen here: render meanwhile.
                if worker.ready(wait=_RENDER_START_SECONDS if self.pipeline.settings.delivery.workers else 0.0):
                    # Two batches in the worker: it renders the next while this thread hands out one.
                    while len(worker.pending) < 2 and (self.claimed or self._claim_more(claim)):
                        batch = [self.claimed.popleft() for _ in range(min(_RENDER_BATCH, len(self.claimed)))]
                        worker.submit(self.pipeline.clock(), batch)
                    if worker.pending:
                        for delivery, prepared in worker.receive():
                            self.rendered.append(self._wrap(delivery, prepared))
                        return self.rendered.popleft()
                    return None
            except (OSError, EOFError, TimeoutError) as err:
                log.warning("render process failed (%s): rendering in the sending process", err or type(err).__name__)
                for batch in reversed(worker.pending):
                    self.claimed.extendleft(reversed(batch))
                worker.pending.clear()
                worker.close()
                self.render_process = None
        if not self.claimed and not self._claim_more(claim):
            return None
        delivery = self.claimed.popleft()
        if delivery.issue_id not in self.issues:
            # Read the issues of this and the next claimed deliveries at once (a read: no write lock,
            # so the senders go on recording meanwhile).
            ids = [delivery.issue_id, *(d.issue_id for d in islice(self.claimed, 499))]
            self.issues = self.store.load_issues(ids, self.pipeline.labels, self.papers)
        issue = self.issues.pop(delivery.issue_id, None)
        return self._wrap(delivery, self.pipeline.prepare_message(delivery, issue))

    @staticmethod
    def _wrap(delivery: Delivery, prepared: OutgoingMessage | AttemptEnd) -> _Ready | _Ended:
        if isinstance(prepared, AttemptEnd):
            return _Ended(delivery, "?", prepared)
        return _Ready(delivery, prepared)

    @contextmanager
    def _own_connection(self) -> Iterator[None]:
        """This thread records on a database connection of its own for the block."""
        with self.store.settling(self.worker, self.pipeline.settings.delivery.lease_seconds) as settle:
            self.local.settle = settle
            try:
                yield
            finally:
                del self.local.settle

    def _sender(self) -> None:
        with self._own_connection():
            self._send_queued()

    def _send_queued(self) -> None:
        last: _Ended | None = None
        while True:
            try:
                ready = self.ready.get_nowait()
            except queue.Empty:
                if last is not None:
                    self._record([last], None)  # nothing to send next: record the outcome now
                    last = None
                ready = self.ready.get()
            if ready is None or self.pipeline.stop_requested.is_set() or self.error is not None:
                # Stopping: what is queued stays pending (its claim is given back); the last outcome
                # is recorded.
                if last is not None:
                    self._record([last], None)
                    last = None
                if ready is None:
                    return
                continue
            last = self._hand_over(last, ready)

    def _hand_over(self, last: _Ended | None, ready: _Ready) -> _Ended | None:
        """Record ``last`` and mark ``ready`` "sending" (one transaction), then send it; its outcome,
        to record with the next hand-over (None if the claim was lost)."""
        if not self._record([last] if last is not None else [], ready):
            self.progress.advance()  # the claim was lost (its lease ran out): another sender has it
            return None
        try:
            result = self.mailer.send(ready.message)
        except Exception as err:  # a backend bug must not lose the record: treat as unknown
            log.exception("mailer crashed subscriber=%s", ready.message.recipient)
            result = SendResult(Outcome.UNKNOWN, f"mailer error: {err}")
        recipient = ready.message.recipient
        return _Ended(ready.delivery, recipient, self.pipeline._attempt_end(ready.delivery, recipient, result), result)

    def _run_inline(self, claim: Callable[[], list[Delivery]]) -> None:
        """One message at a time, all in this thread: for a mailer that takes one at a time and needs no
        network round trip (file, memory), handing each message to another thread costs more than it
        saves."""
        last: _Ended | None = None
        with self._own_connection():
            try:
                for prepared in self._prepared(claim):
                    if isinstance(prepared, _Ended):
                        self._record([prepared, *([last] if last is not None else [])], None)
                        last = None
                        continue
                    last = self._hand_over(last, prepared)
            finally:
                if last is not None:
                    self._record([last], None)
        if self.error is not None:
            raise self.error

    def _record(self, ended: list[_Ended], ready: _Ready | None) -> bool:
        """Record ``ended`` and mark ``ready`` "sending" in one transaction; whether ``ready`` may go."""
        try:
            ends, sending = [e.end for e in ended], [ready.delivery.id] if ready else []
            settle = getattr(self.local, "settle", None)
            with self.writing:
                if settle is not None:
                    marked = settle(ends, sending, self.pipeline.clock())
                else:
                    marked = self.store.settle(ends, sending, self.worker, self.pipeline.clock(),
                                               self.pipeline.settings.delivery.lease_seconds)
                for e in ended:
                    if e.result is not None and e.result.outcome is Outcome.PERMANENT:
                        self.pipeline._refused(e.delivery, e.recipient, e.result)
        except BaseException as err:
            # The run stops; records left "sending" are recovered as in doubt by the next run.
            self.error = self.error or err
            return False
        self._count(ended)
        return ready is not None and ready.delivery.id in marked

    def _count(self, ended: list[_Ended]) -> None:
        with self.counting:
            summary = self.summary
            for e in ended:
                status = e.end.status
                if status is DeliveryStatus.SENT:
                    summary.sent += 1
                    summary.in_doubt += int(e.delivery.in_doubt)
                elif status is DeliveryStatus.FAILED:
                    summary.failed += 1
                elif status is DeliveryStatus.UNKNOWN:
                    summary.unknown += 1
                    summary.failed += 1
                elif status is DeliveryStatus.PENDING:
                    summary.deferred += 1
                self.progress.advance()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While sending from the main thread of a plain process (``digest send``): the first SIGTERM or
    Ctrl-C only sets ``stop``, so messages in flight finish and are recorded and unsent claims are
    given back; a second one acts as usual. Handlers someone else installed (the daemon's) are left
    alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    previous = {sig: signal.getsignal(sig) for sig in defaults}
    ours = [sig for sig, default in defaults.items() if previous[sig] is default]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        log.warning("signal=%s: finishing the messages in flight, then stopping (again to stop now)",
                    signal.Signals(signum).name)
        stop.set()

    for sig in ours:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig in ours:
            signal.signal(sig, previous[sig])


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "-"


def _worker_id() -> str:
    """``host:pid-namespace:pid:random``: unique per send, and enough to tell later whether it died."""
    return f"{socket.gethostname()[:64]}:{_pid_namespace()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_dead_local_worker(worker: str) -> bool:
    """True only when certain: the worker ran on this host, in this PID namespace, and its process
    is gone. Anything else (another host, a reused pid, no /proc) counts as alive: its lease decides."""
    parts = worker.split(":")
    if len(parts) != 4:
        return False
    host, namespace, pid, _ = parts
    if host != socket.gethostname()[:64] or namespace == "-" or namespace != _pid_namespace():
        return False
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to someone else
        return False
    return False


@lru_cache(maxsize=64)  # the same sender, once per message
@lru_cache(maxsize=64)  # asked once per message, of the one configured sender
def _address_of(sender: str) -> str:
    from email.utils import parseaddr

    return parseaddr(sender)[1] or sender


@lru_cache(maxsize=64)
def _domain_of(sender: str) -> str:
    address = _address_of(sender)
    return address.rsplit("@", 1)[1] if "@" in address else "localhost"
