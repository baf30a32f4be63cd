"""SMTP backend: pooled smtplib connections, a shared rate limit, and every reply mapped to an outcome.

Outcome table (``classify_reply`` / ``classify_error``; the stage is how far the transaction got):

    stage            reply or error                         outcome     notes
    connect*         any refusal, TLS or auth failure       transient   nothing was sent; not a bounce
    mail             4xx / 5xx                              transient   the sender is refused: not the
                                                                        recipient's fault, so no bounce
    rcpt             4xx, 552 (RFC 5321 4.5.3.1.10)         transient
    rcpt             other 5xx                              permanent   hard bounce for 5.1.x and 5.2.1;
                                                                        unexplained without a status
                                                                        (or another one but 5.7.x)
    data (command)   4xx / 5xx                              transient / permanent
    content          2xx                                    delivered
    content          4xx / 5xx                              transient / permanent  bounce only for 5.1.x
                                                                        and 5.2.1
    any              421, 454                               transient   "slow down": the rate limiter
                                                                        pauses and halves the rate
    before content   connection lost / refused / timeout    transient   the end-of-data mark never left
    content          connection lost / timeout, no reply    unknown     the server may have the message

    * connect = greeting, EHLO, STARTTLS, AUTH.

A 421/454 before the server accepted anything is retried once inside ``send`` after the pause, so a
short burst of "slow down" costs a delay rather than a deferred message.

A permanent refusal is a hard bounce (which suppresses the reader, ``[smtp] hard_bounces_to_suppress``)
only when the reply gives a reason about the address: an RFC 3463 status 5.1.x (bad address; not
5.1.7/5.1.8, which are about the sender) or 5.2.1 (mailbox disabled). A refusal at RCPT that gives no
such reason (a bare ``550 relay not permitted``, or a status such as 5.4.1 or 5.0.0) is *unexplained*:
a misconfigured relay says exactly that of every address, so one alone never suppresses; the send
engine suppresses only when the same address is refused again on a later issue (``Store.
record_unexplained_refusal``; a bounce that gives no reason counts there too, digest.bounces.parse),
and stops a run in which most recipients are refused (digest.relay_guard).
A 5.7.x (policy: spam filter, blocklist, DMARC) or any other refusal of the message itself fails this
message and leaves the reader subscribed: the sender's reputation or the content is at fault, and
suppressing readers for it would empty the list.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from digest.errors import ConfigError, DeliveryError
from digest.mail.base import Mailer
from digest.mail.wire import wire_payload
from digest.models import Outcome, OutgoingMessage, SendResult

if TYPE_CHECKING:
    from digest.config import Settings

__all__ = ["RateLimiter", "Refusal", "SMTPMailer", "Stage", "Verdict", "classify_error", "classify_reply",
           "refusal_kind"]

log = logging.getLogger("digest.mail.smtp")

Security = Literal["none", "starttls", "ssl"]

SLOW_DOWN_CODES = frozenset({421, 454})


class Stage(StrEnum):
    """How far one SMTP transaction got when it stopped."""

    CONNECT = "connect"  # greeting, EHLO, STARTTLS, AUTH
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, before the server said 354
    PAYLOAD = "payload"  # writing the message; the end-of-data mark is the last thing written
    CONTENT = "content"  # the whole message is out; waiting for the server's verdict


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classified reply: the outcome, whether the server asked us to slow down, and whether a
    permanent refusal is the address's hard bounce."""

    outcome: Outcome
    slow_down: bool = False
    bounce: bool = False
    unexplained: bool = False  # refused at RCPT with no reason about the address (see the module doc)


# An RFC 3463 enhanced status code at the start of a reply's text: class.subject.detail.
_ENHANCED = re.compile(r"\s*5\.(\d{1,3})\.(\d{1,3})(?![\d.])")


class Refusal(StrEnum):
    """What a 5xx reply says about the recipient's address."""

    ADDRESS = "address"  # the address itself is bad: a hard bounce
    UNEXPLAINED = "unexplained"  # refused at RCPT, no reason given: counts only if it happens again
    OTHER = "other"  # the message, the sender or a policy: says nothing about the address


# 5.1.7 and 5.1.8 are about the sender's address: a relay refusing our return path refuses everybody.
_SENDER_STATUSES = frozenset({(1, 7), (1, 8)})


def refusal_kind(stage: Stage, text: str) -> Refusal:
    """What a 5xx reply (``text`` after its code) at ``stage`` says about the recipient's address."""
    found = _ENHANCED.match(text)
    if found is None:
        # An old-style "550 no such user" and a relay's "550 relay not permitted" look alike at RCPT;
        # after RCPT a refusal is about the message.
        return Refusal.UNEXPLAINED if stage is Stage.RCPT else Refusal.OTHER
    status = (int(found.group(1)), int(found.group(2)))
    if (status[0] == 1 and status not in _SENDER_STATUSES) or status == (2, 1):
        return Refusal.ADDRESS
    if stage is Stage.RCPT and status[0] != 7 and status not in _SENDER_STATUSES:
        return Refusal.UNEXPLAINED
    return Refusal.OTHER


def is_bounce(stage: Stage, text: str) -> bool:
    """Whether a 5xx reply (``text`` after its code) at ``stage`` says the address itself is bad."""
    return refusal_kind(stage, text) is Refusal.ADDRESS


def classify_reply(stage: Stage, code: int, text: str = "") -> Verdict:
    """The outcome of a non-success reply ``code`` at ``stage`` (a 2xx at CONTENT is delivered);
    ``text``, the reply's text, tells a hard bounce from another permanent refusal."""
    if stage is Stage.CONTENT and 200 <= code < 300:
        return Verdict(Outcome.DELIVERED)
    if code in SLOW_DOWN_CODES:
        return Verdict(Outcome.TRANSIENT, slow_down=True)
    if 400 <= code < 500:
        return Verdict(Outcome.TRANSIENT)
    if 500 <= code < 600:
        if stage in (Stage.CONNECT, Stage.MAIL):
            # The session or the sender is refused: every message would fail alike, so counting it
            # as the recipient's hard bounce would suppress the whole list.
            return Verdict(Outcome.TRANSIENT)
        if stage is Stage.RCPT and code == 552:
            return Verdict(Outcome.TRANSIENT)
        kind = refusal_kind(stage, text)
        return Verdict(Outcome.PERMANENT, bounce=kind is Refusal.ADDRESS, unexplained=kind is Refusal.UNEXPLAINED)
    # No readable code: after the message went out nobody knows; before, nothing was accepted.
    return Verdict(Outcome.UNKNOWN if stage is Stage.CONTENT else Outcome.TRANSIENT)


def classify_error(stage: Stage, err: BaseException) -> Verdict:
    """The outcome of an exception raised at ``stage`` (lost connection, timeout, TLS, refusal)."""
    if isinstance(err, smtplib.SMTPResponseException):
        return classify_reply(stage, err.smtp_code, _text_of(err.smtp_error))
    if stage is Stage.CONTENT:
        return Verdict(Outcome.UNKNOWN)
    if stage is Stage.RCPT and isinstance(err, UnicodeEncodeError):
        return Verdict(Outcome.PERMANENT, bounce=True)  # an address smtplib cannot put on the wire
    return Verdict(Outcome.TRANSIENT)


def _result(verdict: Verdict, detail: str) -> SendResult:
    return SendResult(verdict.outcome, detail, bounce=verdict.bounce, unexplained=verdict.unexplained)


def _text_of(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def _reply_text(code: int, message: bytes | str) -> str:
    return f"{code} {' '.join(_text_of(message).split())}".strip()


def _error_text(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPResponseException):
        return _reply_text(err.smtp_code, err.smtp_error)
    detail = " ".join(str(err).split())
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


class RateLimiter:
    """Spaces sends at most ``rate`` per second across all threads (0 = unlimited).

    ``wait()`` is called right before each transaction starts. ``slow_down(pause)`` (the server said
    421/454) holds every sender back for ``pause`` seconds and halves the rate; the configured rate
    returns after ``recover_seconds`` without another slow-down. With no configured rate, the halved
    rate is taken from the recently observed one.
    """

    def __init__(self, rate: float = 0.0, recover_seconds: float = 60.0) -> None:
        self.configured = max(0.0, rate)
        self.rate = self.configured
        self.recover_seconds = recover_seconds
        self._lock = threading.Lock()
        self._next = 0.0
        self._calm_since = 0.0
        self._recent: deque[float] = deque(maxlen=64)

    def wait(self) -> float:
        """Block until this caller may send; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            if self.rate != self.configured and now - self._calm_since >= self.recover_seconds:
                self.rate = self.configured
            slot = max(now, self._next)
            self._next = slot + (1.0 / self.rate if self.rate > 0 else 0.0)
            self._recent.append(slot)
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return max(0.0, delay)

    def slow_down(self, pause: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now + pause)
            current = self.rate or self._observed_rate(now)
            if current > 0:
                self.rate = max(current / 2, 0.1)
            self._calm_since = now + pause

    def _observed_rate(self, now: float) -> float:
        if len(self._recent) < 2:
            return 1.0
        span = max(now - self._recent[0], 1e-3)
        return len(self._recent) / span


@dataclass(slots=True)
class _Attempt:
    result: SendResult
    slow_down: bool = False
    keep: bool = True  # the connection is still usable
    stale: bool = False  # a reused connection was found dead before anything was accepted


class SMTPMailer(Mailer):
    """Sends through an SMTP server over up to ``max_connections`` reused connections.

    ``send`` is thread-safe: each call borrows one idle connection (or opens one, at most
    ``max_connections`` at a time) and returns it afterwards, so connections are reused across
    messages. TLS always verifies the server's certificate (``ca_file`` adds a trust anchor, e.g.
    a self-signed test certificate). ``open()`` connects once to check host, TLS and credentials and
    raises DeliveryError if that fails, so a broken configuration fails the run before any message
    is attempted; after that, every problem is a per-message SendResult.
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        security: Security = "none",
        username: str = "",
        password: str | None = None,
        timeout: float = 30.0,
        max_connections: int = 2,
        rate_per_second: float = 0.0,
        ca_file: str = "",
        local_hostname: str = "",
        slowdown_seconds: float = 10.0,
    ) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ConfigError(f"unknown security {security!r} (none, starttls or ssl)", key="smtp.security")
        self.host = host
        self.port = port
        self.security: Security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.concurrency = max(1, max_connections)
        self.slowdown_seconds = slowdown_seconds
        self.limiter = RateLimiter(rate_per_second)
        self._ca_file = ca_file
        self._local_hostname = local_hostname
        self._ssl_context: ssl.SSLContext | None = None
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SMTPMailer:
        """The mailer ``[smtp]`` describes; ConfigError if a username is set but its password is not."""
        smtp = settings.smtp
        password = settings.smtp_password
        if smtp.username and password is None:
            raise ConfigError(f"smtp.username is set but the environment variable {smtp.password_env} "
                              "(smtp.password_env) is empty", key="smtp.password_env")
        return cls(smtp.host, smtp.port, security=smtp.security, username=smtp.username, password=password,
                   timeout=smtp.timeout_seconds, max_connections=smtp.max_connections,
                   rate_per_second=smtp.rate_per_second, ca_file=smtp.ca_file,
                   local_hostname=smtp.local_hostname, slowdown_seconds=smtp.slowdown_seconds)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect once (kept for the first message) to check the server; DeliveryError if it fails."""
        with self._lock:
            if self._idle:
                return
        try:
            conn = self._connect()
        except Exception as err:
            raise DeliveryError(f"smtp {self.address}: cannot start a session: {_error_text(err)}") from err
        self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _quit(conn)

    # ---- sending --------------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        # A message build_message wrote needs no repair; anything else is scanned (about 150 µs for 50 KB).
        payload = message.data + b".\r\n" if message.wire_ready else wire_payload(message.data)
        with self._slots:
            attempt = self._attempt(message, payload)
            if attempt.slow_down:
                log.warning("smtp %s asks to slow down (%s): pausing %.1fs", self.address,
                            attempt.result.detail, self.slowdown_seconds)
                self.limiter.slow_down(self.slowdown_seconds)
                # Nothing was accepted (a 4xx is a definite no), so trying again cannot duplicate.
                retried = self._attempt(message, payload)
                if retried.slow_down:
                    self.limiter.slow_down(self.slowdown_seconds)
                attempt = retried
            return attempt.result

    def _attempt(self, message: OutgoingMessage, payload: bytes) -> _Attempt:
        conn = self._borrow()
        reused = conn is not None
        paced = False
        while True:
            if conn is None:
                try:
                    conn = self._connect()
                except Exception as err:
                    verdict = classify_error(Stage.CONNECT, err)
                    return _Attempt(SendResult(verdict.outcome, f"cannot connect to {self.address}: "
                                                                f"{_error_text(err)}"),
                                    slow_down=verdict.slow_down, keep=False)
            if not paced:
                self.limiter.wait()
                paced = True
            attempt = self._transaction(conn, message, payload)
            if attempt.stale and reused:
                # Servers drop idle connections; this one died before MAIL was answered, so
                # nothing was accepted: retry once on a fresh connection.
                _close(conn)
                conn, reused = None, False
                continue
            if attempt.keep:
                self._give_back(conn)
            else:
                _close(conn)
            return attempt

    def _transaction(self, conn: smtplib.SMTP, message: OutgoingMessage, payload: bytes) -> _Attempt:
        stage = Stage.MAIL
        try:
            code, reply = conn.mail(message.sender)
            if code != 250:
                return self._refused(conn, stage, code, reply, "sender refused")
            stage = Stage.RCPT
            code, reply = conn.rcpt(message.recipient)
            if code not in (250, 251):
                return self._refused(conn, stage, code, reply, "recipient refused")
            stage = Stage.DATA
            conn.putcmd("data")
            code, reply = conn.getreply()
            if code != 354:
                return self._refused(conn, stage, code, reply, "DATA refused")
            stage = Stage.PAYLOAD
            conn.send(payload)
            stage = Stage.CONTENT
            code, reply = conn.getreply()
        except Exception as err:
            verdict = classify_error(stage, err)
            where = "after the message was sent" if stage is Stage.CONTENT else f"at {stage.value}"
            detail = f"connection lost {where}: {_error_text(err)}"
            if isinstance(err, smtplib.SMTPResponseException):
                detail = f"{stage.value}: {_error_text(err)}"
            stale = stage is Stage.MAIL and not isinstance(err, smtplib.SMTPResponseException)
            return _Attempt(_result(verdict, detail), slow_down=verdict.slow_down, keep=False, stale=stale)
        verdict = classify_reply(Stage.CONTENT, code, _text_of(reply))
        if verdict.outcome is Outcome.DELIVERED:
            return _Attempt(SendResult(Outcome.DELIVERED, _reply_text(code, reply)))
        return self._refused(conn, Stage.CONTENT, code, reply, "message refused", verdict)

    def _refused(self, conn: smtplib.SMTP, stage: Stage, code: int, reply: bytes, what: str,
                 verdict: Verdict | None = None) -> _Attempt:
        verdict = verdict or classify_reply(stage, code, _text_of(reply))
        detail = f"{what}: {_reply_text(code, reply)}"
        # A server that said 421 is closing the connection; otherwise reset it for the next message.
        keep = code != 421 and code != -1 and _reset(conn)
        # A reused connection the server had timed out answers MAIL with 421: not the message's fault.
        stale = stage is Stage.MAIL and code == 421
        return _Attempt(_result(verdict, detail), slow_down=verdict.slow_down, keep=keep, stale=stale)

    # ---- connections ----------------------------------------------------------------------------

    def _borrow(self) -> smtplib.SMTP | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append(conn)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Verification stays on (CERT_REQUIRED, hostname checked); a ca_file only adds trust.
            self._ssl_context = ssl.create_default_context(cafile=self._ca_file or None)
        return self._ssl_context

    def _helo_name(self) -> str:
        if not self._local_hostname:
            # smtplib would call getfqdn() (a DNS lookup) for every connection; do it once.
            fqdn = socket.getfqdn()
            self._local_hostname = fqdn if "." in fqdn else "localhost.localdomain"
        return self._local_hostname

    def _connect(self) -> smtplib.SMTP:
        """A ready session: greeted, EHLO done, TLS up if configured, logged in if configured."""
        name = self._helo_name()
        conn: smtplib.SMTP
        if self.security == "ssl":
            conn = smtplib.SMTP_SSL(self.host, self.port, local_hostname=name, timeout=self.timeout,
                                    context=self._context())
        else:
            conn = smtplib.SMTP(self.host, self.port, local_hostname=name, timeout=self.timeout)
        try:
            _ehlo(conn)
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS")
                conn.starttls(context=self._context())
                _ehlo(conn)
            if self.username:
                conn.login(self.username, self._password or "")
        except BaseException:
            _close(conn)
            raise
        with self._lock:
            self.connections_opened += 1
        return conn


def _ehlo(conn: smtplib.SMTP) -> None:
    code, reply = conn.ehlo()
    if code in (500, 502):  # a server that predates ESMTP
        code, reply = conn.helo()
    if code != 250:
        raise smtplib.SMTPHeloError(code, reply)


def _reset(conn: smtplib.SMTP) -> bool:
    """RSET after a refused transaction; False if the connection is no longer usable."""
    try:
        return conn.rset()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _close(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        # The server may already have dropped an idle connection, and quit() on a TLS connection
        # whose peer vanished raises SSLError (an OSError); either way, just close our end.
        _close(conn)
