"""The exception tree of digest: every error a user can cause or meet has a class here.

    DigestError                 base; carries a one-line message meant for the user
    ├── ConfigError             bad config file, unknown key, wrong type, unknown backend (exit 2)
    ├── UsageError              bad command-line input: invalid address, unknown topic or time zone (exit 2)
    ├── SourceError             one source failed to fetch or parse; names the source
    ├── StoreError              the database could not be opened, migrated or written
    ├── RenderError             a template failed to compile or render
    └── DeliveryError           a mailer could not hand a message on (what became of each message is
                                a SendResult, not an error)
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of all digest errors; ``str(err)`` is a single line fit for a terminal."""

    exit_code = 1


class ConfigError(DigestError):
    """The configuration is invalid. ``key`` is the dotted path of the offending key, if known."""

    exit_code = 2

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class UsageError(DigestError):
    """The user asked for something impossible (invalid address, unknown topic, bad date)."""

    exit_code = 2


class SourceError(DigestError):
    """A source failed. ``source`` is its config name; the message says why in one line."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class StoreError(DigestError):
    """The store could not be opened, migrated or written."""


class RenderError(DigestError):
    """An email could not be rendered."""


class DeliveryError(DigestError):
    """A message could not be handed to the mail system."""
