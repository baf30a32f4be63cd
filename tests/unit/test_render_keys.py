"""The fast path's cache keys cannot drift from the values they stand for: every field of a card, an
issue, its sections and entries and the reader's links is tried in turn, changed after the unchanged
value has filled the caches, and the fast path must then give what the reference path gives (a stale
card or body would not). The fields a shared body's key leaves out must change nothing it shows."""

from __future__ import annotations

import enum
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from digest.config import Settings
from digest.email_view import CardView, PaperView, build_view
from digest.links import FeedbackLinks, LinkBuilder, PersonalLinks, Signer
from digest.models import Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.render import PERSONAL_FIELDS, UNSHOWN_FIELDS, Renderer, content_key, keyed_fields, reader_values

SETTINGS = Settings()
MARKS = ("\x01", "\x02", "\x03", "\x04")


def changed(value: Any, where: str) -> Any:
    """Another value of the same kind (for a paper or entry: an equal but distinct object, which the
    caches must tell apart by identity or by value). A field of a kind not known here fails the test:
    teach it how to change the new field."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, enum.Enum):
        return next(m for m in type(value) if m is not value)
    if isinstance(value, str):
        return value + " changed <&>"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.25
    if isinstance(value, datetime):
        return value + timedelta(minutes=1)
    if isinstance(value, date):
        return value + timedelta(days=1)
    if isinstance(value, Paper):
        return replace(value, title=value.title + " (revised)")
    if isinstance(value, IssueEntry):
        return replace(value, reason=value.reason + " and more")
    if isinstance(value, FeedbackLinks):  # another reader's
        return LinkBuilder("https://h.example", SIGNER, "u@h.example").for_subscriber("bob@example.org", "11",
                                                                                      2).feedback
    if isinstance(value, Subscriber):
        return replace(value, email="other." + value.email, name=value.name + " Other")
    if isinstance(value, tuple) and value:
        return value[:-1]
    pytest.fail(f"{where}: no way to change a {type(value).__name__} here; teach changed() about it")


def paper(n: int) -> Paper:
    return Paper(id=f"2611.{n:05d}", title=f"Paper {n} & co", abstract=f"About {n}. More words.",
                 authors=(f"A{n}", "B"), url=f"https://x.example/{n}", code_url=f"https://c.example/{n}",
                 project_url=f"https://p.example/{n}", pdf_url=f"https://x.example/{n}.pdf", upvotes=n)


PAPERS = [paper(n) for n in range(1, 6)]
ENTRIES = tuple(IssueEntry(p, f"matches {p.id}", 1.5) for p in PAPERS)
ISSUE = Issue(subscriber=Subscriber(email="ann@example.org", name="Ann", id=1), date=date(2026, 11, 27),
              sections=(IssueSection("pruning", "Pruning", ENTRIES[:3]), IssueSection("other", "Other", ENTRIES[3:])),
              top_pick=ENTRIES[1], id=11, created_at=datetime(2026, 11, 27, 6, tzinfo=UTC))
SIGNER = Signer("render-keys-test-" + "k" * 32)
LINKS = PersonalLinks(preferences="https://h.example/p/ann", unsubscribe="https://h.example/u/ann",
                      unsubscribe_mailto="mailto:u@h.example?subject=ann", archive="https://h.example/a/ann",
                      feedback=LinkBuilder("https://h.example", SIGNER, "u@h.example").for_subscriber(
                          "ann@example.org", "11", 1).feedback)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SETTINGS)


def variants() -> list[tuple[str, Issue, PersonalLinks]]:
    """The issue and links with one field changed, for every field of every value they are made of."""
    out: list[tuple[str, Issue, PersonalLinks]] = []
    for f in fields(Issue):
        out.append((f"Issue.{f.name}", replace(ISSUE, **{f.name: changed(getattr(ISSUE, f.name), f.name)}), LINKS))
    section = ISSUE.sections[0]
    for f in fields(IssueSection):
        new = replace(section, **{f.name: changed(getattr(section, f.name), f.name)})
        out.append((f"IssueSection.{f.name}", replace(ISSUE, sections=(new, *ISSUE.sections[1:])), LINKS))
    entry = section.entries[0]
    for f in fields(IssueEntry):
        new_entry = replace(entry, **{f.name: changed(getattr(entry, f.name), f.name)})
        new_section = replace(section, entries=(new_entry, *section.entries[1:]))
        out.append((f"IssueEntry.{f.name}", replace(ISSUE, sections=(new_section, *ISSUE.sections[1:])), LINKS))
    for f in fields(PersonalLinks):
        out.append((f"PersonalLinks.{f.name}", ISSUE, replace(LINKS, **{f.name: changed(getattr(LINKS, f.name),
                                                                                             f.name)})))
    return out


def left_out(name: str) -> bool:
    cls, _, field_name = name.partition(".")
    by_name = {c.__name__: c for c in (Issue, IssueSection, IssueEntry, PersonalLinks)}
    return any(field_name in table.get(by_name[cls], frozenset()) for table in (PERSONAL_FIELDS, UNSHOWN_FIELDS))


@pytest.mark.parametrize(("name", "issue", "links"), variants(), ids=[v[0] for v in variants()])
def test_a_changed_field_gets_the_right_message_after_the_old_one_filled_the_caches(
        renderer: Renderer, name: str, issue: Issue, links: PersonalLinks) -> None:
    for _ in range(2):  # the unchanged values fill the card and (from a body's second reader) body caches
        renderer.render(ISSUE, LINKS)
    fast = renderer.render(issue, links)
    assert fast == renderer.render_naive(issue, links), name


@pytest.mark.parametrize(("name", "issue", "links"), variants(), ids=[v[0] for v in variants()])
def test_the_shared_body_key_holds_every_field_it_does_not_name(name: str, issue: Issue, links: PersonalLinks) -> None:
    before = content_key(ISSUE, LINKS, None, reader_values(ISSUE, LINKS))
    after = content_key(issue, links, None, reader_values(issue, links))
    if left_out(name):
        # Left out of the key: then nothing the shared body shows may depend on it.
        assert after == before, name
        assert build_view(SETTINGS, issue, links, None, MARKS) == build_view(SETTINGS, ISSUE, LINKS, None, MARKS), name
    else:
        assert after != before, name


def test_the_key_is_generated_from_the_fields() -> None:
    assert keyed_fields(IssueSection) == ("topic", "label")
    assert keyed_fields(IssueEntry) == ("reason",)
    assert keyed_fields(Issue) == ("date",)
    # A personal value left empty is in the key (a template may show something else in its place).
    empty = replace(LINKS, preferences="javascript:alert(1)")  # cleaned to ""
    assert content_key(ISSUE, empty, None, reader_values(ISSUE, empty)) != content_key(
        ISSUE, LINKS, None, reader_values(ISSUE, LINKS))
    # Feedback links or none: a body with them is not one without.
    bare = replace(LINKS, feedback=None)
    assert content_key(ISSUE, bare, None, reader_values(ISSUE, bare)) != content_key(
        ISSUE, LINKS, None, reader_values(ISSUE, LINKS))


CARD = CardView(title="T <&>", url="https://x.example/1", authors="A, B", upvotes=3, code_url="https://c.example",
                project_url="https://p.example", pdf_url="https://x.example/1.pdf", summary="Short.", number=2,
                why="matches <pruning>")


@pytest.mark.parametrize("name", [f.name for f in fields(CardView)])
def test_every_field_of_a_card_reaches_its_cached_rendering(renderer: Renderer, name: str) -> None:
    """The card fragment cache is keyed by the card itself (a frozen value): a field added to the view
    is in its key, and a changed one is never served from the old card."""
    renderer._card_parts(CARD)
    card = replace(CARD, **{name: changed(getattr(CARD, name), name)})
    whole = (renderer._card_template.render(cards=(card,)).encode(),
             renderer._text_card_template.render(c=card).encode())
    assert renderer._card_parts(card) == whole


def test_a_card_is_a_paper_view_placed_in_an_issue() -> None:
    """CardView adds its number, reason (and the reader's feedback links) to PaperView's fields instead
    of restating them."""
    assert issubclass(CardView, PaperView)
    names = [f.name for f in fields(CardView)]
    assert names[:len(fields(PaperView))] == [f.name for f in fields(PaperView)]
    assert names[len(fields(PaperView)):][:2] == ["number", "why"]
