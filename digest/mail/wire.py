"""The SMTP wire form of a message (RFC 5321 4.5.2): what the SMTP mailer sends after DATA, and whether
a message's bytes are in that form already (OutgoingMessage.wire_ready), so that the mailer need not
scan a large message again to repair line ends or double leading dots."""

from __future__ import annotations

import re

__all__ = ["is_wire_ready", "needs_dot_stuffing", "wire_payload"]

_BARE_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def needs_dot_stuffing(data: bytes) -> bool:
    """Whether a line of ``data`` starts with a dot (SMTP would take a lone one for the end of data)."""
    return data.startswith(b".") or b"\n." in data


def is_wire_ready(data: bytes) -> bool:
    """Whether ``data`` can go on the wire as it is: CRLF line ends only, ending with one, and no line
    starting with a dot (what wire_payload would change)."""
    return (data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
            and not needs_dot_stuffing(data))


def wire_payload(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled (RFC 5321 4.5.2), end-of-data mark."""
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        data = _BARE_EOL.sub(b"\r\n", data)
    if needs_dot_stuffing(data):
        data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
