"""The digest email in every inbox: client support (caniemail, through doiuse-email), spam filters
(SpamAssassin, local rules only) and accessibility (static checks, then axe-core and measurements in
Debian's headless Chromium at phone width, light and dark), over real messages: the seed demo, a real
recorded Hugging Face day and a hostile, oversized issue (tests/email_samples.py).

The Node tools live in tests/email_clients/ (package.json and its lockfile); .ci/run installs them with
``npm ci``, and so does the first test that needs them where npm is present. Without node or npm those
tests skip and say so; without ``spamassassin`` (Debian package, installed by .ci/run) the spam test
skips; without /usr/bin/chromium the browser tests skip.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import html as lxml_html

from tests.email_samples import Sample, all_samples

NODE_DIR = Path(__file__).resolve().parents[1] / "email_clients"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# The client families whose readers the email must serve fully (the issue's list).
FAMILIES = ("gmail", "outlook", "yahoo", "apple-mail", "samsung-email", "thunderbird")

# caniemail features the email uses although some of those clients lack them: each one is an
# enhancement whose absence leaves an email that reads and works the same. Anything else fails.
ALLOWED = {
    "@media": "phone font sizes and dark-mode colours; without it: the fluid 600 px layout in light colours",
    "Class selector": "<style> holds only enhancements (dark mode, phone sizes); every rule that matters "
                      "is inlined, so a client that drops <style> shows the same email",
    "Type selector": "as for class selectors: only enhancement rules sit in <style>",
    "Descendant combinator": "as for class selectors: only enhancement rules sit in <style>",
    "Chaining selectors": "as for class selectors: only enhancement rules sit in <style>",
    "Attribute selector": "[data-ogsc] dark-mode rules for Outlook's own dark mode; elsewhere ignored",
    "display:none": "hides the preheader (the inbox preview line); where unsupported it shows as the first "
                    "line of the email, a readable summary, not hidden text",
    "<body> element": "clients that replace <body> with a <div> lose its background colour, which MJML's "
                      "wrapper <div> and every section repeat",
    "aria-label attribute": "MJML names the email's wrapper for screen readers; a client that drops the "
                            "attribute reads the same content",
    "role attribute": "role=presentation on layout tables (and role=article on the wrapper) helps screen "
                      "readers; a client that drops it shows the same email",
    "word-break": "MJML's text cells break overlong words (URLs in titles); without it they wrap at spaces "
                  "as usual",
    "word-spacing": "MJML's reset of the body's word spacing to its default; nothing changes without it",
}
SPAM_LIMIT = 0.1
HTML_LIMIT = 102 * 1024
# Link texts that mean nothing out of context (a screen reader's list of links reads them alone).
VAGUE_LINKS = {"pdf", "code", "project", "project page", "here", "click here", "link", "more", "read more",
               "paper", "abstract"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return all_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def sample_files(samples: list[Sample], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("html")
    files = {}
    for sample in samples:
        files[sample.name] = folder / f"{sample.name}.html"
        files[sample.name].write_text(sample.html, encoding="utf-8")
    return files


def node_tools() -> Path:
    """tests/email_clients/node_modules, installed from the lockfile if missing (skip without node/npm)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm (Debian: apt-get install nodejs npm; .ci/run installs "
                    "tests/email_clients with npm ci)")
    modules = NODE_DIR / "node_modules"
    if not (modules / "@jsx-email" / "doiuse-email").is_dir() or not (modules / "axe-core").is_dir():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-500:]}")
    return modules


def doiuse(files: list[Path], clients: list[str]) -> dict[str, list[str]]:
    node_tools()
    done = subprocess.run(["node", str(NODE_DIR / "doiuse.mjs"), json.dumps(clients), *map(str, files)],
                          capture_output=True, text=True, timeout=300, check=True)
    return {Path(name).stem: result["errors"] for name, result in json.loads(done.stdout).items()}


ERROR = re.compile(r"^`(?P<feature>.+)` is not supported by `(?P<family>[a-z-]+)\.(?P<variant>[a-z-]+)`")


def parse_error(error: str) -> tuple[str, str, str]:
    m = ERROR.match(error)
    assert m is not None, f"doiuse-email reported something this test cannot read: {error}"
    return m["feature"], m["family"], m["variant"]


# ---------------------------------------------------------------------------------------------------
# Client support


def test_the_checker_sees_what_breaks_in_the_clients(tmp_path: Path) -> None:
    """A local anchor and a <style>-only layout are reported: the check below can fail."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><style>.x { display: flex; }</style></head>'
                    '<body><a href="#s1">Jump</a><div class="x" id="s1">x</div></body></html>')
    errors = doiuse([page], [f"{f}.*" for f in FAMILIES])["bad"]
    features = {parse_error(e)[0] for e in errors}
    assert "Local anchors" in features
    assert {"gmail", "samsung-email", "outlook"} <= {parse_error(e)[1] for e in errors if "Local anchors" in e}


def test_no_feature_a_major_client_lacks_outside_the_allowlist(sample_files: dict[str, Path]) -> None:
    errors = doiuse(list(sample_files.values()), [f"{f}.*" for f in FAMILIES])
    seen: Counter[str] = Counter()
    unexpected = []
    for name, found in errors.items():
        for error in found:
            feature, family, variant = parse_error(error)
            assert family in FAMILIES
            seen[feature] += 1
            if feature not in ALLOWED:
                unexpected.append(f"{name}: {feature} in {family}.{variant}")
    assert not unexpected, "features some major clients lack:\n" + "\n".join(sorted(set(unexpected)))
    stale = set(ALLOWED) - set(seen)
    assert not stale, f"allowlist entries no sample needs any more (remove them): {sorted(stale)}"


def test_no_local_anchors_and_nothing_remote(samples: list[Sample]) -> None:
    for sample in samples:
        page = lxml_html.document_fromstring(sample.html)
        hrefs = [a.get("href") or "" for a in page.iter("a")]
        assert not [h for h in hrefs if h.startswith("#")], sample.name
        assert not page.xpath("//img | //link | //script | //iframe | //object | //video | //audio"), sample.name
        assert "url(" not in sample.html and "@import" not in sample.html, sample.name
        assert len(sample.html.encode("utf-8")) < HTML_LIMIT, sample.name
        assert sample.text.strip(), f"{sample.name}: empty text part"
    oversized = next(s for s in samples if s.name == "hostile-oversized")
    assert "more papers in the full issue" in oversized.html, "the oversized sample was not cut to size"


def test_the_preheader_is_hidden_without_tricks(samples: list[Sample]) -> None:
    """Hidden by display:none (and mso-hide for Outlook), never by colour, size or opacity."""
    for sample in samples:
        page = lxml_html.document_fromstring(sample.html)
        [pre] = page.find_class("preheader")
        style = (pre.get("style") or "").replace(" ", "")
        assert "display:none" in style and "mso-hide:all" in style
        for trick in ("color:", "font-size:", "opacity", "line-height:", "max-height:"):
            assert trick not in style, (sample.name, trick)
        assert pre.text_content().strip(), sample.name


# ---------------------------------------------------------------------------------------------------
# Spam filters


def spamassassin_score(data: bytes) -> tuple[float, str]:
    done = subprocess.run(["spamassassin", "-L", "-t"], input=data, capture_output=True, timeout=120, check=True)
    report = done.stdout.decode("utf-8", "replace")
    m = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert m is not None, f"no SpamAssassin report in:\n{report[-2000:]}"
    return float(m.group(1)), report[m.start():]


@pytest.fixture(scope="module")
def spamassassin() -> None:
    if shutil.which("spamassassin") is None:
        pytest.skip("needs SpamAssassin (Debian: apt-get install spamassassin; .ci/run installs it)")


@pytest.mark.usefixtures("spamassassin")
def test_spamassassin_sees_hidden_text() -> None:
    """The scorer is live: white-on-white text is scored (so a clean score below means something)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "digest@example.org", "ada@example.org", "Papers"
    msg.set_content("Hello")
    msg.add_alternative('<html><body style="background:#ffffff"><div style="color:#ffffff;font-size:1px">'
                        + "cheap pills " * 20 + "</div><p>Hello</p></body></html>", subtype="html")
    score, report = spamassassin_score(bytes(msg))
    assert "HTML_FONT_LOW_CONTRAST" in report and score > SPAM_LIMIT


@pytest.mark.usefixtures("spamassassin")
def test_spamassassin_scores_real_issues_clean(samples: list[Sample]) -> None:
    for sample in samples:
        if sample.name in ("seed-demo-2", "seed-demo-3"):
            continue  # the same template and source as seed-demo-1: time saved, nothing missed
        score, report = spamassassin_score(sample.data)
        assert score <= SPAM_LIMIT, f"{sample.name} scores {score}:\n{report}"


# ---------------------------------------------------------------------------------------------------
# Accessibility: what the HTML says


def test_document_language_presentational_tables_and_heading_order(samples: list[Sample]) -> None:
    for sample in samples:
        page = lxml_html.document_fromstring(sample.html)
        assert page.get("lang") == "en", sample.name
        tables = page.xpath("//table")
        assert tables and all(t.get("role") == "presentation" for t in tables), sample.name
        levels = [int(h.tag[1]) for h in page.iter("h1", "h2", "h3", "h4", "h5", "h6")]
        assert levels and levels[0] == 1 and levels.count(1) == 1, (sample.name, levels)
        jumps = [(a, b) for a, b in itertools.pairwise(levels) if b > a + 1]
        assert not jumps, f"{sample.name}: heading levels skip: {jumps}"


def test_link_texts_make_sense_alone(samples: list[Sample]) -> None:
    for sample in samples:
        page = lxml_html.document_fromstring(sample.html)
        where: dict[str, set[str]] = {}
        for a in page.iter("a"):
            text = " ".join(a.text_content().split())
            assert text, f"{sample.name}: a link without text ({a.get('href')})"
            # The accessible name, as a screen reader's list of links reads it. The SPEC fixes the visible
            # texts "More like this" / "Less like this" (the same under every card), so those links name
            # their paper in aria-label, which must hold the visible text (WCAG 2.5.3, label in name).
            name = " ".join((a.get("aria-label") or text).split())
            assert text in name, f"{sample.name}: the accessible name {name!r} lacks the visible text {text!r}"
            assert name.casefold().strip(" →") not in VAGUE_LINKS, f"{sample.name}: vague link text {name!r}"
            where.setdefault(name, set()).add(a.get("href") or "")
        same = {t: h for t, h in where.items() if len(h) > 1}
        assert not same, f"{sample.name}: one link text, several targets: {same}"


# ---------------------------------------------------------------------------------------------------
# Accessibility in a real browser, at phone width


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


# The contrast of every text against the background it sits on (the nearest ancestor with one).
CONTRAST_JS = """() => {
  const parse = c => { const m = c.match(/[\\d.]+/g).map(Number); return m.length > 3 && m[3] === 0 ? null : m; };
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  const bg = el => { for (; el; el = el.parentElement) { const c = parse(getComputedStyle(el).backgroundColor);
                     if (c) return c; } return [255, 255, 255]; };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null) continue;
    const [l1, l2] = [lum(parse(getComputedStyle(el).color)), lum(bg(el))].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    if (ratio < 4.5) low.push([el.tagName, el.className, ratio.toFixed(2), el.textContent.trim().slice(0, 40)]);
  }
  return low;
}"""

# Every link's box: what a finger has to hit.
TARGETS_JS = """() => [...document.querySelectorAll('a')].filter(a => a.offsetParent !== null)
  .map(a => { const r = a.getBoundingClientRect();
              return [a.textContent.trim().slice(0, 40), Math.round(r.width), Math.round(r.height * 10) / 10]; })"""


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_contrast_and_tap_targets_at_phone_width(browser: object, samples: list[Sample], scheme: str) -> None:
    axe = node_tools() / "axe-core" / "axe.min.js"
    context = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme=scheme,  # type: ignore[attr-defined]
                                  java_script_enabled=True)
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("data:", "about:")) else None)
        for sample in samples:
            page.set_content(sample.html)
            page.add_script_tag(path=str(axe))
            result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
            bad = [(v["id"], v["impact"], len(v["nodes"]), v["nodes"][0]["target"])
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
            assert not bad, f"{sample.name} ({scheme}): axe reports {bad}"
            low = page.evaluate(CONTRAST_JS)
            assert not low, f"{sample.name} ({scheme}): text below 4.5:1 contrast: {low[:5]}"
            small = [t for t in page.evaluate(TARGETS_JS) if t[2] < 44]
            assert not small, f"{sample.name}: links under 44 px high on a phone: {small[:5]}"
        assert not requests, f"the email fetched {requests[:3]}"
    finally:
        context.close()
