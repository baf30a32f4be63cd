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
import hmac
import re
import struct
import threading
from datetime import datetime
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from functools import lru_cache
from urllib.parse import urlsplit

from digest.config import Settings
from digest.errors import RenderError
from digest.links import PersonalLinks
from digest.models import RenderedEmail

__all__ = ["base64_lines", "build_message", "list_id_for", "make_message_id", "remember_utf8"]

CRLF = b"\r\n"
_LINE_BREAKS = re.compile(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0085\u2028\u2029]+")
_ADDR = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


def _one_line(value: str) -> str:
    """Header values can never carry a line break (that is how header injection works)."""
    # A printable string holds no control or line-separator character: nothing to replace.
    return value.strip() if value.isprintable() else _LINE_BREAKS.sub(" ", value).strip()


@lru_cache(maxsize=1024)  # From, List-Id and a shared body's Subject repeat from message to message
def _header(name: str, value: str) -> bytes:
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


@lru_cache(maxsize=4096)
def _encoded_words(value: str) -> str:
    """RFC 2047 ``=?utf-8?b?...?=`` words of at most 75 characters, split between characters."""
    words: list[str] = []
    chunk = ""
    budget = 42  # bytes of UTF-8 per word: base64 of 42 is 56 characters, 68 with the =?utf-8?b?...?=
    size = 0
    for ch in value:
        n = len(ch.encode("utf-8"))
        if size + n > budget and chunk:
            words.append(chunk)
            chunk, size = "", 0
        chunk += ch
        size += n
    if chunk:
        words.append(chunk)
    encoded = ["=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words]
    return "\r\n ".join(encoded)


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


class _Utf8Memo:
    """The UTF-8 (and, for bodies shared by many readers, the base64 of a leading part) of the last few
    bodies the renderer produced, keyed by the very ``str`` object.

    The renderer assembles each body's UTF-8 from cached pieces anyway; remembering it spares encoding
    40 KB again here, and a shared prefix already in base64 spares encoding it per reader. Entries are
    matched with ``is`` (never by an id that might be reused), and the memo is tiny: it only bridges one
    ``render()`` and the ``build_message()`` that follows it. Without an entry the body is encoded as usual.
    """

    def __init__(self, size: int = 64) -> None:
        self._items: dict[int, tuple[str, bytes, bytes, int]] = {}
        self._size = size
        self._lock = threading.Lock()

    def put(self, text: str, data: bytes, b64_prefix: bytes, prefix_len: int) -> None:
        with self._lock:
            if len(self._items) >= self._size:
                self._items.pop(next(iter(self._items)))
            self._items[id(text)] = (text, data, b64_prefix, prefix_len)

    def get(self, text: str) -> tuple[bytes, bytes, int]:
        hit = self._items.get(id(text))
        if hit is not None and hit[0] is text:
            return hit[1], hit[2], hit[3]
        return text.encode("utf-8"), b"", 0


_MEMO = _Utf8Memo()


def remember_utf8(text: str, data: bytes, b64_prefix: bytes = b"", prefix_len: int = 0) -> None:
    """Tell build_message that ``data`` is ``text`` in UTF-8 and, optionally, that ``b64_prefix`` is the
    wrapped base64 (76-character lines, each ending in CRLF) of ``data[:prefix_len]``, ``prefix_len`` a
    multiple of 57. A renderer's optimisation: the message is byte for byte what it would be without."""
    if prefix_len % 57:
        raise ValueError("prefix_len must be a multiple of 57 bytes (one base64 line)")
    _MEMO.put(text, data, b64_prefix, prefix_len)


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, 76 characters a line, every line ending in CRLF (RFC 2045)."""
    encoded = binascii.b2a_base64(data, newline=False)
    full = len(encoded) // 76
    lines = list(_lines_of_76(full).unpack_from(encoded))
    lines.append(encoded[full * 76:] + CRLF if len(encoded) % 76 else b"")
    return CRLF.join(lines)


def _body(text: str, boundary: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body). Plain 7bit when ASCII with short lines, else base64
    (binascii, C speed; quoted-printable costs ten times more per message)."""
    if "\r" in text:
        data, b64_prefix, prefix_len = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8"), b"", 0
    else:
        data, b64_prefix, prefix_len = _MEMO.get(text)
    newline = b"" if data.endswith(b"\n") else b"\n"
    if data.isascii() and boundary.encode() not in data and all(len(line) <= 998 for line in data.split(b"\n")):
        return b"7bit", (data + newline).replace(b"\n", CRLF)
    return b"base64", b64_prefix + base64_lines(data[prefix_len:] + newline)


@lru_cache(maxsize=256)
def _lines_of_76(count: int) -> struct.Struct:
    """A struct that cuts ``count`` 76-byte lines in one C call (base64 line wrapping is otherwise the
    slowest step of building a message)."""
    return struct.Struct("76s" * count)


def _boundary(message_id: str) -> str:
    return "=_digest_" + hashlib.sha1(message_id.encode("utf-8")).hexdigest()[:24]


def _angle(url: str) -> str:
    return "<" + _one_line(url).replace(">", "%3E").replace("<", "%3C").replace(" ", "%20") + ">"


def build_message(rendered: RenderedEmail, *, sender: str, recipient: str, message_id: str,
                  date: datetime, list_id: str, links: PersonalLinks) -> bytes:
    """The complete message: headers, then text/plain and text/html parts (UTF-8).

    Headers: From, To, Subject (RFC 2047 when not ASCII), Date, Message-ID, MIME-Version, List-Id,
    List-Unsubscribe (https link and mailto) and List-Unsubscribe-Post (RFC 8058 one-click). No value
    can add a header: line breaks in any of them become spaces. Raises RenderError for an unusable
    sender or recipient address. Deterministic: the same arguments give the same bytes.
    """
    if not message_id.startswith("<") or not message_id.endswith(">") or "@" not in message_id:
        raise RenderError(f"invalid Message-ID: {message_id!r}")
    boundary = _boundary(message_id)
    unsubscribe = [_angle(u) for u in (links.unsubscribe, links.unsubscribe_mailto) if u]
    headers = [
        _header("From", _address(sender, "sender")),
        _header("To", _address(recipient, "recipient")),
        _header("Subject", rendered.subject),
        _header("Date", format_datetime(date)),
        _header("Message-ID", message_id),
        b"MIME-Version: 1.0",
        _header("List-Id", list_id),
    ]
    if unsubscribe:
        headers.append(_header("List-Unsubscribe", ", ".join(unsubscribe)))
        if links.unsubscribe:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"'.encode("ascii"))
    delimiter = b"--" + boundary.encode("ascii")
    out = [CRLF.join(headers), CRLF, CRLF, b"This is a multi-part message in MIME format.", CRLF]
    for kind, content in ((b"text/plain", rendered.text), (b"text/html", rendered.html)):
        encoding, body = _body(content, boundary)
        out += [CRLF, delimiter, CRLF, b"Content-Type: ", kind, b'; charset="utf-8"', CRLF,
                b"Content-Transfer-Encoding: ", encoding, CRLF, CRLF, body]
    out += [CRLF, delimiter, b"--", CRLF]
    return b"".join(out)


def make_message_id(issue_id: int, subscriber_email: str, domain: str, secret: str) -> str:
    """``<digest.ISSUE.HMAC16@domain>``: the same issue and subscriber always give the same id (so a
    resend can be recognised as a duplicate), and the id reveals nothing about the address."""
    host = domain.strip().lower()
    if not _DOMAIN.match(host):
        host = "localhost"
    mac = hmac.new(secret.encode("utf-8"), f"{issue_id}:{subscriber_email.strip().lower()}".encode(),
                   hashlib.sha256).hexdigest()[:16]
    return f"<digest.{int(issue_id)}.{mac}@{host}>"


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
