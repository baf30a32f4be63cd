"""Feedback from the mail and the web: every card's two links, the page behind them (a GET records
nothing, one POST does, idempotent, undo), forged and foreign links refused, the reader's own issue page
with the buttons and the public archive without, and a library upload on the preferences page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import html as lxml_html

from digest.models import Paper, Subscriber, Verdict
from tests.conftest import NOW
from tests.integration.test_web import BASE_URL, ORIGIN, Web, make_web


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    w = make_web(tmp_path, monkeypatch)
    yield w
    w.client.close()
    w.store.close()


@pytest.fixture
def sent(web: Web, seed_papers: list[Paper]) -> tuple[Subscriber, EmailMessage]:
    web.store.upsert_papers(seed_papers, now=NOW - timedelta(hours=2))
    web.pipeline.tag_pending()
    sub = web.add("reader@example.org", topics=("pruning", "diffusion"))
    web.add("other@example.org", topics=("pruning",))
    assert web.pipeline.send(NOW.date()).sent == 2
    [mail] = [m for m in web.mails() if m["To"] == "reader@example.org"]
    return sub, mail


def _feedback_links(mail: EmailMessage) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(visible text, aria-label, href) of each feedback link in the HTML; feedback URLs in the text part."""
    page = lxml_html.document_fromstring(mail.get_body(("html",)).get_content())  # type: ignore[union-attr]
    links = [(a.text_content(), a.get("aria-label") or "", a.get("href") or "")
             for a in page.iter("a") if "/feedback/" in (a.get("href") or "")]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    urls = re.findall(r"^    (?:More|Less) like this: (\S+)$", text, re.MULTILINE)
    return links, urls


def _csrf(web: Web, path: str) -> str:
    page = web.client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def _verdicts(web: Web, sub: Subscriber) -> dict[str, Verdict]:
    assert sub.id is not None
    return {f.paper_id: f.verdict for f in web.store.list_feedback(sub.id)}


def test_every_card_in_both_parts_carries_its_own_two_links(web: Web, sent: tuple[Subscriber, EmailMessage]) -> None:
    sub, mail = sent
    issue = web.store.find_issue(sub.id or 0, NOW.date(), web.pipeline.labels)
    assert issue is not None and issue.count >= 2
    links, text_urls = _feedback_links(mail)
    assert [t for t, _, _ in links] == ["More like this", "Less like this"] * issue.count
    assert [h for _, _, h in links] == text_urls  # the text part has the same links, in the same order
    email_of = {sub.id: sub.email}.get
    for number, entry in enumerate(issue.entries, 1):
        more, less = links[2 * number - 2], links[2 * number - 1]
        assert more[1] == f"More like this: paper {number}" and less[1] == f"Less like this: paper {number}"
        for (_, _, href), verdict in ((more, Verdict.MORE), (less, Verdict.LESS)):
            token = href.removeprefix(f"{BASE_URL}/feedback/")
            assert web.signer.verify_feedback(token, email_of) == (sub.id, sub.email, entry.paper.id, verdict)


def test_get_shows_a_button_and_records_nothing_the_post_records(web: Web,
                                                                 sent: tuple[Subscriber, EmailMessage]) -> None:
    sub, mail = sent
    links, _ = _feedback_links(mail)
    more = links[0][2].removeprefix(BASE_URL)
    less = links[1][2].removeprefix(BASE_URL)
    page = web.client.get(more)
    assert page.status_code == 200 and "<form method=\"post\">" in page.text
    assert "will rank higher" in page.text and page.headers["cache-control"] == "no-store"
    assert web.client.head(more).status_code in (200, 405)
    assert _verdicts(web, sub) == {}  # a GET (a mail scanner) records nothing
    token = _csrf(web, more)
    assert web.client.post(more, data={"action": "record"}, headers=ORIGIN).status_code == 403  # no CSRF token
    assert _verdicts(web, sub) == {}
    done = web.client.post(more, data={"action": "record", "csrf_token": token}, headers=ORIGIN)
    assert done.status_code == 200 and "Noted" in done.text and "Undo" in done.text
    [paper_id] = _verdicts(web, sub)
    assert _verdicts(web, sub) == {paper_id: Verdict.MORE}
    again = web.client.post(more, data={"action": "record", "csrf_token": token}, headers=ORIGIN)
    assert again.status_code == 200 and _verdicts(web, sub) == {paper_id: Verdict.MORE}  # idempotent
    assert "already said" in web.client.get(more).text
    web.client.post(less, data={"action": "record", "csrf_token": token}, headers=ORIGIN)
    assert _verdicts(web, sub) == {paper_id: Verdict.LESS}  # a later verdict replaces
    undone = web.client.post(less, data={"action": "undo", "csrf_token": token}, headers=ORIGIN)
    assert undone.status_code == 200 and "Undone" in undone.text and _verdicts(web, sub) == {}


def test_forged_altered_and_foreign_links_are_refused(web: Web, sent: tuple[Subscriber, EmailMessage]) -> None:
    sub, mail = sent
    other = web.store.get_subscriber("other@example.org")
    assert other is not None and other.id is not None
    links, _ = _feedback_links(mail)
    token = links[0][2].rsplit("/", 1)[1]
    reader, paper, verdict, tag = token.split(".")
    second_paper = links[2][2].rsplit("/", 1)[1].split(".")[1]
    bad = [
        f"{reader}.{paper}.less.{tag}",  # the verdict swapped
        f"{reader}.{second_paper}.{verdict}.{tag}",  # another paper
        f"{other.id}.{paper}.{verdict}.{tag}",  # another reader
        f"{reader}.{paper}.{verdict}.{'0' * len(tag)}",  # a made-up tag
        f"{reader}.{paper}.{verdict}",
        "x" * 40,
        f"99999.{paper}.{verdict}.{tag}",  # nobody
    ]
    for token in bad:
        assert web.client.get(f"/feedback/{token}").status_code == 400, token
        page = web.client.get(links[0][2].removeprefix(BASE_URL))
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        posted = web.client.post(f"/feedback/{token}", data={"action": "record", "csrf_token": csrf.group(1)},
                                 headers=ORIGIN)
        assert posted.status_code == 400, token
    assert _verdicts(web, sub) == {} and _verdicts(web, other) == {}
    # The reader deleted: their links go with them.
    assert web.store.remove_subscriber(sub.email)
    assert web.client.get(links[0][2].removeprefix(BASE_URL)).status_code == 400


def test_the_readers_issue_page_has_the_buttons_the_public_archive_none(
        web: Web, sent: tuple[Subscriber, EmailMessage]) -> None:
    sub, mail = sent
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    issue_link = re.search(re.escape(BASE_URL) + r"/issue/[A-Za-z0-9_.\-]+", text)
    assert issue_link
    page = web.client.get(issue_link.group(0).removeprefix(BASE_URL))
    assert page.status_code == 200
    mail_links, _ = _feedback_links(mail)
    shown = re.findall(r'href="([^"]*/feedback/[^"]+)"', page.text)
    assert shown == [h for _, _, h in mail_links]
    assert sub.email not in page.text  # the links name the reader by number and tag only
    day = (NOW - timedelta(hours=2)).date().isoformat()
    for public in (f"/archive/{day}", "/archive", "/archive/feed.atom"):
        answer = web.client.get(public)
        assert answer.status_code == 200 and "/feedback/" not in answer.text and "like this" not in answer.text


BIBTEX = """@article{a, title = {%s}, journal = {arXiv preprint arXiv:%s}}
@misc{b, title = {A paper nobody stored}}
"""


def test_a_library_upload_on_the_preferences_page(web: Web, seed_papers: list[Paper]) -> None:
    web.store.upsert_papers(seed_papers, now=NOW - timedelta(hours=2))
    sub = web.add("lib@example.org")
    from digest.links import Scope

    path = f"/preferences/{web.token(Scope.PREFERENCES, sub.email)}"
    token = _csrf(web, path)
    assert 'enctype="multipart/form-data"' in web.client.get(path).text
    paper = seed_papers[0]
    body = (BIBTEX % (paper.title, paper.id)).encode()
    answer = web.client.post(f"{path}/library", data={"csrf_token": token}, headers=ORIGIN,
                             files={"library": ("mine.bib", body, "application/x-bibtex")})
    assert answer.status_code == 200, answer.text
    assert "Imported: 1 paper used, 1 not found" in " ".join(answer.text.split())
    assert _verdicts(web, sub) == {paper.id: Verdict.MORE}
    refused = web.client.post(f"{path}/library", data={"csrf_token": token}, headers=ORIGIN,
                              files={"library": ("junk.txt", b"hello\n", "text/plain")})
    assert refused.status_code == 400 and "not an arXiv id or URL" in refused.text
    no_csrf = web.client.post(f"{path}/library", headers=ORIGIN, files={"library": ("mine.bib", body, "text/plain")})
    assert no_csrf.status_code == 403
    huge = web.client.post(f"{path}/library", data={"csrf_token": token}, headers=ORIGIN,
                           files={"library": ("big.bib", b"%" * (3 * 1024 * 1024), "text/plain")})
    assert huge.status_code == 413
    # Elsewhere the 64 KB form limit still holds.
    assert web.client.post(path, data={"csrf_token": token, "keywords": "x" * 70_000},
                           headers=ORIGIN).status_code == 413
