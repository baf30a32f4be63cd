"""Text from readers and sources made safe to print to an operator's terminal or log.

A subscriber's keywords, a paper's title or a server's error text can hold control characters: an
ESC sequence rewrites the terminal's title or colours, a CR or LF fakes a row in ``subscribers list``
or a line in the log, a tab a column, a bidi override reorders what is shown. Every operator-facing
line goes through ``printable`` (JSON output needs nothing: ``json.dumps`` escapes them already).
"""

from __future__ import annotations

import logging
import re

__all__ = ["SafeFormatter", "printable"]

# C0 and C1 controls and DEL (this includes TAB, LF and CR), the bidi embedding/override/isolate
# marks, and the Unicode line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    r"""``str(text)`` with every control character shown as an escape: ``"a\x1b]0;x"`` -> ``a\x1b]0;x``
    printed literally (backslash, x, 1, b), so what a reader or a source wrote can never act on the
    terminal or split a line."""
    value = str(text)
    return _UNSAFE.sub(_escape, value) if _UNSAFE.search(value) else value


class SafeFormatter(logging.Formatter):
    """A log formatter whose message part is ``printable``: one event stays one line, whatever it quotes.

    Tracebacks (``exc_info``) are appended as usual, on their own lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)
