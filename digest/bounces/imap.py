"""`digest bounces fetch`: read the new messages of an IMAP mailbox, ingest each, remove what was consumed.

Messages are fetched with BODY.PEEK (nothing is marked read before it is handled). A consumed message
(a bounce, a complaint, an auto-reply, or one ignored as forged) is flagged \\Deleted and expunged at
the end; one nobody can read stays, marked \\Seen, for a person when ``keep_unrecognised`` is set; one
that hit a database problem stays unread for the next run. Only UNSEEN messages are read, so a message
kept for a person is not read again.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from digest.bounces.ingest import BounceProcessor, IngestResult, TryLater
from digest.config import ImapSettings, Settings
from digest.errors import ConfigError, DigestError

__all__ = ["FetchSummary", "fetch_mailbox"]

log = logging.getLogger("digest.bounces.imap")


@dataclass(slots=True)
class FetchSummary:
    fetched: int = 0
    bounces: int = 0
    complaints: int = 0
    ignored: int = 0
    unrecognised: int = 0
    deferred: int = 0
    results: list[IngestResult] = field(default_factory=list)

    def line(self) -> str:
        return (f"fetched={self.fetched} bounces={self.bounces} complaints={self.complaints} "
                f"ignored={self.ignored} unrecognised={self.unrecognised} deferred={self.deferred}")


@contextmanager
def _connect(cfg: ImapSettings, password: str | None) -> Iterator[imaplib.IMAP4]:
    if not cfg.host:
        raise ConfigError("no IMAP server configured", key="bounces.imap.host")
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    try:
        if cfg.security == "ssl":
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=context,
                                                    timeout=cfg.timeout_seconds)
        else:
            conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
            if cfg.security == "starttls":
                conn.starttls(context)
        conn.login(cfg.username, password or "")
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as err:
        raise DigestError(f"IMAP {cfg.host}:{cfg.port}: {_text(err)}") from err
    try:
        yield conn
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()  # a server that went away needs no polite goodbye


def _text(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror  # "Connection refused", not the errno alone
    text = err.args[0] if err.args else err
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or err.__class__.__name__


def fetch_mailbox(settings: Settings, processor: BounceProcessor,
                  on_message: Callable[[IngestResult], None] | None = None) -> FetchSummary:
    """Ingest every unread message of ``[bounces.imap] mailbox``; DigestError when the server fails."""
    cfg = settings.bounces.imap
    summary = FetchSummary()
    with _connect(cfg, settings.imap_password) as conn:
        try:
            status, _ = conn.select(_quoted(cfg.mailbox))
            if status != "OK":
                raise DigestError(f"IMAP: cannot open mailbox {cfg.mailbox!r}")
            status, data = conn.uid("SEARCH", "UNSEEN")
            uids = [u.decode("ascii") for u in data[0].split()] if status == "OK" and data and data[0] else []
            for uid in uids:
                raw = _fetch(conn, uid)
                if raw is None:
                    continue
                summary.fetched += 1
                try:
                    result = processor.ingest(raw, "imap")
                except TryLater as err:
                    log.warning("deferred uid=%s: %s", uid, err)
                    summary.deferred += 1
                    continue
                summary.results.append(result)
                _count(summary, result)
                if on_message is not None:
                    on_message(result)
                if result.recognised or not cfg.keep_unrecognised:
                    conn.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
                else:
                    conn.uid("STORE", uid, "+FLAGS", "(\\Seen)")
            conn.expunge()
        except (OSError, imaplib.IMAP4.error) as err:
            raise DigestError(f"IMAP {cfg.host}:{cfg.port}: {_text(err)}") from err
    return summary


def _fetch(conn: imaplib.IMAP4, uid: str) -> bytes | None:
    status, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
    if status != "OK":
        return None
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _count(summary: FetchSummary, result: IngestResult) -> None:
    if not result.recognised:
        summary.unrecognised += 1
    elif not result.actions:
        summary.ignored += 1
    elif result.kind.value == "complaint":
        summary.complaints += 1
    else:
        summary.bounces += 1


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
