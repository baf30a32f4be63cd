"""The send engine: delivers stored issues' pending records, safely under kills and with several senders.

It owns the claim -> render -> send -> record loop (``_Dispatch``: one coordinating thread and
``mailer.concurrency`` sender threads), the render process of a large send, SIGTERM/Ctrl-C handling,
sender ids and the recovery of what dead senders left, and the meaning of a mailer's verdict for the
delivery record (``SendEngine.attempt_end``). It builds no issue (digest.issues does) and makes no
message itself (digest.compose does, here or in the render process). Its interface: ``recover``, then
``session()`` and, inside it, ``expect`` and ``deliver``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from digest.compose import Composer
from digest.config import Settings
from digest.errors import DeliveryError
from digest.gcpause import frozen_heap
from digest.mail import Mailer
from digest.models import AttemptEnd, Delivery, DeliveryStatus, Issue, Outcome, OutgoingMessage, Paper, SendResult
from digest.relay_guard import GuardState, RelayGuard
from digest.store import Store

if TYPE_CHECKING:
    from digest.issue_feed import IssueFeed
    from digest.render_process import RenderProcess

__all__ = ["NoProgress", "Progress", "SendEngine", "SendSession", "SendSummary", "is_dead_local_worker", "worker_id"]

log = logging.getLogger("digest")

Clock = Callable[[], datetime]
# The send loop's claims: ``claim(wait)`` (see SendSession.deliver).
Claim = Callable[[bool], list[Delivery]]

# Messages a render process renders per request: small enough that the first ones go out at once.
_RENDER_BATCH = 16
_RENDER_START_SECONDS = 60.0


@dataclass(slots=True)
class SendSummary:
    """What one send did. ``failed`` counts permanent failures, ``unknown`` messages whose fate nobody
    knows (a connection lost after the data, or a sender killed mid-message, found by recovery), and
    ``pending`` the records the run leaves to a later one (deferred after a temporary failure, not
    reached because the run was stopped, or held back by the relay guard); ``deferred`` is part of it."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    in_doubt: int = 0
    pending: int = 0
    stopped: bool = False  # SIGTERM / Ctrl-C (or the daemon stopping) ended it early
    relay_refusing: str = ""  # the relay guard stopped it: one line saying why (digest.relay_guard)
    planned: list[tuple[str, int]] = field(default_factory=list)
    # A dry run's readers who would get nothing, each with why: (address, reason).
    passed_over: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        """The last line of ``digest send``: pending and unknown appear only when there are some."""
        extra = "".join(f" {name}={n}" for name, n in (("pending", self.pending), ("unknown", self.unknown)) if n)
        return f"sent={self.sent} skipped={self.skipped} failed={self.failed}{extra}"

    @property
    def incomplete(self) -> bool:
        """Whether the send did not finish its job (exit 1): failures, messages of unknown fate, records
        left pending, a stop or a relay refusing mail."""
        return bool(self.failed or self.unknown or self.pending or self.stopped or self.relay_refusing)

    def add(self, other: SendSummary) -> None:
        """Count ``other``'s deliveries in this one (what a send adds up over several dates)."""
        for name in ("sent", "failed", "deferred", "unknown", "in_doubt", "pending"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.stopped = self.stopped or other.stopped
        self.relay_refusing = self.relay_refusing or other.relay_refusing


class Progress(Protocol):
    """What the send loop reports as it goes; the CLI plugs a rich progress bar in (any object with
    these three methods will do, so the CLI need not import this module up front). ``start`` comes
    first, with the work known then; ``grow`` adds work found later (issues built during the send)."""

    def start(self, total: int | None) -> None: ...

    def grow(self, n: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NoProgress(Progress):
    """Reports nothing: the default where no one watches."""

    def start(self, total: int | None) -> None:
        pass

    def grow(self, n: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class SendEngine:
    """Delivers pending records of one database through one mailer; ``stop_requested`` ends a send early
    (messages in flight finish and are recorded, unsent claims are given back)."""

    def __init__(self, settings: Settings, store: Store, composer: Composer, mailer: Callable[[], Mailer],
                 clock: Clock, stop_requested: threading.Event) -> None:
        self.settings = settings
        self.store = store
        self.composer = composer
        self._mailer = mailer  # a factory: no mailer (no SMTP set-up) until a send has work
        self.clock = clock
        self.stop_requested = stop_requested

    @property
    def mailer(self) -> Mailer:
        return self._mailer()

    def recover(self, now: datetime) -> int:
        """Free what dead senders left: claims of senders known dead here, then expired "sending" leases.
        Returns how many records became "unknown" (with ``resend_in_doubt`` off; else they are re-sent)."""
        dead = [w for w in self.store.claimants() if is_dead_local_worker(w)]
        if dead:
            # A sender on this machine was killed: no need to wait out its lease.
            log.warning("ending the leases of %d dead sender(s): %s", len(dead), ", ".join(sorted(dead)))
            self.store.expire_claims(dead, now)
        recovered = self.store.recover_interrupted(now, self.settings.delivery.resend_in_doubt)
        if recovered:
            log.warning("recovered %d deliveries interrupted while sending (in doubt)", recovered)
        return 0 if self.settings.delivery.resend_in_doubt else recovered

    @contextmanager
    def session(self) -> Iterator[SendSession]:
        """One send: signals stop it gently (see _stop_on_signals), a render process may start, and the
        heap is frozen while it runs (digest.gcpause)."""
        with _stop_on_signals(self.stop_requested), _RenderProcessSlot(self) as slot, frozen_heap():
            yield SendSession(self, slot)

    def attempt_end(self, delivery: Delivery, recipient: str, result: SendResult) -> AttemptEnd:
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

    def record_refusal(self, delivery: Delivery, recipient: str, result: SendResult) -> None:
        """A permanent refusal: a bounce counts towards suppressing the reader; an unexplained one only
        when the address was refused so on an earlier issue too; anything else is logged."""
        detail = result.detail
        if result.unexplained and delivery.issue_date is not None:
            if not self.store.record_unexplained_refusal(delivery.subscriber_id, delivery.issue_date, detail,
                                                         self.clock()):
                log.error("refused subscriber=%s reason=%s (no reason given: counts if refused again on a later "
                          "issue)", recipient, detail)
                return
            detail = f"{detail} (refused on an earlier issue too)"
        elif not result.bounce:
            log.error("refused subscriber=%s reason=%s (not a bounce: the reader stays)", recipient, detail)
            return
        suppressed = self.store.record_hard_bounce(delivery.subscriber_id, self.settings.smtp.hard_bounces_to_suppress,
                                                   detail)
        log.error("bounced subscriber=%s reason=%s%s", recipient, detail, " (suppressed)" if suppressed else "")


class SendSession:
    """A send in progress (``SendEngine.session``)."""

    def __init__(self, engine: SendEngine, slot: _RenderProcessSlot) -> None:
        self._engine = engine
        self._slot = slot
        # This process's database writes go one at a time (the send loop's, and those of the thread
        # building issues beside it): SQLite then never makes the process wait on itself.
        self.writing = threading.Lock()
        self.claimed: set[int] = set()  # subscribers whose delivery this send claimed (``served``)

    def expect(self, messages: int) -> None:
        """About ``messages`` are to be sent: starts the render process if that pays (once per send)."""
        self._slot.expect(messages)

    def skipped(self, feed: IssueFeed) -> int:
        """The readers a builder found served already that this send did not deliver itself: skipped."""
        return sum(1 for sub_id in feed.already if sub_id not in self.claimed)

    def deliver(self, issue_date: date, summary: SendSummary, progress: Progress, *,
                subscriber_id: int | None = None, due_since: datetime | None = None,
                feed: IssueFeed | None = None) -> None:
        """Claim, render, send and record the pending deliveries of ``issue_date`` (of one subscriber if
        given; with ``due_since``, none whose reader's send moment is older, see Store.claim_deliveries),
        counting them in ``summary``.

        With ``feed``, issues are still being built meanwhile (IssueBuilder.alongside): the records of
        each chunk are claimed as soon as it is stored, ``progress`` grows by them, and the run ends
        only once the builder has ended and nothing is left to claim. A run that stops early (a stop
        request, the relay guard, an error) stops the builder too, and waits for it before counting
        what stays pending.
        """
        engine = self._engine
        worker = worker_id()
        cfg = engine.settings.delivery
        dispatch: _Dispatch | None = None
        grown = 0

        def stopping() -> bool:
            return engine.stop_requested.is_set() or (dispatch is not None and dispatch.halted)

        def claim_now() -> list[Delivery]:
            with self.writing:
                claims = engine.store.claim_deliveries(worker, engine.clock(), cfg.lease_seconds, cfg.batch_size,
                                                       issue_date=issue_date, subscriber_id=subscriber_id,
                                                       due_since=due_since)
            # Before any of them can be handed over: a builder that finds one past pending asks here.
            self.claimed.update(d.subscriber_id for d in claims)
            return claims

        def grow() -> None:
            nonlocal grown
            if feed is not None and feed.created > grown:
                progress.grow(feed.created - grown)
                grown = feed.created
                self._slot.expect(grown)

        def claim(wait: bool = True) -> list[Delivery]:
            """The next claims. With a feed and ``wait``, when none is claimable yet, waits for the
            builder's next chunk: nothing comes back only once the builder has ended (or the run stops)."""
            if feed is None:
                return [] if stopping() else claim_now()
            while not stopping():
                grow()
                seen = feed.state()  # before claiming: a chunk stored after it wakes the wait below
                claims = claim_now()
                if claims or seen.done or not wait:
                    return claims
                feed.wait_past(seen, timeout=0.2)
            return []

        guard: RelayGuard[_Ended] = RelayGuard()
        error: str | None = None
        try:
            claims = claim()
            if claims:
                self._slot.expect(max(len(claims), feed.created if feed is not None else 0))
                # The mailer opens only once there is work: no SMTP session for nothing, and a server
                # that cannot be reached fails the run here, with every message still pending.
                with engine.mailer as mailer:
                    dispatch = _Dispatch(engine, mailer, worker, summary, progress, self._slot, self.writing, guard)
                    dispatch.run(claims, claim)
        except DeliveryError as err:
            error = str(err)
            raise
        finally:
            if feed is not None:
                # Whatever ended the run ends the building: what it stores from now on waits for the
                # next run. Counting what stays pending waits for its last chunk.
                feed.cancel()
                while not feed.done:
                    feed.wait_past(feed.state(), timeout=1.0)
            # Also after an error: claims left behind would block a re-run until their lease expires,
            # and refusals held back by the relay guard would wait out their hold. The messages an
            # error left unsent are deferred, and keep the error to say why.
            released = engine.store.release_claims(worker, error, engine.clock())
            if error is not None:
                summary.deferred += released
            held = guard.still_held()
            if held:
                engine.store.release_held([e.delivery.id for e in held])
        pending = engine.store.count_pending(issue_date, engine.clock(), subscriber_id, due_since)
        summary.pending += pending
        if guard.tripped:
            summary.relay_refusing = guard.describe()
            log.error("%s; %d deliveries of %s stay pending", summary.relay_refusing, pending, issue_date)
        summary.stopped = summary.stopped or engine.stop_requested.is_set()


class _RenderProcessSlot:
    """The render process of one send, started once the run turns out large (``expect``) and stopped
    with the block. ``[delivery] workers`` 0 decides: a process pays for its start (about a second of
    one core) when a full batch of messages or more goes out over several connections on a machine with
    a core to spare; any other value always starts one."""

    def __init__(self, engine: SendEngine) -> None:
        self.engine = engine
        self.process: RenderProcess | None = None
        self._decided = False

    def expect(self, messages: int) -> None:
        """About ``messages`` are to be sent: start the process if that pays (once per send)."""
        if self._decided or messages <= 0:
            return
        cfg = self.engine.settings.delivery
        pays = messages >= cfg.batch_size and (os.cpu_count() or 1) >= 2 and self.engine.mailer.concurrency >= 2
        if not (cfg.workers or pays):
            return
        self._decided = True
        from digest.render_process import RenderProcess

        try:
            self.process = RenderProcess(self.engine.settings)
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
    held: bool = False  # a refusal the relay guard keeps pending for now


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

    def __init__(self, engine: SendEngine, mailer: Mailer, worker: str, summary: SendSummary,
                 progress: Progress, slot: _RenderProcessSlot, writing: threading.Lock,
                 guard: RelayGuard[_Ended] | None = None) -> None:
        self.engine = engine
        self.store = engine.store
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
        self.slot = slot  # its render process may start after the first claims (issues still being built)
        self.writing = writing
        self.local = threading.local()  # a sender thread's own settle (Store.settling)
        self.counting = threading.Lock()
        self.error: BaseException | None = None
        self.guard: RelayGuard[_Ended] = guard if guard is not None else RelayGuard()

    @property
    def render_process(self) -> RenderProcess | None:
        return self.slot.process

    @property
    def halted(self) -> bool:
        """Stop handing messages over: asked to, an error, or the relay refuses mail."""
        return self.engine.stop_requested.is_set() or self.error is not None or self.guard.tripped

    def run(self, claims: list[Delivery], claim: Claim) -> None:
        self.claimed.extend(claims)
        if self.slots == 1 and self.render_process is None:
            self._run_inline(claim)
        else:
            self._run_threads(claim)
        if not self.halted and self.guard.finish() is GuardState.HEALTHY:
            with self.writing:
                self._record_released()

    def _run_threads(self, claim: Claim) -> None:
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
                    if self.halted:
                        break
        finally:
            for _ in senders:
                self.ready.put(None)  # senders drain the queue, so this never blocks for long
            for thread in senders:
                thread.join()
        if self.error is not None:
            raise self.error

    def _prepared(self, claim: Claim) -> Iterator[_Ready | _Ended]:
        """The claimed messages, rendered, one at a time, until all are done or the run stops."""
        while not self.halted:
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

    def _claim_more(self, claim: Claim, wait: bool = True) -> bool:
        """Claim more (the claim takes the write lock itself: it may wait for issues being built)."""
        more = claim(wait)
        self.claimed.extend(more)
        return bool(more)

    def _prepare_next(self, claim: Claim) -> _Ready | _Ended | None:
        """The next claimed message, rendered (claiming more when none is left); None when all are done."""
        if self.rendered:
            return self.rendered.popleft()
        worker = self.render_process
        if worker is not None:
            try:
                # Asked for by configuration: wait for it; chosen here: render meanwhile.
                if worker.ready(wait=_RENDER_START_SECONDS if self.engine.settings.delivery.workers else 0.0):
                    # Two batches in the worker: it renders the next while this thread hands out one.
                    # Waiting for issues still being built only when the worker has nothing in hand.
                    while len(worker.pending) < 2 and (self.claimed or self._claim_more(claim, not worker.pending)):
                        batch = [self.claimed.popleft() for _ in range(min(_RENDER_BATCH, len(self.claimed)))]
                        worker.submit(self.engine.clock(), batch)
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
                self.slot.process = None
        if not self.claimed and not self._claim_more(claim):
            return None
        delivery = self.claimed.popleft()
        if delivery.issue_id not in self.issues:
            # Read the issues of this and the next claimed deliveries at once (a read: no write lock,
            # so the senders go on recording meanwhile).
            ids = [delivery.issue_id, *(d.issue_id for d in islice(self.claimed, 499))]
            self.issues = self.store.load_issues(ids, self.engine.composer.labels, self.papers)
        issue = self.issues.pop(delivery.issue_id, None)
        return self._wrap(delivery, self.engine.composer.prepare(delivery, issue, self.engine.clock()))

    @staticmethod
    def _wrap(delivery: Delivery, prepared: OutgoingMessage | AttemptEnd) -> _Ready | _Ended:
        if isinstance(prepared, AttemptEnd):
            return _Ended(delivery, "?", prepared)
        return _Ready(delivery, prepared)

    @contextmanager
    def _own_connection(self) -> Iterator[None]:
        """This thread records on a database connection of its own for the block."""
        with self.store.settling(self.worker, self.engine.settings.delivery.lease_seconds) as settle:
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
            if ready is None or self.halted:
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
        return _Ended(ready.delivery, recipient, self.engine.attempt_end(ready.delivery, recipient, result), result)

    def _run_inline(self, claim: Claim) -> None:
        """One message at a time, all in this thread: for a mailer that takes one at a time and needs no
        network round trip (file, memory), handing each message to another thread costs more than it
        saves."""
        last: _Ended | None = None

        def claim_or_record(wait: bool) -> list[Delivery]:
            # Before waiting for issues still being built, the last outcome is recorded: no record
            # stays "sending" longer than its message is in flight.
            nonlocal last
            more = claim(False)
            if more or not wait:
                return more
            if last is not None:
                self._record([last], None)
                last = None
            return claim(True)

        with self._own_connection():
            try:
                for prepared in self._prepared(claim_or_record):
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
        """Record ``ended`` and mark ``ready`` "sending" in one transaction; whether ``ready`` may go.
        The relay guard sees every outcome first and may keep a refusal pending (digest.relay_guard)."""
        try:
            sending = [ready.delivery.id] if ready else []
            settle = getattr(self.local, "settle", None)
            with self.writing:
                now = self.engine.clock()
                ended = [self._guarded(e, now) for e in ended]
                ends = [e.end for e in ended]
                if settle is not None:
                    marked = settle(ends, sending, now)
                else:
                    marked = self.store.settle(ends, sending, self.worker, now,
                                               self.engine.settings.delivery.lease_seconds)
                for e in ended:
                    if e.result is not None and e.result.outcome is Outcome.PERMANENT and not e.held:
                        self.engine.record_refusal(e.delivery, e.recipient, e.result)
                self._record_released()
        except BaseException as err:
            # The run stops; records left "sending" are recovered as in doubt by the next run.
            self.error = self.error or err
            return False
        self._count(ended)
        return ready is not None and ready.delivery.id in marked

    def _guarded(self, ended: _Ended, now: datetime) -> _Ended:
        """``ended`` as the relay guard has it recorded: a refusal it holds stays pending (not
        claimable again before a lease's time, so this run does not retry it)."""
        result = ended.result
        if result is None:
            return ended
        refused = result.outcome is Outcome.PERMANENT
        if not self.guard.attempt(refused, result.detail, ended):
            return ended
        hold_until = now + timedelta(seconds=self.engine.settings.delivery.lease_seconds)
        end = AttemptEnd(ended.delivery.id, DeliveryStatus.PENDING, f"held back: {result.detail}",
                         next_attempt_at=hold_until)
        return _Ended(ended.delivery, ended.recipient, end, result, held=True)

    def _record_released(self) -> None:
        """Record the refusals the guard held while the relay proved healthy (under the write lock)."""
        released = self.guard.released()
        if not released:
            return
        done = self.store.fail_held([e.end for e in released], self.engine.clock())
        failed = [e for e in released if e.delivery.id in done]
        for e in failed:
            if e.result is not None:
                self.engine.record_refusal(e.delivery, e.recipient, e.result)
        with self.counting:
            self.summary.failed += len(failed)

    def _count(self, ended: list[_Ended]) -> None:
        with self.counting:
            summary = self.summary
            for e in ended:
                status = e.end.status
                if e.held:
                    pass  # pending until the relay guard decides: counted then, or as pending
                elif status is DeliveryStatus.SENT:
                    summary.sent += 1
                    summary.in_doubt += int(e.delivery.in_doubt)
                elif status is DeliveryStatus.FAILED:
                    summary.failed += 1
                elif status is DeliveryStatus.UNKNOWN:
                    summary.unknown += 1
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
            signal.signal(signum, previous[signal.Signals(signum)])
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


def worker_id() -> str:
    """``host:pid-namespace:pid:random``: unique per send, and enough to tell later whether it died."""
    return f"{socket.gethostname()[:64]}:{_pid_namespace()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_worker(worker: str) -> bool:
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


