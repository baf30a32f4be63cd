"""Console backend: prints each message to a stream (stdout by default), for trying things out."""

from __future__ import annotations

import sys
from typing import TextIO

from digest.mail.base import Mailer
from digest.models import Outcome, OutgoingMessage, SendResult


class ConsoleMailer(Mailer):
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send(self, message: OutgoingMessage) -> SendResult:
        out = self.stream or sys.stdout
        out.write(message.data.decode("utf-8", "replace"))
        out.write("\n" + "-" * 79 + "\n")
        out.flush()
        return SendResult(Outcome.DELIVERED, "printed")
