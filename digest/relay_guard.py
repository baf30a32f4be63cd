"""The relay guard: a send whose recipients are mostly refused stops, and suppresses nobody.

A relay that is misconfigured (it does not know us, our sender domain, or its own domains) answers
every RCPT with the same 5xx, often with no RFC 3463 status (``550 relay not permitted``). Taken one
by one, each looks like the reader's hard bounce; together they say the relay is refusing mail. So the
send engine shows the guard the outcome of every attempt of a run:

- While the first ``WINDOW`` (50) attempts are watched, a permanent refusal is *held*: its record stays
  pending and nothing is counted against the reader yet.
- More than ``WINDOW // 5`` (a fifth of 50: 11) refusals among them trip the guard: the run stops,
  every held record stays pending (a later run delivers them), nobody is suppressed, and the operator
  is told which reply the relay gave.
- Once ``WINDOW`` attempts passed with fewer refusals the relay is healthy: the held refusals are
  recorded as usual (failed; a hard bounce or an unexplained refusal, see digest.mail.smtp), and so is
  every later one.
- A run that ends with fewer attempts is judged on what it saw: at least ``MIN_REFUSED`` (2) refusals
  that are more than a fifth of its attempts trip it (two readers out of three refused alike is a
  relay, not two bad addresses); otherwise it is healthy. A run stopped early (SIGTERM) decides
  nothing: its held records stay pending.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["MIN_REFUSED", "WINDOW", "GuardState", "RelayGuard"]

WINDOW = 50
MIN_REFUSED = 2

T = TypeVar("T")


class GuardState(StrEnum):
    WATCHING = "watching"
    HEALTHY = "healthy"
    TRIPPED = "tripped"


class RelayGuard(Generic[T]):
    """Watches one run's attempts (not thread-safe: the send loop calls it under its write lock).

    ``attempt(refused, reply, item)`` says whether ``item`` (a permanent refusal) must be held back;
    ``released()`` hands back the held items once the relay proved healthy; ``finish()`` decides a run
    that ended before the window was full.
    """

    def __init__(self, window: int = WINDOW, min_refused: int = MIN_REFUSED) -> None:
        self.window = window
        self.limit = window // 5
        self.min_refused = min_refused
        self.state = GuardState.WATCHING
        self.attempts = 0
        self.refused = 0
        self.replies: Counter[str] = Counter()
        self.held: list[T] = []
        self._released: list[T] = []

    @property
    def tripped(self) -> bool:
        return self.state is GuardState.TRIPPED

    def attempt(self, refused: bool, reply: str, item: T) -> bool:
        """Count one attempt of the run; True if ``item``, a refusal, is to be held back (kept pending,
        held against nobody) because the relay is not known to be healthy."""
        if self.state is GuardState.HEALTHY:
            return False
        if self.state is GuardState.TRIPPED:
            if refused:  # a straggler of the stopped run: pending like the rest
                self.held.append(item)
            return refused
        self.attempts += 1
        if refused:
            self.refused += 1
            self.replies[reply] += 1
            self.held.append(item)
        if self.refused > self.limit:
            self.state = GuardState.TRIPPED
        elif self.attempts >= self.window:
            self._healthy()
        return refused

    def finish(self) -> GuardState:
        """The run ended with every claimed message attempted: decide if the window never filled."""
        if self.state is GuardState.WATCHING:
            if self.refused >= self.min_refused and self.refused * 5 > self.attempts:
                self.state = GuardState.TRIPPED
            else:
                self._healthy()
        return self.state

    def released(self) -> list[T]:
        """Held items to record now (the relay proved healthy); each is handed back once."""
        out, self._released = self._released, []
        return out

    def still_held(self) -> list[T]:
        """Items held and not released: their records stay pending (the run tripped or stopped)."""
        return [] if self.state is GuardState.HEALTHY else list(self.held)

    def reply(self) -> str:
        """The refusal the relay gave most often (what the operator needs to see)."""
        return self.replies.most_common(1)[0][0] if self.replies else ""

    def describe(self) -> str:
        """One line for the operator once tripped."""
        return (f"the relay is refusing mail: {self.refused} of the first {self.attempts} recipients were refused "
                f"({self.reply()}); the run stopped, nobody was suppressed")

    def _healthy(self) -> None:
        self.state = GuardState.HEALTHY
        self._released.extend(self.held)
        self.held = []
