"""Store I/O for bounces and complaints: finding the delivery a report names, recording what it did,
and the per-issue figures `digest status` shows. Mixed into ``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from digest.models import DeliveryStatus, SubscriberStatus
from digest.store import schema as t
from digest.store.base import StoreBase
from digest.store.records import IssueHealth
from digest.store.rows import bounce_health
from digest.store.subscribers import remember_unexplained_refusal

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["BounceEvent", "BouncePolicy", "BounceStore", "BounceTarget"]

# Which kind a delivery keeps when several reports come back for it: the most telling one.
_RANK = {"delayed": 0, "refused": 1, "unexplained": 2, "soft": 3, "hard": 4, "complaint": 5}
_ACTIVE = (SubscriberStatus.CONFIRMED.value, SubscriberStatus.PENDING.value)


@dataclass(frozen=True, slots=True)
class BounceTarget:
    """The delivery a report names, and its reader."""

    delivery_id: int
    subscriber_id: int
    email: str
    issue_date: date
    message_id: str
    delivery_status: DeliveryStatus


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One bounce or complaint about one delivery, as ``record_bounce`` takes it."""

    report_key: str
    target: BounceTarget
    kind: str  # hard | soft | delayed | unexplained | refused | complaint
    source: str  # stdin | imap | webhook
    status: str | None = None
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    """When bounces suppress a reader: hard ones at ``hard_to_suppress`` (as the send path counts
    them), soft ones at ``soft_to_suppress`` within ``soft_period``; an unexplained one counts as hard
    only when the address was refused unexplained on an earlier issue too (as in the send path)."""

    hard_to_suppress: int
    soft_to_suppress: int
    soft_period: timedelta


class BounceStore(StoreBase):

    def bounce_target(self, delivery_id: int) -> BounceTarget | None:
        return self._target(t.deliveries.c.id == delivery_id)

    def bounce_target_by_message_id(self, message_id: str) -> BounceTarget | None:
        return self._target(t.deliveries.c.message_id == message_id.strip())

    def _target(self, where: Any) -> BounceTarget | None:
        d, s = t.deliveries.c, t.subscribers.c
        query = (select(d.id, d.subscriber_id, s.email, d.issue_date, d.message_id, d.status)
                 .join(t.subscribers, s.id == d.subscriber_id).where(where).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return BounceTarget(row[0], row[1], row[2], row[3], row[4], DeliveryStatus(row[5]))

    def record_bounce(self, event: BounceEvent, policy: BouncePolicy, now: datetime) -> str:
        """Record ``event`` on its delivery and reader and act on it, in one transaction.

        Returns the action: ``duplicate`` (this report was recorded before: nothing changes),
        ``recorded`` (kept, nothing else: a warning, a refusal of the message, a first unexplained
        refusal, or a second report for a delivery already counted), ``counted``, ``suppressed`` or
        ``unsubscribed``. The report, its action and the unexplained-refusal memory are written in one
        transaction, so a report ingested twice acts once.
        """
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(t.bounce_events.c.id).where(
                        t.bounce_events.c.report_key == event.report_key)).first() is not None:
                    return "duplicate"
                action = self._act(conn, event, policy, now)
                target = event.target
                conn.execute(insert(t.bounce_events).values(
                    report_key=event.report_key, received_at=now, source=event.source, kind=event.kind,
                    action=action, delivery_id=target.delivery_id, subscriber_id=target.subscriber_id,
                    issue_date=target.issue_date, email=target.email, status=event.status,
                    diagnostic=event.diagnostic[:2000]))
                return action
        except IntegrityError:
            return "duplicate"  # the same report ingested at the same moment by another process

    def _act(self, conn: Connection, event: BounceEvent, policy: BouncePolicy, now: datetime) -> str:
        target, kind = event.target, event.kind
        d, s = t.deliveries.c, t.subscribers.c
        previous = conn.execute(select(d.bounce_kind).where(d.id == target.delivery_id)).scalar()
        sub = conn.execute(select(s.status, s.hard_bounces).where(s.id == target.subscriber_id)).first()
        if sub is None:
            return "recorded"
        if previous is None or _RANK[kind] >= _RANK.get(previous, -1):
            conn.execute(update(t.deliveries).where(d.id == target.delivery_id).values(
                bounce_kind=kind, bounce_status=event.status, bounce_diagnostic=event.diagnostic[:2000],
                bounced_at=now))
        if kind == "delayed":
            return "recorded"
        values: dict[str, Any] = {"last_bounce_at": now, "last_bounce_kind": kind, "last_bounce_status": event.status,
                                  "last_bounce_diagnostic": event.diagnostic[:2000]}
        counted_before = previous is not None and _RANK.get(previous, -1) >= _RANK[kind]
        status = sub[0]
        action = "recorded"
        reason = _reason(kind, event)
        if kind == "complaint":
            if not counted_before:
                values["complaints"] = s.complaints + 1
            action = "recorded"
            if status != SubscriberStatus.UNSUBSCRIBED.value:
                values.update(status=SubscriberStatus.UNSUBSCRIBED.value, status_reason=reason,
                              status_changed_at=now)
                action = "unsubscribed"
            self._suppress(conn, target.email, kind, reason, now)
        elif kind == "hard" and not counted_before:
            values["hard_bounces"] = s.hard_bounces + 1
            action = "counted"
            if sub[1] + 1 >= policy.hard_to_suppress and status in _ACTIVE:
                values.update(status=SubscriberStatus.SUPPRESSED.value, status_reason=reason, status_changed_at=now)
                self._suppress(conn, target.email, kind, reason, now)
                action = "suppressed"
        elif kind == "unexplained" and not counted_before:
            # One alone never counts (a misconfigured relay says it of everyone); the same address
            # refused so on an earlier issue too (by a DSN or at RCPT in the send path) is a hard bounce.
            if remember_unexplained_refusal(conn, self._dialect_insert(), target.subscriber_id, target.issue_date,
                                            reason, now):
                reason = f"{reason} (refused on an earlier issue too)"[:500]
                values["hard_bounces"] = s.hard_bounces + 1
                action = "counted"
                if sub[1] + 1 >= policy.hard_to_suppress and status in _ACTIVE:
                    values.update(status=SubscriberStatus.SUPPRESSED.value, status_reason=reason,
                                  status_changed_at=now)
                    self._suppress(conn, target.email, "hard", reason, now)
                    action = "suppressed"
        elif kind == "soft" and not counted_before:
            values["soft_bounces"] = s.soft_bounces + 1
            action = "counted"
            e = t.bounce_events.c
            recent = conn.execute(select(func.count()).where(
                e.subscriber_id == target.subscriber_id, e.kind == "soft",
                e.action.in_(("counted", "suppressed")), e.received_at >= now - policy.soft_period)).scalar_one()
            if recent + 1 >= policy.soft_to_suppress and status in _ACTIVE:
                reason = f"{recent + 1} soft bounces within {policy.soft_period.days} days; last: {reason}"
                values.update(status=SubscriberStatus.SUPPRESSED.value, status_reason=reason, status_changed_at=now)
                self._suppress(conn, target.email, kind, reason, now)
                action = "suppressed"
        conn.execute(update(t.subscribers).where(s.id == target.subscriber_id).values(**values))
        return action

    @staticmethod
    def _suppress(conn: Connection, email: str, kind: str, reason: str, now: datetime) -> None:
        exists = conn.execute(select(t.suppressions.c.email).where(t.suppressions.c.email == email)).first()
        if exists is None:
            conn.execute(insert(t.suppressions).values(email=email, kind=kind, reason=reason, created_at=now))

    def is_suppressed(self, email: str) -> bool:
        """Whether the address must never be mailed again (a hard bounce or a complaint suppressed it)."""
        with self.engine.connect() as conn:
            return conn.execute(select(t.suppressions.c.email)
                                .where(t.suppressions.c.email == email.strip().lower())).first() is not None

    def bounce_info(self) -> dict[str, dict[str, Any]]:
        """Per subscriber email: bounce and complaint counts, the latest one, why the status last changed."""
        s = t.subscribers.c
        query = select(s.email, s.hard_bounces, s.soft_bounces, s.complaints, s.status_reason, s.status_changed_at,
                       s.last_bounce_at, s.last_bounce_kind, s.last_bounce_status, s.last_bounce_diagnostic)
        with self.engine.connect() as conn:
            return {r["email"]: bounce_health(r) for r in conn.execute(query).mappings()}

    def bounce_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest recorded bounces and complaints, newest first."""
        e = t.bounce_events.c
        query = (select(e.received_at, e.source, e.kind, e.action, e.email, e.issue_date, e.status, e.diagnostic,
                        e.delivery_id).order_by(e.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def list_health(self, since: date) -> list[IssueHealth]:
        """Per issue date from ``since`` on: delivered, bounced (hard/soft), complaints, unsubscribes.

        ``delivered`` counts messages handed over that no bounce came back for. An unsubscribe counts
        for the last issue the reader was sent before they left.
        """
        d = t.deliveries.c
        rows: dict[date, dict[str, Any]] = defaultdict(lambda: {
            "sent": 0, "delivered": 0, "hard": 0, "soft": 0, "complaints": 0, "unsubscribes": 0})
        query = (select(d.issue_date, d.bounce_kind, func.count()).where(
            d.issue_date >= since, d.status == DeliveryStatus.SENT.value).group_by(d.issue_date, d.bounce_kind))
        s = t.subscribers.c
        with self.engine.connect() as conn:
            for day, kind, count in conn.execute(query):
                row = rows[day]
                row["sent"] += count
                if kind in ("hard", "soft"):
                    row[kind] += count
                else:
                    row["delivered"] += count
                if kind == "complaint":
                    row["complaints"] += count
            left = conn.execute(select(s.id, s.status_changed_at).where(
                s.status == SubscriberStatus.UNSUBSCRIBED.value, s.status_changed_at.is_not(None))).all()
            left_at = {sid: at for sid, at in left}
            if left_at:
                sent = conn.execute(select(d.subscriber_id, d.issue_date, d.sent_at).where(and_(
                    d.subscriber_id.in_(list(left_at)), d.issue_date >= since, d.sent_at.is_not(None))
                ).order_by(d.subscriber_id, d.sent_at)).all()
                last: dict[int, date] = {}
                for sid, day, sent_at in sent:
                    if sent_at <= left_at[sid]:
                        last[sid] = day
                for day in last.values():
                    rows[day]["unsubscribes"] += 1
        return [IssueHealth(issue_date=day, **rows[day]) for day in sorted(rows, reverse=True)]


def _reason(kind: str, event: BounceEvent) -> str:
    words = {"hard": "hard bounce", "soft": "soft bounce", "unexplained": "unexplained refusal", "refused": "refused",
             "complaint": "complaint"}[kind]
    detail = " ".join(p for p in (event.status or "", event.diagnostic) if p)
    return f"{words} ({event.source}){': ' + detail if detail else ''}"[:500]
