"""Keeps link tokens out of logs: one filter, on every handler, for every log line (access log too)."""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactTokens", "install", "redact"]

REDACTED = "[token]"

# A token in a link path (/confirm/<token>, /preferences/..., /unsubscribe/..., /issue/...), whatever
# follows it; and any itsdangerous-shaped token elsewhere (a mailto subject, a CSRF field, an error
# message): base64url payload, optional base64url timestamp, then the 27-character HMAC-SHA1 signature,
# dot-separated. Hostnames, versions and paper ids never end in such a signature.
_PATH = re.compile(r"/(confirm|preferences|unsubscribe|issue|feedback)/[^/?#\s\"'<>]+")
_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]{2,})?\.[A-Za-z0-9_-]{27}(?![A-Za-z0-9_-])")
_MAILTO = re.compile(r"(subject=unsubscribe(?:%20|\s|\+))[^\s&\"'<>]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every link token replaced by ``[token]``."""
    text = _PATH.sub(rf"/\1/{REDACTED}", text)
    text = _MAILTO.sub(rf"\1{REDACTED}", text)
    return _SHAPE.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message (and its traceback text) with the tokens hidden.

    The message is formatted here, once, and the arguments dropped, so no formatter downstream can
    bring a token back; a token is a key to someone's subscription.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: leave it to the handler's own error path
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(*loggers: logging.Logger) -> None:
    """Put the filter on every handler of the root logger and of ``loggers`` (idempotent).

    Handler filters see every record the handler writes, whichever logger it came from (a logger's
    own filters would miss records propagated from its children).
    """
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(RedactTokens())
