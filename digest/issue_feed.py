"""Issues built while they are being delivered: what the builder thread tells the send loop.

A send builds its readers' issues by chunks (digest.issues) in a thread of its own while the send loop
(digest.send_engine) claims and delivers the records of the chunks already stored. The send loop must
neither conclude that nothing is left while chunks are still to come, nor wait when there is work in
hand; ``IssueFeed`` is the one thing both sides share: a count of chunks stored (``generation``), the
issues written so far, whether the builder is done, and a way to stop it early.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FeedState", "IssueFeed"]


@dataclass(frozen=True, slots=True)
class FeedState:
    """A moment of the feed: how many chunks were stored by then, and whether the builder had ended."""

    generation: int
    done: bool


class IssueFeed:
    """Thread-safe; the builder calls ``stored`` after each committed chunk and ``finish`` at its end."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0
        self._done = False
        self.created = 0  # issues (and pending delivery records) written so far
        # Readers found with a delivery past pending: skipped, unless this send delivered it meanwhile.
        self.already: list[int] = []
        self.cancelled = threading.Event()  # the send stopped: build no further chunk
        self._on_cancel: list[Callable[[], None]] = []

    # ---- the builder's side -----------------------------------------------------------------------

    def stored(self, created: int) -> None:
        """A chunk's issues are committed; ``created`` is the running count of issues written."""
        with self._changed:
            self.created = created
            self._generation += 1
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self._done = True
            self._generation += 1
            self._changed.notify_all()

    # ---- the send loop's side ---------------------------------------------------------------------

    def state(self) -> FeedState:
        with self._changed:
            return FeedState(self._generation, self._done)

    @property
    def done(self) -> bool:
        return self.state().done

    def wait_past(self, seen: FeedState, timeout: float) -> FeedState:
        """Wait until something was stored (or the builder ended) after ``seen``, at most ``timeout``
        seconds (so the caller can look at its stop flags meanwhile); the state then."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen.generation, timeout)
            return FeedState(self._generation, self._done)

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the first ``cancel`` (a builder in another process is told so)."""
        self._on_cancel.append(hook)

    def cancel(self) -> None:
        """Stop the builder after the chunk in hand (idempotent)."""
        with self._changed:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            hooks, self._on_cancel = self._on_cancel, []
        for hook in hooks:
            hook()
