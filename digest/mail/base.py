"""The mailer contract every backend (file, console, memory, smtp) implements."""

from __future__ import annotations

from types import TracebackType

from digest.models import OutgoingMessage, SendResult


class Mailer:
    """Hands finished messages to a mail system.

    Use as a context manager (``open()`` on enter, ``close()`` on exit). ``send`` delivers one message
    and returns its outcome; it never raises for a per-message problem (a refused recipient, a lost
    connection): that is reported as a SendResult so one bad recipient never stops the others.
    A backend whose ``concurrency`` is above 1 must accept ``send`` from that many threads at once
    (the send loop runs one worker thread per allowed connection). Backends are not required to be
    idempotent: the delivery records, not the mailer, make re-runs safe.
    """

    name = "base"
    # How many messages the backend sends at once; the send loop sizes its batches by it.
    concurrency = 1

    def open(self) -> None:
        """Acquire resources (connections, directories). Idempotent."""

    def close(self) -> None:
        """Release resources. Idempotent; safe after a failed open()."""

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def __enter__(self) -> Mailer:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
