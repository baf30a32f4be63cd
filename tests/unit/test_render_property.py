"""Property: for any papers, readers and links, the fast path and the plain reference renderer give
byte-identical messages.

Hypothesis draws papers (hostile titles, abstracts, authors, URLs, summaries, topics and evidence),
readers (topics, keywords, exclusions, authors, time zones, how many papers) whose issues the real
selection builds, several readers over the same papers (so bodies are shared and cards come from the
caches), and strings made to hurt: markup, entities, template syntax, control characters (the fast
path's own placeholders among them), line separators, wide and combining Unicode, long words.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from digest.compose import Composer
from digest.config import Settings
from digest.errors import RenderError
from digest.links import PersonalLinks
from digest.models import Frequency, Issue, OutgoingMessage, Paper, Subscriber, TopicAssignment
from digest.render import HTML_BUDGET, ReferenceRenderer, Renderer
from digest.selection import SelectionContext, local_issue_date, select
from digest.signing_key import SigningKey

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
KEY = SigningKey("property-test-key-" + "k" * 32)

# Pieces that have broken HTML and text pipelines, and the characters the fast path uses internally
# (its placeholders are control characters: \x00 for a section's cards, \x01-\x04 for a reader's address
# and links, \x05 for a card's number, \x06 for its reason).
HOSTILE = [
    "<", ">", "&", '"', "'", "&amp;", "&lt;", "&#34;", "&#x0;", "&#0;", "&#xD800;", "&nbsp;", "&bogus;", "&",
    "{{", "}}", "{%", "%}", "{#", "#}", "{{ 7*7 }}", "{% raw %}", "{%- endfor -%}", "{{- section_cards[0] -}}",
    "$", "$x^2$", "\\alpha", "\\", "\\ours{x}", "\u00a0", "\u2028", "\u2029", "\u200b", "\u00ad", "\u0301",
    "\ufeff", "\ufffd", "\ufffe", "é", "数据", "😀", "\U0010fffd", "\ud800", "</mj-text>", "<mj-raw>", "<!--",
    "-->", "<![CDATA[", "]]>", "<script>", "</p>", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "  ",
    "·", "—", "…", "javascript:", "data:", "mailto:", "%", "%7B", "=", "?", "#", " ", ".", "..", "\n.",
    "\x00", "\x01", "\x02", "\x03", "\x04", "\x05", "\x06", "\x07", "\x1b", "\x7f", "\x9f",
    "=?utf-8?b?", "--", "=_digest_", "Why: ", " 7. ", "https://", "http://x.example/a?b=1&c=2",
    "a" * 90, "supercalifragilistic" * 6,
]
WORDS = ["pruning", "sparse", "diffusion", "agents", "retrieval", "robot", "Model", "LLM", "vision", "x"]


def text(max_pieces: int = 8) -> st.SearchStrategy[str]:
    """A string of hostile pieces, plain words and arbitrary characters."""
    piece = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(WORDS), st.text(max_size=6))
    return st.lists(piece, max_size=max_pieces).map(" ".join) | st.lists(piece, max_size=max_pieces).map("".join)


def url() -> st.SearchStrategy[str | None]:
    head = st.sampled_from(["https://x.example/", "http://y.example/p?q=", "HTTPS://Z.example", "mailto:a@b.example",
                            "javascript:alert(1)//", "data:text/html,", "ftp://f.example/", "", " https://s.example/"])
    return st.none() | st.builds(lambda h, t: h + t, head, text(3))


TOPICS = ["pruning", "diffusion", "agents", 'x"<y>', "other-ish"]
LABELS = {"pruning": "Pruning & sparsity", "diffusion": "Diffusion <models>", "agents": "{{ agents }}",
          'x"<y>': '<i>"L&L"</i>', "other-ish": "Other\u2028ish \x01"}
CONTEXT = SelectionContext(labels=LABELS)


@st.composite
def papers(draw: st.DrawFn) -> list[Paper]:
    count = draw(st.integers(0, 12))
    found = []
    for n in range(count):
        topics = draw(st.lists(st.sampled_from(TOPICS), unique=True, max_size=3))
        found.append(Paper(
            id=draw(st.sampled_from([f"2611.{n:05d}", f"title:{n:x}", f"cs/{n:07d}"])),
            title=draw(text()), abstract=draw(text(20)),
            authors=tuple(draw(st.lists(text(3), max_size=6))),
            published=NOW - timedelta(hours=draw(st.integers(0, 200))),
            url=draw(url()), pdf_url=draw(url()), code_url=draw(url()), project_url=draw(url()),
            upvotes=draw(st.none() | st.integers(0, 10**6)),
            ai_summary=draw(st.none() | text(12)),
            first_seen=NOW - timedelta(hours=draw(st.integers(0, 60))),
            topics=tuple(TopicAssignment(t, draw(st.floats(0.1, 9.0)), tuple(draw(st.lists(text(2), max_size=3))))
                         for t in topics),
        ))
    return found


ZONES = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "America/St_Johns", "Europe/Paris"]


def _utf8(value: str) -> str:
    return value.encode("utf-8", "ignore").decode("utf-8")


@st.composite
def readers(draw: st.DrawFn, pool: list[Paper]) -> list[Subscriber]:
    authors = sorted({a for p in pool for a in p.authors[:2]})
    local = st.text(alphabet=string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=12)
    address = st.builds(lambda a, d: f"{a}@{d}", local, st.sampled_from(["example.org", "x.example", "b-c.example"]))
    out = []
    for i in range(draw(st.integers(1, 4))):
        out.append(Subscriber(
            # Mostly usable addresses; now and then one no message can carry (both paths must refuse it),
            # though in UTF-8, as every stored address is.
            email=draw(address | st.builds(lambda t: _utf8(t) + "@example.org", text(2)) if i else address),
            name=draw(text(2)),
            topics=tuple(draw(st.lists(st.sampled_from(TOPICS), unique=True, max_size=3))),
            keywords=tuple(draw(st.lists(st.sampled_from(WORDS) | text(1), max_size=2))),
            exclude=tuple(draw(st.lists(st.sampled_from(WORDS), max_size=1))),
            authors=tuple(draw(st.lists(st.sampled_from(authors), max_size=2))) if authors else (),
            frequency=draw(st.sampled_from(Frequency)),
            tz=draw(st.sampled_from(ZONES)),
            max_papers=draw(st.integers(0, 25)),
            id=i + 1,
        ))
    return out


# One renderer per site for the whole run, as in a send: its caches fill up across examples, and an
# entry left by one example must never show in another's message. "tight" has so small a size budget
# that most issues with cards must lose summaries or cards to fit; "ftp" makes every link unusable.
SITES = {
    "default": Settings(),
    "hostile": Settings.model_validate({"site": {
        "title": 'Ana\'s "Papers" & <Co> {{ x }}', "postal_address": "1 Rue <Main> & Co,\u2028\"Paris\" \x01",
        "base_url": "https://h.example/dig est?a=1&b=<2>"}}),
    "tight": Settings(),
    # Links no mail may carry (not http, https or mailto): every one of them shows empty.
    "ftp": Settings.model_validate({"site": {"base_url": "ftp://h.example/digest"}}),
}
FAST = {name: Renderer(site, html_budget=14_000 if name == "tight" else HTML_BUDGET) for name, site in SITES.items()}


def message(composer: Composer, issue: Issue) -> OutgoingMessage | str:
    try:
        return composer.compose(issue, f"<digest.{issue.id}.x@example.org>", NOW)
    except RenderError as err:
        return f"RenderError: {err}"


# No "explain" phase: it traces every line of a failing example, which takes minutes with MJML in the loop.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(max_examples=100, deadline=None, phases=PHASES, suppress_health_check=SLOW)
@given(site=st.sampled_from(sorted(SITES)), data=st.data())
def test_fast_and_reference_messages_are_identical(site: str, data: st.DataObject) -> None:
    pool = data.draw(papers())
    fast = FAST[site]
    with_fast = Composer(SITES[site], KEY, fast)
    with_reference = Composer(SITES[site], KEY, ReferenceRenderer(fast))
    with time_machine.travel(NOW, tick=False):  # links are signed with the time
        for n, reader in enumerate(data.draw(readers(pool))):
            issue = select(pool, reader, set(), NOW, local_issue_date(reader, NOW), CONTEXT)
            issue = Issue(subscriber=issue.subscriber, date=issue.date, sections=issue.sections,
                          top_pick=issue.top_pick, id=n + 1)
            assert message(with_fast, issue) == message(with_reference, issue)


@settings(max_examples=50, deadline=None, phases=PHASES, suppress_health_check=SLOW)
@given(site=st.sampled_from(sorted(SITES)), data=st.data())
def test_fast_and_reference_bodies_are_identical_for_any_links(site: str, data: st.DataObject) -> None:
    """The reader's links and the "full issue" link as drawn (not as LinkBuilder makes them)."""
    pool = data.draw(papers())
    fast = FAST[site]
    for reader in data.draw(readers(pool)):
        issue = select(pool, reader, set(), NOW, local_issue_date(reader, NOW), CONTEXT)
        links = PersonalLinks(*(data.draw(url()) or "" for _ in range(4)))
        full = data.draw(st.sampled_from([None, links.archive]) | url())
        assert fast.render(issue, links, full_issue_url=full) == fast.render_naive(issue, links, full_issue_url=full)


@pytest.mark.parametrize("site", sorted(SITES))
def test_the_drawn_sites_render(site: str) -> None:
    """The hostile site settings load and render at all (else the properties above prove little)."""
    issue = Issue(subscriber=Subscriber(email="a@example.org"), date=NOW.date(), sections=())
    links = PersonalLinks("https://h.example/p", "https://h.example/u", "mailto:u@h.example", "https://h.example/a")
    assert "subscribed" in FAST[site].render(issue, links).text
