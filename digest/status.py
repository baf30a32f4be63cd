"""What `digest status` reports: sources, sends, schedule, who is due, what needs attention."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from digest.models import SubscriberStatus
from digest.selection import is_due, local_issue_date, send_time_passed
from digest.signing_key import KeyOrigin, describe_signing_key
from digest.store.records import DeliveryAttention, IssueHealth
from digest.terminal import printable

if TYPE_CHECKING:
    from digest.pipeline import Pipeline
    from digest.store import Store

__all__ = ["DueNow", "DueReader", "HealthTotals", "LastSend", "ListHealth", "SourceStatus", "StatusReport",
           "collect_status", "format_status", "list_health"]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """The last fetch of one source."""

    source: str
    last_fetch_at: datetime | None
    result: str | None
    new: int
    updated: int
    error: str | None
    last_ok_at: datetime | None


@dataclass(frozen=True, slots=True)
class LastSend:
    """The latest send run and the delivery records of its issue date, by status."""

    issue_date: date
    started_at: datetime
    finished_at: datetime | None
    sent: int
    skipped: int
    failed: int
    deliveries: dict[str, int]
    deferred: int = 0  # pending after an error (refused for now, or the server could not be reached)
    deferred_error: str | None = None  # the latest such error


@dataclass(frozen=True, slots=True)
class DueReader:
    """A reader whose issue for their local date is not built yet."""

    email: str
    issue_date: date
    send_at: str  # HH:MM in their time zone
    tz: str
    time_passed: bool


@dataclass(frozen=True, slots=True)
class DueNow:
    """What the daemon's next dispatch would send (``digest.scheduler.plan_dispatch``)."""

    count: int
    too_late: int
    by_date: dict[str, int]


@dataclass(frozen=True, slots=True)
class HealthTotals:
    sent: int
    delivered: int
    hard: int
    soft: int
    complaints: int
    unsubscribes: int


@dataclass(frozen=True, slots=True)
class ListHealth:
    """Bounces and complaints of the issues of the last ``days`` days, newest first, with their rates."""

    days: int
    issues: tuple[IssueHealth, ...]
    totals: HealthTotals
    complaint_rate: float
    hard_bounce_rate: float
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusReport:
    now: datetime
    papers: int
    subscribers: dict[str, int]  # by status
    sources: tuple[SourceStatus, ...]
    last_send: LastSend | None
    next_runs: dict[str, datetime]  # job (or "send") -> when
    due: tuple[DueReader, ...]
    due_now: DueNow | None  # None where the scheduler cannot be imported
    attention: tuple[DeliveryAttention, ...]
    signing_key: KeyOrigin
    list_health: ListHealth

    def as_json(self) -> dict[str, Any]:
        """The report as plain values (dates and datetimes left for the caller's JSON encoder)."""
        shown = asdict(self)
        shown["signing_key"] = self.signing_key.as_json()
        return shown


def collect_status(pipeline: Pipeline) -> StatusReport:
    store = pipeline.store
    now = pipeline.clock()
    sources = tuple(
        SourceStatus(source=r.source, last_fetch_at=r.last_fetch_at, result=r.last_result, new=r.last_new,
                     updated=r.last_updated, error=r.last_error, last_ok_at=r.last_ok_at)
        for r in store.source_records()
    )
    run = store.last_send_run()
    last_send = None
    if run is not None:
        deferred, deferred_error = store.deferred_deliveries(run.issue_date)
        last_send = LastSend(issue_date=run.issue_date, started_at=run.started_at, finished_at=run.finished_at,
                             sent=run.sent, skipped=run.skipped, failed=run.failed,
                             deliveries=store.delivery_counts(run.issue_date), deferred=deferred,
                             deferred_error=deferred_error)
    due = []
    for sub in store.iter_subscribers(status=SubscriberStatus.CONFIRMED):
        local_day = local_issue_date(sub, now)
        if sub.paused or sub.id is None or not is_due(sub, local_day):
            continue
        if store.issue_id_for(sub.id, local_day) is None:
            due.append(DueReader(email=sub.email, issue_date=local_day, send_at=sub.send_at.strftime("%H:%M"),
                                 tz=sub.tz, time_passed=send_time_passed(sub, now)))
    next_runs: dict[str, datetime] = {}
    due_now: DueNow | None = None
    try:
        from digest.scheduler import next_run_times, plan_dispatch

        next_runs = next_run_times(pipeline)
        plan = plan_dispatch(pipeline, now)
        due_now = DueNow(count=plan.count, too_late=len(plan.stale),
                         by_date={str(day): len(subs) for day, subs in sorted(plan.due.items())})
    except ImportError:
        next_runs, due_now = {}, None
    return StatusReport(
        now=now,
        papers=store.count_papers(),
        subscribers=store.count_subscribers(),
        sources=sources,
        last_send=last_send,
        next_runs=next_runs,
        due=tuple(due),
        due_now=due_now,
        attention=tuple(store.deliveries_needing_attention()),
        signing_key=describe_signing_key(pipeline.settings, store),
        list_health=list_health(store, now.date()),
    )


# Mailbox providers' lines (Gmail, Yahoo): keep complaints under 0.1% (never reach 0.3%), and a hard
# bounce rate past 2% says the list holds dead addresses.
COMPLAINT_RATE_LIMIT = 0.001
HARD_BOUNCE_RATE_LIMIT = 0.02
HEALTH_DAYS = 14


def list_health(store: Store, today: date, days: int = HEALTH_DAYS) -> ListHealth:
    """Per recent issue: delivered, bounced hard/soft, complaints, unsubscribes; rates and warnings."""
    issues = store.list_health(today - timedelta(days=days))
    totals = HealthTotals(**{key: sum(getattr(r, key) for r in issues) for key in (
        "sent", "delivered", "hard", "soft", "complaints", "unsubscribes")})
    sent = totals.sent
    complaint_rate = totals.complaints / sent if sent else 0.0
    hard_bounce_rate = totals.hard / sent if sent else 0.0
    warnings = []
    if complaint_rate > COMPLAINT_RATE_LIMIT:
        warnings.append(f"complaint rate {complaint_rate:.2%} is above 0.1% over the last {days} days")
    if hard_bounce_rate > HARD_BOUNCE_RATE_LIMIT:
        warnings.append(f"hard bounce rate {hard_bounce_rate:.2%} is above 2% over the last {days} days")
    return ListHealth(days=days, issues=tuple(issues), totals=totals, complaint_rate=complaint_rate,
                      hard_bounce_rate=hard_bounce_rate, warnings=tuple(warnings))


def _fmt(value: date | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else value.isoformat()


def format_status(report: StatusReport) -> str:
    lines = [f"papers: {report.papers}   subscribers: "
             + (", ".join(f"{k}={v}" for k, v in sorted(report.subscribers.items())) or "none")]
    lines.append("sources:")
    if not report.sources:
        lines.append("  (never fetched)")
    for s in report.sources:
        outcome = (f"error: {s.error}" if s.result == "error"
                   else f"{s.result} new={s.new} updated={s.updated}")
        lines.append(f"  {s.source:<10} last fetch {_fmt(s.last_fetch_at)} {outcome}")
    send = report.last_send
    if send is not None:
        lines.append(f"last send: issue {_fmt(send.issue_date)} at {_fmt(send.started_at)}"
                     + ("" if send.finished_at else " (did not finish)")
                     + f": sent={send.sent} skipped={send.skipped} failed={send.failed}")
        lines.append(f"  deliveries of {_fmt(send.issue_date)} now: " + _delivery_line(send))
    else:
        lines.append("last send: never")
    if report.next_runs:
        lines.append("next runs:")
        lines.extend(f"  {job:<10} {_fmt(when)}" + (" (overdue: is the daemon running?)"
                                                      if job != "send" and when < report.now else "")
                     for job, when in report.next_runs.items())
    due_now = report.due_now
    if due_now is not None:
        lines.append(f"due at the next dispatch: {due_now.count}"
                     + "".join(f"  {day}: {n}" for day, n in due_now.by_date.items())
                     + (f"  (too late to send: {due_now.too_late})" if due_now.too_late else ""))
    lines.append(f"due now or later today: {len(report.due)}")
    lines.extend(f"  {d.email} at {d.send_at} {d.tz}" + (" (time passed)" if d.time_passed else "")
                 for d in report.due[:20])
    health = report.list_health
    lines.append(f"list health (issues of the last {health.days} days):")
    if not health.issues:
        lines.append("  (nothing sent)")
    for row in health.issues[:10]:
        lines.append(f"  {_fmt(row.issue_date)}: delivered={row.delivered} bounced hard={row.hard} "
                     f"soft={row.soft} complaints={row.complaints} unsubscribes={row.unsubscribes}")
    if health.issues:
        lines.append(f"  complaint rate {health.complaint_rate:.2%}, hard bounce rate "
                     f"{health.hard_bounce_rate:.2%}")
    lines.extend(f"  WARNING: {w}" for w in health.warnings)
    attention = report.attention
    lines.append(f"needing attention: {len(attention)}")
    lines.extend(f"  {a.email} {a.issue_date} {a.status} attempts={a.attempts}: {a.last_error}"
                 for a in attention)
    lines.append(f"signing key: {_key_origin(report.signing_key)}")
    # Error texts from servers and addresses from readers: one printable line each, whatever they hold.
    return "\n".join(printable(line) for line in lines)


def _delivery_line(send: LastSend) -> str:
    """What the delivery records of the last send's issue date say now: a run stopped by an error (the
    mail server could not be reached) counts nothing itself, but its messages are deferred, not sent."""
    counts = send.deliveries
    deferred = send.deferred
    line = (f"sent={counts.get('sent', 0)} failed={counts.get('failed', 0)} deferred={deferred} "
            f"waiting={counts.get('pending', 0) - deferred} unknown={counts.get('unknown', 0)}")
    if counts.get("sending"):
        line += f" sending={counts['sending']}"
    if send.deferred_error:
        line += f" (last error: {send.deferred_error})"
    return line


def _key_origin(key: KeyOrigin) -> str:
    """Where the link-signing key comes from, in words (never the key)."""
    if key.source == "environment":
        return f"from ${key.variable} (the environment overrides the installation's key)"
    kept = "; the previous key still verifies old links" if key.previous_kept else ""
    if key.source == "database":
        return f"the installation's own, stored in the database (${key.variable} is not set){kept}"
    return f"not made yet: the first send, preview or serve makes one (${key.variable} is not set)"
