"""In-memory backend for tests: keeps every message in ``outbox``; can be told to fail."""

from __future__ import annotations

from digest.mail.base import Mailer
from digest.models import Outcome, OutgoingMessage, SendResult


class MemoryMailer(Mailer):
    name = "memory"

    def __init__(self) -> None:
        self.outbox: list[OutgoingMessage] = []
        # recipient -> result to return instead of delivering (for tests of the send loop).
        self.failures: dict[str, SendResult] = {}

    def send(self, message: OutgoingMessage) -> SendResult:
        forced = self.failures.get(message.recipient)
        if forced is not None:
            return forced
        self.outbox.append(message)
        return SendResult(Outcome.DELIVERED, "stored in memory")
