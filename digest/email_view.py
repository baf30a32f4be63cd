"""What an email shows, cleaned: readable text, safe URLs, summaries, and the view model the templates read.

Everything here is pure and shared by both rendering paths, so both see exactly the same values. Text is
made safe for libxml2's round trip: control characters dropped, whitespace runs collapsed, entities
decoded once, LaTeX made readable; URLs are http(s) or mailto only, percent-encoded where an attribute
value could otherwise be rewritten.
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date
from functools import lru_cache
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit

from digest.config import Settings
from digest.latex import to_unicode
from digest.links import PersonalLinks
from digest.models import OTHER_SECTION, Issue, Paper

__all__ = [
    "CardView",
    "EmailView",
    "IdentityCache",
    "build_view",
    "clean_text",
    "feedback_urls",
    "issue_subject",
    "keep_first",
    "own_archive",
    "paper_view",
    "personal_values",
    "safe_url",
    "summarize",
    "without_summaries",
]

SUMMARY_CHARS = 320
MAX_AUTHORS = 3
SUBJECT_CHARS = 120
PREHEADER_CHARS = 150

_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_SPACE = re.compile(r"\s+")
_NEEDS_CLEANING = re.compile(r"  |[&$\\]")  # in printable ASCII: runs of spaces, entities, LaTeX
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"“$\\])")
_URL_SAFE = "/:?#@!$&'()*+,;=%~-._"
_PLAIN_URL = re.compile(r"(?:https?|mailto):[A-Za-z0-9/:?#@!$&'()*+,;=%~._-]*\Z", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------
# Text and URL clean-up: pure functions shared by both paths, so both see the same values.


def clean_text(value: str | None) -> str:
    """Source text -> one readable line: entities decoded, LaTeX made Unicode, controls and runs of
    whitespace (including no-break spaces and line separators) turned into single spaces."""
    if not value:
        return ""
    if value.isascii() and value.isprintable() and _NEEDS_CLEANING.search(value) is None:
        return value.strip()  # the common case, and what the full clean-up below would return for it
    return _clean_cached(value)


@lru_cache(maxsize=65536)
def _clean_cached(value: str) -> str:
    text = _ENTITY.sub(lambda m: html_lib.unescape(m.group(0)), value) if "&" in value else value
    text = _DROPPED.sub("", text)
    text = _SPACE.sub(" ", text).strip()
    return to_unicode(text)


def _dropped_characters() -> re.Pattern[str]:
    """Controls and surrogates have no business in mail (and BOM-like non-characters neither); the
    whitespace controls among them are not dropped but collapse to spaces with the rest."""
    # Unicode fixes the controls (Cc) at U+0000-U+001F and U+007F-U+009F, the surrogates (Cs) at
    # U+D800-U+DFFF; test_email_view checks the class against unicodedata over the whole BMP.
    dropped = [chr(c) for c in range(0xA0) if unicodedata.category(chr(c)) == "Cc" and not chr(c).isspace()]
    return re.compile("[" + "".join(re.escape(ch) for ch in dropped) + "\ud800-\udfff\ufeff\ufffe\uffff]")


_DROPPED = _dropped_characters()


def safe_url(url: str | None) -> str:
    """An http(s) or mailto URL made safe for an href: other schemes (javascript:, data:) give "", and
    spaces, quotes, angle brackets, braces and non-ASCII are percent-encoded."""
    if not url:
        return ""
    if _PLAIN_URL.match(url):
        return url  # nothing to encode (each reader's signed links take this way: no cache to fill)
    return _safe_url(url)


@lru_cache(maxsize=65536)
def _safe_url(url: str) -> str:
    url = _SPACE.sub("", url.strip())
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    if scheme not in ("http", "https", "mailto"):
        return ""
    # A lone surrogate (JSON can carry one) has no UTF-8 form: dropped, as clean_text drops it from text.
    return quote(url, safe=_URL_SAFE, errors="ignore")


def _attr_text(text: str) -> str:
    """Text bound for an attribute (the document title): no quotes, which libxml2 rewrites."""
    return text.replace('"', "'")


def summarize(paper: Paper, limit: int = SUMMARY_CHARS) -> str:
    """Two or three lines about the paper: HF's ai_summary when present, else the abstract's first
    sentences, cut at a word (never inside a formula) with an ellipsis past ``limit`` characters."""
    summary = clean_text(paper.ai_summary)
    if not summary:
        abstract = clean_text(paper.abstract)
        sentences = _SENTENCE_END.split(abstract)
        summary = ""
        for sentence in sentences:
            candidate = f"{summary} {sentence}".strip()
            if summary and len(candidate) > limit:
                break
            summary = candidate
            if len(summary) >= limit * 0.6:
                break
    return _shorten(summary, limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    cut = cut if cut > limit // 2 else limit
    head = text[:cut]
    # An odd number of unescaped $ means the cut fell inside a formula left as LaTeX: cut before it.
    dollars = [m.start() for m in re.finditer(r"(?<!\\)\$", head)]
    if len(dollars) % 2:
        head = head[: dollars[-1]]
    return head.rstrip(" ,;:-") + "…"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------------
# View model: what the templates see. Plain values, already cleaned.


@dataclass(frozen=True, slots=True)
class PaperView:
    """The per-paper texts, computed once per paper (cached) and shared by every subscriber."""

    title: str
    url: str
    authors: str
    upvotes: int | None
    code_url: str
    project_url: str
    pdf_url: str
    summary: str


@dataclass(frozen=True, slots=True)
class LinkView:
    """A link under a card; its text names the paper (``PDF of paper 3``), so it makes sense alone, as a
    screen reader's list of links reads it. The number is the card's, put in when the card is numbered."""

    label: str
    url: str
    number: int | str


@dataclass(frozen=True, slots=True)
class CardView(PaperView):
    """One paper as a card of one issue: its texts (the card's ``url`` falls back to the "full issue"
    link when the paper has none), its number in the issue and why this reader got it."""

    number: int
    why: str
    # The reader's "More like this" / "Less like this" links ("" on public pages): per reader, so the
    # fast path renders a card with marks here and puts each reader's links in afterwards.
    more_url: str = ""
    less_url: str = ""

    @property
    def links(self) -> tuple[LinkView, ...]:
        pairs = (("Code for", self.code_url), ("Project page of", self.project_url), ("PDF of", self.pdf_url))
        return tuple(LinkView(label, url, self.number) for label, url in pairs if url)

    @property
    def has_meta(self) -> bool:
        return self.upvotes is not None or bool(self.code_url or self.project_url or self.pdf_url)


@dataclass(frozen=True, slots=True)
class SectionView:
    anchor: str
    label: str
    count: int
    cards: tuple[CardView, ...]


@dataclass(frozen=True, slots=True)
class TocView:
    """One section in the header's "In this issue" line: its label and paper count, as text. (Not a
    link: local anchors do nothing in Gmail for iOS, Outlook for iOS and Android, Yahoo's and Samsung's
    apps, and the archive's copy is one more click away than scrolling.)"""

    label: str
    count: int


@dataclass(frozen=True, slots=True)
class TopView:
    """The top pick, shown once: its title and link up top, and where its card is (``where``)."""

    title: str
    url: str
    number: int
    where: str


@dataclass(frozen=True, slots=True)
class LinksView:
    preferences: str
    unsubscribe: str
    archive: str


@dataclass(frozen=True, slots=True)
class EmailView:
    """Everything one email shows; ``sections`` may be trimmed to fit the size budget, ``toc`` not."""

    site_title: str
    doc_title: str
    subject: str
    preheader: str
    date_long: str
    count: int
    count_line: str
    top: TopView | None
    toc: tuple[TocView, ...]
    sections: tuple[SectionView, ...]
    hidden_count: int
    hidden_line: str
    more_url: str
    recipient: str
    postal: str
    links: LinksView

    def context(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


K = TypeVar("K")
P = ParamSpec("P")
V = TypeVar("V")


class IdentityCache(Generic[V]):
    """A bounded cache keyed by object identity (plus plain values), for the per-email hot path.

    Hashing a frozen Paper or card hashes every field on every lookup, which costs more than the
    work saved; ``id()`` is free. Each entry keeps its object alive and is checked with ``is``, so a
    recycled id can never return another object's value.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._data: dict[Any, tuple[object, V]] = {}
        self._limit = limit

    @property
    def entries(self) -> dict[Any, tuple[object, V]]:
        """The store itself, for a hot loop that inlines ``get``: ``entries.get(id(obj))`` gives
        ``(obj, value)`` for an entry made without ``key``; check the object with ``is``."""
        return self._data

    def get(self, obj: object, key: tuple[Any, ...] = ()) -> V | None:
        hit = self._data.get((id(obj), *key) if key else id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def put(self, obj: object, key: tuple[Any, ...], value: V) -> V:
        # Clearing (rather than evicting one by one) keeps a lookup at one dict access; it happens at most
        # once per 50,000 distinct cards, and is safe under threads (a racing reader just misses).
        if len(self._data) >= self._limit:
            self._data.clear()
        self._data[(id(obj), *key) if key else id(obj)] = (obj, value)
        return value

    def memo(self, make: Callable[Concatenate[K, P], V]) -> Callable[Concatenate[K, P], V]:
        """``make`` kept in this cache: keyed by its first argument's identity and the other arguments
        as they are (positional only), so whatever a call passes is in its key."""

        def cached(obj: K, /, *args: P.args, **kwargs: P.kwargs) -> V:
            if kwargs:
                raise TypeError(f"{make.__name__}: positional arguments only (they are its cache key)")
            hit = self._data.get((id(obj), *args) if args else id(obj))
            if hit is not None and hit[0] is obj:
                return hit[1]
            return self.put(obj, args, make(obj, *args, **kwargs))

        return cached


_CARDS: IdentityCache[CardView] = IdentityCache()


_PAPER_VIEWS: IdentityCache[PaperView] = IdentityCache(limit=8192)


def paper_view(paper: Paper) -> PaperView:
    """The cleaned, display-ready texts of one paper (cached: papers repeat across subscribers). Looked
    up by identity first: hashing a Paper hashes its every field, authors and topics included."""
    view: PaperView | None = _PAPER_VIEWS.get(paper)
    return view if view is not None else _PAPER_VIEWS.put(paper, (), _paper_view(paper))


@lru_cache(maxsize=8192)
def _paper_view(paper: Paper) -> PaperView:
    authors = [clean_text(a) for a in paper.authors[:MAX_AUTHORS + 1]]
    authors = [a for a in authors if a]
    shown = ", ".join(authors[:MAX_AUTHORS])
    if len(paper.authors) > MAX_AUTHORS:
        shown += " et al."
    url = safe_url(paper.link) or safe_url(paper.pdf_url) or safe_url(paper.project_url)
    return PaperView(
        title=clean_text(paper.title) or "(untitled)",
        url=url,
        authors=shown,
        upvotes=paper.upvotes or None,  # 0 upvotes says nothing worth a line
        code_url=safe_url(paper.code_url),
        project_url=safe_url(paper.project_url),
        pdf_url=safe_url(paper.pdf_url),
        summary=summarize(paper),
    )


_PAPER_FIELDS = tuple(f.name for f in fields(PaperView))


def _make_card(paper: Paper, reason: str, number: int, fallback_url: str, feedback: tuple[str, str]) -> CardView:
    p = paper_view(paper)
    card = CardView(**{name: getattr(p, name) for name in _PAPER_FIELDS}, number=number, why=clean_text(reason),
                    more_url=feedback[0], less_url=feedback[1])
    # The card shows the fallback link when the paper has no link of its own: a body shared by many
    # readers has a marker there (and for the feedback links), so its cards are shared as well.
    return card if card.url else replace(card, url=fallback_url)


# A card is the same for every reader who gets the same paper with the same arguments: kept by the
# paper's identity and the rest of the call exactly as made, so an argument added later is in the key.
_card = _CARDS.memo(_make_card)


_NO_FEEDBACK = ("", "")


def plain_card(paper: Paper, fallback_url: str, feedback: tuple[str, str]) -> CardView:
    """``paper``'s card with no number and no reason (kept: see _card)."""
    return _card(paper, "", 0, fallback_url, feedback)


@lru_cache(maxsize=4096)
def _anchor(topic: str, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", topic.lower()).strip("-")
    return f"s{index}-{slug}" if slug else f"s{index}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@lru_cache(maxsize=64)
def long_date(day: date) -> str:
    return f"{day:%A}, {day.day} {day:%B %Y}"


@lru_cache(maxsize=64)
def short_date(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def subject_line(site_title: str, day: date, count: int, top_title: str | None) -> str:
    """``Paper Digest · 27 Nov 2026 · 12 papers: <top pick>``, one line, at most SUBJECT_CHARS."""
    head = f"{site_title} · {short_date(day)} · "
    if count == 0:
        return _truncate(head + "no new papers", SUBJECT_CHARS)
    line = head + _plural(count, "paper")
    if top_title:
        line += f": {top_title}"
    return _truncate(line, SUBJECT_CHARS)


def issue_subject(settings: Settings, issue: Issue) -> str:
    """The subject line the issue's email carries (what build_view puts in ``subject``)."""
    top = paper_view(issue.top_pick.paper).title if issue.top_pick is not None else None
    return subject_line(clean_text(settings.site.title) or "Paper Digest", issue.date, issue.count, top)


def build_view(settings: Settings, issue: Issue, links: PersonalLinks, full_issue_url: str | None,
               personal: tuple[str, str, str, str] | None = None,
               feedback: Sequence[tuple[str, str]] | None = None, cards: bool = True) -> EmailView:
    """The complete (untrimmed) view of one issue for one subscriber.

    ``personal`` stands in for the reader's own values (address, then the preferences, unsubscribe and
    archive links, already cleaned) wherever the view shows them, the "full issue" link included when it
    is the archive link: a body rendered this way serves every reader of the same papers. ``feedback``
    holds each card's (more, less) link in reading order (feedback_urls), or marks standing in for them;
    None shows none. Without ``cards`` the sections hold none (their counts stay): the page around
    the cards, for a renderer that puts in cards of its own (digest.assemble).
    """
    site_title = clean_text(settings.site.title) or "Paper Digest"
    if personal is None:
        personal = personal_values(issue, links)
    archive = personal[3]
    more_url = archive if own_archive(links, full_issue_url) else (safe_url(full_issue_url) or archive)
    number = 0
    sections: list[SectionView] = []
    top: TopView | None = None
    others = 0
    top_id = issue.top_pick.paper.id if issue.top_pick is not None else None
    for index, section in enumerate(s for s in issue.sections if s.entries):
        shown: list[CardView] = []
        label = clean_text(section.label) or clean_text(section.topic) or "Papers"
        for entry in section.entries:
            number += 1
            if cards:
                shown.append(_card(entry.paper, entry.reason, number, more_url,
                                   feedback[number - 1] if feedback else _NO_FEEDBACK))
            if top is None and entry.paper.id == top_id:
                title, url = (shown[-1].title, shown[-1].url) if cards else _title_and_url(entry.paper, more_url)
                top = TopView(title, url, number, f"No. {number} below, in {label}")
        if section.topic == OTHER_SECTION:
            others += len(section.entries)
        sections.append(SectionView(_anchor(section.topic, index + 1), label, len(section.entries), tuple(shown)))
    count = number
    if top is None and issue.top_pick is not None:  # a top pick outside the sections: shown up top only
        card = _card(issue.top_pick.paper, issue.top_pick.reason, 0, more_url, _NO_FEEDBACK)
        top = TopView(card.title, card.url, 0, "")
    toc = tuple(TocView(s.label, s.count) for s in sections)
    bits = [f"Top pick: {top.title}"] if top else []
    bits.append(", ".join(f"{s.label} ({s.count})" for s in sections) or "No new papers this time")
    return EmailView(
        site_title=site_title,
        doc_title=_attr_text(f"{site_title} · {short_date(issue.date)}"),
        subject=issue_subject(settings, issue),
        preheader=_truncate(" — ".join(bits), PREHEADER_CHARS),
        date_long=long_date(issue.date),
        count=count,
        count_line=count_line(count, len(sections) - (1 if others else 0), others),
        top=top,
        toc=toc,
        sections=tuple(sections),
        hidden_count=0,
        hidden_line="",
        more_url=more_url,
        recipient=personal[0],
        postal=clean_text(settings.site.postal_address),
        links=LinksView(personal[1], personal[2], archive),
    )


def _title_and_url(paper: Paper, fallback_url: str) -> tuple[str, str]:
    """A card's title and link (the fallback when the paper has none of its own), without the card."""
    p = paper_view(paper)
    return p.title, p.url or fallback_url


def count_line(count: int, topics: int, others: int) -> str:
    """``12 papers picked for you in 2 topics``; papers of no followed topic are not a topic:
    ``12 papers picked for you: 9 in 2 topics, 3 other papers``."""
    if not count:
        return "No new papers today"
    head = f"{_plural(count, 'paper')} picked for you"
    if not topics:
        return head
    if not others:
        return f"{head} in {_plural(topics, 'topic')}"
    return f"{head}: {count - others} in {_plural(topics, 'topic')}, {_plural(others, 'other paper')}"


def own_archive(links: PersonalLinks, full_issue_url: str | None) -> bool:
    """Whether the "full issue" link is the reader's own archive link (personal, then, like the rest)."""
    return full_issue_url is None or full_issue_url == links.archive


def feedback_urls(issue: Issue, links: PersonalLinks) -> list[tuple[str, str]] | None:
    """The (more, less) feedback link of each card, in reading order; None when the links carry none."""
    if links.feedback is None:
        return None
    pairs = links.feedback.pairs([e.paper.id for s in issue.sections for e in s.entries])
    if not pairs or (_PLAIN_URL.match(pairs[0][0]) and _PLAIN_URL.match(pairs[0][1])):
        return pairs  # all the same but for base64 and hex parts: one plain, all plain
    return [(safe_url(more), safe_url(less)) for more, less in pairs]


def personal_values(issue: Issue, links: PersonalLinks) -> tuple[str, str, str, str]:
    """What differs between two readers of the same issue body, as an email shows it: the address, and
    the preferences, unsubscribe and archive links."""
    return (clean_text(issue.subscriber.email), safe_url(links.preferences), safe_url(links.unsubscribe),
            safe_url(links.archive))


def without_summaries(view: EmailView, numbers: set[int]) -> EmailView:
    sections = tuple(
        replace(s, cards=tuple(replace(c, summary="") if c.number in numbers else c for c in s.cards))
        for s in view.sections
    )
    return replace(view, sections=sections)


def keep_first(view: EmailView, keep: int) -> EmailView:
    """Only the first ``keep`` cards (in reading order); the rest are counted behind a link."""
    sections: list[SectionView] = []
    shown = 0
    for s in view.sections:
        cards = s.cards[: max(0, keep - shown)]
        shown += len(cards)
        if cards:
            sections.append(replace(s, cards=cards))
    hidden = view.count - shown
    line = f"{_plural(hidden, 'more paper')} in the full issue" if hidden else ""
    top = view.top
    if top is not None and top.number > shown:
        top = replace(top, where="In the full issue")
    return replace(view, sections=tuple(sections), top=top, hidden_count=hidden, hidden_line=line)
