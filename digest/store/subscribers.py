"""Store I/O for subscribers. Mixed into ``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from digest.errors import UsageError
from digest.models import DeliveryStatus, Subscriber, SubscriberStatus
from digest.store import schema as t
from digest.store.base import StoreBase
from digest.store.rows import chunks, inserted_id, row_to_subscriber, utc_now

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table


def _enhanced_status(reply: str) -> str | None:
    """The RFC 3463 status in an SMTP reply (``550 5.1.1 ...`` -> ``5.1.1``), if it has one."""
    found = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", reply)
    return found.group(1) if found else None


# The columns _subscriber_row writes except the address (an import updates by address).
_SUBSCRIBER_FIELDS = ("name", "topics", "keywords", "exclude", "authors", "frequency", "send_at", "tz",
                      "max_papers", "send_empty", "weekday", "status", "paused")


def _subscriber_row(s: Subscriber) -> dict[str, Any]:
    return {
        "email": s.email.lower(), "name": s.name, "topics": list(s.topics), "keywords": list(s.keywords),
        "exclude": list(s.exclude), "authors": list(s.authors), "frequency": s.frequency.value,
        "send_at": s.send_at.strftime("%H:%M"), "tz": s.tz, "max_papers": s.max_papers,
        "send_empty": s.send_empty, "weekday": s.weekday, "status": s.status.value, "paused": s.paused,
    }


class SubscriberStore(StoreBase):
    """Subscribers: adding, importing, changing, counting."""

    # ---- subscribers ----------------------------------------------------------------------------

    def add_subscriber(self, sub: Subscriber, now: datetime | None = None) -> Subscriber:
        """Insert a subscriber; UsageError if the address is already there."""
        now = now or utc_now()
        values = _subscriber_row(sub)
        values.update(created_at=now, updated_at=now,
                      confirmed_at=now if sub.status is SubscriberStatus.CONFIRMED else None)
        try:
            with self.engine.begin() as conn:
                new_id = inserted_id(conn.execute(insert(t.subscribers).values(**values)))
        except IntegrityError as err:
            raise UsageError(f"subscriber {sub.email} already exists (use 'subscribers update')") from err
        return replace(sub, id=new_id, created_at=now)

    def add_subscribers(self, subs: Iterable[Subscriber], now: datetime | None = None) -> int:
        """Insert many new subscribers in one transaction (an import, a benchmark's readers); returns
        how many. UsageError, and nothing inserted, if an address is already there."""
        now = now or utc_now()
        rows = []
        for sub in subs:
            values = _subscriber_row(sub)
            values.update(created_at=now, updated_at=now,
                          confirmed_at=now if sub.status is SubscriberStatus.CONFIRMED else None)
            rows.append(values)
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.subscribers), rows)
        except IntegrityError as err:
            raise UsageError(f"a subscriber is already there: {err.orig}") from err
        return len(rows)

    def subscribers_by_email(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        """The stored subscribers among ``emails`` (lower-case addresses), by address."""
        found: dict[str, Subscriber] = {}
        with self._reading() as conn:
            for chunk in chunks(emails, 500):
                query = select(t.subscribers).where(t.subscribers.c.email.in_(chunk))
                for r in conn.execute(query).mappings():
                    found[r["email"]] = row_to_subscriber(r)
        return found

    def import_subscribers(self, new: Sequence[Subscriber], changed: Sequence[Subscriber], chunk: int = 2000,
                           now: datetime | None = None) -> None:
        """Insert ``new`` subscribers and update ``changed`` ones (matched by email; every field of the
        Subscriber written, ``created_at`` and ``confirmed_at`` kept), ``chunk`` rows per transaction so
        a big import never holds the write lock for long. UsageError, and that chunk not written, if a
        new address is already there (another process added it meanwhile)."""
        now = now or utc_now()
        inserted = [{**_subscriber_row(s), "created_at": now, "updated_at": now,
                     "confirmed_at": now if s.status is SubscriberStatus.CONFIRMED else None} for s in new]
        stmt = (update(t.subscribers).where(t.subscribers.c.email == bindparam("match_email"))
                .values({name: bindparam(f"v_{name}") for name in _SUBSCRIBER_FIELDS} | {"updated_at": now}))
        # (SQLAlchemy reserves a column's own name for its SET value, hence the v_ parameters.)
        updated = [{"match_email": s.email.lower(), **{f"v_{k}": v for k, v in _subscriber_row(s).items()
                                                        if k != "email"}} for s in changed]
        for start in range(0, max(len(inserted), len(updated)), chunk):
            rows_in, rows_up = inserted[start:start + chunk], updated[start:start + chunk]
            try:
                with self.engine.begin() as conn:
                    if rows_in:
                        conn.execute(insert(t.subscribers), rows_in)
                    if rows_up:
                        conn.execute(stmt, rows_up)
            except IntegrityError as err:
                raise UsageError(f"a subscriber was added meanwhile: {err.orig}") from err

    def save_subscriber(self, sub: Subscriber, now: datetime | None = None) -> Subscriber:
        """Update an existing subscriber (matched by email) with every field of ``sub``."""
        now = now or utc_now()
        values = _subscriber_row(sub)
        values["updated_at"] = now
        with self.engine.begin() as conn:
            row = conn.execute(select(t.subscribers.c.id, t.subscribers.c.confirmed_at)
                               .where(t.subscribers.c.email == sub.email)).first()
            if row is None:
                raise UsageError(f"no subscriber {sub.email}")
            if sub.status is SubscriberStatus.CONFIRMED and row.confirmed_at is None:
                values["confirmed_at"] = now
            conn.execute(update(t.subscribers).where(t.subscribers.c.id == row.id).values(**values))
        return replace(sub, id=row.id)

    def remove_subscriber(self, email: str) -> bool:
        with self.engine.begin() as conn:
            sub_id = conn.execute(select(t.subscribers.c.id).where(t.subscribers.c.email == email)).scalar()
            if sub_id is None:
                return False
            issue_ids = select(t.issues.c.id).where(t.issues.c.subscriber_id == sub_id)
            conn.execute(delete(t.deliveries).where(t.deliveries.c.subscriber_id == sub_id))
            conn.execute(delete(t.feedback).where(t.feedback.c.subscriber_id == sub_id))
            conn.execute(delete(t.address_refusals).where(t.address_refusals.c.subscriber_id == sub_id))
            conn.execute(delete(t.issue_papers).where(t.issue_papers.c.issue_id.in_(issue_ids)))
            conn.execute(delete(t.issues).where(t.issues.c.subscriber_id == sub_id))
            conn.execute(delete(t.subscribers).where(t.subscribers.c.id == sub_id))
        return True

    def get_subscriber(self, email: str) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.subscribers).where(t.subscribers.c.email == email.lower())).mappings().first()
        return row_to_subscriber(row) if row else None

    def get_subscriber_by_id(self, sub_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.subscribers).where(t.subscribers.c.id == sub_id)).mappings().first()
        return row_to_subscriber(row) if row else None

    def list_subscribers(self, status: SubscriberStatus | None = None) -> list[Subscriber]:
        return list(self.iter_subscribers(status=status))

    def iter_subscribers(
        self, status: SubscriberStatus | None = None, batch_size: int = 500
    ) -> Iterator[Subscriber]:
        """All subscribers (optionally of one status) by id, fetched in batches so memory stays flat."""
        last_id = 0
        while True:
            query = select(t.subscribers).where(t.subscribers.c.id > last_id)
            if status is not None:
                query = query.where(t.subscribers.c.status == status.value)
            query = query.order_by(t.subscribers.c.id).limit(batch_size)
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            if not rows:
                return
            for row in rows:
                yield row_to_subscriber(row)
            last_id = rows[-1]["id"]

    def count_subscribers(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.subscribers.c.status, func.count()).group_by(t.subscribers.c.status))
            return {r[0]: r[1] for r in rows}

    def set_subscriber_status(self, email: str, status: SubscriberStatus, now: datetime | None = None,
                              reason: str | None = None) -> bool:
        now = now or utc_now()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "status_changed_at": now,
                                  "status_reason": reason}
        if status is SubscriberStatus.CONFIRMED:
            values["confirmed_at"] = now
        with self.engine.begin() as conn:
            return conn.execute(update(t.subscribers).where(t.subscribers.c.email == email.lower())
                                .values(**values)).rowcount > 0

    def record_hard_bounce(self, subscriber_id: int, threshold: int, reason: str = "") -> bool:
        """Count one hard bounce; suppress the subscriber at ``threshold``. Returns True if suppressed.

        ``reason`` (the server's reply) is kept as the subscriber's latest bounce and, when it
        suppresses them, as the reason for their status."""
        now = utc_now()
        with self.engine.begin() as conn:
            conn.execute(update(t.subscribers).where(t.subscribers.c.id == subscriber_id)
                         .values(hard_bounces=t.subscribers.c.hard_bounces + 1, last_bounce_at=now,
                                 last_bounce_kind="hard", last_bounce_status=_enhanced_status(reason),
                                 last_bounce_diagnostic=reason[:2000]))
            bounces = conn.execute(select(t.subscribers.c.hard_bounces)
                                   .where(t.subscribers.c.id == subscriber_id)).scalar_one()
            if bounces >= threshold:
                conn.execute(update(t.subscribers).where(t.subscribers.c.id == subscriber_id)
                             .values(status=SubscriberStatus.SUPPRESSED.value, updated_at=now, status_changed_at=now,
                                     status_reason=f"hard bounce (smtp): {reason}"[:500]))
                return True
        return False

    def record_unexplained_refusal(self, subscriber_id: int, issue_date: date, detail: str,
                                   now: datetime | None = None) -> bool:
        """Remember that the reader's address was refused, with no reason about it, on ``issue_date``'s
        issue. True when this is the second sighting: the address was refused so on an earlier issue
        and nothing was delivered to it since (the caller then counts a hard bounce, and the memory is
        cleared). One refusal alone never counts: a misconfigured relay says the same of everyone."""
        with self.engine.begin() as conn:
            return remember_unexplained_refusal(conn, self._dialect_insert(), subscriber_id, issue_date, detail,
                                                now or utc_now())

    def unexplained_refusal(self, subscriber_id: int) -> tuple[date, str] | None:
        """The issue date and reply of the reader's remembered unexplained refusal, if any."""
        r = t.address_refusals.c
        with self._reading() as conn:
            row = conn.execute(select(r.issue_date, r.detail).where(r.subscriber_id == subscriber_id)).first()
        return (row[0], row[1]) if row else None


def remember_unexplained_refusal(conn: Connection, dialect_insert: Callable[[Table], Any], subscriber_id: int,
                                 issue_date: date, detail: str, now: datetime) -> bool:
    """``record_unexplained_refusal`` inside the caller's transaction (the send path's refusal at RCPT
    and the bounce path's unexplained DSN share this one memory per reader, ``address_refusals``)."""
    r, d = t.address_refusals.c, t.deliveries.c
    earlier = conn.execute(select(r.issue_date).where(r.subscriber_id == subscriber_id)).scalar_one_or_none()
    if earlier is not None and earlier < issue_date:
        delivered_since = conn.execute(select(d.id).where(
            d.subscriber_id == subscriber_id, d.status == DeliveryStatus.SENT.value,
            d.issue_date > earlier, d.issue_date < issue_date).limit(1)).first()
        if delivered_since is None:
            conn.execute(delete(t.address_refusals).where(r.subscriber_id == subscriber_id))
            return True
    values = {"issue_date": max(issue_date, earlier or issue_date), "detail": detail[:2000], "refused_at": now}
    if earlier is None:
        conn.execute(dialect_insert(t.address_refusals).values(subscriber_id=subscriber_id, **values)
                     .on_conflict_do_nothing(index_elements=["subscriber_id"]))
    else:
        conn.execute(update(t.address_refusals).where(r.subscriber_id == subscriber_id).values(**values))
    return False
