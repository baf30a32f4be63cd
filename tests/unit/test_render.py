"""The digest email's structure: both parts, every paper, escaping, no remote resources, size budget."""

from __future__ import annotations

import pickle
import random
import re
import shutil
from datetime import date
from pathlib import Path

import pytest
from lxml import html as lxml_html

from digest.config import Settings
from digest.email_view import clean_text, count_line, safe_url, summarize
from digest.errors import RenderError
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.render import HTML_BUDGET, TEMPLATES_DIR, Renderer
from tests.samples import direct_first, issue_of, sample_links

SETTINGS = Settings()
LINKS = sample_links(SETTINGS, "reader@example.org", "2026-11-27")
LONG_ABSTRACT = " ".join(
    f"Sentence {i} explains, at length and with many qualifying clauses, one more aspect of the method "
    f"and why it matters for large-scale training of sparse transformer models." for i in range(40)
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def paper(i: int, **fields: object) -> Paper:
    base: dict[str, object] = {
        "id": f"2611.{10000 + i}",
        "title": f"Paper number {i}: a study of sparse attention",
        "abstract": f"We study thing {i}. It works well. More details follow in the paper.",
        "authors": ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        "upvotes": i,
    }
    base.update(fields)
    return Paper(**base)  # type: ignore[arg-type]


def three_sections(n: int = 12) -> Issue:
    papers = [paper(i, code_url=f"https://github.com/x/repo{i}" if i % 2 else None) for i in range(1, n + 1)]
    third = n // 3
    return issue_of([("pruning", "Pruning & sparsity", papers[:third]),
                     ("llm", "Efficient LLMs", papers[third:2 * third]),
                     ("other", "Other papers", papers[2 * third:])])


def dom(html: str) -> lxml_html.HtmlElement:
    return lxml_html.document_fromstring(html)


def visible_text(html: str) -> str:
    return " ".join(dom(html).text_content().split())


def test_both_parts_name_every_paper_with_its_link(renderer: Renderer) -> None:
    issue = three_sections()
    email = renderer.render(issue, LINKS)
    page = dom(email.html)
    hrefs = {a.get("href") for a in page.iter("a")}
    for entry in issue.entries:
        assert entry.paper.title in visible_text(email.html)
        assert entry.paper.title in " ".join(email.text.split())
        assert entry.paper.link in hrefs
        assert entry.paper.link in email.text
    for section in issue.sections:
        assert section.label in visible_text(email.html)
        assert section.label.upper() in email.text


def test_header_toc_and_top_pick(renderer: Renderer) -> None:
    issue = three_sections()
    email = renderer.render(issue, LINKS)
    text = visible_text(email.html)
    assert "Friday, 27 November 2026" in text
    assert "12 papers picked for you: 8 in 2 topics, 4 other papers" in text
    assert "In this issue: Pruning & sparsity (4) · Efficient LLMs (4) · Other papers (4)" in text
    # No jump links: local anchors do nothing in half the mobile clients.
    assert not [a for a in dom(email.html).iter("a") if (a.get("href") or "").startswith("#")]
    assert not [el for el in dom(email.html).iter() if el.get("id")]


def test_the_top_pick_is_shown_once(renderer: Renderer) -> None:
    issue = three_sections()
    pick = issue.top_pick
    assert pick is not None
    number = 1 + [e.paper.id for e in issue.entries].index(pick.paper.id)
    email = renderer.render(issue, LINKS)
    page = dom(email.html)
    for hidden in [*page.find_class("preheader"), *page.iter("title", "style")]:
        hidden.drop_tree()
    text = " ".join(page.text_content().split())
    assert "Top pick" in text and f"No. {number} below, in Other papers" in text
    # Its summary, authors and links appear once, in its card; only the title is named up top.
    summary = summarize(pick.paper)
    assert text.count(summary) == 1
    assert text.count(pick.paper.title) == 2
    hrefs = [a.get("href") for a in dom(email.html).iter("a")]
    assert hrefs.count(pick.paper.link) == 2
    assert email.text.count(summary[:40]) == 1
    assert f"TOP PICK\n    {pick.paper.title}\n    No. {number} below, in Other papers\n" in email.text


def test_a_top_pick_cut_from_an_oversized_issue_says_so() -> None:
    papers = [paper(i, abstract=LONG_ABSTRACT, ai_summary=LONG_ABSTRACT[:300]) for i in range(1, 41)]
    papers[-1] = paper(99, upvotes=10_000, title="The most upvoted paper")
    issue = issue_of([("t", "Topic", papers)])
    email = Renderer(SETTINGS, html_budget=20_000).render(issue, LINKS)
    text = visible_text(email.html)
    assert "The most upvoted paper" in text and "In the full issue" in text


def test_count_line_counts_only_topics() -> None:
    assert count_line(0, 0, 0) == "No new papers today"
    assert count_line(1, 1, 0) == "1 paper picked for you in 1 topic"
    assert count_line(12, 2, 0) == "12 papers picked for you in 2 topics"
    assert count_line(12, 1, 3) == "12 papers picked for you: 9 in 1 topic, 3 other papers"
    assert count_line(3, 0, 3) == "3 papers picked for you"


def test_cards_show_authors_et_al_upvotes_code_summary_and_why(renderer: Renderer) -> None:
    p = paper(3, code_url="https://github.com/x/y", ai_summary="A one-line AI summary.", upvotes=42)
    email = renderer.render(issue_of([("t", "Topic", [p])]), LINKS)
    text = visible_text(email.html)
    assert "Ada Lovelace, Alan Turing, Grace Hopper et al." in text
    assert "▲ 42 upvotes" in text
    assert "A one-line AI summary." in text
    assert "Why: matches topic" in text
    assert "https://github.com/x/y" in {a.get("href") for a in dom(email.html).iter("a")}
    assert "Code for paper 1" in {a.text_content() for a in dom(email.html).iter("a")}
    assert "Code: https://github.com/x/y" in email.text


def test_summary_is_ai_summary_else_first_sentences_of_the_abstract() -> None:
    assert summarize(paper(1, ai_summary="AI says so.")) == "AI says so."
    first = summarize(paper(1, abstract=LONG_ABSTRACT))
    assert first.startswith("Sentence 0 explains") and len(first) <= 321
    assert "Sentence 5" not in first


def test_footer_links_and_postal_line(renderer: Renderer) -> None:
    email = renderer.render(three_sections(), LINKS)
    hrefs = [a.get("href") for a in dom(email.html).iter("a")]
    assert LINKS.preferences in hrefs and LINKS.unsubscribe in hrefs and LINKS.archive in hrefs
    assert SETTINGS.site.postal_address in visible_text(email.html)
    for label, url in (("Manage preferences", LINKS.preferences), ("Unsubscribe", LINKS.unsubscribe),
                       ("Web archive", LINKS.archive)):
        assert f"{label}: {url}" in email.text
    assert SETTINGS.site.postal_address in email.text


def test_text_part_is_written_for_people(renderer: Renderer) -> None:
    email = renderer.render(three_sections(), LINKS)
    assert "<" not in email.text.replace("<=", "")
    numbered = re.findall(r"^ ?(\d+)\. ", email.text, flags=re.MULTILINE)
    assert numbered == [str(i) for i in range(1, 13)]
    assert "== PRUNING & SPARSITY (4) ==" in email.text
    assert "TOP PICK" in email.text and "IN THIS ISSUE" in email.text
    assert "    Other papers (4)" in email.text
    assert max(len(line) for line in email.text.splitlines() if "http" not in line) <= 76


def test_hostile_fields_are_shown_as_text(renderer: Renderer) -> None:
    evil = paper(
        1,
        title='<script>alert("x")</script> & <b>bold</b> {{ 7*7 }} {% raw %}',
        abstract='<img src="http://evil.example/pixel.gif"> </mj-text></mj-column> <style>*{}</style>',
        authors=('<a href="http://evil.example">Mallory</a>', "Bob\r\nBcc: x@y"),
        url="javascript:alert(1)",
        pdf_url="https://arxiv.org/pdf/2611.1 \"onmouseover=alert(1)",
        code_url="data:text/html,<script>alert(1)</script>",
    )
    issue = Issue(subscriber=Subscriber(email="r@example.org"), date=date(2026, 11, 27),
                  sections=(IssueSection("x<y", '<i>"Label"</i>', (IssueEntry(evil, "<u>why</u> {{ x }}"),)),),
                  top_pick=IssueEntry(evil, "top <reason>"))
    email = renderer.render(issue, LINKS)
    page = dom(email.html)
    assert not page.xpath("//script | //img | //b | //i | //u | //mj-text")
    assert not page.xpath("//style[contains(., '*{}')]")
    text = visible_text(email.html)
    assert '<script>alert("x")</script> & <b>bold</b> {{ 7*7 }} {% raw %}' in text
    assert "49" not in text
    assert "<u>why</u> {{ x }}" in text and '<i>"Label"</i>' in text
    hrefs = [a.get("href") or "" for a in page.iter("a")]
    assert not [h for h in hrefs if h.startswith(("javascript:", "data:"))]
    assert not [a for a in page.iter("a") if a.get("onmouseover")]
    assert "\n" not in email.subject and "\r" not in email.subject
    assert '<script>alert("x")</script>' in email.text  # the text part is plain text: shown as written


def test_entities_and_unicode_are_decoded_once_and_escaped_once(renderer: Renderer) -> None:
    p = paper(1, title="Q&amp;A &lt;3 with &#955;-calculus, naïve 数据 😀", abstract="Caf&eacute; au lait.")
    email = renderer.render(issue_of([("t", "Topic", [p])]), LINKS)
    assert "Q&A <3 with λ-calculus, naïve 数据 😀" in visible_text(email.html)
    assert "Q&amp;A &lt;3 with λ-calculus" in email.html
    assert "&amp;amp;" not in email.html
    assert "Café au lait." in email.text


def test_latex_is_readable(renderer: Renderer) -> None:
    p = paper(1, title=r"Robustness to $\ell_p$ attacks in $O(n^2)$ with \ourmethod",
              abstract=r"We bound the $\alpha$-divergence by $\mathbb{R}^3$ geometry. Done.")
    email = renderer.render(issue_of([("t", "Topic", [p])]), LINKS)
    text = visible_text(email.html)
    assert r"Robustness to ℓₚ attacks in O(n²) with \ourmethod" in text
    assert "α-divergence by ℝ³ geometry" in text
    assert "ℓₚ" in email.subject


def test_clean_text_and_safe_url() -> None:
    assert clean_text("  a\u00a0b\u2028c\r\n\td\x00e\ufeff ") == "a b c de"
    assert safe_url("javascript:alert(1)") == ""
    assert safe_url("https://x.org/a b\"<c>{d}") == "https://x.org/ab%22%3Cc%3E%7Bd%7D"
    assert safe_url("https://x.org/ü?q=1&r=2#f") == "https://x.org/%C3%BC?q=1&r=2#f"


def test_no_remote_resources_only_links(renderer: Renderer) -> None:
    email = renderer.render(three_sections(), LINKS)
    page = dom(email.html)
    for el in page.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in ("src", "background", "poster", "data", "srcset"):
            assert not el.get(attr), (el.tag, attr)
        if el.tag == "link":
            pytest.fail(f"<link> loads a resource: {el.get('href')}")
        if el.get("href") and el.tag != "a":
            pytest.fail(f"{el.tag} has href {el.get('href')}")
    assert "url(" not in email.html and "@import" not in email.html
    assert "fonts.googleapis" not in email.html and "<img" not in email.html
    assert "<script" not in email.html


def test_email_client_features_survive_inlining(renderer: Renderer) -> None:
    email = renderer.render(three_sections(), LINKS)
    page = dom(email.html)
    assert email.html.startswith("<!DOCTYPE html>")
    assert page.xpath("//meta[@name='color-scheme' and @content='light dark']")
    assert page.xpath("//meta[@name='viewport']")
    styles = " ".join(s.text_content() for s in page.iter("style"))
    assert "prefers-color-scheme: dark" in styles and "max-width: 480px" in styles
    assert "!important" in styles
    assert "<!--[if mso | IE]>" in email.html
    assert "data-premailer" not in email.html
    # Inlined once: the card rules live in style attributes, not in a <style> block.
    assert ".summary { font-size" not in styles and "font-size: 15px" not in styles
    summary = page.xpath("//p[@class='summary']")[0]
    assert "font-size:15px" in summary.get("style").replace(" ", "")
    [preheader] = page.find_class("preheader")
    assert "display:none" in preheader.get("style").replace(" ", "")
    assert preheader.text_content().startswith("Top pick: ")


def test_zero_papers_in_a_section_and_zero_papers_at_all(renderer: Renderer) -> None:
    papers = [paper(1), paper(2)]
    issue = issue_of([("empty", "Empty topic", []), ("full", "Full topic", papers)])
    email = renderer.render(issue, LINKS)
    text = visible_text(email.html)
    assert "Empty topic" not in text and "Full topic" in text
    assert "2 papers picked for you in 1 topic" in text
    nothing = renderer.render(issue_of([("empty", "Empty topic", [])]), LINKS)
    assert "No new papers" in visible_text(nothing.html) and "No new papers" in nothing.text
    assert "no new papers" in nothing.subject
    assert LINKS.unsubscribe in nothing.html and LINKS.unsubscribe in nothing.text


def test_one_paper(renderer: Renderer) -> None:
    email = renderer.render(issue_of([("t", "Topic", [paper(7)])]), LINKS)
    assert "1 paper picked for you in 1 topic" in visible_text(email.html)
    assert re.search(r"· 1 paper: Paper number 7", email.subject)
    assert email.text.count("Paper number 7") == 2  # top pick and its card


def test_subject_line() -> None:
    r = Renderer(SETTINGS)
    long_title = "A " + "very " * 60 + "long title"
    email = r.render(issue_of([("t", "Topic", [paper(1, title=long_title, upvotes=99), paper(2)])]), LINKS)
    assert email.subject.startswith("Paper Digest · 27 Nov 2026 · 2 papers: A very very")
    assert len(email.subject) <= 120 and email.subject.endswith("…")


def test_thirty_long_papers_stay_under_the_gmail_budget(renderer: Renderer) -> None:
    papers = [paper(i, title="A long title " * 20, abstract=LONG_ABSTRACT, authors=tuple(f"Author {j}"
                    for j in range(200)), code_url="https://github.com/org/" + "x" * 200) for i in range(30)]
    issue = issue_of([("a", "Topic A", papers[:15]), ("b", "Topic B", papers[15:])])
    email = renderer.render(issue, LINKS)
    assert len(email.html.encode("utf-8")) < 102 * 1024
    assert len(email.html.encode("utf-8")) <= HTML_BUDGET
    assert all(p.id in email.html for p in papers)


def test_an_issue_over_budget_is_cut_and_links_to_the_full_issue() -> None:
    small = Renderer(SETTINGS, html_budget=40_000)
    papers = [paper(i, abstract=LONG_ABSTRACT) for i in range(30)]
    issue = issue_of([("a", "Topic A", papers[:15]), ("b", "Topic B", papers[15:])])
    full_url = "http://localhost:8000/archive/2026-11-27/full"
    email = small.render(issue, LINKS, full_issue_url=full_url)
    size = len(email.html.encode("utf-8"))
    assert size <= 40_000
    page = dom(email.html)
    more = [a for a in page.iter("a") if "more paper" in a.text_content()]
    assert more and more[0].get("href") == full_url
    shown = int(re.search(r"(\d+) more papers? in the full issue", more[0].text_content()).group(1))
    assert 0 < shown < 30
    assert sum(p.title in visible_text(email.html) for p in papers) >= 30 - shown
    assert LINKS.unsubscribe in email.html  # the footer is never what gets cut
    assert all(p.link in email.text for p in papers)  # the text part keeps every paper


def test_summaries_go_before_cards() -> None:
    papers = [paper(i, abstract=LONG_ABSTRACT) for i in range(30)]
    issue = issue_of([("a", "Topic A", papers)])
    full = Renderer(SETTINGS).render(issue, LINKS)
    size = len(full.html.encode("utf-8"))
    slightly_less = Renderer(SETTINGS, html_budget=size - 2_000).render(issue, LINKS)
    assert "more paper" not in visible_text(slightly_less.html)
    assert all(p.title in visible_text(slightly_less.html) for p in papers)
    assert len(slightly_less.html.encode("utf-8")) <= size - 2_000


def test_renderer_pickles_for_process_pools(renderer: Renderer) -> None:
    clone = pickle.loads(pickle.dumps(renderer))
    issue = three_sections()
    assert clone.render(issue, LINKS) == renderer.render(issue, LINKS)


def test_templates_dir_and_errors(tmp_path: Path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    assert Renderer(SETTINGS, templates_dir=copy).render(three_sections(), LINKS).html
    with pytest.raises(RenderError, match="cannot read template"):
        Renderer(SETTINGS, templates_dir=tmp_path / "missing")
    (copy / "email.mjml").write_text("<mjml><mj-body>{% for %}</mj-body></mjml>", encoding="utf-8")
    with pytest.raises(RenderError):
        Renderer(SETTINGS, templates_dir=copy)


def test_the_fast_wrap_gives_textwraps_lines() -> None:
    import random
    import textwrap

    from digest.render import _wrap

    rng = random.Random(11)
    words = ["a", "bb", "word", "longerword", "x" * 70, "y" * 76, "z" * 77, "q" * 90, "é", "数据", "co-op", "-",
             "https://example.org/" + "p" * 60, "\u00a0nb", "tab\there", "  ", ""]
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        for first in (None, "", "    Why: "):
            for width in (76, 30):
                expected = textwrap.fill(text, width=width, initial_indent="    " if first is None else first,
                                         subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
                assert _wrap.__wrapped__(text, "    ", first, width) == expected, (text, first, width)


def test_a_card_template_that_shows_the_reason_otherwise_is_rendered_per_reason(tmp_path: Path) -> None:
    """The "why" line is put into a card rendered once per paper only where the templates show it as the
    shipped ones do; a template that transforms it gets each card rendered with its own reason, and the
    emails stay those of the naive path."""
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    mjml = copy / "email.mjml"
    mjml.write_text(mjml.read_text(encoding="utf-8").replace("Why: {{ c.why }}", "Why: {{ c.why | upper }}"),
                    encoding="utf-8")
    shipped, custom = Renderer(SETTINGS), Renderer(SETTINGS, templates_dir=copy)
    assert shipped._split_why and not custom._split_why
    papers = [paper(i) for i in range(6)]
    issue = Issue(subscriber=Subscriber(email="r@example.org"), date=date(2026, 11, 27),
                  sections=(IssueSection("a", "A", tuple(IssueEntry(p, f"matches term {i}") for i, p in
                                                         enumerate(papers))),))
    for renderer in (shipped, custom):
        assert renderer.render(issue, LINKS) == renderer.render_naive(issue, LINKS)
    assert "MATCHES TERM 3" in custom.render(issue, LINKS).html
    assert "matches term 3" in shipped.render(issue, LINKS).html


def test_plain_ascii_text_bodies_are_shared_and_stay_7bit(tmp_path: Path) -> None:
    """A text template and papers in plain ASCII: the shared text body is not base64-encoded ahead of
    time, its message part goes 7bit, and the whole message is the naive path's."""
    from datetime import UTC, datetime

    from digest.message import Base64Body, Utf8Body, build_message

    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    for name in ("email.txt", "email_card.txt"):
        path = copy / name
        path.write_text(path.read_text(encoding="utf-8").replace("\u2014", "-"), encoding="utf-8")
    settings = Settings.model_validate({"site": {"title": "Plain Digest", "postal_address": "1 Main St, Paris"}})
    renderer = direct_first(Renderer(settings, templates_dir=copy))
    papers = [Paper(id=f"2611.{i:05d}", title=f"Plain title {i}", abstract="Plain words. " * 5) for i in range(3)]
    issue = issue_of([("a", "A", papers)])
    first = renderer.mime(issue, LINKS)  # the body's first reader: rendered with their values, not kept
    assert isinstance(first.html, Utf8Body) and isinstance(first.text, Utf8Body)
    mime = renderer.mime(issue, LINKS)  # the second: the body is kept, cut where each reader's values go
    assert mime.rendered() == first.rendered()
    assert isinstance(mime.text, Utf8Body) and mime.text.utf8().isascii()
    assert isinstance(mime.html, Base64Body)  # the HTML part is not ASCII (the footer's dots)

    def message(email: object) -> bytes:
        return build_message(email, sender="D <d@localhost>", recipient="r@example.org",  # type: ignore[arg-type]
                             message_id="<1@localhost>", date=datetime(2026, 11, 27, tzinfo=UTC),
                             list_id="<l.localhost>", links=LINKS)

    data = message(mime)
    assert b"Content-Transfer-Encoding: 7bit" in data
    assert data == message(renderer.mime_naive(issue, LINKS))


def test_shared_bodies_are_bounded_by_memory() -> None:
    from digest.render import _SharedBodies

    renderer = Renderer(SETTINGS)
    renderer._shared = _SharedBodies(limit=400_000)
    papers = [paper(i) for i in range(60)]
    for k in range(40):
        issue = issue_of([("a", "A", papers[k:k + 12])], email=f"r{k}@example.org")
        naive = renderer.render_naive(issue, LINKS)
        assert renderer.render(issue, LINKS) == naive == renderer.render(issue, LINKS)  # first, then kept
    kept = renderer._shared
    assert 1 <= len(kept._items) < 40
    assert kept._bytes == sum(body.memory for body in kept._items.values()) <= 400_000


def test_a_body_is_kept_from_its_second_reader_on() -> None:
    """Readers who each get their own papers cost no bookkeeping: a body seen once is rendered with the
    reader's values and not kept; seen again, it is kept, and later readers of it take it filled in."""
    renderer = direct_first(Renderer(SETTINGS))
    papers = [paper(i) for i in range(30)]
    alone = [issue_of([("a", "A", papers[k:k + 5])], email=f"alone{k}@example.org") for k in range(10)]
    for issue in alone:
        assert renderer.render(issue, LINKS) == renderer.render_naive(issue, LINKS)
    assert not renderer._shared._items
    shared = issue_of([("a", "A", papers[3:8])], email="second@example.org")  # alone[3]'s papers
    assert renderer.render(shared, LINKS) == renderer.render_naive(shared, LINKS)
    assert len(renderer._shared._items) == 1


def test_readers_of_papers_of_their_own_share_each_papers_card() -> None:
    """Readers who each get a different set of papers: every message is the reference path's, each
    paper's card is rendered once (not once per reader), and no body is kept."""
    renderer = direct_first(Renderer(SETTINGS))
    papers = [paper(i) for i in range(12)]
    issues = [issue_of([("a", "A", papers[k:k + 4]), ("b", "B", papers[k + 4:k + 6])], email=f"own{k}@example.org")
              for k in range(6)]
    for issue in issues:
        assert renderer.render(issue, LINKS) == renderer.render_naive(issue, LINKS)
    assert not renderer._shared._items
    assert 0 < renderer._formats._kept <= len(papers)


def test_bodies_are_kept_from_their_first_reader_only_while_readers_share_them() -> None:
    """The default renderer keeps every body for a run's first readers, then by what readers do: readers
    of papers of their own soon get their bodies put together for them alone (none kept), readers who
    share bodies keep having them kept from the first reader on."""
    from digest.render import SHARE_WINDOW

    papers = [paper(i) for i in range(40)]
    rng = random.Random(3)
    own = Renderer(SETTINGS)
    for k in range(SHARE_WINDOW // 4):
        issue = issue_of([("a", "A", rng.sample(papers, 6))], email=f"own{k}@example.org")
        own.render(issue, LINKS)
    warm_up = SHARE_WINDOW // 16
    assert warm_up - 1 <= len(own._shared._items) <= warm_up + 2
    shared = Renderer(SETTINGS)
    groups = [rng.sample(papers, 6) for _ in range(SHARE_WINDOW // 16)]
    for k in range(SHARE_WINDOW // 4):
        shared.render(issue_of([("a", "A", groups[k % len(groups)])], email=f"s{k}@example.org"), LINKS)
    late = issue_of([("a", "A", papers[:7])], email="late@example.org")  # a body not seen before
    shared.render(late, LINKS)
    assert len(shared._shared._items) == len(groups) + 1
    assert shared.render(late, LINKS) == shared.render_naive(late, LINKS)


@pytest.mark.parametrize("change", ["more-only", "twice"])
def test_card_templates_that_show_feedback_links_otherwise_still_render(tmp_path: Path, change: str) -> None:
    """A card template that shows only the "more" link, or shows it twice: every reader's email is the
    reference path's (the direct path takes the first, the full path the second)."""
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    edits = {
        "more-only": {"email.mjml": (' · <a href="{{c.less_url}}"', ' · <a href="https://d.example/less"'),
                      "email_card.txt": ("    Less like this: {{ c.less_url }}\n", "")},
        "twice": {"email.mjml": (">More like this</a>", '>More like this</a> <a href="{{c.more_url}}">Again</a>'),
                  "email_card.txt": ("    More like this: {{ c.more_url }}\n",
                                     "    More like this: {{ c.more_url }}\n    Again: {{ c.more_url }}\n")},
    }
    for name, (old, new) in edits[change].items():
        path = copy / name
        source = path.read_text(encoding="utf-8")
        assert old in source, name
        path.write_text(source.replace(old, new, 1), encoding="utf-8")
    renderer = direct_first(Renderer(SETTINGS, templates_dir=copy))
    papers = [paper(i) for i in range(8)]
    for k in range(3):
        issue = issue_of([("a", "A", papers[k:k + 4]), ("b", "B", papers[k + 4:k + 5])], email=f"f{k}@example.org")
        naive = renderer.render_naive(issue, LINKS)
        assert renderer.render(issue, LINKS) == naive == renderer.render(issue, LINKS)
        assert ("Again" in naive.text) == (change == "twice")
