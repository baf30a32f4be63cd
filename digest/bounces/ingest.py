"""The one code path every incoming bounce, complaint or auto-reply takes (stdin, IMAP, webhook).

``BounceProcessor.ingest(raw, source)`` reads the message (digest.bounces.parse), finds the delivery
it is about, and records what it means (Store.record_bounce). Which delivery:

    bounce      the VERP return path it was sent to (``--recipient`` from the MTA, else Delivered-To,
                X-Original-To, Envelope-To, To) must carry a valid signature; and when the bounce
                names recipients, one of them must be the address that delivery went to.
    complaint   the reported message's Return-Path (our VERP address) or its Message-ID (random, made
                with the delivery and recorded on it); an Original-Rcpt-To, when the provider gives one,
                must be that delivery's address.

Anything else (no token, a forged token, a DSN about another address, an auto-reply, a message we
cannot read) changes nothing and says why. The only error is ``TryLater``: the database could not be
reached or written, so the MTA should keep the message and try again (exit 75 for a pipe).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from digest.bounces.parse import Failure, FailureKind, Report, ReportKind, parse_report
from digest.bounces.verp import Verdict, return_path_for
from digest.config import Settings
from digest.errors import DigestError, StoreError
from digest.store import Store
from digest.store.bounces import BounceEvent, BouncePolicy, BounceTarget

__all__ = ["BounceProcessor", "IngestResult", "TryLater", "return_path_for"]

log = logging.getLogger("digest.bounces")


class TryLater(DigestError):
    """The report could not be recorded now (database unavailable); nothing was lost, try again."""

    exit_code = 75


@dataclass(frozen=True, slots=True)
class Action:
    """What one report did to one delivery."""

    email: str
    delivery_id: int
    kind: str
    action: str
    status: str | None
    diagnostic: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of one message: its kind, the actions taken, and why nothing was done if so."""

    kind: ReportKind
    format: str
    actions: tuple[Action, ...] = ()
    ignored: str = ""  # why nothing changed ("" when something did)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def recognised(self) -> bool:
        return self.kind is not ReportKind.UNRECOGNISED

    def line(self) -> str:
        """One line for logs and the command's output."""
        head = f"kind={self.kind.value} format={self.format}"
        if not self.actions:
            return f"{head} action=none reason={self.ignored or 'nothing to do'}"
        return head + "".join(f" {a.email}={a.kind}:{a.action}" + (f"({a.status})" if a.status else "")
                              for a in self.actions)

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind.value, "format": self.format, "ignored": self.ignored or None,
                "actions": [{"email": a.email, "delivery_id": a.delivery_id, "kind": a.kind, "action": a.action,
                             "status": a.status, "diagnostic": a.diagnostic} for a in self.actions]}


class BounceProcessor:
    """Reads incoming reports and records what they mean for deliveries and readers."""

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        from digest.signing_key import signing_key

        self.return_path = return_path_for(settings, signing_key(settings, store))
        cfg = settings.bounces
        self.policy = BouncePolicy(hard_to_suppress=settings.smtp.hard_bounces_to_suppress,
                                   soft_to_suppress=cfg.soft_bounces_to_suppress,
                                   soft_period=timedelta(days=cfg.soft_bounce_days))

    def ingest(self, raw: bytes, source: str, envelope_recipient: str | None = None) -> IngestResult:
        """Read one message and act on it. Idempotent: the same message twice acts once.
        Raises TryLater when the store cannot be used now."""
        report = parse_report(raw)
        key = hashlib.sha256(raw).hexdigest()[:48]
        try:
            if report.kind is ReportKind.BOUNCE:
                result = self._bounce(report, key, source, envelope_recipient)
            elif report.kind is ReportKind.COMPLAINT:
                result = self._complaint(report, key, source, envelope_recipient)
            elif report.kind is ReportKind.AUTO_REPLY:
                result = IngestResult(report.kind, report.format, ignored="auto-reply")
            else:
                result = IngestResult(report.kind, report.format, ignored="not a bounce, complaint or auto-reply")
        except (SQLAlchemyError, StoreError) as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise TryLater(f"database unavailable, try again later: {reason}") from err
        log.info("ingested source=%s %s", source, result.line())
        return result

    def _token(self, report: Report, envelope_recipient: str | None,
               extra: tuple[str, ...] = ()) -> tuple[BounceTarget | None, str]:
        candidates = tuple(a for a in ((envelope_recipient or "").lower(), *report.addressed_to, *extra) if a)
        check = self.return_path.find(candidates)
        if check.verdict is Verdict.FORGED:
            return None, f"forged return path {check.address}"
        if check.verdict is not Verdict.VALID or check.delivery_id is None:
            return None, "no signed return path"
        target = self.store.bounce_target(check.delivery_id)
        if target is None:
            return None, f"no delivery {check.delivery_id}"
        return target, ""

    def _bounce(self, report: Report, key: str, source: str, envelope_recipient: str | None) -> IngestResult:
        target, why = self._token(report, envelope_recipient)
        if target is None:
            return IngestResult(report.kind, report.format, ignored=why)
        named = [f for f in report.failures if f.recipient or f.original_recipient]
        mine = [f for f in named if target.email in (f.recipient, f.original_recipient)]
        if named and not mine:
            others = ", ".join(sorted({f.recipient or f.original_recipient or "" for f in named}))
            return IngestResult(report.kind, report.format,
                                ignored=f"delivery {target.delivery_id} went to another address, not {others}")
        failure = _worst(mine or list(report.failures))
        status = failure.status[:16] if failure.status else None  # an RFC 3463 code: "5.1.1", at most "5.123.123"
        event = BounceEvent(f"{key}:{target.delivery_id}", target, failure.kind.value, source, status,
                            failure.diagnostic)
        action = self.store.record_bounce(event, self.policy, self.clock())
        return IngestResult(report.kind, report.format, (Action(target.email, target.delivery_id, event.kind, action,
                                                                failure.status, failure.diagnostic),))

    def _complaint(self, report: Report, key: str, source: str, envelope_recipient: str | None) -> IngestResult:
        extra = (report.original_return_path,) if report.original_return_path else ()
        target, why = self._token(report, None, extra)
        if target is None and report.original_message_id:
            target = self.store.bounce_target_by_message_id(report.original_message_id)
            why = why if target is None else ""
        if target is None:
            return IngestResult(report.kind, report.format,
                                ignored=why if why.startswith("forged") else "the reported message is not one of ours")
        if report.original_recipients and target.email not in report.original_recipients:
            return IngestResult(report.kind, report.format,
                                ignored=f"delivery {target.delivery_id} went to another address")
        diagnostic = f"feedback-type {report.feedback_type or 'abuse'}"
        event = BounceEvent(f"{key}:{target.delivery_id}", target, "complaint", source, None, diagnostic)
        action = self.store.record_bounce(event, self.policy, self.clock())
        return IngestResult(report.kind, report.format,
                            (Action(target.email, target.delivery_id, "complaint", action, None, diagnostic),))


_SEVERITY = {FailureKind.HARD: 4, FailureKind.SOFT: 3, FailureKind.UNEXPLAINED: 2, FailureKind.REFUSED: 1,
             FailureKind.DELAYED: 0}


def _worst(failures: list[Failure]) -> Failure:
    return max(failures, key=lambda f: _SEVERITY[f.kind])
