"""Pure reading of an incoming message: a DSN, a non-standard bounce, an ARF complaint, an auto-reply.

``parse_report(raw)`` never touches the store and never raises for a malformed message: whatever it
cannot read becomes ``ReportKind.UNRECOGNISED``. The order of the checks matters:

    1. ARF complaint (RFC 5965): multipart/report with a message/feedback-report part
    2. DSN (RFC 3464): a message/delivery-status part, one Failure per recipient block
    3. auto-reply (RFC 3834 Auto-Submitted: auto-replied, X-Autoreply, ...), unless the message looks
       like a bounce (many MTAs, Postfix and Exim among them, mark their bounces auto-replied too)
    4. non-standard bounce: flufl.bounce (Mailman's detectors: Exim, qmail, Yahoo, Exchange, ...)

What a failure means (``classify_status``) follows the send path (digest.mail.smtp): only a refusal of
the address itself is a hard bounce, and a refusal that gives no reason about the address is
*unexplained* (counted only when the same address is refused so again on a later issue).
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from enum import StrEnum

__all__ = ["Failure", "FailureKind", "Report", "ReportKind", "classify_status", "parse_report"]


class ReportKind(StrEnum):
    BOUNCE = "bounce"  # a DSN or a non-standard bounce: one or more Failures
    COMPLAINT = "complaint"  # an ARF feedback report
    AUTO_REPLY = "auto_reply"  # vacation and other automatic answers: never a bounce
    UNRECOGNISED = "unrecognised"


class FailureKind(StrEnum):
    """What one recipient's failure says about the address.

    HARD         the address is gone (5.1.x but 5.1.7/5.1.8, 5.2.1, 5.4.4, or words such as "User
                 unknown"): counts toward suppression (``[smtp] hard_bounces_to_suppress``)
    SOFT         delivery finally failed for a passing reason (4.x.x, 5.2.2 mailbox full): counted, and
                 suppresses only after ``[bounces] soft_bounces_to_suppress`` within the period
    DELAYED      a warning (Action: delayed): the message may still arrive; recorded only
    UNEXPLAINED  a permanent refusal that gives no reason about the address (a bare 5.0.0, a 5xx with no
                 RFC 3463 status such as "550 relay not permitted", or another status the send path
                 calls unexplained at RCPT, e.g. 5.4.1): what a misconfigured relay says of everyone,
                 so, as in the send path, one alone never suppresses; the same address refused so on
                 an earlier issue too counts as a hard bounce (the send path's
                 ``Store.record_unexplained_refusal`` memory, shared by both paths)
    REFUSED      a permanent refusal of this message (5.7.x policy, 5.1.7/5.1.8 our sender, content or
                 size, "Message refused", anything the DSN says came after the message data): recorded
                 only, as the send path does; it says something about the sender or the content, not
                 the address
    """

    HARD = "hard"
    SOFT = "soft"
    DELAYED = "delayed"
    UNEXPLAINED = "unexplained"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient's entry in a bounce: who, what the MTA did, the RFC 3463 status and its words."""

    recipient: str | None
    kind: FailureKind
    status: str | None = None
    diagnostic: str = ""
    action: str = "failed"
    original_recipient: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """What one incoming message is.

    ``addressed_to`` holds the addresses the message was delivered to as its headers tell
    (Delivered-To, X-Original-To, Envelope-To, To): the place a VERP return path is found.
    ``original_*`` come from the returned or reported original message, when it is included.
    """

    kind: ReportKind
    format: str  # dsn | arf | flufl | autoreply | none
    failures: tuple[Failure, ...] = ()
    addressed_to: tuple[str, ...] = ()
    original_message_id: str | None = None
    original_return_path: str | None = None
    original_recipients: tuple[str, ...] = ()
    feedback_type: str | None = None
    subject: str = ""


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")
_TYPED = re.compile(r"^\s*[A-Za-z0-9-]+\s*;\s*")
# Words of an old-style "no such user" reply without an enhanced status code.
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|addressee unknown|no such (user|mailbox|recipient)|does not exist|doesn't exist|"
    r"mailbox unavailable|invalid (recipient|mailbox|address)|recipient (address )?rejected|"
    r"not a valid (mailbox|recipient)|unrouteable address|account (is )?(disabled|inactive)",
    re.IGNORECASE)
# The reporting MTA says the refusal came after RCPT, when the recipient was already accepted (Postfix:
# "(in reply to end of DATA command)", Exim: "after end of data", "after MAIL FROM"): the send path
# calls a refusal there one of the message or the sender (digest.mail.smtp.refusal_kind), not unexplained.
_AFTER_RCPT = re.compile(r"in reply to (end of )?DATA command|after (end of )?data\b|after pipelined data\b|"
                         r"in reply to MAIL FROM command|after MAIL FROM", re.IGNORECASE)
# It says the refusal was RCPT's (older Postfix, Exim): the send path's RCPT rule holds, whatever the status.
_AT_RCPT = re.compile(r"in reply to RCPT TO command|after RCPT TO\b", re.IGNORECASE)
# RFC 3463 statuses that name a property of the message itself: 5.2.3 and 5.3.4 (too long or too big),
# 5.6.x (content or media); and the 552 reply (storage exceeded, RCPT's "too many recipients"), which
# the send path never counts against the address either.
_MESSAGE_STATUSES = frozenset({(2, 3), (3, 4)})
# Words that say the message, not the recipient, was refused ("554 Message refused"): after RCPT's reading.
_MESSAGE_REFUSED = re.compile(r"\b(message|content) (was |is )?(refused|rejected|blocked|not accepted)\b",
                              re.IGNORECASE)
_STORAGE_REPLY = re.compile(r"(?<![\d.])552(?![\d.])")
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery|mdaemon|mail administrator",
                            re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery (status|failure|notification|has failed)|returned mail|"
                             r"failure notice|mail delivery failed|non.?delivery|could not be delivered",
                             re.IGNORECASE)
_AUTO_SUBJECT = re.compile(r"^\s*(auto(matic)?[ -]?(reply|response|answer)|out of (the )?office|"
                           r"abwesenheit|absence|vacation|away from)", re.IGNORECASE)


def classify_status(status: str | None, diagnostic: str = "", action: str = "failed") -> tuple[FailureKind, str | None]:
    """The kind of one failure from its DSN ``Status`` and ``Diagnostic-Code`` (and the status used).

    A generic status (``x.0.0``) is refined by an enhanced code inside the diagnostic
    (``smtp; 550 5.1.1 ...``); without any, the diagnostic's words decide whether a 5xx is about the
    address (``User unknown``). A permanent refusal that gives no reason about the address is
    UNEXPLAINED, as the send path calls such a refusal at RCPT (digest.mail.smtp.refusal_kind): a DSN
    seldom says at which step the refusal came, so it is taken as RCPT's unless the diagnostic says it
    came later or the status or words are about the message (then REFUSED, as the send path says after
    RCPT).
    tests/unit/test_refusal_consistency.py holds the two classifiers to each other.
    """
    code = _ENHANCED.search(status or "")
    if action.lower() == "delayed":
        return FailureKind.DELAYED, code.group(0) if code else None
    found = _ENHANCED.search(diagnostic)
    if found and (code is None or (code.group(2), code.group(3)) == ("0", "0")):
        code = found
    if code is None:
        # No RFC 3463 code anywhere (the status stays None: what the field held is in no standard form).
        smtp = _SMTP_CODE.search(diagnostic)
        if smtp is None:
            return FailureKind.REFUSED, None
        if smtp.group(1) == "4":
            return FailureKind.SOFT, None
        if _UNKNOWN_USER.search(diagnostic):
            return FailureKind.HARD, None
        return _unexplained_or_refused(None, diagnostic), None
    klass, subject, detail = code.group(1), int(code.group(2)), int(code.group(3))
    used = f"{klass}.{subject}.{detail}"
    if klass == "4":
        return FailureKind.SOFT, used
    if klass == "2":
        return FailureKind.DELAYED, used  # "delivered" or "relayed": nothing failed
    if subject == 1 and detail not in (7, 8):  # 5.1.7/5.1.8 are about our sender, not the reader
        return FailureKind.HARD, used
    if (subject, detail) in ((2, 1), (4, 4)):
        return FailureKind.HARD, used
    if (subject, detail) == (2, 2):
        return FailureKind.SOFT, used  # mailbox full: it may empty again
    if subject in (1, 7):
        # 5.7.x is policy (the sender or the content); 5.1.7/5.1.8 refuse our sender's address, whatever
        # the words ("sender domain does not exist"): never the reader's address.
        return FailureKind.REFUSED, used
    if _UNKNOWN_USER.search(diagnostic):
        # The words say the address is unknown (sendmail's "553 5.3.0 Addressee unknown").
        return FailureKind.HARD, used
    return _unexplained_or_refused((subject, detail), diagnostic), used


def _unexplained_or_refused(status: tuple[int, int] | None, diagnostic: str) -> FailureKind:
    """A 5xx that names no reason about the address: what the send path makes of it at RCPT
    (unexplained; a 552 is not a refusal there), unless the DSN says it came later or, saying nothing
    of the step, its status or its words name the message (then REFUSED, as the send path says after
    RCPT)."""
    if _STORAGE_REPLY.search(diagnostic) or _AFTER_RCPT.search(diagnostic):
        return FailureKind.REFUSED
    if _AT_RCPT.search(diagnostic):
        return FailureKind.UNEXPLAINED
    if status is not None and (status in _MESSAGE_STATUSES or status[0] == 6):
        return FailureKind.REFUSED
    if _MESSAGE_REFUSED.search(diagnostic):
        return FailureKind.REFUSED
    return FailureKind.UNEXPLAINED


def parse_report(raw: bytes) -> Report:
    """Read one message (its complete bytes) into a Report; never raises for bad input."""
    try:
        msg = email.message_from_bytes(raw)
    except Exception:  # the email package is lenient; anything it still chokes on is unrecognised
        return Report(ReportKind.UNRECOGNISED, "none")
    addressed = _addressed_to(msg)
    subject = _one_line(str(msg.get("Subject", "")))
    arf = _find_part(msg, "message/feedback-report")
    if arf is not None:
        return _complaint(msg, arf, addressed, subject)
    status_part = _find_part(msg, "message/delivery-status")
    if status_part is not None:
        failures = _dsn_failures(status_part)
        if failures:
            original = _original_headers(msg)
            return Report(ReportKind.BOUNCE, "dsn", failures, addressed, *_original_ids(original),
                          subject=subject)
    if _is_auto_reply(msg, subject):
        return Report(ReportKind.AUTO_REPLY, "autoreply", addressed_to=addressed, subject=subject)
    failures = _flufl_failures(msg)
    if failures:
        original = _original_headers(msg)
        return Report(ReportKind.BOUNCE, "flufl", failures, addressed, *_original_ids(original), subject=subject)
    return Report(ReportKind.UNRECOGNISED, "none", addressed_to=addressed, subject=subject)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_line(value: str, limit: int = 500) -> str:
    """``value`` on one line, without control characters (it is a stranger's text, shown to operators)."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def _address(value: str | None) -> str | None:
    """``rfc822; <Ada@Example.org>`` -> ``ada@example.org``; None when there is no address."""
    if not value:
        return None
    text = _TYPED.sub("", str(value)).strip()
    address = parseaddr(text)[1] or text.strip("<> ")
    return address.lower() if "@" in address else None


def _addressed_to(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To"):
        for value in msg.get_all(header, []):
            for _, address in getaddresses([str(value)]):
                if "@" in address:
                    found.append(address.lower())
    return tuple(dict.fromkeys(found))


def _find_part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _fields(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part.

    The email package parses message/delivery-status into one Message per block; another message/*
    type arrives as one enclosed message, and a part it could not split comes as text.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        text = payload.replace("\r\n", "\n")
        return [HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\n\s*\n", text)
                if block.strip()]
    return []


def _dsn_failures(part: Message) -> tuple[Failure, ...]:
    failures: list[Failure] = []
    for block in _fields(part)[1:] or _fields(part):
        action = _one_line(str(block.get("Action", ""))).lower()
        status = _one_line(str(block.get("Status", ""))) or None
        recipient = _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient"))
        if not action and not status:
            continue
        if action in ("delivered", "relayed", "expanded"):
            continue
        diagnostic = _one_line(_TYPED.sub("", str(block.get("Diagnostic-Code", ""))))
        kind, used = classify_status(status, diagnostic, action or "failed")
        if any(f.recipient == recipient and f.kind is kind for f in failures):
            continue  # the same recipient reported twice (one block per hop)
        failures.append(Failure(recipient, kind, used, diagnostic, action or "failed",
                                _address(block.get("Original-Recipient"))))
    return tuple(failures)


def _complaint(msg: Message, arf: Message, addressed: tuple[str, ...], subject: str) -> Report:
    blocks = _fields(arf)
    fields = blocks[0] if blocks else Message()
    original = _original_headers(msg)
    # Only Original-Rcpt-To names the reader: providers often redact the enclosed message's To.
    recipients = [a for v in fields.get_all("Original-Rcpt-To", []) if (a := _address(v))]
    message_id, return_path = _original_ids(original)
    return Report(ReportKind.COMPLAINT, "arf", (), addressed, message_id, return_path, tuple(recipients),
                  _one_line(str(fields.get("Feedback-Type", "abuse"))).lower() or "abuse", subject)


def _original_headers(msg: Message) -> Message | None:
    """The headers of the original message a report returns (message/rfc822 or text/rfc822-headers)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if ctype in ("text/rfc822-headers", "text/global-headers"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser().parsestr(text.decode("utf-8", "replace"))
    return None


def _original_ids(original: Message | None) -> tuple[str | None, str | None]:
    if original is None:
        return None, None
    message_id = _one_line(str(original.get("Message-ID", ""))) or None
    return_path = _address(original.get("Return-Path"))
    return message_id, return_path


def _looks_like_bounce(msg: Message, subject: str) -> bool:
    sender = str(msg.get("From", ""))
    return bool(_BOUNCE_SENDER.search(sender) or _BOUNCE_SUBJECT.search(subject) or msg.get("X-Failed-Recipients"))


def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    marked = (auto.startswith("auto-replied") or msg.get("X-Autoreply") is not None
              or msg.get("X-Autorespond") is not None or msg.get("X-Auto-Response-Suppress") is not None
              or str(msg.get("Precedence", "")).strip().lower() == "auto_reply"
              or bool(_AUTO_SUBJECT.search(subject)))
    return marked and not _looks_like_bounce(msg, subject)


def _flufl_failures(msg: Message) -> tuple[Failure, ...]:
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on a strange message: not a bounce we can read
        return ()
    text = _body_text(msg)
    failures: list[Failure] = []
    for raw_address, kind in [*((a, FailureKind.HARD) for a in sorted(permanent)),
                              *((a, FailureKind.DELAYED) for a in sorted(temporary))]:
        address = raw_address.decode("utf-8", "replace").strip("<> ").lower()
        status, diagnostic = _status_near(text, address)
        if kind is FailureKind.HARD and status is not None:
            kind, status = classify_status(status, diagnostic)
        failures.append(Failure(address if "@" in address else None, kind, status, diagnostic,
                                "failed" if kind is not FailureKind.DELAYED else "delayed"))
    return tuple(failures)


def _body_text(msg: Message) -> str:
    chunks = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                chunks.append(payload.decode(part.get_content_charset() or "latin-1", "replace"))
        if len(chunks) >= 3:
            break
    return "\n".join(chunks)


def _status_near(text: str, address: str) -> tuple[str | None, str]:
    """The enhanced status and the reply line a non-standard bounce gives for ``address``, if any:
    the first status code within a few lines after the address is mentioned."""
    lower = text.lower()
    at = lower.find(address)
    window = text[at:at + 600] if at >= 0 else text[:2000]
    found = _ENHANCED.search(window)
    if found is None:
        return None, ""
    line_start = window.rfind("\n", 0, found.start()) + 1
    line_end = window.find("\n", found.end())
    return found.group(0), _one_line(window[line_start:line_end if line_end >= 0 else None], 300)
