"""RenderedEmail -> complete RFC 5322 bytes (multipart/alternative, UTF-8), built fast and injection-proof.

The stdlib ``EmailMessage`` (and even ``email.header``) costs far more per message than rendering does,
so the bytes are assembled directly: headers folded at spaces, RFC 2047 base64 words for non-ASCII
values, bodies 7bit when plain ASCII else base64 (C speed), CRLF line ends, and a boundary that base64
can never contain (``=_`` is not in its alphabet) and a 7bit body is checked against. Tests parse every
message back with the stdlib parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from functools import lru_cache
from urllib.parse import urlsplit

try:  # SIMD base64 (about 40x binascii's speed); binascii gives the same bytes where it is missing
    from pybase64 import b64encode as _b64encode
except ImportError:  # pragma: no cover - pybase64 ships wheels for every common platform
    # The same bytes; typeshed just spells the two signatures differently.
    from base64 import b64encode as _b64encode  # type: ignore[assignment]

from digest.config import Settings
from digest.errors import RenderError
from digest.links import PersonalLinks
from digest.mail.wire import needs_dot_stuffing
from digest.models import RenderedEmail

__all__ = ["MAX_LINE", "Base64Body", "MimeBody", "MimeEmail", "Utf8Body", "base64_lines", "build_message",
           "build_message_wire", "list_id_for", "make_message_id", "mime_body"]

CRLF = b"\r\n"
# A longer line cannot go 7bit (RFC 5322 caps lines at 998 characters).
MAX_LINE = 998
_LINE_BREAKS = re.compile(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0085\u2028\u2029]+")
_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
_UNIQUE = re.compile(r"^[A-Za-z0-9]{1,64}\Z")


def _one_line(value: str) -> str:
    """Header values can never carry a line break (that is how header injection works)."""
    # A printable string holds no control or line-separator character: nothing to replace.
    return value.strip() if value.isprintable() else _LINE_BREAKS.sub(" ", value).strip()


def _fold(name: str, value: str) -> bytes:
    """``Name: value`` on one line or folded at spaces near 78 columns; a value that is not ASCII
    becomes RFC 2047 base64 encoded-words (email.header's encoder costs milliseconds per message)."""
    value = _one_line(value)
    if not value.isascii():
        return f"{name}: {_encoded_words(value)}".encode("ascii")
    if len(name) + 2 + len(value) <= 78:
        return f"{name}: {value}".encode("ascii")
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines).encode("ascii")


# From, Date, List-Id and a shared body's Subject repeat from message to message; To, Message-ID and
# List-Unsubscribe never do (they go through _fold itself, not through a cache they would only churn).
_header = lru_cache(maxsize=1024)(_fold)


def _date_header(value: datetime) -> bytes:
    # Keyed by the offset too: the same instant in two zones is one datetime to a cache, but each
    # message writes its own zone.
    return _date_line(value, value.utcoffset())


@lru_cache(maxsize=64)
def _date_line(value: datetime, offset: timedelta | None) -> bytes:
    return _fold("Date", format_datetime(value))


@lru_cache(maxsize=64)
def _from_header(sender: str) -> bytes:
    return _fold("From", _address(sender, "sender"))


@lru_cache(maxsize=4096)
def _encoded_words(value: str) -> str:
    """RFC 2047 ``=?utf-8?b?...?=`` words of at most 75 characters, split between characters."""
    data = value.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):
        # 42 bytes of UTF-8 per word (base64 of 42 is 56 characters, 68 with the =?utf-8?b?...?=),
        # backed off to the start of a character: a continuation byte is 0b10xxxxxx.
        end = min(start + 42, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode("ascii") + "?=")
        start = end
    return "\r\n ".join(words)


def _address(value: str, field: str) -> str:
    """One mailbox, display name RFC 2047-encoded when needed; raises RenderError if it is no address."""
    if _ADDR.match(value):
        return value  # a bare address (the usual recipient) is already its own formatted form
    return _named_address(value, field)


@lru_cache(maxsize=256)
def _named_address(value: str, field: str) -> str:
    if _LINE_BREAKS.search(value):
        raise RenderError(f"invalid {field} address (line break): {value!r}")
    found = getaddresses([value])
    name, addr = found[0] if len(found) == 1 else ("", "")
    if not _ADDR.match(addr):
        raise RenderError(f"invalid {field} address: {value!r}")
    return formataddr((name, addr), charset="utf-8")


def base64_lines(data: bytes | memoryview) -> bytes:
    """``data`` in base64, 76 characters a line, every line ending in CRLF (RFC 2045)."""
    encoded = _b64encode(data)
    full = len(encoded) // 76
    tail = encoded[full * 76:]
    if not full:
        return tail + CRLF if tail else b""
    return CRLF.join(_lines_of_76(full).unpack_from(encoded)) + (CRLF + tail + CRLF if tail else CRLF)


def mime_body(data: bytes, boundary: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body) of UTF-8 ``data``: plain 7bit when ASCII with short lines
    and free of the boundary, else base64 (SIMD, C speed; quoted-printable costs ten times more per
    message). Line ends become CRLF; the body ends with a line end."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    newline = b"" if data.endswith(b"\n") else b"\n"
    if data.isascii() and boundary.encode() not in data and all(len(line) <= MAX_LINE for line in data.split(b"\n")):
        return b"7bit", (data + newline).replace(b"\n", CRLF)
    return b"base64", base64_lines(data + newline)


@dataclass(frozen=True, slots=True)
class Utf8Body:
    """A body as UTF-8; build_message picks its transfer encoding."""

    data: bytes

    def encoded(self, boundary: str) -> tuple[bytes, ...]:
        return mime_body(self.data, boundary)

    def utf8(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Base64Body:
    """A body known to need base64 (not ASCII, or a line too long for 7bit), whose leading whole 57-byte
    blocks are already encoded: ``lead`` is their base64 lines (as base64_lines writes them), ``rest``
    the UTF-8 that follows and is not empty. A body many readers share up to their personal parts is
    encoded once this way, and only its last kilobyte or so per reader. The bytes are exactly what
    ``Utf8Body(whole)`` gives."""

    lead: bytes
    rest: bytes

    def encoded(self, boundary: str) -> tuple[bytes, ...]:
        """(Content-Transfer-Encoding, then the encoded body in pieces, joined once with the message)."""
        newline = b"" if self.rest.endswith(b"\n") else b"\n"
        return b"base64", self.lead, base64_lines(self.rest + newline)

    def utf8(self) -> bytes:
        return binascii.a2b_base64(self.lead) + self.rest


MimeBody = Utf8Body | Base64Body


@dataclass(frozen=True, slots=True)
class MimeEmail:
    """An email's subject and its two bodies ready for MIME (what the renderer's send path gives)."""

    subject: str
    html: MimeBody
    text: MimeBody

    @classmethod
    def of(cls, rendered: RenderedEmail) -> MimeEmail:
        return cls(rendered.subject, Utf8Body(rendered.html.encode("utf-8")), Utf8Body(rendered.text.encode("utf-8")))

    def rendered(self) -> RenderedEmail:
        return RenderedEmail(self.subject, self.html.utf8().decode("utf-8"), self.text.utf8().decode("utf-8"))


@lru_cache(maxsize=256)
def _lines_of_76(count: int) -> struct.Struct:
    """A struct that cuts ``count`` 76-byte lines in one C call (base64 line wrapping is otherwise the
    slowest step of building a message)."""
    return struct.Struct("76s" * count)


def _boundary(message_id: str) -> str:
    return "=_digest_" + hashlib.sha1(message_id.encode("utf-8")).hexdigest()[:24]


def _angle(url: str) -> str:
    return "<" + _one_line(url).replace(">", "%3E").replace("<", "%3C").replace(" ", "%20") + ">"


def build_message(rendered: RenderedEmail | MimeEmail, *, sender: str, recipient: str, message_id: str,
                  date: datetime, list_id: str, links: PersonalLinks) -> bytes:
    """The complete message (see build_message_wire, which also says whether SMTP can send it as is)."""
    return build_message_wire(rendered, sender=sender, recipient=recipient, message_id=message_id, date=date,
                              list_id=list_id, links=links)[0]


def build_message_wire(rendered: RenderedEmail | MimeEmail, *, sender: str, recipient: str, message_id: str,
                       date: datetime, list_id: str, links: PersonalLinks) -> tuple[bytes, bool]:
    """The complete message: headers, then text/plain and text/html parts (UTF-8).

    Headers: From, To, Subject (RFC 2047 when not ASCII), Date, Message-ID, MIME-Version, List-Id,
    List-Unsubscribe (https link and mailto) and List-Unsubscribe-Post (RFC 8058 one-click). No value
    can add a header: line breaks in any of them become spaces. Raises RenderError for an unusable
    sender or recipient address. Deterministic: the same arguments give the same bytes.

    Also says whether the message is ready for the SMTP wire as it is (OutgoingMessage.wire_ready,
    digest.mail.wire.is_wire_ready), without reading it all: its line ends are CRLF by construction, and
    only a 7bit part can hold a line that starts with a dot (headers fold with a space, base64 has no
    dots), so only such a part is looked at.
    """
    if not message_id.startswith("<") or not message_id.endswith(">") or "@" not in message_id:
        raise RenderError(f"invalid Message-ID: {message_id!r}")
    email = rendered if isinstance(rendered, MimeEmail) else MimeEmail.of(rendered)
    boundary = _boundary(message_id)
    unsubscribe = [_angle(u) for u in (links.unsubscribe, links.unsubscribe_mailto) if u]
    headers = [
        _from_header(sender),
        _fold("To", _address(recipient, "recipient")),
        _header("Subject", email.subject),
        _date_header(date),
        _fold("Message-ID", message_id),
        b"MIME-Version: 1.0",
        _header("List-Id", list_id),
    ]
    if unsubscribe:
        headers.append(_fold("List-Unsubscribe", ", ".join(unsubscribe)))
        if links.unsubscribe:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"'.encode("ascii"))
    delimiter = b"--" + boundary.encode("ascii")
    out = [CRLF.join(headers), _PREAMBLE]
    wire_ready = True
    for kind, content in ((b"text/plain", email.text), (b"text/html", email.html)):
        encoding, *body = content.encoded(boundary)
        if encoding == b"7bit" and any(needs_dot_stuffing(piece) for piece in body):
            wire_ready = False
        out += [CRLF, delimiter, _PART_HEADERS[kind, encoding], *body]
    out += [CRLF, delimiter, b"--", CRLF]
    return b"".join(out), wire_ready


_PREAMBLE = b"\r\n\r\nThis is a multi-part message in MIME format.\r\n"
# What follows a part's delimiter: its headers, then the blank line.
_PART_HEADERS = {
    (kind, encoding): b"\r\nContent-Type: " + kind + b'; charset="utf-8"\r\nContent-Transfer-Encoding: ' + encoding
    + b"\r\n\r\n"
    for kind in (b"text/plain", b"text/html") for encoding in (b"7bit", b"base64")
}


def make_message_id(issue_id: int, domain: str, unique: str | None = None) -> str:
    """``<digest.ISSUE.RANDOM@domain>``, RANDOM being 24 hex digits (96 bits) from ``secrets`` unless
    ``unique`` gives them (tests). Issue numbers restart in every database, so only the random part
    keeps two installations (or a database made afresh) from sending different issues under one id,
    which receivers may drop as duplicates. The id is made once, when the delivery record is
    created, and stored with it: every re-send of that record reuses it, so a receiver can still
    recognise a resend. It says nothing about the address."""
    host = domain.strip().lower()
    if not _DOMAIN.match(host):
        host = "localhost"
    if unique is None:
        unique = secrets.token_hex(12)
    elif not _UNIQUE.match(unique):
        raise RenderError(f"invalid Message-ID part: {unique!r}")
    return f"<digest.{int(issue_id)}.{unique}@{host}>"


def list_id_for(settings: Settings) -> str:
    """``[site] list_id`` in angle brackets, else ``<paper-digest.DOMAIN>`` from the sender's domain
    (or the base URL's host), e.g. ``<paper-digest.localhost>``."""
    return _list_id(settings.site.list_id, settings.site.sender, settings.site.base_url)


@lru_cache(maxsize=16)
def _list_id(list_id: str, sender: str, base_url: str) -> str:
    configured = _one_line(list_id)
    if configured:
        return configured if configured.endswith(">") else f"<{configured.strip('<>')}>"
    domain = parseaddr(sender)[1].rpartition("@")[2].lower()
    if not _DOMAIN.match(domain or ""):
        domain = (urlsplit(base_url).hostname or "").lower()
    if not _DOMAIN.match(domain or ""):
        domain = "localhost"
    return f"<paper-digest.{domain}>"
