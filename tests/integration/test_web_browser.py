"""A real browser (Debian's headless Chromium, driven by Playwright) walks the whole reader journey."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import uvicorn

from digest.models import Frequency, Paper, Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.store import Store
from digest.web import create_app
from tests.conftest import make_settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET_ENV = "DIGEST_TEST_BROWSER_SECRET"


@dataclass
class Site:
    url: str
    outbox: Path
    store: Store
    pipeline: Pipeline


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The app served by a real uvicorn on a free 127.0.0.1 port, mail going to a file outbox."""
    monkeypatch.setenv(SECRET_ENV, "browser-test-secret")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, mailer={"backend": "file", "path": str(outbox)},
                             site={"base_url": url, "secret_env": SECRET_ENV})
    store = Store(settings.database.url)
    pipeline = Pipeline(settings, store)
    server = uvicorn.Server(uvicorn.Config(create_app(pipeline), log_config=None, lifespan="off",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Site(url, outbox, store, pipeline)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        store.close()


def _browser_or_skip():  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    return sync_api.sync_playwright()


def _wait_for_mail(outbox: Path, recipient: str, timeout: float = 10.0, subject: str = "Confirm") -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == recipient and subject in str(message["Subject"]):
                return message  # type: ignore[return-value]
        time.sleep(0.05)
    raise AssertionError(f"no confirmation email for {recipient} in {outbox}")


class Shots:
    """Screenshots under tmp_path; also copied to docs/screenshots/ when DIGEST_SAVE_SCREENSHOTS=1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, page, name: str, full_page: bool = True) -> None:  # type: ignore[no-untyped-def]
        path = self.folder / f"web-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 5_000, f"screenshot {path.name} looks empty"
        self.taken.append(path)

    def publish(self) -> None:
        if os.environ.get("DIGEST_SAVE_SCREENSHOTS") == "1":
            target = REPO / "docs" / "screenshots"
            target.mkdir(parents=True, exist_ok=True)
            for path in self.taken:
                shutil.copy(path, target / path.name)


def _sent_issue(site: Site, seed_papers: list[Paper]) -> int:
    """One real issue sent through the file mailer, so the archive has something to show."""
    site.store.upsert_papers(seed_papers)
    site.pipeline.tag_pending()
    site.store.add_subscriber(Subscriber(email="demo.reader@example.org", topics=("pruning", "diffusion", "nas")))
    assert site.pipeline.send().sent == 1
    return site.store.list_issues()[0].id


def test_subscribe_confirm_preferences_unsubscribe_in_chromium(
    site: Site, tmp_path: Path, seed_papers: list[Paper]
) -> None:
    playwright = _browser_or_skip()
    issue_id = _sent_issue(site, seed_papers)
    shots = Shots(tmp_path)
    reader = "reader@example.org"
    with playwright as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(timezone_id="Europe/Paris", viewport={"width": 1000, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)

            # Subscribe: the time zone comes from the browser through the optional script.
            page.goto(site.url + "/")
            assert page.input_value('input[name="tz"]') == "Europe/Paris"
            shots(page, "1-subscribe")
            page.fill('input[name="email"]', reader)
            page.check('input[name="topics"][value="pruning"]')
            page.check('input[name="topics"][value="diffusion"]')
            page.fill('input[name="keywords"]', "sparsity")
            page.click('button[type="submit"]')
            page.wait_for_selector("text=Check your inbox")
            shots(page, "2-check-your-inbox")
            assert site.store.get_subscriber(reader).status is SubscriberStatus.PENDING  # type: ignore[union-attr]

            # The confirmation email, as the file mailer wrote it.
            mail = _wait_for_mail(site.outbox, reader)
            text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            link = re.search(re.escape(site.url) + r"/confirm/[A-Za-z0-9_.\-]+", text)
            assert link, text
            # A blank page of its own: the site's CSP (no inline styles) must not apply to the email.
            mail_page = context.new_page()
            mail_page.set_content(mail.get_body(("html",)).get_content())  # type: ignore[union-attr]
            shots(mail_page, "3-confirmation-email")
            mail_page.close()

            # Confirm: the link opens a page; only the button confirms.
            page.goto(link.group(0))
            page.wait_for_selector("text=Confirm your subscription")
            shots(page, "4-confirm")
            assert site.store.get_subscriber(reader).status is SubscriberStatus.PENDING  # type: ignore[union-attr]
            page.click('button[type="submit"]')
            page.wait_for_selector("text=You are subscribed")
            shots(page, "5-confirmed")
            assert site.store.get_subscriber(reader).status is SubscriberStatus.CONFIRMED  # type: ignore[union-attr]

            # A confirm token confirms and nothing else: no preferences or unsubscribe link on that page.
            assert page.locator('a[href*="/preferences/"], a[href*="/unsubscribe/"]').count() == 0

            # Preferences, through the link every issue carries: fewer topics, an author, weekly on
            # Friday at 07:15.
            links = site.pipeline.links.for_subscriber(reader)
            page.goto(links.preferences)
            page.wait_for_selector("text=Your preferences")
            page.uncheck('input[name="topics"][value="diffusion"]')
            page.check('input[name="topics"][value="nas"]')
            page.fill('input[name="authors"]', "Song Han")
            page.check('input[name="frequency"][value="weekly"]')
            page.select_option('select[name="weekday"]', "4")
            page.fill('input[name="send_at"]', "07:15")
            page.click('button:has-text("Save preferences")')
            page.wait_for_selector("text=Saved.")
            shots(page, "6-preferences")
            sub = site.store.get_subscriber(reader)
            assert sub is not None
            assert sub.topics == ("pruning", "nas") and sub.authors == ("Song Han",)
            assert (sub.frequency, sub.weekday, sub.send_at.strftime("%H:%M"), sub.tz) == (
                Frequency.WEEKLY, 4, "07:15", "Europe/Paris")
            assert page.url.startswith(site.url + "/preferences/")  # the redirect is built from base_url

            # Unsubscribe, through the issue's link: the page asks, the button does it, and neither
            # offers a way into the preferences (an unsubscribe token only unsubscribes).
            page.goto(links.unsubscribe)
            page.wait_for_selector('button:has-text("Unsubscribe")')
            assert page.locator('a[href*="/preferences/"]').count() == 0
            shots(page, "7-unsubscribe")
            assert site.store.get_subscriber(reader).status is SubscriberStatus.CONFIRMED  # type: ignore[union-attr]
            page.click('button:has-text("Unsubscribe")')
            page.wait_for_selector("text=You are unsubscribed")
            shots(page, "8-unsubscribed")
            assert site.store.get_subscriber(reader).status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
            assert page.locator('a[href*="/preferences/"], form[action*="/preferences/"]').count() == 0
            # Coming back is the subscribe form, and so a new confirmation email.
            page.click("text=Subscribe again")
            page.wait_for_selector('input[name="email"]')

            # The public archive: days, and one day's edition (papers by topic, nobody's issue).
            page.goto(site.url + "/archive")
            day_link = page.locator('a[href^="/archive/2"]').first
            day_link.wait_for()
            assert page.locator(f'a[href="/archive/{issue_id}"]').count() == 0
            shots(page, "9-archive")
            day_link.click()
            page.wait_for_selector("h2")
            assert "demo.reader@example.org" not in page.content() and "Why:" not in page.content()
            shots(page, "10-archive-day", full_page=False)  # a whole day is many screens long

            # The demo reader's own issue, through the link in their email only.
            issue_mail = _wait_for_mail(site.outbox, "demo.reader@example.org", subject="")
            own = re.search(re.escape(site.url) + r"/issue/[A-Za-z0-9_.\-]+",
                            issue_mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
            assert own, "no link to the reader's own issue in their email"
            page.goto(own.group(0))
            page.wait_for_load_state()
            assert "demo.reader@example.org" not in page.content()
            assert page.locator("a").count() > 0 and page.locator('a[href*="/unsubscribe/"]').count() == 0

            # The subscribe page on a phone.
            phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                        is_mobile=True, timezone_id="Asia/Tokyo")
            small = phone.new_page()
            small.goto(site.url + "/")
            assert small.input_value('input[name="tz"]') == "Asia/Tokyo"
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
            shots(small, "11-subscribe-phone")
        finally:
            browser.close()
    shots.publish()
    assert len(shots.taken) == 11
