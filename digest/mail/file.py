"""File backend: one ``.eml`` file per message in a folder (the demo's outbox)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from digest.mail.base import Mailer
from digest.models import Outcome, OutgoingMessage, SendResult


def _safe_name(message: OutgoingMessage) -> str:
    local = re.sub(r"[^A-Za-z0-9._-]+", "_", message.recipient)[:80]
    mid = re.sub(r"[^A-Za-z0-9._-]+", "_", message.message_id.strip("<>"))[:120]
    return f"{local}--{mid}.eml"


class FileMailer(Mailer):
    """Writes each message atomically (temp file + rename), named after recipient and Message-ID.

    The name is deterministic, so a re-sent message replaces its earlier copy instead of adding one.
    """

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def send(self, message: OutgoingMessage) -> SendResult:
        target = self.path / _safe_name(message)
        tmp = target.with_suffix(".tmp")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(message.data)
            os.replace(tmp, target)
        except OSError as err:
            return SendResult(Outcome.TRANSIENT, f"cannot write {target}: {err.strerror or err}")
        return SendResult(Outcome.DELIVERED, str(target))
