"""Issue -> RenderedEmail (subject, HTML, plain text): MJML layout, inlined CSS, Jinja2 data.

Two paths produce byte-identical emails:

* ``Renderer.render`` (fast): ``digest/templates/email.mjml`` is compiled by MJML and its CSS inlined by premailer
  once, when the Renderer is built; the result (HTML that still holds the Jinja tags) is the per-subscriber
  Jinja template. Per email only Jinja runs, over cards rendered once per paper: a body's first reader
  gets the page rendered with their values around cards each filled by one ``%`` (digest.assemble); a
  body that several readers share (same papers) is kept from its second reader on, only each reader's
  address and links filled in.
* ``Renderer.render_naive``: Jinja fills the MJML source, then MJML, then premailer, for every email. It
  exists to prove the fast path right (tests compare the two) and for the benchmark.

Identity holds because every value reaches the HTML in the form libxml2 (premailer's serialiser) would
write it: text escaped as ``&amp; &lt; &gt;`` and nothing else, attribute values (URLs, anchors, the
document title) made free of quotes and whitespace before they reach a template (digest/email_view.py
prepares every value). Nothing here touches
the network: no web fonts, premailer with ``allow_network=False``.

Templates are package data, read from ``digest/templates/`` (``digest.packaged.templates_dir``), so an
installed wheel has them; pass ``templates_dir`` to use others.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from itertools import chain
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
from jinja2.runtime import new_context
from markupsafe import Markup

from digest.assemble import LESS, MORE, NUMBER, WHY, CardFormats, UnusualCard
from digest.config import Settings
from digest.email_view import (
    CardView,
    EmailView,
    IdentityCache,
    build_view,
    feedback_urls,
    keep_first,
    own_archive,
    personal_values,
    without_summaries,
)
from digest.errors import RenderError
from digest.links import PersonalLinks
from digest.message import MAX_LINE, Base64Body, MimeBody, MimeEmail, Utf8Body, base64_lines
from digest.models import Issue, IssueEntry, IssueSection, RenderedEmail
from digest.packaged import templates_dir
from digest.templating import (
    CARD_LOOP_OPEN,
    LESS_MARK,
    MORE_MARK,
    NUMBER_MARK,
    WHY_MARK,
    compile_mjml,
    html_env,
    inline_css,
    number_prefix,
    split_card_loop,
    text_env,
)
from digest.templating import escape_text as _escape
from digest.templating import wrap as _wrap

__all__ = ["CARD_LOOP_OPEN", "HTML_BUDGET", "TEMPLATES_DIR", "ReferenceRenderer", "Renderer", "compile_mjml",
           "inline_css"]

TEMPLATES_DIR = templates_dir()
# Gmail clips an HTML part above about 102 KB (and hides the unsubscribe link with it); stay clear.
HTML_BUDGET = 100 * 1024
FRAGMENTS = 20_000  # cards kept rendered (each a few KB)
# Numbered cards kept (about 5 KB each): a card for each paper, reason and position soon adds up over a
# 100,000-reader send, and numbering a kept fragment again costs little.
NUMBERED_CARDS = 8_192

_JINJA_COMMENT = re.compile(r"\s*\{#.*?#\}\s*", re.DOTALL)
_MORE_BYTES = MORE_MARK.encode("ascii")
_LESS_BYTES = LESS_MARK.encode("ascii")


class Renderer:
    """Renders issues to emails; build one per process (construction compiles the templates, ~0.2 s).

    ``html_budget`` caps the HTML part in bytes (default HTML_BUDGET). With ``share_bodies`` (default) a
    body is rendered once for all readers of the same papers (the bodies used last are kept, up to
    SHARED_BODY_BYTES) and only the address and links are filled in per reader; the result is the same
    either way.

    Picklable: it pickles as its settings and templates folder and recompiles on arrival, so a process
    pool can receive it.
    """

    def __init__(self, settings: Settings, templates_dir: Path | None = None,
                 html_budget: int = HTML_BUDGET, share_bodies: bool = True) -> None:
        self.settings = settings
        self.templates_dir = Path(templates_dir) if templates_dir is not None else TEMPLATES_DIR
        self.html_budget = html_budget
        self.share_bodies = share_bodies
        mjml_path = self.templates_dir / "email.mjml"
        try:
            source = mjml_path.read_text(encoding="utf-8")
        except OSError as err:
            raise RenderError(f"cannot read template {mjml_path}: {err}") from err
        # Jinja comments document the template; drop them before MJML sees the source (both paths).
        self._mjml_source = _JINJA_COMMENT.sub("", source)
        env = html_env()
        texts = text_env(jinja2.FileSystemLoader(self.templates_dir))
        try:
            self._naive_template = env.from_string(self._mjml_source)
            self.compiled_html = inline_css(compile_mjml(self._mjml_source))
            page, card = split_card_loop(self.compiled_html)
            self._fast_template = env.from_string(page)
            card_template = env.from_string(card)
            self._text_template = texts.get_template("email.txt")
            text_card_template = texts.get_template("email_card.txt")
        except jinja2.TemplateError as err:
            raise RenderError(f"email template failed to compile: {err}") from err

        self._card_template = card_template
        self._page_literals = _literals(self._fast_template)
        self._text_literals = _literals(self._text_template)
        self._text_card_template = text_card_template
        self._numbered: IdentityCache[_CardParts] = IdentityCache(limit=NUMBERED_CARDS)
        self._unnumbered: dict[CardView, _Fragment] = {}
        self._shared = _SharedBodies()
        # Each paper's card as a format, for readers whose bodies are not kept (_mime_direct).
        self._formats = CardFormats(
            self._marked_card, _why_lines,
            {**_PERSONAL_KINDS, _NUMBER_MARK_BYTES: NUMBER, _WHY_HTML: WHY, _MORE_BYTES: MORE, _LESS_BYTES: LESS},
            {**_PERSONAL_KINDS, _NUMBER_MARK_BYTES: NUMBER, _WHY_TEXT: WHY, _MORE_BYTES: MORE, _LESS_BYTES: LESS},
            NUMBER_MARK, WHY_MARK, (MORE_MARK, LESS_MARK))
        self._split_why = self._why_splits()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.settings, self.templates_dir, self.html_budget, self.share_bodies))

    # -- public API ---------------------------------------------------------------------------------

    def render(self, issue: Issue, links: PersonalLinks, *, full_issue_url: str | None = None) -> RenderedEmail:
        """The email for one issue (fast path), as text: what ``mime`` gives, decoded. Raises RenderError
        on a template bug."""
        return self.mime(issue, links, full_issue_url=full_issue_url).rendered()

    def mime(self, issue: Issue, links: PersonalLinks, *, full_issue_url: str | None = None) -> MimeEmail:
        """The email for one issue (fast path), its bodies ready for build_message: only Jinja runs, and
        when another reader already got the same issue body only their personal parts (address, links)
        are new, and only the part of the body from the first of them on is encoded again."""
        if self.share_bodies:
            shared = self._mime_shared(issue, links, full_issue_url)
            if shared is not None:
                return shared
        return self._render(issue, links, full_issue_url, fast=True)

    def render_naive(self, issue: Issue, links: PersonalLinks, *,
                     full_issue_url: str | None = None) -> RenderedEmail:
        """The same email the slow way: Jinja -> MJML -> premailer for this one email."""
        return self._render(issue, links, full_issue_url, fast=False).rendered()

    def mime_naive(self, issue: Issue, links: PersonalLinks, *, full_issue_url: str | None = None) -> MimeEmail:
        return self._render(issue, links, full_issue_url, fast=False)

    def view(self, issue: Issue, links: PersonalLinks, full_issue_url: str | None = None) -> EmailView:
        return build_view(self.settings, issue, links, full_issue_url)

    def reference(self) -> ReferenceRenderer:
        """The plain path over the same templates, as a renderer of its own (for digest.compose.Composer)."""
        return ReferenceRenderer(self)

    # -- internals ----------------------------------------------------------------------------------

    def _card_parts(self, card: CardView) -> _CardParts:
        """One numbered card's HTML and text, in UTF-8. A card is rendered once per paper and link,
        whatever its position and reason (number and "why" line are put in afterwards), and each
        numbered result is kept too: a reader's card costs one lookup."""
        parts: _CardParts | None = self._numbered.get(card)
        if parts is None:
            why = (WHY_MARK if card.why else "") if self._split_why else card.why
            # The card as rendered once for every position (and reason, when it is put in afterwards) is
            # its own key: a frozen value, so every field it shows is in the key, present and future.
            marked = replace(card, number=NUMBER_MARK, why=why)  # type: ignore[arg-type]
            fragment = self._unnumbered.get(marked)
            if fragment is None:
                fragment = _Fragment.cut(self._card_template.render(cards=(marked,)),
                                         self._text_card_template.render(c=marked))
                if len(self._unnumbered) >= FRAGMENTS:
                    self._unnumbered.clear()  # a daemon renders new papers every day: start afresh
                self._unnumbered[marked] = fragment
            parts = fragment.numbered(card.number)
            if why == WHY_MARK:
                html_why, text_why = _why_lines(card.why)
                parts = (parts[0].replace(_WHY_HTML, html_why), parts[1].replace(_WHY_TEXT, text_why))
            self._numbered.put(card, (), parts)
        return parts

    def _why_splits(self) -> bool:
        """Whether the card templates show the reason as the shipped ones do (escaped in the HTML, one
        wrapped "Why:" paragraph in the text), so a card rendered with WHY_MARK can take any reason:
        checked on a probe card, rendered both ways. A template that does otherwise gets each card
        rendered once per reason."""
        probe = CardView(number=7, title="Probe <&> title", url="https://probe.invalid/a?b=1&c=2", authors="A, B",
                         upvotes=3, code_url="https://probe.invalid/code", project_url="", pdf_url="",
                         summary="A summary.", why='matches "probe" <b>&</b> ' + "long words " * 12)
        self._split_why = True
        try:
            split = self._card_parts(probe)
            whole = (self._card_template.render(cards=(probe,)).encode("utf-8"),
                     self._text_card_template.render(c=probe).encode("utf-8"))
        except jinja2.TemplateError as err:
            raise RenderError(f"email card template failed to render: {err}") from err
        finally:
            self._numbered = IdentityCache(limit=NUMBERED_CARDS)
            self._unnumbered.clear()
        return split == whole

    def _html_fast(self, view: EmailView, cards: list[list[_CardParts]] | None = None,
                   context: dict[str, Any] | None = None) -> bytes:
        """The page with a placeholder per section, then the cached cards spliced in, in UTF-8 (the
        40 KB of an email are never encoded as a whole: its cards already are)."""
        cards = self._cards_of(view) if cards is None else cards
        context = _page_context(view) if context is None else context
        return _render_spliced(self._fast_template, context, [[c[0] for c in section] for section in cards],
                               self._page_literals)

    def _text_fast(self, view: EmailView, cards: list[list[_CardParts]] | None = None,
                   context: dict[str, Any] | None = None) -> bytes:
        cards = self._cards_of(view) if cards is None else cards
        context = _page_context(view) if context is None else context
        return _render_spliced(self._text_template, context, [[c[1] for c in section] for section in cards],
                               self._text_literals)

    def _cards_of(self, view: EmailView) -> list[list[_CardParts]]:
        # The numbered-card cache, read inline: a body has a dozen cards and this is its hottest loop.
        numbered, card_parts = self._numbered.entries, self._card_parts
        out = []
        for section in view.sections:
            parts = []
            for card in section.cards:
                hit = numbered.get(id(card))
                parts.append(hit[1] if hit is not None and hit[0] is card else card_parts(card))
            out.append(parts)
        return out

    def _html_naive(self, view: EmailView) -> bytes:
        return inline_css(compile_mjml(self._naive_template.render(view.context()))).encode("utf-8")

    def _text_naive(self, view: EmailView) -> bytes:
        texts = ["".join(self._text_card_template.render(c=c) for c in s.cards) for s in view.sections]
        return self._text_template.render(view.context(), section_texts=texts).encode("utf-8")

    def _mime_shared(self, issue: Issue, links: PersonalLinks, full_issue_url: str | None) -> MimeEmail | None:
        """The email from a body rendered once for everyone who gets the same papers, with this reader's
        address and links put in; None when it would not fit the size budget whole (the full path then
        decides what to cut, exactly as the naive path does)."""
        personal = reader_values(issue, links)
        if not all(personal[len(_PERSONAL):]):
            return None  # a feedback link that cannot be used: its card shows none, the full path says how
        key = content_key(issue, links, full_issue_url, personal)
        body = self._shared.get(key)
        text_values = [v.encode("utf-8") for v in personal]
        # The usual address and links hold nothing to escape: the HTML takes the same bytes.
        joined = b"".join(text_values)
        plain = b"&" not in joined and b"<" not in joined and b">" not in joined
        html_values = text_values if plain else [_escape(v).encode("utf-8") for v in personal]
        if body is None:
            if self._split_why and not self._shared.keep_new(key):
                # A body seen for the first time while readers rarely share bodies (each gets papers of
                # their own): the reader's values go straight in, nothing is cut or kept. A second
                # reader of it has it kept for the rest.
                return self._mime_direct(issue, links, full_issue_url, personal, html_values, text_values)
            body = self._shared_body(issue, links, full_issue_url, personal)
            if body is None:
                return None
            self._shared.put(key, body)
        if body.html.size_with(html_values) > self.html_budget:
            return None
        return MimeEmail(body.subject, body.html.fill(html_values), body.text.fill(text_values))

    def _mime_direct(self, issue: Issue, links: PersonalLinks, full_issue_url: str | None,
                     personal: tuple[str, ...], html_values: list[bytes], text_values: list[bytes],
                     ) -> MimeEmail | None:
        """The email of one reader whose body is not kept: the page rendered with marks for the reader's
        values, its cards each one ``%`` of a format rendered once per paper (digest.assemble), the values
        put in as the pieces are joined; nothing cut, scanned or kept as a whole. None when it would not
        fit the size budget whole."""
        # The page shows the reader's own values (Jinja escapes them as it does every value); a card
        # shows the archive link only for a paper with no link of its own, and has a mark there instead.
        view = build_view(self.settings, issue, links, full_issue_url, personal=personal[:len(_PERSONAL)],  # type: ignore[arg-type]
                          cards=False)
        archive = _PERSONAL[3] if personal[3] else ""
        fallback = archive if own_archive(links, full_issue_url) else (view.more_url or archive)
        try:
            try:
                html_cards, text_cards = self._formats.sections(issue, fallback, html_values, text_values)
            except UnusualCard:
                return None  # the full path renders it (and says what is wrong, if anything is)
            context = _page_context(view)
            html = _render_spliced(self._fast_template, context, html_cards, self._page_literals)
            if len(html) > self.html_budget:
                return None
            text = _render_spliced(self._text_template, context, text_cards, self._text_literals)
        except jinja2.TemplateError as err:
            raise RenderError(f"email template failed to render: {err}") from err
        return MimeEmail(view.subject, Utf8Body(html), Utf8Body(text))

    def _marked_card(self, card: CardView) -> tuple[bytes, bytes]:
        return (self._card_template.render(cards=(card,)).encode("utf-8"),
                self._text_card_template.render(c=card).encode("utf-8"))

    def _shared_body(self, issue: Issue, links: PersonalLinks, full_issue_url: str | None,
                     personal: tuple[str, ...]) -> _SharedBody | None:
        # The personal values are markers that no cleaned value can contain (or empty, as the reader's
        # are: the key says which), and the body is cut there.
        anchors = _anchors(issue)
        marks = tuple(mark if value else "" for mark, value in zip(_PERSONAL, personal, strict=False))
        view = build_view(self.settings, issue, links, full_issue_url, personal=marks,  # type: ignore[arg-type]
                          feedback=_feedback_marks(issue) if links.feedback is not None else None)
        try:
            cards, context = self._cards_of(view), _page_context(view)
            html, text = self._html_fast(view, cards, context), self._text_fast(view, cards, context)
        except jinja2.TemplateError as err:
            raise RenderError(f"email template failed to render: {err}") from err
        entries = sum(len(s.entries) for s in issue.sections)
        if any(data.count(mark) > entries for data in (html, text) for mark in (_MORE_BYTES, _LESS_BYTES)):
            return None  # a card template that shows a feedback link more than once: the full path's
        return _SharedBody(anchors, view.subject, _Cut.of(html), _Cut.of(text))

    def _render(self, issue: Issue, links: PersonalLinks, full_issue_url: str | None, fast: bool) -> MimeEmail:
        pairs = feedback_urls(issue, links)
        if fast and pairs and all(a and b for a, b in pairs):
            # Cards with marks for the feedback links (shared by every reader), the links put in after.
            # (A link that cannot be used shows as none, its card without the line: no mark for it.)
            view = build_view(self.settings, issue, links, full_issue_url, feedback=_feedback_marks(issue))
            html_values = [(_escape(a).encode("utf-8"), _escape(b).encode("utf-8")) for a, b in pairs]
            text_values = [(a.encode("utf-8"), b.encode("utf-8")) for a, b in pairs]
            try:
                html, dropped = self._fit(view, lambda v: _fill_feedback(self._html_fast(v), html_values))
                text = _fill_feedback(self._text_fast(_text_view(view, dropped)), text_values)
            except jinja2.TemplateError as err:
                raise RenderError(f"email template failed to render: {err}") from err
            except _UnusualFeedback:
                pass  # a card shows a link more than once: cards rendered with this reader's links, below
            else:
                return MimeEmail(view.subject, Utf8Body(html), Utf8Body(text))
        view = build_view(self.settings, issue, links, full_issue_url, feedback=pairs)
        try:
            html, dropped = self._fit(view, self._html_fast if fast else self._html_naive)
            text_view = _text_view(view, dropped)
            text = self._text_fast(text_view) if fast else self._text_naive(text_view)
        except jinja2.TemplateError as err:
            raise RenderError(f"email template failed to render: {err}") from err
        return MimeEmail(view.subject, Utf8Body(html), Utf8Body(text))

    def _fit(self, view: EmailView, to_html: Callable[[EmailView], bytes]) -> tuple[bytes, set[int]]:
        """Render within the size budget: first drop the longest summaries, then trailing cards. Also
        the numbers of the cards whose summaries were dropped."""
        body = to_html(view)
        if len(body) <= self.html_budget:
            return body, set()
        excess = len(body) - self.html_budget
        cards = sorted((c for s in view.sections for c in s.cards), key=lambda c: -len(c.summary.encode()))
        dropped: set[int] = set()
        saved = 0
        for card in cards:
            if saved > excess or not card.summary:
                break
            dropped.add(card.number)
            saved += len(card.summary.encode()) + 40
        body = to_html(keep_first(without_summaries(view, dropped), view.count))
        keep = view.count
        while len(body) > self.html_budget and keep > 0:
            size = len(body)
            per_card = max(1, size // max(1, keep + 4))
            keep = max(0, min(keep - 1, keep - (size - self.html_budget) // per_card))
            body = to_html(keep_first(without_summaries(view, dropped), keep))
        return body, dropped


def _text_view(view: EmailView, dropped: set[int]) -> EmailView:
    """The text part's view: every card (it has no size limit), but without the summaries the HTML had
    to drop, so both parts tell the same (a text part far richer than its HTML reads as spam to filters:
    SpamAssassin's MPART_ALT_DIFF_COUNT)."""
    return without_summaries(view, dropped) if dropped else view


class ReferenceRenderer:
    """The plain reference path (Jinja -> MJML -> premailer for every email): same ``mime`` interface as
    Renderer, same bytes, many times slower. Inject it into a Composer to check or time the fast path."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def mime(self, issue: Issue, links: PersonalLinks, *, full_issue_url: str | None = None) -> MimeEmail:
        return self.renderer.mime_naive(issue, links, full_issue_url=full_issue_url)


def reader_values(issue: Issue, links: PersonalLinks) -> tuple[str, ...]:
    """What a shared body is filled in with for one reader, as the email shows it: the address, the
    preferences, unsubscribe and archive links (personal_values), then each card's (more, less) links."""
    personal = personal_values(issue, links)
    pairs = feedback_urls(issue, links)
    return (*personal, *chain.from_iterable(pairs)) if pairs else personal


def _feedback_marks(issue: Issue) -> list[tuple[str, str]]:
    return [(MORE_MARK, LESS_MARK)] * sum(len(s.entries) for s in issue.sections)


class _UnusualFeedback(RenderError):
    """A card template that shows a feedback link more than once (the marks cannot say whose it is)."""


def _fill_feedback(data: bytes, values: list[tuple[bytes, bytes]]) -> bytes:
    """``data`` with the k-th MORE_MARK and LESS_MARK replaced by the k-th card's links (a trimmed body
    holds the first cards' marks only)."""
    for side, mark in ((0, _MORE_BYTES), (1, _LESS_BYTES)):
        pieces = data.split(mark)
        if len(pieces) - 1 > len(values):
            raise _UnusualFeedback("email template: more feedback links than cards")
        out = [pieces[0]]
        for pair, piece in zip(values, pieces[1:], strict=False):
            out += (pair[side], piece)
        data = b"".join(out)
    return data


def _page_context(view: EmailView) -> dict[str, Any]:
    """What the fast page templates see: the view, and a placeholder for each section's cards."""
    context = view.context()
    context["section_cards"] = context["section_texts"] = [_SLOT] * len(view.sections)
    return context


def _literals(template: jinja2.Template) -> dict[str, bytes]:
    """The template's constant strings (its markup, mostly), in UTF-8: Jinja yields the same string
    objects on every render, and the page's 15 KB of markup need not be encoded again each time."""
    found: dict[str, bytes] = {}
    codes = [template.root_render_func.__code__]
    while codes:
        for const in codes.pop().co_consts:
            if isinstance(const, str) and _SLOT not in const:
                found[const] = const.encode("utf-8")
            elif isinstance(const, CodeType):
                codes.append(const)
    return found


def _render_spliced(template: jinja2.Template, context: dict[str, Any], sections: list[list[bytes]],
                    literals: dict[str, bytes]) -> bytes:
    """The page in UTF-8, each section's cards (UTF-8) where the page has its placeholder.

    The page is rendered as ``template.render`` would, but without the environment's globals (``range``,
    ``dict`` ...: the email templates use none, and StrictUndefined would say so; a context made with
    them lists them on every render, which costs more than rendering a small template), and each piece
    Jinja yields is encoded on its own (``literals`` has the template's own strings encoded already):
    the page is never one string (one character beyond U+FFFF would make all of it four bytes a
    character) and never split again.
    """
    ctx = new_context(template.environment, template.name, template.blocks, context, shared=True)
    out: list[bytes] = []
    filled = 0
    known = literals.get
    for piece in template.root_render_func(ctx):
        encoded = known(piece)
        if encoded is not None:
            out.append(encoded)
            continue
        if _SLOT not in piece:
            out.append(piece.encode("utf-8"))
            continue
        parts = piece.split(_SLOT)  # the placeholder, alone or (another template) with other text
        out.append(parts[0].encode("utf-8"))
        for part in parts[1:]:
            if filled < len(sections):
                out += sections[filled]
            filled += 1
            out.append(part.encode("utf-8"))
    if filled != len(sections):
        raise RenderError("email template: a section placeholder went missing or was duplicated")
    return b"".join(out)


# (HTML, text) of one numbered card, in UTF-8.
_CardParts = tuple[bytes, bytes]
_NUMBER_MARK_BYTES = NUMBER_MARK.encode("ascii")
# The "why" line of a card rendered with WHY_MARK: in the HTML the mark alone, in the text the wrapped line.
_WHY_HTML = WHY_MARK.encode("ascii")
_WHY_TEXT = _wrap("Why: " + WHY_MARK).encode("ascii")


def _why_lines(why: str) -> tuple[bytes, bytes]:
    """A card's reason as the shipped templates show it, put where WHY_MARK stood: escaped in the HTML,
    one wrapped "Why:" paragraph in the text (Renderer._why_splits checks a template does so)."""
    return _escape(why).encode("utf-8"), _wrap("Why: " + why).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Fragment:
    """A card rendered with NUMBER_MARK for its number, in UTF-8, cut there; ``numbered`` puts a number in."""

    html: tuple[bytes, ...]
    text: tuple[bytes, ...]

    @classmethod
    def cut(cls, html: str, text: str) -> _Fragment:
        return cls(tuple(html.encode("utf-8").split(_NUMBER_MARK_BYTES)),
                   tuple(text.encode("utf-8").split(_NUMBER_MARK_BYTES)))

    def numbered(self, number: int) -> _CardParts:
        """The card at position ``number``: in the HTML as ``{{ c.number }}`` shows it, in the text part
        as the ``numbered`` filter does."""
        return (b"%d" % number).join(self.html), number_prefix(number).encode("ascii").join(self.text)


# Marks where a section's cards go in the rendered page. No value can contain it: every text is cleaned
# of control characters and every URL percent-encoded before it reaches a template.
_SLOT = Markup("\x00")


# Stand-ins for the reader's address and links (personal_values order) in a body shared by many readers.
_PERSONAL = ("\x01", "\x02", "\x03", "\x04")
_PERSONAL_BYTES = tuple(m.encode("ascii") for m in _PERSONAL)
_PERSONAL_KINDS = {mark: slot for slot, mark in enumerate(_PERSONAL_BYTES)}
# Bodies kept for readers of the same papers, by the memory they hold (about 75 KB each, so some 1,100):
# readers of the same papers come far apart in a large send, and a body built again costs 250 µs.
SHARED_BODY_BYTES = 80 * 1024 * 1024
# Bodies seen once and not kept, remembered by hash (about 100 bytes each): a body is kept from its
# second reader on, and readers of the same papers can come a whole large send apart.
SEEN_KEYS = 200_000
# A body costs about 80 µs more to keep than to put together for one reader, and saves about 150 µs
# for each later reader of it: kept from its first reader when a third of readers lately shared theirs
# (over about the last SHARE_WINDOW emails; the first few dozen of a run always keep theirs).
KEEP_SHARE = 0.3
SHARE_WINDOW = 1024


def _find_all(data: bytes, marker: bytes) -> list[int]:
    found = []
    at = data.find(marker)
    while at >= 0:
        found.append(at)
        at = data.find(marker, at + 1)
    return found


# What a body shared by many readers depends on. The key is generated from the fields of the values an
# email is made of, so a field added to any of them is in the key unless it is named below; the names
# below are checked by tests/unit/test_render_keys.py (changing a field it leaves out changes no view).
#
# Each reader's own values, filled into the shared body (personal_values, feedback_urls): in the key by
# whether they are empty only (the field, and each value as the body shows it).
PERSONAL_FIELDS: dict[type, frozenset[str]] = {
    Issue: frozenset({"subscriber"}),  # its address (nothing else of the reader is shown)
    PersonalLinks: frozenset({"preferences", "unsubscribe", "archive", "feedback"}),
}
# Shown nowhere in the body: left out of the key.
UNSHOWN_FIELDS: dict[type, frozenset[str]] = {
    Issue: frozenset({"id", "created_at"}),
    IssueEntry: frozenset({"score"}),
    PersonalLinks: frozenset({"unsubscribe_mailto"}),  # a header's, not the body's
}
# Fields the key walks into: the sections, their entries, the papers (by identity: see _anchors).
_NESTED: dict[type, frozenset[str]] = {
    Issue: frozenset({"sections", "top_pick"}),
    IssueSection: frozenset({"entries"}),
    IssueEntry: frozenset({"paper"}),
}


def keyed_fields(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that go into a shared body's key as they are: all but those named above."""
    none: frozenset[str] = frozenset()
    left_out = PERSONAL_FIELDS.get(cls, none) | UNSHOWN_FIELDS.get(cls, none) | _NESTED.get(cls, none)
    return tuple(f.name for f in fields(cls) if f.name not in left_out)


def _compile_key() -> Callable[[Issue, PersonalLinks, str | None, tuple[str, ...]], tuple[Any, ...]]:
    """content_key, its body written out from keyed_fields (as dataclasses writes an ``__init__``): plain
    attribute reads, as fast as a key written by hand (it is built for every email), but generated, so
    no field can be left out by mistake."""

    def reads(var: str, cls: type) -> str:
        return "".join(f"{var}.{name}, " for name in keyed_fields(cls))

    def present(var: str, cls: type) -> str:
        return "".join(f"bool({var}.{name}), " for name in sorted(PERSONAL_FIELDS[cls]))

    source = f"""
def content_key(issue, links, full_issue_url, personal):
    key = [{reads("issue", Issue)}{reads("links", PersonalLinks)}{present("links", PersonalLinks)}*map(bool, personal),
           True if own_archive(links, full_issue_url) else full_issue_url]
    top = issue.top_pick
    key += (id(top.paper), {reads("top", IssueEntry)}) if top is not None else (None,)
    for s in issue.sections:
        key += ({reads("s", IssueSection)}len(s.entries))
        for e in s.entries:
            key += (id(e.paper), {reads("e", IssueEntry)})
    return tuple(key)
"""
    namespace: dict[str, Any] = {"own_archive": own_archive}
    exec(source, namespace)
    key: Callable[[Issue, PersonalLinks, str | None, tuple[str, ...]], tuple[Any, ...]] = namespace["content_key"]
    key.__doc__ = """The key of the body ``issue`` shares with other readers: every keyed field of the issue,
    its sections, entries and links, papers by identity (the cache entry keeps the papers alive, see
    _anchors, so no other object can take their ids), whether each personal field of the links and each
    ``personal`` value (as the body shows them) is empty, and the "full issue" link unless it is the
    reader's own archive. One flat tuple (each section's entry count keeps it unambiguous)."""
    return key


content_key = _compile_key()


def _anchors(issue: Issue) -> tuple[object, ...]:
    """The papers whose ids content_key used."""
    papers: list[object] = [e.paper for s in issue.sections for e in s.entries]
    if issue.top_pick is not None:
        papers.append(issue.top_pick.paper)
    return tuple(papers)


@dataclass(frozen=True, slots=True)
class _Cut:
    """One body (UTF-8) shared by many readers, cut where each reader's values go.

    ``pieces`` lie between the values and ``slots`` say which value follows each piece. When the text
    around the values already forces base64 (not ASCII, or a line too long for 7bit), the leading whole
    57-byte blocks are kept base64-encoded in ``lead`` and left out of ``pieces[0]``: each reader's
    message then encodes only the rest, about the last kilobyte.
    """

    lead: bytes
    pieces: tuple[bytes, ...]
    slots: tuple[int, ...]
    size: int  # bytes of the whole body without the values
    base64: bool

    @classmethod
    def of(cls, data: bytes) -> _Cut:
        # The personal values first, then each card's (more, less) feedback links in reading order.
        found = [(at, slot) for slot, marker in enumerate(_PERSONAL_BYTES) for at in _find_all(data, marker)]
        for side, marker in ((0, _MORE_BYTES), (1, _LESS_BYTES)):
            found += [(at, len(_PERSONAL) + 2 * k + side) for k, at in enumerate(_find_all(data, marker))]
        found.sort()
        ends = [at for at, _ in found] + [len(data)]
        starts = [0] + [at + 1 for at, _ in found]
        # Not ASCII, or a line too long between the values: base64 whatever the values are. (A CR would
        # be rewritten before encoding; the templates never leave one.)
        base64 = b"\r" not in data and (not data.isascii() or any(
            len(line) > MAX_LINE for a, b in zip(starts, ends, strict=True) for line in data[a:b].split(b"\n")))
        keep = max(0, ends[0] - 1) // 57 * 57 if base64 else 0  # at least one byte stays in ``pieces[0]``
        lead = base64_lines(memoryview(data)[:keep]) if keep else b""
        starts[0] = keep
        pieces = tuple(data[a:b] for a, b in zip(starts, ends, strict=True))
        return cls(lead, pieces, tuple(slot for _, slot in found), len(data) - len(found), base64)

    def size_with(self, values: list[bytes]) -> int:
        return self.size + sum([len(values[slot]) for slot in self.slots])

    def fill(self, values: list[bytes]) -> MimeBody:
        pieces = self.pieces
        out = [pieces[0]]
        for k, slot in enumerate(self.slots, 1):
            out += (values[slot], pieces[k])
        rest = b"".join(out)
        return Base64Body(self.lead, rest) if self.base64 else Utf8Body(rest)

    @property
    def memory(self) -> int:
        return len(self.lead) + sum(map(len, self.pieces)) + 64 * len(self.pieces)


@dataclass(frozen=True, slots=True)
class _SharedBody:
    anchors: tuple[object, ...]
    subject: str
    html: _Cut
    text: _Cut

    @property
    def memory(self) -> int:
        return self.html.memory + self.text.memory + 1024


class _SharedBodies:
    """The issue bodies rendered last, up to ``limit`` bytes of them (least recently used goes first).
    Safe to share between threads."""

    def __init__(self, limit: int = SHARED_BODY_BYTES, keep_share: float = KEEP_SHARE,
                 warm_up: int = SHARE_WINDOW // 16) -> None:
        self._keep_share, self._warm_up = keep_share, warm_up
        self._items: OrderedDict[Any, _SharedBody] = OrderedDict()
        self._limit = limit
        self._bytes = 0
        self._lock = threading.Lock()
        self._seen: OrderedDict[int, None] = OrderedDict()
        # Of the last bodies asked for (decayed), how many had been asked for before: the share of
        # readers whose body another reader already had.
        self._asked = self._repeats = 0.0

    def get(self, key: Any) -> _SharedBody | None:
        # No lock: each OrderedDict call is atomic, and a body evicted in between is simply not moved.
        self._asked += 1
        body = self._items.get(key)
        if body is not None:
            self._repeats += 1
            try:  # noqa: SIM105 - contextlib.suppress would cost a context manager per email
                self._items.move_to_end(key)
            except KeyError:
                pass
        elif self._asked >= SHARE_WINDOW:
            self._asked, self._repeats = self._asked / 2, self._repeats / 2
        return body

    def keep_new(self, key: Any) -> bool:
        """Whether to keep the body of ``key``, not kept yet: when it was asked for before, or when
        readers have lately been sharing bodies (at least KEEP_SHARE of them got one another had: then
        a body kept from its first reader saves more than it costs). Keys seen once are remembered by
        hash, the last SEEN_KEYS of them; a collision only has a body kept that need not be."""
        digest = hash(key)
        if digest in self._seen:
            self._repeats += 1
            return True
        with self._lock:
            self._seen[digest] = None
            if len(self._seen) > SEEN_KEYS:
                self._seen.popitem(last=False)
        return self._asked < self._warm_up or self._repeats >= self._keep_share * self._asked

    def put(self, key: Any, body: _SharedBody) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.memory
            self._items[key] = body
            self._bytes += body.memory
            while self._bytes > self._limit and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1].memory
