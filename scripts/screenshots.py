"""Re-make the README screenshots of a real rendered issue (desktop 800 px and phone 375 px wide).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--html var/sample-issue.html]

Builds an issue from recorded Hugging Face and arXiv listings (tests/fixtures/render/papers.jsonl),
renders it with the real Renderer, and photographs it with Debian's headless Chromium
(``apt-get install chromium``). Nothing touches the network: the email loads no remote resources and
Chromium runs with background networking off.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digest.bench_render import load_papers, sample_issue, sample_links  # noqa: E402
from digest.config import Settings  # noqa: E402
from digest.models import Subscriber  # noqa: E402
from digest.render import Renderer  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "render" / "papers.jsonl"
SHOTS = {"desktop.png": (800, 1700, 1), "mobile.png": (375, 1500, 2)}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--default-background-color=00000000"]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("screenshots: Chromium not found (Debian: apt-get install chromium)")


def sample_html(settings: Settings) -> str:
    papers = load_papers(FIXTURE, settings)
    reader = Subscriber(email="ada@example.org", max_papers=12, id=1)
    issue = sample_issue(papers, reader, date(2026, 8, 21), settings)
    links = sample_links(settings, reader.email, "2026-08-21")
    return Renderer(settings).render(issue, links).html


def shoot(chromium: str, page: Path, target: Path, width: int, height: int, scale: int) -> None:
    args = [chromium, *CHROMIUM_ARGS, f"--window-size={width},{height}", f"--force-device-scale-factor={scale}",
            f"--screenshot={target}", page.as_uri()]
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([*args, f"--user-data-dir={profile}"], check=True, capture_output=True, timeout=120)
    if not target.exists():
        raise SystemExit(f"screenshots: Chromium wrote no {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--html", type=Path, help="also keep the rendered HTML here")
    args = parser.parse_args()
    chromium = find_chromium()
    html = sample_html(Settings())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "issue.html"
        page.write_text(html, encoding="utf-8")
        if args.html:
            args.html.parent.mkdir(parents=True, exist_ok=True)
            args.html.write_text(html, encoding="utf-8")
        for name, (width, height, scale) in SHOTS.items():
            shoot(chromium, page, args.out / name, width, height, scale)
            print(f"wrote {args.out / name} ({width}x{height} CSS px, scale {scale})")


if __name__ == "__main__":
    main()
