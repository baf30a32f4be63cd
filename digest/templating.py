"""The email templates' machinery: MJML compiled (MRML, no web fonts), CSS inlined (premailer, offline),
the Jinja environments and their text filters, the marks a card is rendered with once for every reader
(its number, reason and feedback links), and the split of the compiled page into page and card
templates. digest.render builds its renderers from these; nothing here renders an issue.
"""

from __future__ import annotations

import logging
import re
import textwrap
from functools import lru_cache
from typing import Any

import jinja2
import mjml
from markupsafe import Markup
from premailer import Premailer

from digest.errors import RenderError

__all__ = ["CARD_LOOP_CLOSE", "CARD_LOOP_OPEN", "DOCTYPE", "LESS_MARK", "MORE_MARK", "NUMBER_MARK", "WHY_MARK",
           "compile_mjml", "escape_text", "html_env", "inline_css", "number_prefix", "split_card_loop", "text_env",
           "wrap"]

DOCTYPE = "<!DOCTYPE html>\n"


# ---------------------------------------------------------------------------------------------------
# Compilation steps.


def compile_mjml(source: str) -> str:
    """MJML -> HTML with MRML; no web fonts (MRML links Google Fonts unless told otherwise)."""
    try:
        return mjml.mjml2html(source, fonts={})
    except Exception as err:  # MRML raises plain exceptions with its parser message
        raise RenderError(f"MJML template failed to compile: {err}") from err


def inline_css(html: str) -> str:
    """Inline the CSS of ``<style>`` blocks into style attributes with premailer (offline).

    Rules premailer cannot inline (media queries) stay in a ``<style>``; blocks marked
    ``data-premailer="ignore"`` and MSO conditional comments are left alone; ``!important`` is kept.
    A doctype is written first (premailer drops MRML's lower-case one).
    """
    try:
        out: str = Premailer(
            html,
            allow_network=False,
            allow_loading_external_files=False,
            strip_important=False,
            keep_style_tags=False,
            disable_validation=True,
            disable_link_rewrites=True,
            cssutils_logging_level=logging.CRITICAL,
        ).transform(pretty_print=False)
    except Exception as err:
        raise RenderError(f"CSS inlining failed: {err}") from err
    return DOCTYPE + out


def escape_text(value: Any) -> str:
    """Jinja ``finalize``: escape as libxml2 writes text, so both paths agree byte for byte. Markup (a
    card already rendered from the same template) passes through."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return str(value)
    text = str(value)
    if "&" in text or "<" in text or ">" in text:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def html_env(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    return jinja2.Environment(loader=loader, autoescape=False, finalize=escape_text,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


# Stands for a card's number in a card rendered once for every position it may take in an issue.
NUMBER_MARK = "\x05"
# Stands for a card's "why" line (the reason differs from reader to reader, the rest of a card does not).
WHY_MARK = "\x06"
# Stand for a card's "More like this" / "Less like this" links (each reader's own, for each paper).
MORE_MARK = "\x07"
LESS_MARK = "\x08"


def number_prefix(number: int) -> str:
    """`` 7. `` or ``12. ``: a card's number in the text part, four characters up to 99."""
    return f"{number:>2}. "


def _numbered(title: str, number: int | str) -> str:
    """Text-part filter: the card's number and its title wrapped under a four-space hanging indent; the
    wrapping never depends on the number, so one rendering serves every position."""
    body = wrap(title, indent="    ")
    return (NUMBER_MARK if number == NUMBER_MARK else number_prefix(int(number))) + body[4:]


@lru_cache(maxsize=65536)
def wrap(text: str, indent: str = "    ", first: str | None = None, width: int = 76) -> str:
    """Text-part filter: wrap at ``width`` with a hanging indent; URLs and long words are never split.
    Cached: the same paper's texts are wrapped once, not once per subscriber."""
    first = indent if first is None else first
    if _SIMPLE_SPACING.search(text) is None and text:
        return _fill_words(text.split(" "), first, indent, width)
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


# What textwrap treats as whitespace, and text that is more than words between single spaces.
_SIMPLE_SPACING = re.compile(r"^ |  | $|[\t\n\x0b\x0c\r]")


def _fill_words(words: list[str], first: str, indent: str, width: int) -> str:
    """textwrap.fill, greedy, for words separated by single spaces (what clean_text leaves), without
    breaking long words or at hyphens: the same lines (tests compare the two) at a tenth of the cost.
    A word longer than a line gets a line of its own."""
    lines: list[str] = []
    line = first
    room = width - len(first)
    used = -1  # characters on the line so far, counting one space before each word
    for word in words:
        if used >= 0 and used + 1 + len(word) > room:
            lines.append(line)
            line, room, used = indent, width - len(indent), -1
        line = line + word if used < 0 else line + " " + word
        used += 1 + len(word)
    lines.append(line)
    return "\n".join(lines)


def text_env(loader: jinja2.BaseLoader) -> jinja2.Environment:
    env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["wrap"] = wrap
    env.filters["numbered"] = _numbered
    return env


CARD_LOOP_OPEN = "{%- for c in s.cards -%}"
CARD_LOOP_CLOSE = "{%- endfor -%}"
_CARD_CALL = "{{- section_cards[loop.index0] -}}"


def split_card_loop(compiled: str) -> tuple[str, str]:
    """Split the compiled HTML template into (page template, card template).

    The body of the one ``{%- for c in s.cards -%} ... {%- endfor -%}`` loop becomes a template of its
    own, wrapped in the same loop tags so Jinja trims exactly the same whitespace; in the page the loop
    becomes ``{{ section_cards[loop.index0] }}``: the section's cards, rendered from that card template
    and cached (a paper's card is the same for every reader who gets it, but for its number). Raises
    RenderError if the template lost its card loop.
    """
    start = compiled.find(CARD_LOOP_OPEN)
    end = compiled.find(CARD_LOOP_CLOSE, start + 1)
    if start < 0 or end < 0 or compiled.count(CARD_LOOP_OPEN) != 1:
        raise RenderError("email template: expected exactly one card loop "
                          f"'{CARD_LOOP_OPEN} ... {CARD_LOOP_CLOSE}'")
    body = compiled[start + len(CARD_LOOP_OPEN): end]
    page = compiled[:start] + _CARD_CALL + compiled[end + len(CARD_LOOP_CLOSE):]
    card = "{% for c in cards -%}" + body + "{%- endfor %}"
    return page, card
