"""The feedback pages: a mail's "More like this" / "Less like this" link, and a library upload on the
preferences page. A GET never records anything (mail scanners open every link); one POST does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from digest.email_view import clean_text
from digest.errors import UsageError
from digest.feedback import ImportResult, import_library
from digest.links import TokenError
from digest.models import Subscriber, Verdict
from digest.web.service import LinkProblem

if TYPE_CHECKING:
    from digest.pipeline import Pipeline

# The largest library file the preferences page accepts (a BibTeX export of a thousand papers is
# about 1 MB); the web app's body limit is raised to this for that one form (see create_app).
MAX_UPLOAD_BYTES = 2 * 1024 * 1024

# What a verdict will change, as the page says it.
EFFECT = {
    Verdict.MORE: "Papers like this one will rank higher in your next issues, and a new paper outside "
                  "your topics may be included when it closely resembles it.",
    Verdict.LESS: "Papers like this one will rank lower in your next issues (your topics and keywords "
                  "still decide what can be included).",
}


@dataclass(frozen=True, slots=True)
class FeedbackTarget:
    """What a feedback link is about: its reader, its paper (id and title) and its verdict."""

    sub: Subscriber
    paper_id: str
    title: str
    verdict: Verdict
    current: Verdict | None  # what the reader said of this paper so far, if anything

    @property
    def effect(self) -> str:
        return EFFECT[self.verdict]


class FeedbackService:
    """Synchronous (database) side of the feedback pages; the app runs it in a thread pool."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.signer = pipeline.links.signer

    def target(self, token: str) -> FeedbackTarget:
        """LinkProblem: 400 for a forged or altered link, 404 for a paper or reader no longer here."""
        found: dict[int, Subscriber] = {}

        def email_of(sub_id: int) -> str | None:
            sub = self.store.get_subscriber_by_id(sub_id)
            if sub is None:
                return None
            found[sub_id] = sub
            return sub.email

        try:
            sub_id, _, paper_id, verdict = self.signer.verify_feedback(token, email_of)
        except TokenError as err:
            # A reader deleted since (their feedback with them) looks like any link that is not ours.
            raise LinkProblem(400, "This link is not valid",
                              "The link is incomplete, was not made by this site, or its subscription is "
                              "gone. Copy the whole link from the email.") from err
        sub = found[sub_id]
        papers = self.store.list_papers(ids=[paper_id])
        if not papers:
            raise LinkProblem(404, "No such paper", "This paper is no longer in the digest.")
        current = next((f.verdict for f in self.store.list_feedback(sub_id) if f.paper_id == paper_id), None)
        return FeedbackTarget(sub, paper_id, clean_text(papers[0].title) or "(untitled)", verdict, current)

    def record(self, target: FeedbackTarget) -> None:
        assert target.sub.id is not None
        self.store.set_feedback(target.sub.id, [(target.paper_id, target.verdict)], self.pipeline.clock())

    def undo(self, target: FeedbackTarget) -> None:
        assert target.sub.id is not None
        self.store.clear_feedback(target.sub.id, target.paper_id)

    def import_upload(self, sub: Subscriber, data: bytes, name: str) -> ImportResult:
        """UsageError (shown on the page) for a file that is no library or is too large."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise UsageError(f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        return import_library(self.store, sub, data, name or "the file", self.pipeline.clock())
