"""A reader's cards assembled from pieces rendered once per paper: the render path of readers who share
no body (each gets papers of their own), where a body rendered with marks, cut and kept would be
bookkeeping for nobody.

A paper's card is rendered once, with marks where its number, its "why" line, its feedback links and
the reader's own values go, and cut there into a ``%`` format (bytes) and the list of what fills each
``%s``. Per reader, each card is one ``%`` of its format by the reader's values: number, reason, links.
The marks are digest.render's (no cleaned value can hold one: control characters never reach a
template); what the shipped templates do with the number and the reason is checked once per renderer
(``Renderer._split_why``), and this path is used only when they pass. The byte-identity tests run every
message of it against the reference path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter

from digest.email_view import CardView, clean_text, plain_card
from digest.errors import RenderError
from digest.models import Issue, Paper
from digest.templating import number_prefix

__all__ = ["LESS", "MORE", "NUMBER", "WHY", "CardFormat", "CardFormats", "UnusualCard"]

class UnusualCard(Exception):
    """A card template this path does not take (the renderer's other paths do)."""


# What fills a card's ``%s``: the reader's address and three links (0-3, reader_values order), then the
# card's own "more" and "less" links, number and "why" line.
MORE, LESS, NUMBER, WHY = 4, 5, 6, 7
# Card formats kept (paper, whether it has a reason, fallback link, feedback or not); each a few KB.
CARD_FORMATS = 20_000


@dataclass(frozen=True, slots=True)
class CardFormat:
    """One card side (HTML or text) as a ``%`` format and what fills each ``%s``, in order."""

    format: bytes
    slots: tuple[int, ...]

    @property
    def pick(self) -> Callable[[Sequence[bytes]], tuple[bytes, ...]]:
        """The values of the slots, in order, out of a card's eight (one C call)."""
        slots = self.slots
        if len(slots) > 1:
            return itemgetter(*slots)
        return lambda values: tuple(values[slot] for slot in slots)

    @classmethod
    def cut(cls, data: bytes, marks: re.Pattern[bytes], kinds: dict[bytes, int]) -> CardFormat:
        pieces, slots, at = [], [], 0
        for found in marks.finditer(data):
            pieces.append(data[at:found.start()].replace(b"%", b"%%"))
            slots.append(kinds[found.group()])
            at = found.end()
        pieces.append(data[at:].replace(b"%", b"%%"))
        if slots.count(MORE) > 1 or slots.count(LESS) > 1:
            raise UnusualCard("a card template that shows a feedback link more than once")
        return cls(b"%s".join(pieces), tuple(slots))


class CardFormats:
    """The cards of one renderer's templates, each paper's rendered once (see the module docstring).

    ``render`` turns a marked CardView into its (HTML, text) UTF-8; ``html_kinds`` and ``text_kinds`` say
    which mark (bytes) stands for what (the text part's reason is a whole wrapped line); ``why`` gives a
    reason's line as the HTML and the text show it."""

    def __init__(self, render: Callable[[CardView], tuple[bytes, bytes]], why: Callable[[str], tuple[bytes, bytes]],
                 html_kinds: dict[bytes, int], text_kinds: dict[bytes, int],
                 number_mark: str, why_mark: str, feedback_marks: tuple[str, str]) -> None:
        self._render = render
        self._why_lines = why
        self._whys: dict[str, tuple[bytes, bytes]] = {}
        self._html_kinds, self._text_kinds = html_kinds, text_kinds
        self._html_marks = _alternation(html_kinds)
        self._text_marks = _alternation(text_kinds)
        self._number_mark, self._why_mark, self._feedback_marks = number_mark, why_mark, feedback_marks
        # (fallback link, feedback shown) -> id(paper) -> (paper, its formats (HTML, text) without and with
        # a "why" line): a card costs one int-keyed lookup; the entry keeps its paper, checked with ``is``.
        self._tables: dict[tuple[str, bool], dict[int, tuple[Paper, list[_Formats | None]]]] = {}
        self._kept = 0

    def card(self, paper: Paper, has_why: bool, fallback_url: str, feedback: bool) -> _Formats:
        """The (HTML, text) formats of ``paper``'s card: with or without a "why" line, its link falling
        back to ``fallback_url`` (a mark, or the full issue's own link), with or without feedback links."""
        table = self._tables.get((fallback_url, feedback))
        if table is None:
            table = self._tables.setdefault((fallback_url, feedback), {})
        hit = table.get(id(paper))
        if hit is None or hit[0] is not paper:
            if self._kept >= CARD_FORMATS:  # a daemon meets new papers every day: start afresh
                self._tables.clear()
                self._kept = 0
                table = self._tables.setdefault((fallback_url, feedback), {})
            hit = table[id(paper)] = (paper, [None, None])
        formats = hit[1][has_why]
        if formats is None:
            marked = replace(plain_card(paper, fallback_url, self._feedback_marks if feedback else ("", "")),
                             number=self._number_mark, why=self._why_mark if has_why else "")  # type: ignore[arg-type]
            html, text = self._render(marked)
            html_cut = CardFormat.cut(html, self._html_marks, self._html_kinds)
            text_cut = CardFormat.cut(text, self._text_marks, self._text_kinds)
            formats = hit[1][has_why] = ((html_cut.format, html_cut.pick), (text_cut.format, text_cut.pick))
            self._kept += 1
        return formats

    def sections(self, issue: Issue, fallback_url: str, html_values: Sequence[bytes],
                 text_values: Sequence[bytes]) -> tuple[list[list[bytes]], list[list[bytes]]]:
        """Each non-empty section's cards, HTML and text, for one reader: ``*_values`` are the reader's
        address and links then each card's (more, less) links in reading order (reader_values), as the
        HTML and the text show them; feedback links are shown when there are any. A section is one
        ``%`` per part: its cards' formats joined, filled by their values in order."""
        feedback = len(html_values) > 4
        html_out: list[list[bytes]] = []
        text_out: list[list[bytes]] = []
        html_card = list(html_values[:4]) + [b""] * 4
        text_card = list(text_values[:4]) + [b""] * 4
        table = self._tables.get((fallback_url, feedback)) or {}
        whys, numbers = self._whys, _NUMBERS
        number, link = 0, 4
        for section in issue.sections:
            if not section.entries:
                continue
            html_formats, text_formats = [], []
            html_args: list[bytes] = []
            text_args: list[bytes] = []
            for entry in section.entries:
                number += 1
                why = whys.get(entry.reason) or self._why(entry.reason)
                has_why = bool(why[1])
                paper = entry.paper
                hit = table.get(id(paper))
                formats = hit[1][has_why] if hit is not None and hit[0] is paper else None
                html_format, text_format = formats or self.card(paper, has_why, fallback_url, feedback)
                if feedback:
                    if link + 1 >= len(html_values):
                        raise RenderError("email template: more feedback links than cards")
                    html_card[MORE], html_card[LESS] = html_values[link], html_values[link + 1]
                    text_card[MORE], text_card[LESS] = text_values[link], text_values[link + 1]
                    link += 2
                html_card[NUMBER], text_card[NUMBER] = numbers[number] if number < len(numbers) else _number(number)
                html_card[WHY], text_card[WHY] = why
                html_formats.append(html_format[0])
                text_formats.append(text_format[0])
                html_args += html_format[1](html_card)
                text_args += text_format[1](text_card)
            html_out.append([b"".join(html_formats) % tuple(html_args)])
            text_out.append([b"".join(text_formats) % tuple(text_args)])
        return html_out, text_out

    def _why(self, reason: str) -> tuple[bytes, bytes]:
        """A card's "why" line, HTML and text (both empty when the reason cleans to nothing: no line)."""
        lines = self._whys.get(reason)
        if lines is None:
            if len(self._whys) >= 65_536:
                self._whys.clear()
            why = clean_text(reason)
            lines = self._whys[reason] = self._why_lines(why) if why else (b"", b"")
        return lines


def _alternation(kinds: dict[bytes, int]) -> re.Pattern[bytes]:
    # Longest first: the text part's whole "Why:" line before a lone mark.
    return re.compile(b"|".join(re.escape(mark) for mark in sorted(kinds, key=len, reverse=True)))


def _number(number: int) -> tuple[bytes, bytes]:
    """A card's number as the HTML shows it, and as the text part's ``numbered`` filter writes it."""
    return b"%d" % number, number_prefix(number).encode("ascii")


_NUMBERS = tuple(_number(n) for n in range(1000))
# A card side as kept: its format and the pick of its values (CardFormat.pick).
_Side = tuple[bytes, Callable[[Sequence[bytes]], tuple[bytes, ...]]]
_Formats = tuple[_Side, _Side]
