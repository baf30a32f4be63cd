"""The per-delivery return path (VERP): ``bounces+<delivery id>-<signature>@<bounce domain>``.

The envelope sender of every message names its delivery record, so a bounce finds the delivery even
when the DSN's body is mangled or names a forwarded address. The signature (HMAC-SHA256 of the
delivery id under the installation's secret key, 80 bits in lower-case base32) makes the address
unguessable: a bounce sent to a forged or unsigned address changes nothing. Lower case only, because
some MTAs fold the case of local parts; the whole local part stays well under RFC 5321's 64 octets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.signing_key import SigningKey

__all__ = ["ReturnPath", "TokenCheck", "Verdict", "return_path_for"]

_TOKEN = re.compile(r"^(\d{1,18})-([a-z2-7]{16})$")


class Verdict(StrEnum):
    VALID = "valid"  # our prefix, our domain, a good signature
    FORGED = "forged"  # our prefix and domain, but the token does not verify
    UNSIGNED = "unsigned"  # our bounce address without a token
    FOREIGN = "foreign"  # not a return path of ours at all


@dataclass(frozen=True, slots=True)
class TokenCheck:
    verdict: Verdict
    delivery_id: int | None = None
    address: str = ""


class ReturnPath:
    """Builds and checks return paths ``{local_part}{delimiter}{token}@{domain}``."""

    def __init__(self, secret_key: str, domain: str, local_part: str = "bounces", delimiter: str = "+",
                 previous_keys: tuple[str, ...] = ()) -> None:
        self.domain = domain.strip().lower()
        self.local_part = local_part.strip().lower()
        self.delimiter = delimiter
        # Signing uses the current key; a bounce for mail sent before a key rotation still verifies.
        self._keys = [_derive(key) for key in (secret_key, *previous_keys)]

    def _signature(self, delivery_id: int, key: bytes | None = None) -> str:
        mac = hmac.new(key or self._keys[0], str(int(delivery_id)).encode("ascii"), hashlib.sha256).digest()
        return base64.b32encode(mac[:10]).decode("ascii").lower()

    def address(self, delivery_id: int) -> str:
        """The envelope sender for the message of delivery ``delivery_id``."""
        return f"{self.local_part}{self.delimiter}{int(delivery_id)}-{self._signature(delivery_id)}@{self.domain}"

    def check(self, address: str) -> TokenCheck:
        """What ``address`` is: one of ours with a valid token (and its delivery id), or not."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        if domain != self.domain or not local.startswith(self.local_part):
            return TokenCheck(Verdict.FOREIGN, address=address)
        rest = local[len(self.local_part):]
        if not rest:
            return TokenCheck(Verdict.UNSIGNED, address=address)
        if not rest.startswith(self.delimiter):
            return TokenCheck(Verdict.FOREIGN, address=address)
        found = _TOKEN.match(rest[len(self.delimiter):])
        if found is None:
            return TokenCheck(Verdict.FORGED, address=address)
        delivery_id = int(found.group(1))
        if not any(hmac.compare_digest(found.group(2), self._signature(delivery_id, key)) for key in self._keys):
            return TokenCheck(Verdict.FORGED, address=address)
        return TokenCheck(Verdict.VALID, delivery_id, address)

    def find(self, addresses: list[str] | tuple[str, ...]) -> TokenCheck:
        """The best verdict over several candidate addresses: the first valid one, else forged, else
        unsigned, else foreign."""
        checks = [self.check(a) for a in addresses]
        for verdict in (Verdict.VALID, Verdict.FORGED, Verdict.UNSIGNED):
            for check in checks:
                if check.verdict is verdict:
                    return check
        return TokenCheck(Verdict.FOREIGN)


def _derive(secret_key: str) -> bytes:
    """A key of its own for return paths, so a signature here never serves as one elsewhere."""
    return hmac.new(secret_key.encode("utf-8"), b"digest.return-path", hashlib.sha256).digest()


def return_path_for(settings: Settings, key: SigningKey) -> ReturnPath:
    """The configured return path: ``[bounces] domain``, else the domain of ``[site] sender``, signed
    with the installation's key (``digest.signing_key``; its retired keys still verify)."""
    cfg = settings.bounces
    domain = cfg.domain or parseaddr(settings.site.sender)[1].rpartition("@")[2] or "localhost"
    return ReturnPath(key.current, domain, cfg.local_part, cfg.delimiter, tuple(key.previous))
