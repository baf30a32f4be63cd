"""DKIM signing of finished messages (dkimpy), with the key file, selector and domain from ``[smtp]``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from digest.errors import ConfigError

if TYPE_CHECKING:
    from digest.config import Settings

__all__ = ["SIGNED_HEADERS", "DkimSigner", "configured", "sign", "signer_for"]

# Every header a receiver or a one-click unsubscriber relies on (RFC 8058 requires both
# List-Unsubscribe headers to be covered). Each is listed twice ("oversigned"): the second entry signs
# the absence of another copy, so nobody can prepend a second List-Unsubscribe or Subject in transit.
SIGNED_HEADERS: tuple[bytes, ...] = tuple(
    name
    for header in (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Id", b"List-Unsubscribe",
                   b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type")
    for name in (header, header)
)


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """Signs with one RSA key (PEM) as ``selector._domainkey.domain``; relaxed/relaxed canonicalization."""

    selector: bytes
    domain: bytes
    key: bytes

    def sign(self, message: bytes) -> bytes:
        """``message`` with a ``DKIM-Signature`` header in front (CRLF line ends expected)."""
        import dkim

        signature: bytes = dkim.sign(message, self.selector, self.domain, self.key,
                                     include_headers=list(SIGNED_HEADERS), canonicalize=(b"relaxed", b"relaxed"),
                                     linesep=b"\r\n")
        return signature + message


def configured(settings: Settings) -> bool:
    return bool(settings.smtp.dkim_key_file)


_cache: dict[tuple[str, str, str], DkimSigner] = {}
_cache_lock = threading.Lock()


def signer_for(settings: Settings) -> DkimSigner | None:
    """The signer ``[smtp] dkim_*`` describes (None when ``dkim_key_file`` is empty), loaded once.

    ``dkim_domain`` defaults to the domain of ``[site] sender``. Raises ConfigError for a missing
    selector, an unreadable key file or a key dkimpy cannot use, so a bad set-up stops the run before
    any message is sent.
    """
    smtp = settings.smtp
    if not smtp.dkim_key_file:
        return None
    domain = smtp.dkim_domain or parseaddr(settings.site.sender)[1].rpartition("@")[2]
    cache_key = (smtp.dkim_key_file, smtp.dkim_selector, domain)
    with _cache_lock:
        cached = _cache.get(cache_key)
        if cached is not None:
            return cached
        if not smtp.dkim_selector:
            raise ConfigError("dkim_key_file is set but dkim_selector is empty", key="smtp.dkim_selector")
        if not domain:
            raise ConfigError("no DKIM domain: set smtp.dkim_domain or a sender address with a domain",
                              key="smtp.dkim_domain")
        try:
            key = Path(smtp.dkim_key_file).read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read DKIM key {smtp.dkim_key_file}: {err.strerror or err}",
                              key="smtp.dkim_key_file") from err
        if not (smtp.dkim_selector + domain).isascii():
            raise ConfigError("DKIM selector and domain must be ASCII (use the IDNA form)", key="smtp.dkim_domain")
        signer = DkimSigner(smtp.dkim_selector.encode("ascii"), domain.encode("ascii"), key)
        from dkim import DKIMException

        try:
            # A trial signature proves the key parses before the first real message depends on it.
            signer.sign(b"From: check@" + signer.domain + b"\r\n\r\n")
        except DKIMException as err:
            raise ConfigError(f"unusable DKIM key {smtp.dkim_key_file}: {err}", key="smtp.dkim_key_file") from err
        _cache[cache_key] = signer
        return signer


def sign(message: bytes, settings: Settings) -> bytes:
    """``message`` DKIM-signed as configured, or unchanged when DKIM is not configured."""
    signer = signer_for(settings)
    return message if signer is None else signer.sign(message)
