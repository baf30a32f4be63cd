"""The daemon: APScheduler jobs that fetch on a cron and send each reader's issue at their local hour.

What to send is decided from the delivery records, never from a job having fired: the dispatch job
runs every few minutes, works out each subscriber's current issue (today's in their time zone, once
their send time has passed), and sends the ones with no delivered record that are not older than the
configured maximum lateness. A daemon that was down catches up once; it never sends a stale or a
second issue.

    Daemon(pipeline).run()           the scheduler process (SIGTERM/SIGINT stop it cleanly)
    run_daemon(pipeline) -> int      the same, for `digest daemon`
    due_now(pipeline, now)           who gets which issue right now: {issue date: [subscribers]}
    fetch_overdue(pipeline, now)     True when a scheduled fetch has been missed
    build_scheduler(pipeline)        the APScheduler instance with its jobs, not started
    next_run_times(pipeline)         for `digest status`
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Settings
from digest.errors import ConfigError, DigestError
from digest.models import DeliveryStatus, Subscriber, SubscriberStatus
from digest.selection import is_due, local_issue_date, send_time_passed
from digest.store.jobs import JOB_TABLE

if TYPE_CHECKING:
    from digest.pipeline import FetchSummary, Pipeline, SendSummary
    from digest.store import Store

__all__ = [
    "DISPATCH_JOB",
    "FETCH_JOB",
    "JOB_TABLE",
    "Daemon",
    "DispatchPlan",
    "JobSpec",
    "build_scheduler",
    "current_issue",
    "dispatch_job",
    "due_now",
    "fetch_job",
    "fetch_overdue",
    "fetch_trigger",
    "job_specs",
    "next_run_times",
    "plan_dispatch",
    "run_daemon",
]

log = logging.getLogger("digest.scheduler")
# What signal.signal returns and takes back (a function, SIG_DFL/SIG_IGN, or None if not set from Python).
_Handler = Callable[[int, FrameType | None], Any] | int | None

FETCH_JOB = "fetch"
DISPATCH_JOB = "dispatch"

# A weekly reader's next issue day is at most a week ahead.
_LOOKAHEAD_DAYS = 7
# An issue dated a day or two after the current one (`digest send` dates issues in UTC, the daemon in
# the reader's time zone) supersedes it: never send a reader an issue older than one they have.
_LATER = (1, 2)
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_UNSEEN = object()


# ---- schedule ---------------------------------------------------------------------------------------


def _cron_day_of_week(field_value: str) -> str:
    """Translate a crontab day-of-week field (0 or 7 = Sunday) into APScheduler 3's names.

    APScheduler 3 numbers weekdays from Monday = 0 (its issue 286), so "0-4" in a crontab, meaning
    Sunday to Thursday, would silently mean Monday to Friday. Names are unambiguous in both.
    """
    if field_value.strip() in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field_value.lower().split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"invalid step in {item!r}")
        if base in ("*", "?"):
            lo, hi = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            lo, hi = _cron_day(first), _cron_day(last)
            if hi == 0 and lo > 0:
                hi = 7
            if lo > hi:
                raise ValueError(f"invalid day range {item!r}")
        else:
            lo = hi = _cron_day(base)
            if step_text:
                hi = 6
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def _cron_day(token: str) -> int:
    token = token.strip()
    if token.isdigit():
        value = int(token)
        if not 0 <= value <= 7:
            raise ValueError(f"day of week {token!r} out of range 0-7")
        return value
    if token[:3] in _CRON_DAYS:
        return _CRON_DAYS.index(token[:3])
    raise ValueError(f"invalid day of week {token!r}")


def _cron(expr: str, tz: ZoneInfo, key: str) -> CronTrigger:
    """A CronTrigger from a standard 5-field crontab line; ConfigError naming ``key`` if invalid."""
    fields = expr.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
        minute, hour, day, month, weekday = fields
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_cron_day_of_week(weekday), timezone=tz)
    except ValueError as err:
        raise ConfigError(f"invalid cron expression {expr!r}: {err}", key=key) from err


def fetch_trigger(settings: Settings) -> BaseTrigger:
    """When fetch runs: ``fetch_cron`` or ``extra_fetch_cron`` (standard crontab, in ``fetch_timezone``)."""
    cfg = settings.schedule
    tz = ZoneInfo(cfg.fetch_timezone)
    main = _cron(cfg.fetch_cron, tz, "schedule.fetch_cron")
    if not cfg.extra_fetch_cron.strip():
        return main
    return OrTrigger([main, _cron(cfg.extra_fetch_cron, tz, "schedule.extra_fetch_cron")])


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One scheduled job: a module-level function (jobs are pickled by reference) and when it runs."""

    id: str
    func: Callable[[], None]
    trigger: BaseTrigger
    misfire_grace_time: int
    first_run: datetime | None = None


def job_specs(settings: Settings, now: datetime) -> list[JobSpec]:
    """The daemon's jobs, as of ``now``. Raises ConfigError for an invalid cron expression.

    Misfire grace: a fetch that starts more than ``misfire_grace_seconds`` late is dropped, because
    the next dispatch notices the missed fetch in the store's records and runs it then; a dispatch
    later than its own interval is dropped because the next one is due anyway. Dispatch first runs
    at start-up (the catch-up after downtime).
    """
    cfg = settings.schedule
    interval = cfg.dispatch_minutes * 60
    return [
        JobSpec(FETCH_JOB, fetch_job, fetch_trigger(settings), cfg.misfire_grace_seconds),
        JobSpec(DISPATCH_JOB, dispatch_job,
                IntervalTrigger(seconds=interval, start_date=now + timedelta(seconds=interval), timezone=UTC),
                interval, first_run=now),
    ]


def build_scheduler(pipeline: Pipeline, jobstore: BaseJobStore | None = None) -> BackgroundScheduler:
    """The daemon's scheduler with its jobs added (not started); jobs live in the project's database.

    Every job has an explicit id and ``replace_existing`` (a persistent store would otherwise gain a
    copy on every start), ``coalesce`` (after a stall, one run rather than a burst) and
    ``max_instances=1`` (a slow send or fetch never overlaps itself). Two workers let a fetch and a
    dispatch run side by side, so neither waits (and misfires) behind the other.
    """
    specs = job_specs(pipeline.settings, pipeline.clock())
    store = jobstore if jobstore is not None else pipeline.store.scheduler_jobs()
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(max_workers=2)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    for spec in specs:
        extra: dict[str, Any] = {"next_run_time": spec.first_run} if spec.first_run is not None else {}
        scheduler.add_job(spec.func, spec.trigger, id=spec.id, name=spec.id, replace_existing=True,
                          coalesce=True, max_instances=1, misfire_grace_time=spec.misfire_grace_time, **extra)
    return scheduler


# ---- what is due ------------------------------------------------------------------------------------


def current_issue(sub: Subscriber, now: datetime) -> tuple[date, datetime] | None:
    """The subscriber's current issue at ``now``: (local issue date, send moment) once their local send
    time has passed on a day they are due, else None.

    Only the local today counts: an issue missed yesterday is over at local midnight, so a reader never
    gets yesterday's issue a few hours before today's (nor does a new subscriber).
    """
    today = local_issue_date(sub, now)
    if not is_due(sub, today) or not send_time_passed(sub, now):
        return None
    return today, sub.send_moment(today)


def next_send_moment(sub: Subscriber, now: datetime) -> datetime:
    """The first send moment of ``sub`` after ``now``."""
    today = local_issue_date(sub, now)
    for ahead in range(_LOOKAHEAD_DAYS + 1):
        day = today + timedelta(days=ahead)
        if is_due(sub, day) and (ahead > 0 or not send_time_passed(sub, now)):
            return sub.send_moment(day)
    return sub.send_moment(today + timedelta(days=_LOOKAHEAD_DAYS + 1))


@dataclass(slots=True)
class DispatchPlan:
    """What one dispatch found: who is due by issue date, and undelivered issues now too late to send."""

    due: dict[date, list[Subscriber]] = field(default_factory=dict)
    stale: list[tuple[Subscriber, date, datetime]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(subs) for subs in self.due.values())


def _settled(status: DeliveryStatus | None) -> bool:
    return status is not None and status is not DeliveryStatus.PENDING


def plan_dispatch(pipeline: Pipeline, now: datetime) -> DispatchPlan:
    """Every confirmed, unpaused subscriber whose current issue is due at ``now``, by local issue date.

    Due means: the local send time of that issue has passed, by no more than ``max_lateness_hours``;
    its delivery record is missing (not built yet) or pending and not waiting for a retry; and the
    reader has no issue dated after it. Sent, failed, unknown and in-flight ("sending") records are
    settled: never a second send. Reads only.
    """
    store = pipeline.store
    max_late = timedelta(hours=pipeline.settings.schedule.max_lateness_hours)
    current: list[tuple[Subscriber, date, datetime]] = []
    for sub in store.iter_subscribers(status=SubscriberStatus.CONFIRMED,
                                      batch_size=pipeline.settings.delivery.batch_size):
        if sub.paused or sub.id is None:
            continue
        found = current_issue(sub, now)
        if found is not None:
            current.append((sub, *found))
    days = {day for _, day, _ in current}
    records = store.deliveries_on(days | {day + timedelta(days=k) for day in days for k in _LATER})
    plan = DispatchPlan()
    for sub, day, moment in current:
        assert sub.id is not None
        record = records.get((sub.id, day))
        if record is not None and (_settled(record.status) or
                                   (record.next_attempt_at is not None and record.next_attempt_at > now)):
            continue
        if any((sub.id, day + timedelta(days=k)) in records for k in _LATER):
            continue
        if now - moment > max_late:
            plan.stale.append((sub, day, moment))
            continue
        plan.due.setdefault(day, []).append(sub)
    return plan


def due_now(pipeline: Pipeline, now: datetime) -> dict[date, list[Subscriber]]:
    """Who should get which issue at ``now``: {local issue date: [subscribers]} (see plan_dispatch)."""
    return plan_dispatch(pipeline, now).due


def _enabled_sources(settings: Settings) -> list[str]:
    from digest.sources import SOURCE_NAMES

    return [name for name in SOURCE_NAMES if getattr(settings.sources, name).enabled]


def fetch_overdue(pipeline: Pipeline, now: datetime) -> bool:
    """True when an enabled source was never fetched, or a scheduled fetch time passed since its last
    fetch (the daemon was down, or the fetch job misfired). A failed fetch counts as a fetch: a
    broken source is retried on schedule, not every few minutes."""
    enabled = _enabled_sources(pipeline.settings)
    if not enabled:
        return False
    trigger = fetch_trigger(pipeline.settings)
    records = {r.source: r for r in pipeline.store.source_records()}
    for name in enabled:
        record = records.get(name)
        if record is None or record.last_fetch_at is None:
            return True
        # Strictly after the last fetch: the trigger counts a fire time equal to "now" as next.
        missed = trigger.get_next_fire_time(None, record.last_fetch_at + timedelta(microseconds=1))
        if missed is not None and missed <= now:
            return True
    return False


def _fetch_marker(store: Store) -> datetime | None:
    """Changes whenever any fetch ran: an issue that had nothing new may have something now."""
    return max((r.last_fetch_at for r in store.source_records() if r.last_fetch_at), default=None)


# ---- the daemon -------------------------------------------------------------------------------------


class Daemon:
    """The jobs' shared state and the process's life: start, run jobs, stop cleanly.

    ``fetch()`` and ``dispatch()`` are what the scheduled jobs call; tests call them directly under
    an injected clock (``pipeline.clock``). ``run()`` blocks until ``request_stop()`` (or SIGTERM /
    SIGINT): it then stops taking work, lets the message in flight finish, and returns 0 within
    ``shutdown_timeout_seconds``. If the timeout passes first, ``abandoned`` is True and the message
    in flight is left "sending": the next start treats it as in doubt (see Store.recover_interrupted).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.abandoned = False
        self.started = threading.Event()
        self._stop = threading.Event()
        self._fetch_lock = threading.Lock()
        # (subscriber id, issue date) -> fetch marker when their issue came out empty: not rebuilt
        # every few minutes, only once a new fetch may have brought something.
        self._nothing_new: dict[tuple[int, date], datetime | None] = {}
        self._first_dispatch = True

    # ---- jobs ----

    def fetch(self, reason: str = "scheduled") -> list[FetchSummary] | None:
        """Fetch and tag once; None if stopping or another fetch is running."""
        if self.pipeline.stop_requested.is_set():
            return None
        if not self._fetch_lock.acquire(blocking=False):
            log.info("fetch skipped reason=another fetch is running")
            return None
        try:
            log.info("fetch start reason=%s", reason)
            summaries = self.pipeline.fetch()
        except DigestError as err:
            log.error("fetch failed reason=%s", err)
            return None
        except Exception:
            # Unattended: a bug in one fetch must not stop the sends (dispatch calls this too).
            log.exception("fetch crashed")
            return None
        finally:
            self._fetch_lock.release()
        for failed in (s for s in summaries if s.errors):
            log.warning("fetch failed source=%s reason=%s", failed.source, failed.reason)
        new = sum(s.new for s in summaries)
        errors = sum(s.errors for s in summaries)
        log.info("fetch done sources=%d new=%d updated=%d errors=%d", len(summaries), new,
                 sum(s.updated for s in summaries), errors)
        return summaries

    def dispatch(self) -> dict[date, SendSummary]:
        """Send every issue due now (catching up a missed fetch first); {issue date: summary}."""
        pipeline = self.pipeline
        if pipeline.stop_requested.is_set():
            return {}
        if fetch_overdue(pipeline, pipeline.clock()):
            self.fetch(reason="catch-up")
        now = pipeline.clock()
        due_since = now - timedelta(hours=pipeline.settings.schedule.max_lateness_hours)
        plan = plan_dispatch(pipeline, now)
        self._report_stale(plan.stale)
        marker = _fetch_marker(pipeline.store)
        results: dict[date, SendSummary] = {}
        for day, subs in sorted(plan.due.items()):
            todo = [s for s in subs if self._nothing_new.get((s.id or 0, day), _UNSEEN) != marker]
            if not todo:
                continue
            if pipeline.stop_requested.is_set():
                break
            log.info("dispatch date=%s due=%d", day, len(todo))
            for sub in todo:
                log.debug("due subscriber=%s date=%s send_at=%s tz=%s", sub.email, day,
                          sub.send_at.strftime("%H:%M"), sub.tz)
            try:
                # Pending records of other readers of the day go too, by the same lateness rule.
                results[day] = pipeline.send(day, subscribers=partial(iter, todo), due_since=due_since)
            except DigestError as err:
                log.error("dispatch failed date=%s reason=%s", day, err)
                continue
            except Exception:
                log.exception("dispatch crashed date=%s", day)
                continue
            if not pipeline.stop_requested.is_set():
                built = pipeline.store.deliveries_on([day])
                for sub in todo:
                    if (sub.id or 0, day) not in built:
                        self._nothing_new[(sub.id or 0, day)] = marker
        days = {day for day in plan.due}
        self._nothing_new = {k: v for k, v in self._nothing_new.items() if k[1] in days}
        if not results:
            log.debug("dispatch nothing due at=%s", now.isoformat(timespec="seconds"))
        return results

    def _report_stale(self, stale: list[tuple[Subscriber, date, datetime]]) -> None:
        # Right after a start these are issues missed while the daemon was down: say so once. Later
        # they are routine (an issue with nothing new is never built, so it too ends up "too late").
        if self._first_dispatch and stale:
            log.info("catch-up: %d issues not sent reason=too late (max lateness %sh)", len(stale),
                     self.pipeline.settings.schedule.max_lateness_hours)
        self._first_dispatch = False
        for sub, day, moment in stale:
            log.debug("not sent subscriber=%s date=%s reason=too late (due %s)", sub.email, day,
                      moment.isoformat(timespec="minutes"))

    # ---- process ----

    def request_stop(self) -> None:
        """Stop taking new work (safe from a signal handler or another thread)."""
        self.pipeline.stop_requested.set()
        self._stop.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            log.warning("second signal=%s: exiting now; a message in flight stays 'sending' (in doubt)", name)
            logging.shutdown()
            os._exit(1)
        log.info("stopping signal=%s", name)
        self.request_stop()

    def run(self, install_signals: bool = True, jobstore: BaseJobStore | None = None) -> int:
        """Run the scheduler until asked to stop; returns the exit code (0). ConfigError before start."""
        scheduler = build_scheduler(self.pipeline, jobstore)
        previous: dict[signal.Signals, _Handler] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        _register(self)
        try:
            scheduler.start(paused=True)
            wanted = {FETCH_JOB, DISPATCH_JOB}
            for job in scheduler.get_jobs():
                if job.id not in wanted:
                    # Left by an older version or config: a persistent store would keep running it.
                    log.info("removing unknown job id=%s", job.id)
                    scheduler.remove_job(job.id)
            scheduler.resume()
            for job in scheduler.get_jobs():
                log.info("scheduled job=%s next_run=%s", job.id,
                         job.next_run_time.astimezone(UTC).isoformat(timespec="seconds"))
            log.info("daemon started pid=%d", os.getpid())
            self.started.set()
            while not self._stop.wait(1.0):
                pass
            self.pipeline.stop_requested.set()
            self._shutdown(scheduler)
        finally:
            _unregister(self)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _shutdown(self, scheduler: BackgroundScheduler) -> None:
        timeout = self.pipeline.settings.schedule.shutdown_timeout_seconds
        # shutdown(wait=True) waits for running jobs without a bound; bound it from outside.
        closer = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, name="digest-shutdown",
                                  daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            self.abandoned = True
            log.warning("shutdown timed out after %.0fs: abandoning the job in flight (a message being "
                        "sent stays 'sending' and is treated as in doubt on the next start)", timeout)
        else:
            log.info("daemon stopped cleanly")


def run_daemon(pipeline: Pipeline) -> int:
    """`digest daemon`: run the scheduler until SIGTERM/SIGINT; returns the exit code."""
    daemon = Daemon(pipeline)
    # APScheduler job stores must never be shared by two schedulers: one daemon per database.
    with pipeline.store.exclusive("daemon"):
        code = daemon.run()
    if daemon.abandoned:
        # The job's threads would hold the interpreter open past the bound; leave now.
        logging.shutdown()
        os._exit(code)
    return code


# ---- jobs (module-level: the job store pickles them by reference) ----------------------------------

_active: Daemon | None = None
_active_lock = threading.Lock()


def _register(daemon: Daemon) -> None:
    global _active
    with _active_lock:
        _active = daemon


def _unregister(daemon: Daemon) -> None:
    global _active
    with _active_lock:
        if _active is daemon:
            _active = None


def _current() -> Daemon | None:
    with _active_lock:
        daemon = _active
    if daemon is None:
        log.error("job ran with no daemon registered in this process; skipped")
    return daemon


def fetch_job() -> None:
    """The scheduled fetch: every enabled source, then the tagger."""
    daemon = _current()
    if daemon is not None:
        daemon.fetch()


def dispatch_job() -> None:
    """The scheduled dispatch: send every issue that is due now."""
    daemon = _current()
    if daemon is not None:
        daemon.dispatch()


# ---- status -----------------------------------------------------------------------------------------


def _stored_run_times(pipeline: Pipeline) -> dict[str, datetime]:
    """Next run times the (running or last) daemon saved in its job store; {} if it never ran."""
    return pipeline.store.job_run_times()


def next_run_times(pipeline: Pipeline) -> dict[str, datetime]:
    """Next fetch and dispatch (as the daemon saved them, else from the config) and the next send.

    A saved time in the past means the daemon is not running (or is late).
    """
    now = pipeline.clock()
    out: dict[str, datetime] = {}
    fire = fetch_trigger(pipeline.settings).get_next_fire_time(None, now)
    if fire is not None:
        out[FETCH_JOB] = fire.astimezone(UTC)
    out.update(_stored_run_times(pipeline))
    upcoming = _next_sends(pipeline.store.iter_subscribers(status=SubscriberStatus.CONFIRMED), now)
    if upcoming is not None:
        out["send"] = upcoming
    return out


def _next_sends(subs: Iterable[Subscriber], now: datetime) -> datetime | None:
    moments = [next_send_moment(s, now) for s in subs if not s.paused]
    return min(moments, default=None)
