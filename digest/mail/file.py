"""File backend: one ``.eml`` file per message in a folder (the demo's outbox)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from digest.errors import DeliveryError
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
        """Make the outbox folder; DeliveryError (nothing sent, every record left pending) if it cannot
        be made or written to (a read-only filesystem, no permission)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DeliveryError(f"cannot create the outbox {self.path}: {err.strerror or err}") from err
        if not os.access(self.path, os.W_OK):
            reason = "read-only file system" if _read_only(self.path) else "no permission to write"
            raise DeliveryError(f"cannot write to the outbox {self.path}: {reason}")

    def send(self, message: OutgoingMessage) -> SendResult:
        target = self.path / _safe_name(message)
        tmp = target.with_suffix(".tmp")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(message.data)  # closed inside the try: a full disk may only say so then
            os.replace(tmp, target)
        except OSError as err:
            # Never leave a partial message behind (a full disk, a quota): it would look like mail.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return SendResult(Outcome.TRANSIENT, f"cannot write {target}: {err.strerror or err}")
        return SendResult(Outcome.DELIVERED, str(target))


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
