"""The fast path (MJML and premailer once, Jinja per email) gives byte-identical emails to the naive path
(Jinja -> MJML -> premailer per email), with no normalisation, for real, hostile and random data."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.config import Settings
from digest.links import PersonalLinks
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.render import CARD_LOOP_OPEN, Renderer
from tests.samples import direct_first, issue_of, load_papers, make_jobs, sample_links

SETTINGS = Settings()
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "render" / "papers.jsonl"
LINKS = sample_links(SETTINGS, "reader@example.org", "2026-11-27")

# Characters that have tripped HTML pipelines: markup, entities, quotes, template syntax, LaTeX,
# invisible and wide Unicode, line and paragraph separators.
NASTY = [
    "<", ">", "&", '"', "'", "&amp;", "&lt;", "&#34;", "&nbsp;", "&bogus;", "{{", "}}", "{%", "%}", "{#",
    "#}", "$", "\\alpha", "$x^2$", "\\", "\u00a0", "\u2028", "\u200b", "\u00ad", "é", "数据", "😀",
    "</mj-text>", "<mj-raw>", "<!--", "-->", "<![CDATA[", "]]>", "\t", "\n", "\r\n", "  ", "·", "—",
    "javascript:", "%", "=", "?", "#", " ", "a", "Z", "9",
]


@pytest.fixture(scope="module", params=["shared-bodies", "direct-first", "per-reader"])
def renderer(request: pytest.FixtureRequest) -> Renderer:
    """The default renderer (a run's first readers keep their bodies); one whose bodies' first readers take
    the direct path (digest.assemble) and are kept from the second on; one that shares nothing."""
    if request.param == "per-reader":
        return Renderer(SETTINGS, share_bodies=False)
    renderer = Renderer(SETTINGS)
    return direct_first(renderer) if request.param == "direct-first" else renderer


def assert_identical(renderer: Renderer, issue: Issue, links: PersonalLinks = LINKS,
                     full_issue_url: str | None = None) -> None:
    """Fast == naive for the body's first reader (rendered with their own values), its second (the body
    is rendered with marks and kept) and a third (the kept body, filled in)."""
    naive = renderer.render_naive(issue, links, full_issue_url=full_issue_url)
    for reader in ("first", "second", "third"):
        fast = renderer.render(issue, links, full_issue_url=full_issue_url)
        assert fast.subject == naive.subject, reader
        assert fast.text == naive.text, reader
        if fast.html != naive.html:
            at = next(i for i, (a, b) in enumerate(zip(fast.html, naive.html, strict=False)) if a != b)
            pytest.fail(f"HTML differs at {at} ({reader} reader):\nfast:  {fast.html[at - 80:at + 80]!r}\n"
                        f"naive: {naive.html[at - 80:at + 80]!r}")


def test_the_fast_template_was_compiled_from_mjml_and_inlined_once(renderer: Renderer) -> None:
    compiled = renderer.compiled_html
    assert compiled.startswith("<!DOCTYPE html>")
    assert "<mj-" not in compiled and "style=" in compiled
    assert "{%" in compiled and CARD_LOOP_OPEN in compiled
    assert "%7B" not in compiled, "libxml2 URI-escaped a Jinja expression inside an href"


def test_real_issues_for_many_subscribers(renderer: Renderer) -> None:
    papers = load_papers(FIXTURE, SETTINGS)
    jobs = make_jobs(papers, SETTINGS, 40, date(2026, 11, 27))
    assert len({job.issue.paper_ids for job in jobs}) > 5
    for job in jobs:
        assert_identical(renderer, job.issue, job.links)


def test_edge_shapes(renderer: Renderer) -> None:
    p = [Paper(id=f"2611.0000{i}", title=f"T{i}", upvotes=i or None) for i in range(3)]
    assert_identical(renderer, issue_of([]))
    assert_identical(renderer, issue_of([("a", "A", [])]))
    assert_identical(renderer, issue_of([("a", "A", p[:1])]))
    assert_identical(renderer, issue_of([("a", "A", p[:1])], top=False))
    assert_identical(renderer, issue_of([("a", "A", []), ("b", "B", p), ("c", "C", [])]))
    bare = Paper(id="title:abc", title="", abstract="", authors=())
    assert_identical(renderer, issue_of([("a", "A", [bare])]))


def test_hostile_fields(renderer: Renderer) -> None:
    evil = Paper(
        id="2611.66666",
        title='<script>alert("x")</script> & {{ 7*7 }} {% raw %} </mj-text> "q" \'s\'',
        abstract='<img src="http://evil.example/p.gif"> &amp; &lt;b&gt; $\\ell_p$ \\ours{x} & more.',
        authors=('<a href="http://e">M</a>', 'O"Brien', "Zoë 数据"),
        url='https://arxiv.org/abs/2611.66666?a=1&b="2"<>',
        code_url="javascript:alert(1)",
        project_url="https://example.org/ü ß/{x}|`^",
        pdf_url="https://example.org/%7Bx%7D?q='1'",
        upvotes=0,
        ai_summary="Summary with <tags> & \"quotes\" and 'apostrophes'.",
    )
    issue = Issue(subscriber=Subscriber(email="o'brien+tag@example.org"), date=date(2026, 2, 1),
                  sections=(IssueSection('x"<y>', '<i>"L&L"</i>', (IssueEntry(evil, '"why" <b>&</b>'),)),),
                  top_pick=IssueEntry(evil, "{{ top }}"))
    links = PersonalLinks(preferences="https://h.example/p?a=1&b=2", unsubscribe="https://h.example/u/t.k-n_",
                          unsubscribe_mailto="mailto:u@h.example?subject=x", archive="https://h.example/a#x")
    assert_identical(renderer, issue, links, full_issue_url='https://h.example/full?x="1"')


def test_site_settings_with_markup() -> None:
    settings = Settings.model_validate({"site": {"title": 'Ana\'s "Papers" & <Co>',
                                                 "postal_address": "1 Rue <Main> & Co, \"Paris\""}})
    assert_identical(Renderer(settings), issue_of([("a", "A", [Paper(id="2611.1", title="x")])]))


def test_random_text_from_nasty_pieces(renderer: Renderer) -> None:
    rng = random.Random(20261127)

    def junk(n: int) -> str:
        return "".join(rng.choice(NASTY) for _ in range(rng.randint(0, n)))

    for round_ in range(25):
        papers = [
            Paper(id=f"2611.{round_:02d}{i:03d}", title=junk(12), abstract=junk(40),
                  authors=tuple(junk(4) for _ in range(rng.randint(0, 5))),
                  url="https://x.example/" + junk(6), code_url=rng.choice([None, "https://c.example/" + junk(5)]),
                  upvotes=rng.choice([None, 0, 3]), ai_summary=rng.choice([None, junk(20)]))
            for i in range(rng.randint(0, 6))
        ]
        cut = rng.randint(0, len(papers))
        issue = issue_of([(junk(3) or "t", junk(5), papers[:cut]), ("o", junk(5), papers[cut:])],
                         top=rng.random() < 0.7)
        assert_identical(renderer, issue)


def test_cut_to_budget_identically() -> None:
    small = Renderer(SETTINGS, html_budget=20_000)
    long_text = "This sentence is long enough to matter for the size of the email. " * 40
    papers = [Paper(id=f"2611.{i:05d}", title=f"Title {i}", abstract=long_text) for i in range(25)]
    issue = issue_of([("a", "A", papers[:10]), ("b", "B", papers[10:])])
    assert_identical(small, issue, full_issue_url="https://h.example/full")
    assert "more paper" in small.render(issue, LINKS).html


def test_readers_of_one_body_get_their_own_address_and_links(renderer: Renderer) -> None:
    papers = [Paper(id=f"2611.{i:05d}", title=f"Shared {i}", upvotes=i) for i in range(8)]
    sections = [("a", "A", papers[:5]), ("b", "B", papers[5:])]
    readers = ["ann@example.org", "o'brien&co@example.org", "x<y>@example.org", "bob@example.org"]
    emails = []
    for i, email in enumerate(readers):
        issue = issue_of(sections, email=email, issue_id=i + 1)
        links = PersonalLinks(preferences=f"https://h.example/p/{i}?a=1&b=2", unsubscribe=f"https://h.example/u/{i}",
                              unsubscribe_mailto=f"mailto:u@h.example?subject=u{i}", archive="https://h.example/a")
        assert_identical(renderer, issue, links)
        emails.append(renderer.render(issue, links))
    assert len({e.html for e in emails}) == len(readers)
    assert "o'brien&amp;co@example.org" in emails[1].html and "x&lt;y&gt;@example.org" in emails[2].html
    assert "https://h.example/p/0?a=1&amp;b=2" in emails[0].html and "https://h.example/p/0?a=1&b=2" in emails[0].text


def test_personal_parts_that_tip_the_budget_fall_back_to_cutting() -> None:
    papers = [Paper(id=f"2611.{i:05d}", title=f"T{i}", abstract="Words here. " * 30) for i in range(12)]
    issue = issue_of([("a", "A", papers)])
    plain = Renderer(SETTINGS).render(issue, LINKS)
    budget = len(plain.html.encode()) + 50
    long_links = PersonalLinks(preferences="https://h.example/p/" + "x" * 400, unsubscribe=LINKS.unsubscribe,
                               unsubscribe_mailto=LINKS.unsubscribe_mailto, archive=LINKS.archive)
    for share in (True, False):
        tight = Renderer(SETTINGS, html_budget=budget, share_bodies=share)
        assert tight.render(issue, LINKS) == tight.render_naive(issue, LINKS)
        cut = tight.render(issue, long_links)
        assert cut == tight.render_naive(issue, long_links)
        assert len(cut.html.encode()) <= budget


def test_threads_sharing_one_renderer_get_the_same_emails() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from digest.message import build_message, make_message_id

    papers = load_papers(FIXTURE, SETTINGS)
    jobs = make_jobs(papers, SETTINGS, 120, date(2026, 11, 27), seed=3)

    def full(renderer: Renderer, job: object) -> bytes:
        issue, links = job.issue, job.links  # type: ignore[attr-defined]
        email = renderer.render(issue, links)
        return build_message(email, sender="D <d@localhost>", recipient=issue.subscriber.email,
                             message_id=make_message_id(issue.id, "localhost", f"{issue.id:024x}"),
                             date=datetime(2026, 11, 27, 8, tzinfo=UTC), list_id="<l.localhost>", links=links)

    single = Renderer(SETTINGS, share_bodies=False)
    alone = [full(single, job) for job in jobs]
    shared = Renderer(SETTINGS)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: full(shared, job), jobs * 2))
    assert together == alone * 2


def test_whole_messages_are_identical_on_both_paths() -> None:
    """The MIME bytes too: a shared body's base64 lead plus the reader's part is what encoding the
    naive body whole gives, for readers of shared bodies, unique ones, and ones cut to the budget."""
    from digest.message import build_message, make_message_id

    papers = load_papers(FIXTURE, SETTINGS)
    jobs = make_jobs(papers, SETTINGS, 60, date(2026, 11, 27), seed=5)
    long_text = "This sentence is long enough to matter for the size of the email. " * 40
    long_papers = [Paper(id=f"2611.{i:05d}", title=f"Title {i}", abstract=long_text) for i in range(25)]
    big = issue_of([("a", "A", long_papers[:10]), ("b", "B", long_papers[10:])])
    for renderer in (Renderer(SETTINGS), Renderer(SETTINGS, html_budget=20_000), direct_first(Renderer(SETTINGS)),
                     direct_first(Renderer(SETTINGS, html_budget=20_000))):
        for issue, links in [(j.issue, j.links) for j in jobs] + [(big, LINKS)]:
            mid = make_message_id(issue.id or 0, "localhost", f"{issue.id or 0:024x}")

            def message(mime: object, issue: Issue = issue, links: PersonalLinks = links, mid: str = mid) -> bytes:
                return build_message(mime, sender="D <d@localhost>", recipient=issue.subscriber.email,  # type: ignore[arg-type]
                                     message_id=mid, date=datetime(2026, 11, 27, 8, tzinfo=UTC),
                                     list_id="<l.localhost>", links=links)
            naive = message(renderer.mime_naive(issue, links))
            for reader in ("first", "second", "third"):  # rendered with its values, kept, filled in
                assert message(renderer.mime(issue, links)) == naive, (issue.subscriber.email, reader)
