"""Re-make the README screenshots of a real issue: desktop (800 px) and phone (375 px), light and dark.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--html var/sample-issue.html]

The issue is what a real send delivers for a real recorded Hugging Face Daily Papers day
(tests/fixtures/days/2026-08-18.json) to a reader of every topic: the real selection, renderer and MIME
message (tests/email_samples.py). Debian's headless Chromium (``apt-get install chromium``) photographs
its HTML part through Playwright, once per colour scheme. Nothing touches the network: the email loads
no remote resources, and the browser runs with background networking off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.email_samples import recorded_day  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# name: (width, height, device scale, colour scheme), in CSS pixels
SHOTS = {
    "desktop.png": (800, 1500, 1, "light"),
    "desktop-dark.png": (800, 1500, 1, "dark"),
    "mobile.png": (375, 1400, 2, "light"),
    "mobile-dark.png": (375, 1400, 2, "dark"),
}
ARGS = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def sample_html() -> str:
    """The HTML part of the recorded day's issue for a reader of everything (12 papers)."""
    with tempfile.TemporaryDirectory() as tmp:
        return recorded_day(Path(tmp), max_papers=12)[0].html


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--html", type=Path, help="also keep the rendered HTML here")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"screenshots: Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    html = sample_html()
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(html, encoding="utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            for name, (width, height, scale, scheme) in SHOTS.items():
                context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale,
                                              color_scheme=scheme)
                page = context.new_page()
                page.set_content(html)
                page.screenshot(path=str(args.out / name))
                context.close()
                print(f"wrote {args.out / name} ({width}x{height} CSS px, scale {scale}, {scheme})")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
