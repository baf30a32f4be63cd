"""Mailer backends behind one base class, registered by short name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from digest.errors import ConfigError
from digest.mail.base import Mailer
from digest.mail.console import ConsoleMailer
from digest.mail.file import FileMailer
from digest.mail.memory import MemoryMailer

if TYPE_CHECKING:
    from digest.config import Settings


def _smtp(settings: Settings) -> Mailer:
    from digest.mail.smtp import SMTPMailer

    return SMTPMailer.from_settings(settings)


MAILERS: dict[str, Callable[[Settings], Mailer]] = {
    "file": lambda s: FileMailer(Path(s.mailer.path)),
    "console": lambda s: ConsoleMailer(),
    "memory": lambda s: MemoryMailer(),
    "smtp": _smtp,
}


def build_mailer(settings: Settings) -> Mailer:
    """The mailer named by ``[mailer] backend``; ConfigError for an unknown name."""
    try:
        factory = MAILERS[settings.mailer.backend]
    except KeyError as err:
        raise ConfigError(f"unknown backend {settings.mailer.backend!r}", key="mailer.backend") from err
    return factory(settings)


__all__ = ["MAILERS", "ConsoleMailer", "FileMailer", "Mailer", "MemoryMailer", "build_mailer"]
