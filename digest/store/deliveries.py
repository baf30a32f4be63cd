"""Store I/O for delivery records: the send loop's claims, leases and outcomes, and recovery after
a crash. Mixed into ``Store`` (all storage I/O stays in store/)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from digest.models import AttemptEnd, Delivery, DeliveryStatus
from digest.store import schema as t
from digest.store.base import StoreBase
from digest.store.records import DeliveryAttention
from digest.store.rows import Row, chunks, utc_now

# The send loop's two statements (``settle``), in the driver's terms ("?" becomes the driver's mark).
_END_ATTEMPT = (
    "UPDATE deliveries SET status = ?, updated_at = ?, last_error = ?, claimed_by = NULL, lease_until = NULL,"
    " next_attempt_at = ?, sent_at = COALESCE(?, sent_at) WHERE id = ?"
)

_MARK_SENDING = (
    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = ?, updated_at = ?"
    " WHERE id = ? AND claimed_by = ? AND status = 'pending'"
)


def _deferred(c: Any) -> Any:
    """Pending deliveries that met an error: refused for now (an attempt counted), or left unsent when
    the mail server could not be reached (the error kept, no attempt made)."""
    return and_(c.status == DeliveryStatus.PENDING.value, or_(c.attempts > 0, c.last_error.is_not(None)))


def _row_to_delivery(r: Row) -> Delivery:
    return Delivery(
        id=r["id"], issue_id=r["issue_id"], subscriber_id=r["subscriber_id"],
        status=DeliveryStatus(r["status"]), message_id=r["message_id"], attempts=r["attempts"],
        last_error=r["last_error"], next_attempt_at=r["next_attempt_at"], sent_at=r["sent_at"],
        in_doubt=bool(r["in_doubt"]), issue_date=r["issue_date"],
    )


class DeliveryStore(StoreBase):
    """Delivery records: claims, leases, outcomes, recovery after a crash."""

    # ---- deliveries -----------------------------------------------------------------------------

    def recover_interrupted(self, now: datetime, resend_in_doubt: bool) -> int:
        """Deal with records a killed sender left in "sending" once their lease has expired.

        Such a message may or may not have reached the server. With ``resend_in_doubt`` it goes back to
        pending (flagged ``in_doubt``; it is re-sent with the same Message-ID so the receiver can drop
        a duplicate), else it becomes "unknown". Returns how many records were recovered.
        """
        stale = and_(t.deliveries.c.status == DeliveryStatus.SENDING.value,
                     or_(t.deliveries.c.lease_until.is_(None), t.deliveries.c.lease_until < now))
        target = DeliveryStatus.PENDING if resend_in_doubt else DeliveryStatus.UNKNOWN
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Senders starting together all recover: each takes the rows no other holds, in id
                # order, so two of them never wait on each other (a multi-row UPDATE could deadlock).
                ids = list(conn.execute(select(t.deliveries.c.id).where(stale).order_by(t.deliveries.c.id)
                                        .with_for_update(skip_locked=True)).scalars())
                if not ids:
                    return 0
                stale = and_(stale, t.deliveries.c.id.in_(ids))
            return conn.execute(update(t.deliveries).where(stale).values(
                status=target.value, in_doubt=True, claimed_by=None, lease_until=None, updated_at=now,
                last_error="interrupted while sending: outcome unknown",
            )).rowcount

    def claim_deliveries(
        self,
        worker: str,
        now: datetime,
        lease_seconds: float,
        limit: int,
        issue_date: date | None = None,
        subscriber_id: int | None = None,
        due_since: datetime | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` pending deliveries that are due, for this worker alone.

        With ``due_since``, only records whose reader's send moment is not before it and whose
        reader's day is not over yet (the daemon's lateness rules; records written before they were
        kept qualify). On PostgreSQL rows are picked with ``FOR UPDATE SKIP LOCKED`` so any number of
        senders can claim at once; on SQLite the write lock taken at BEGIN serialises claimers. A lease
        that expires (its sender died) makes the rows claimable again.
        """
        c = t.deliveries.c
        claimable = and_(
            c.status == DeliveryStatus.PENDING.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            or_(c.claimed_by.is_(None), c.lease_until < now),
        )
        if due_since is not None:
            claimable = and_(claimable, or_(c.due_at.is_(None), c.due_at >= due_since),
                             or_(c.day_ends_at.is_(None), c.day_ends_at > now))
        query = select(c.id).where(claimable)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        if subscriber_id is not None:
            query = query.where(c.subscriber_id == subscriber_id)
        query = query.order_by(c.id).limit(limit)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        lease = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(update(t.deliveries).where(c.id.in_(ids), claimable)
                         .values(claimed_by=worker, lease_until=lease, updated_at=now))
            rows = conn.execute(select(t.deliveries).where(c.id.in_(ids), c.claimed_by == worker)
                                .order_by(c.id)).mappings().all()
        return [_row_to_delivery(r) for r in rows]

    def release_held(self, delivery_ids: Sequence[int]) -> int:
        """Make pending records held back by a send (see digest.relay_guard) claimable at once."""
        c = t.deliveries.c
        total = 0
        with self.engine.begin() as conn:
            for chunk in chunks(list(delivery_ids)):
                total += conn.execute(update(t.deliveries).where(
                    c.id.in_(chunk), c.status == DeliveryStatus.PENDING.value, c.claimed_by.is_(None),
                ).values(next_attempt_at=None)).rowcount
        return total

    def fail_held(self, ends: Sequence[AttemptEnd], now: datetime) -> set[int]:
        """Record ``ends`` (failures) for records a send held back pending, unless another sender took
        them meanwhile; returns the ids recorded."""
        c = t.deliveries.c
        done: set[int] = set()
        with self.engine.begin() as conn:
            for e in ends:
                changed = conn.execute(update(t.deliveries).where(
                    c.id == e.delivery_id, c.status == DeliveryStatus.PENDING.value, c.claimed_by.is_(None),
                ).values(status=e.status.value, last_error=e.detail, next_attempt_at=None, updated_at=now)).rowcount
                if changed:
                    done.add(e.delivery_id)
        return done

    def count_pending(self, issue_date: date, now: datetime, subscriber_id: int | None = None,
                      due_since: datetime | None = None) -> int:
        """Records of ``issue_date`` left pending that a send could still deliver (as claim_deliveries
        picks them, whenever their retry comes; not those another live sender holds right now)."""
        c = t.deliveries.c
        query = select(func.count()).select_from(t.deliveries).where(
            c.issue_date == issue_date, c.status == DeliveryStatus.PENDING.value,
            or_(c.claimed_by.is_(None), c.lease_until < now))
        if subscriber_id is not None:
            query = query.where(c.subscriber_id == subscriber_id)
        if due_since is not None:
            query = query.where(or_(c.due_at.is_(None), c.due_at >= due_since),
                                or_(c.day_ends_at.is_(None), c.day_ends_at > now))
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    def release_claims(self, worker: str, error: str | None = None, now: datetime | None = None) -> int:
        """Give back this worker's unsent claims (clean shutdown); with ``error`` (the send stopped on
        it: the mail server could not be reached), each keeps it as its last error, so `digest status`
        counts them as deferred and says why. Returns how many were given back."""
        c = t.deliveries.c
        values: dict[str, Any] = {"claimed_by": None, "lease_until": None}
        if error is not None:
            values.update(last_error=error, updated_at=now or utc_now())
        with self.engine.begin() as conn:
            return int(conn.execute(update(t.deliveries).where(
                c.claimed_by == worker, c.status == DeliveryStatus.PENDING.value
            ).values(**values)).rowcount)

    def claimants(self) -> set[str]:
        """Every worker holding a pending or sending record (to spot senders that died)."""
        c = t.deliveries.c
        query = select(c.claimed_by).distinct().where(
            c.claimed_by.is_not(None),
            c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def expire_claims(self, workers: Iterable[str], now: datetime) -> int:
        """End the leases of ``workers``, known to be dead, at once: their pending claims become
        claimable and their "sending" records recoverable by ``recover_interrupted(now)``."""
        names = list(workers)
        if not names:
            return 0
        c = t.deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(update(t.deliveries).where(
                c.claimed_by.in_(names),
                c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
            ).values(lease_until=now - timedelta(seconds=1))).rowcount

    def mark_sending(self, delivery_id: int, worker: str, now: datetime, lease_seconds: float) -> bool:
        """Record that the message is about to be handed over; False if the claim was lost."""
        c = t.deliveries.c
        with self.engine.begin() as conn:
            return conn.execute(update(t.deliveries).where(
                c.id == delivery_id, c.claimed_by == worker, c.status == DeliveryStatus.PENDING.value
            ).values(status=DeliveryStatus.SENDING.value, attempts=c.attempts + 1,
                     lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)).rowcount == 1

    def mark_outcome(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        now: datetime,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Record the end of one attempt: sent, failed, unknown, or pending again (retry later)."""
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "last_error": detail,
                                  "claimed_by": None, "lease_until": None, "next_attempt_at": next_attempt_at}
        if status is DeliveryStatus.SENT:
            values["sent_at"] = now
        with self.engine.begin() as conn:
            conn.execute(update(t.deliveries).where(t.deliveries.c.id == delivery_id).values(**values))

    def settle(
        self, ended: Sequence[AttemptEnd], sending: Sequence[int], worker: str, now: datetime, lease_seconds: float
    ) -> set[int]:
        """In one transaction: record the ``ended`` attempts (as ``mark_outcome`` does) and mark the
        ``sending`` deliveries as about to be handed over (as ``mark_sending`` does). Returns the ids
        marked: those still claimed by ``worker`` and pending.

        The send loop calls it each time a message comes back from the mailer, with the next one it is
        about to hand over, so no more records are "sending" than messages are in flight, at a cost of
        one commit per message. See ``settling`` for many calls from one thread.
        """
        with self.settling(worker, lease_seconds) as settle:
            return settle(ended, sending, now)

    @contextmanager
    def settling(self, worker: str, lease_seconds: float) -> Iterator[Callable[..., set[int]]]:
        """``settle(ended, sending, now)`` for one thread's many calls, on a database connection kept for
        the block: the two UPDATEs run once or twice per message, and a pooled connection, a
        transaction object and the expression layer per call would cost more than they do."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        end_sql, mark_sql = _END_ATTEMPT.replace("?", mark), _MARK_SENDING.replace("?", mark)
        to_db = t.UTCDateTime().bind_processor(self.engine.dialect) or (lambda value: value)
        sqlite = self.dialect == "sqlite"
        raw = self.engine.raw_connection()

        def settle(ended: Sequence[AttemptEnd], sending: Sequence[int], now: datetime) -> set[int]:
            at, lease = to_db(now), to_db(now + timedelta(seconds=lease_seconds))
            marked: set[int] = set()
            cursor = raw.cursor()
            try:
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")  # as every write here: the lock first
                for e in ended:
                    cursor.execute(end_sql, (
                        e.status.value, at, e.detail, to_db(e.next_attempt_at) if e.next_attempt_at else None,
                        at if e.status is DeliveryStatus.SENT else None, e.delivery_id))
                for delivery_id in dict.fromkeys(sending):
                    cursor.execute(mark_sql, (lease, at, delivery_id, worker))
                    if cursor.rowcount == 1:
                        marked.add(delivery_id)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
            return marked

        try:
            yield settle
        finally:
            raw.close()  # back to the pool

    def requeue_unknown(self, issue_date: date | None = None) -> int:
        """Put "unknown" deliveries back to pending (an operator's explicit decision to resend)."""
        c = t.deliveries.c
        query = update(t.deliveries).where(c.status == DeliveryStatus.UNKNOWN.value)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        with self.engine.begin() as conn:
            return conn.execute(query.values(status=DeliveryStatus.PENDING.value, next_attempt_at=None,
                                             in_doubt=True)).rowcount

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.deliveries).where(t.deliveries.c.id == delivery_id)).mappings().first()
        return _row_to_delivery(row) if row else None

    def delivery_for_issue(self, issue_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.deliveries).where(t.deliveries.c.issue_id == issue_id)).mappings().first()
        return _row_to_delivery(row) if row else None

    def deliveries_on(self, issue_dates: Iterable[date]) -> dict[tuple[int, date], Delivery]:
        """Every delivery record of an issue dated one of ``issue_dates``, by (subscriber id, date).

        One query for the daemon's dispatch, which checks every subscriber every few minutes.
        """
        dates = sorted(set(issue_dates))
        if not dates:
            return {}
        c = t.deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.deliveries).where(c.issue_date.in_(dates))).mappings().all()
        return {(r["subscriber_id"], r["issue_date"]): _row_to_delivery(r) for r in rows}

    def delivery_counts(self, issue_date: date | None = None) -> dict[str, int]:
        c = t.deliveries.c
        query = select(c.status, func.count()).group_by(c.status)
        if issue_date is not None:
            query = query.where(c.issue_date == issue_date)
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(query)}

    def delivery_issue_ids(self) -> list[int]:
        """The issue of every delivery record, in the order the records were made."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.deliveries.c.issue_id).order_by(t.deliveries.c.id)).scalars())

    def deliveries_needing_attention(self, limit: int = 20) -> list[DeliveryAttention]:
        c = t.deliveries.c
        query = (select(c.id, c.issue_date, c.status, c.attempts, c.last_error, t.subscribers.c.email)
                 .join(t.subscribers, t.subscribers.c.id == c.subscriber_id)
                 .where(or_(c.status.in_([DeliveryStatus.FAILED.value, DeliveryStatus.UNKNOWN.value]),
                            _deferred(c)))
                 .order_by(c.updated_at.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [DeliveryAttention(id=r.id, issue_date=r.issue_date, status=DeliveryStatus(r.status),
                                      attempts=r.attempts, last_error=r.last_error, email=r.email)
                    for r in conn.execute(query)]

    def deferred_deliveries(self, issue_date: date) -> tuple[int, str | None]:
        """How many deliveries of ``issue_date`` wait for another attempt after an error (refused for
        now, or the server could not be reached), and the latest such error."""
        c = t.deliveries.c
        where = and_(c.issue_date == issue_date, _deferred(c))
        with self._reading() as conn:
            count = conn.execute(select(func.count()).where(where)).scalar_one()
            latest = conn.execute(select(c.last_error).where(where).order_by(c.updated_at.desc()).limit(1)).scalar()
        return int(count), latest
