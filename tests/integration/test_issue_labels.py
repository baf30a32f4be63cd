"""One label per section everywhere: the preview before sending, the sent mail and a preview of the
stored issue afterwards name each section alike, and the header's topic count leaves "Other papers" out."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

from digest.mail import MemoryMailer
from digest.models import OTHER_LABEL, OTHER_SECTION, Subscriber, section_label
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import make_settings
from tests.email_samples import Sample

DAY = date(2026, 8, 19)


def sections_line(html: str) -> str:
    m = re.search(r"In this issue:[^<]*", html)
    assert m is not None
    return " ".join(m.group(0).split())


def test_section_label_is_one_rule() -> None:
    assert section_label(OTHER_SECTION, {}) == OTHER_LABEL == "Other papers"
    assert section_label("pruning", {"pruning": "Pruning & sparsity"}) == "Pruning & sparsity"
    assert section_label("gone", {}) == "gone"


def test_preview_sent_mail_and_stored_issue_agree(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = Store(settings.database.url)
    now = datetime(2026, 8, 19, 21, 0, tzinfo=UTC)
    mailer = MemoryMailer()
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: now)
    pipeline.fetch(["seed"], DAY)
    reader = store.add_subscriber(Subscriber(email="ada@example.org", topics=("pruning",),
                                             keywords=("benchmark", "language model"), max_papers=30))

    before = pipeline.preview_issue(reader, DAY)
    assert {s.topic for s in before.sections} >= {"pruning", OTHER_SECTION}
    preview_html = pipeline.renderer.render(before, pipeline.links.for_subscriber(reader.email, None)).html
    pipeline.send(DAY)
    [sent] = mailer.outbox
    sent_html = Sample("sent", sent.data).html
    after = pipeline.preview_issue(reader, DAY)
    after_html = pipeline.renderer.render(after, pipeline.links.for_subscriber(reader.email, None)).html

    assert [s.label for s in before.sections] == [s.label for s in after.sections]
    assert "Other papers (" in sections_line(preview_html)
    assert sections_line(preview_html) == sections_line(sent_html) == sections_line(after_html)
    others = sum(len(s.entries) for s in before.sections if s.topic == OTHER_SECTION)
    topics = len(before.sections) - 1
    count = f"{before.count} papers picked for you: {before.count - others} in {topics} topic"
    assert count in preview_html and count in sent_html
    store.close()
