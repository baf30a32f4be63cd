"""The digest email in a real browser (Debian's headless Chromium): nothing overflows at phone or desktop
width, nothing is fetched from the network, and dark mode keeps every text readable."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from digest.config import Settings
from digest.models import Paper
from digest.render import Renderer
from tests.samples import issue_of, load_papers, make_jobs

CHROMIUM = Path("/usr/bin/chromium")
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "render" / "papers.jsonl"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
]

# Every text element must differ clearly from its background: WCAG contrast of at least 3:1.
CONTRAST_JS = """() => {
  const parse = c => { const m = c.match(/[\\d.]+/g).map(Number); return m.length > 3 && m[3] === 0 ? null : m; };
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  const bg = el => { for (; el; el = el.parentElement) { const c = parse(getComputedStyle(el).backgroundColor);
                     if (c) return c; } return [255, 255, 255]; };
  const worst = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null) continue;
    const fg = parse(getComputedStyle(el).color), b = bg(el);
    const [l1, l2] = [lum(fg), lum(b)].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    if (ratio < 3) worst.push([el.tagName, el.className, ratio.toFixed(2), el.textContent.slice(0, 40)]);
  }
  return worst;
}"""

OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && el.offsetParent !== null && r.right > width + 1) wide.push([el.tagName, el.className, r.right]);
  }
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5)};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def html() -> str:
    settings = Settings()
    papers = load_papers(FIXTURE, settings)
    job = max(make_jobs(papers, settings, 30, date(2026, 11, 27)), key=lambda j: j.issue.count)
    long_words = Paper(id="2611.99999", title="Supercalifragilistic" * 6 + " $\\ell_p$ " + "x" * 120,
                       abstract="A" * 400 + ". " + "https://example.org/" + "y" * 200,
                       authors=tuple(f"Author{i}" * 5 for i in range(8)), code_url="https://github.com/" + "z" * 150)
    issue = issue_of([(s.topic, s.label, [e.paper for e in s.entries]) for s in job.issue.sections]
                     + [("edge", "Edge cases", [long_words])])
    return Renderer(settings).render(issue, job.links).html


def open_page(browser: object, html: str, width: int, scheme: str = "light") -> tuple[object, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)  # type: ignore[attr-defined]
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_content(html, wait_until="load")
    return page, requests


@pytest.mark.parametrize("width", [375, 800])
def test_nothing_overflows_horizontally(browser: object, html: str, width: int) -> None:
    page, _ = open_page(browser, html, width)
    result = page.evaluate(OVERFLOW_JS)  # type: ignore[attr-defined]
    assert result["width"] == width
    assert result["scroll"] <= width, result
    assert not result["wide"], result


def test_cards_use_the_full_phone_width(browser: object, html: str) -> None:
    page, _ = open_page(browser, html, 375)
    widths = page.evaluate("() => [...document.querySelectorAll('.card')].map(e => e.getBoundingClientRect().width)")  # type: ignore[attr-defined]
    assert widths and min(widths) > 300


def test_nothing_is_fetched(browser: object, html: str) -> None:
    page, requests = open_page(browser, html, 800)
    page.wait_for_timeout(300)  # type: ignore[attr-defined]
    assert [u for u in requests if not u.startswith(("about:", "data:"))] == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_is_readable_in_light_and_dark_mode(browser: object, html: str, scheme: str) -> None:
    page, _ = open_page(browser, html, 800, scheme)
    assert page.evaluate(CONTRAST_JS) == []  # type: ignore[attr-defined]
    body_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")  # type: ignore[attr-defined]
    assert (body_bg == "rgb(17, 20, 24)") == (scheme == "dark")
