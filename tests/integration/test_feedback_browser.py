"""A real browser (Debian's headless Chromium) follows "More like this" from a sent mail: the page
asks, the GET records nothing, the button records the verdict, undo forgets it."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from digest.models import Paper, Verdict
from tests.integration.test_web_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Shots,
    Site,
    _browser_or_skip,
    _sent_issue,
    site,  # noqa: F401 - a fixture
)


def _verdicts(served: Site) -> dict[str, Verdict]:
    sub = served.store.get_subscriber("demo.reader@example.org")
    assert sub is not None and sub.id is not None
    return {f.paper_id: f.verdict for f in served.store.list_feedback(sub.id)}


def test_more_like_this_from_a_sent_mail_in_chromium(site: Site, tmp_path: Path,  # noqa: F811 - the fixture
                                                     seed_papers: list[Paper]) -> None:
    playwright = _browser_or_skip()
    _sent_issue(site, seed_papers)
    [path] = sorted(site.outbox.glob("*.eml"))
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    shots = Shots(tmp_path)
    with playwright as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 800, "height": 700}).new_page()
            page.set_default_timeout(15_000)
            page.set_content(html)  # the mail as a client shows it
            first = page.locator('a:text-is("More like this")').first
            assert first.get_attribute("aria-label") == "More like this: paper 1"
            first.click()  # follow the link, as a reader does
            page.wait_for_selector("h1:has-text('More like this?')")
            assert "/feedback/" in page.url
            assert _verdicts(site) == {}  # the GET alone records nothing
            shots(page, "feedback", full_page=False)
            page.click('button:has-text("More like this")')
            page.wait_for_selector("text=Noted: more like this")
            [(paper_id, verdict)] = _verdicts(site).items()
            assert verdict is Verdict.MORE
            shots(page, "feedback-recorded", full_page=False)
            page.click('button:has-text("Undo")')
            page.wait_for_selector("h1:has-text('Undone')")
            assert _verdicts(site) == {}
            assert paper_id
        finally:
            browser.close()
    shots.publish()
