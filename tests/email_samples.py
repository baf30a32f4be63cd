"""Real digest messages for the email-client, spam-filter and accessibility checks (and the README's
screenshots): the seed demo, a real recorded Hugging Face day and a hostile, oversized issue, each
built by the real pipeline (selection, rendering, MIME) into complete RFC 5322 messages."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from digest.config import Settings, settings_from_dict
from digest.mail import MemoryMailer
from digest.message import build_message, list_id_for
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.pipeline import Pipeline
from digest.render import Renderer
from digest.sources.hf_daily import parse_daily_papers
from digest.store import Store
from digest.subscribers import import_csv
from tests.samples import issue_of, load_papers, sample_links

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SEED_FILE = REPO / "digest" / "defaults" / "hf_papers_search.txt"
DEMO_CSV = REPO / "digest" / "defaults" / "demo_subscribers.csv"
HF_DAY = date(2026, 8, 18)
HF_DAY_FILE = FIXTURES / "days" / f"{HF_DAY.isoformat()}.json"


@dataclass(frozen=True, slots=True)
class Sample:
    """One complete message: a name for reports, its bytes, and its HTML and text parts."""

    name: str
    data: bytes

    def part(self, kind: str) -> str:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        body = parsed.get_body((kind,))
        assert body is not None, f"{self.name}: no text/{kind} part"
        return str(body.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str:
        return self.part("html")

    @property
    def text(self) -> str:
        return self.part("plain")


def _settings(folder: Path, **sources: object) -> Settings:
    return settings_from_dict({
        "database": {"url": f"sqlite:///{folder / 'digest.sqlite3'}"},
        "mailer": {"backend": "memory"},
        "sources": {"seed": {"path": str(SEED_FILE)}, **sources},
        "demo": {"subscribers_csv": str(DEMO_CSV)},
    }, origin="email samples")


def _send(settings: Settings, day: date, subscribers: list[Subscriber], papers: list[Paper] | None) -> list[bytes]:
    """Every message a real send of ``day`` delivers to ``subscribers`` (the demo readers when empty)."""
    store = Store(settings.database.url)
    try:
        mailer = MemoryMailer()
        now = datetime(day.year, day.month, day.day, 21, 0, tzinfo=UTC)
        pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: now)
        if papers is None:
            pipeline.fetch(["seed"], day)
        else:
            store.upsert_papers(papers, now)
            pipeline.tag_pending()
        for sub in subscribers:
            store.add_subscriber(sub)
        if not subscribers:
            import_csv(settings, store, DEMO_CSV)
        pipeline.send(day)
        return [m.data for m in sorted(mailer.outbox, key=lambda m: m.recipient)]
    finally:
        store.close()


def seed_demo(folder: Path) -> list[Sample]:
    """The issues ``make demo`` writes: the embedded seed listing to the three demo readers."""
    folder.mkdir(parents=True, exist_ok=True)
    datas = _send(_settings(folder), date(2026, 8, 19), [], None)
    return [Sample(f"seed-demo-{i + 1}", d) for i, d in enumerate(datas)]


def recorded_day_papers() -> list[Paper]:
    """The papers of a real recorded Hugging Face Daily Papers day (tests/fixtures/days)."""
    return parse_daily_papers(HF_DAY_FILE.read_bytes())


def recorded_day(folder: Path, max_papers: int = 20) -> list[Sample]:
    """A real recorded HF day sent to a reader of everything (``max_papers``) and to one of two topics."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(folder, seed={"enabled": False})
    readers = [Subscriber(email="ada@example.org", name="Ada", max_papers=max_papers),
               Subscriber(email="grace@example.org", topics=("diffusion", "pruning"), max_papers=10)]
    datas = _send(settings, HF_DAY, readers, recorded_day_papers())
    return [Sample(f"hf-day-{i + 1}", d) for i, d in enumerate(datas)]


def hostile_oversized() -> Sample:
    """An issue of markup-laden, overlong fields and far more text than fits Gmail's 102 KB: the renderer
    cuts it and links to the full issue."""
    settings = Settings()
    papers = load_papers(FIXTURES / "render" / "papers.jsonl", settings)[:80]
    long_abstract = " ".join(f"Sentence {i} explains & compares <one> more aspect of the method at length."
                             for i in range(60))
    evil = Paper(id="2611.66666", title='<script>alert("x")</script> & {{ 7*7 }} </mj-text> "q" ' + "W" * 90,
                 abstract='<img src="http://evil.example/p.gif"> $\\ell_p$ ' + long_abstract,
                 authors=('<a href="http://e">M</a>', 'O"Brien', "Zoë 数据", "D", "E"),
                 url='https://arxiv.org/abs/2611.66666?a=1&b="2"<>', code_url="javascript:alert(1)",
                 pdf_url="https://arxiv.org/pdf/2611.66666", upvotes=7)
    big = [Paper(id=p.id, title=p.title + " — " + p.title, abstract=long_abstract, authors=p.authors,
                 upvotes=p.upvotes, code_url=p.code_url, pdf_url=p.pdf_url, project_url=p.project_url,
                 ai_summary=(p.ai_summary or "") + " " + long_abstract[:400])
           for p in papers]
    half = len(big) // 2
    issue = issue_of([("pruning", "Pruning & sparsity", [evil, *big[:half]]), ("other", "Other papers", big[half:])],
                     email="obrien+tag@example.org")
    odd = IssueSection('x"<y>', '<i>"L&L"</i>', (IssueEntry(evil, '"why" <b>&</b>'),))
    issue = Issue(subscriber=issue.subscriber, date=issue.date, sections=(*issue.sections, odd),
                  top_pick=issue.top_pick, id=1)
    links = sample_links(settings, issue.subscriber.email, "1")
    rendered = Renderer(settings).render(issue, links, full_issue_url=links.archive)
    data = build_message(rendered, sender=settings.site.sender, recipient=issue.subscriber.email,
                         message_id="<digest.1.hostile@localhost>", date=datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
                         list_id=list_id_for(settings), links=links)
    return Sample("hostile-oversized", data)


def all_samples(folder: Path) -> list[Sample]:
    """The seed demo's issues, a real recorded day's and the hostile oversized one."""
    return [*seed_demo(folder / "seed"), *recorded_day(folder / "day"), hostile_oversized()]
