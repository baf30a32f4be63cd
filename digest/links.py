"""Signed, scoped links in mail and on the web: confirm, preferences, unsubscribe, a reader's own issue."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from base64 import urlsafe_b64encode as _urlsafe_b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class Scope(StrEnum):
    """What a token may do; a token signed for one scope never verifies for another."""

    CONFIRM = "confirm"
    PREFERENCES = "preferences"
    UNSUBSCRIBE = "unsubscribe"
    # A reader's own issue ("view in the browser"): the payload is the issue id, not an address.
    ISSUE = "issue"


# How long each kind of token lives, in seconds. Links in sent mail must keep working for a long time
# (people unsubscribe from year-old mail); a confirmation link should not.
MAX_AGE: dict[Scope, int | None] = {
    Scope.CONFIRM: 3 * 24 * 3600,
    Scope.PREFERENCES: 365 * 24 * 3600,
    Scope.UNSUBSCRIBE: None,
    Scope.ISSUE: None,
}


class TokenError(Exception):
    """A token is forged, expired, or for another scope. ``expired`` tells which."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class Signer:
    """Signs and verifies ``(scope, email)`` tokens with HMAC (itsdangerous, constant-time compare).

    Tokens are itsdangerous ``URLSafeTimedSerializer`` tokens (salt ``digest.<scope>``), and verifying
    is left to itsdangerous. Signing is done here, in the same format: a send signs two tokens per
    reader, and itsdangerous builds a serializer, a signer, a derived key, a JSON encoder and a zlib
    stream for every token (about 20 µs each), where one HMAC copy costs about 2 µs. The payload is
    never compressed (itsdangerous only compresses when it saves bytes, which a short address rarely
    allows, and reads both forms); tests check the tokens against itsdangerous both ways.
    """

    def __init__(self, secret_key: str, clock: Callable[[], float] = time.time,
                 previous: Sequence[str] = ()) -> None:
        # itsdangerous signs with the last key of the list and verifies with each: ``previous`` are
        # retired keys whose links (already in readers' mailboxes) still verify after a rotation.
        self._secret = [*previous, secret_key]
        self._clock = clock
        secret = secret_key.encode("utf-8")
        # itsdangerous' default key derivation ("django-concat") and algorithm (HMAC-SHA1).
        self._macs = {
            scope: hmac.new(hashlib.sha1(f"digest.{scope.value}".encode() + b"signer" + secret).digest(),
                            digestmod=hashlib.sha1)
            for scope in Scope
        }
        self._stamp: tuple[int, bytes] = (-1, b"")

    def _serializer(self, scope: Scope) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt=f"digest.{scope.value}")

    def sign(self, scope: Scope, email: str) -> str:
        return self.sign_all((scope,), email)[0]

    def sign_all(self, scopes: tuple[Scope, ...], email: str) -> list[str]:
        """One token per scope for ``email``, signed in the same second (the payload is made once)."""
        value = _b64(_json(email.lower())) + b"." + self._timestamp()
        tokens = []
        for scope in scopes:
            mac = self._macs[scope].copy()
            mac.update(value)
            tokens.append((value + b"." + _b64(mac.digest())).decode("ascii"))
        return tokens

    def _timestamp(self) -> bytes:
        """The current second as itsdangerous writes it (big-endian bytes, base64), made once a second."""
        now = int(self._clock())
        stamp = self._stamp
        if stamp[0] != now:
            stamp = self._stamp = (now, _b64(now.to_bytes((now.bit_length() + 7) // 8, "big")))
        return stamp[1]

    def verify(self, scope: Scope, token: str, max_age: int | None = None) -> str:
        """Return the email the token was made for; raise TokenError if it is not valid for ``scope``."""
        value = self.verify_payload(scope, token, max_age)
        if isinstance(value, dict):  # a confirm token that carries the subscribe form's preferences
            value = value.get("email")
        if not isinstance(value, str):
            raise TokenError("invalid link")
        return value

    def sign_payload(self, scope: Scope, payload: dict[str, Any]) -> str:
        """A token carrying a small JSON object (itsdangerous compresses it when that is shorter)."""
        return self._serializer(scope).dumps(payload)

    def verify_payload(self, scope: Scope, token: str, max_age: int | None = None) -> object:
        """The JSON value a token of ``scope`` carries; TokenError if forged, expired or of another scope."""
        age = max_age if max_age is not None else MAX_AGE[scope]
        try:
            return self._serializer(scope).loads(token, max_age=age)
        except SignatureExpired as err:
            raise TokenError("link expired", expired=True) from err
        except BadSignature as err:
            raise TokenError("invalid link") from err


def _b64(data: bytes) -> bytes:
    return _urlsafe_b64encode(data).rstrip(b"=")


def _json(value: str) -> bytes:
    """``value`` as itsdangerous' compact JSON writes it (UTF-8, non-ASCII kept as is)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return b'"' + value.encode("ascii") + b'"'  # nothing to escape: what json.dumps would write
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class PersonalLinks:
    """The links one subscriber's email carries."""

    preferences: str
    unsubscribe: str
    unsubscribe_mailto: str
    archive: str


_MAIL_SCOPES = (Scope.UNSUBSCRIBE, Scope.PREFERENCES)


class LinkBuilder:
    """Builds the absolute, signed links for a subscriber from ``[site] base_url``."""

    def __init__(self, base_url: str, signer: Signer, mailto: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.mailto = mailto

    def confirm(self, email: str) -> str:
        return self._link(Scope.CONFIRM, self.signer.sign(Scope.CONFIRM, email))

    def confirm_url(self, token: str) -> str:
        """The double opt-in link for a confirm token (one that may carry a subscribe form's preferences,
        see ``Signer.sign_payload``)."""
        return self._link(Scope.CONFIRM, token)

    def preferences(self, email: str) -> str:
        return self._link(Scope.PREFERENCES, self.signer.sign(Scope.PREFERENCES, email))

    def unsubscribe(self, email: str) -> str:
        return self._link(Scope.UNSUBSCRIBE, self.signer.sign(Scope.UNSUBSCRIBE, email))

    def _link(self, scope: Scope, token: str) -> str:
        return f"{self.base_url}/{scope.value}/{token}"

    def archive(self, issue_key: str | None = None) -> str:
        """The public archive, or with ``issue_key`` (an issue id) that reader's own signed issue link:
        personal issues are never at a guessable address."""
        if not issue_key:
            return f"{self.base_url}/archive"
        return self.issue(issue_key)

    def issue(self, issue_key: str) -> str:
        # Tokens are URL-safe base64 and dots: nothing to quote.
        return f"{self.base_url}/issue/{self.signer.sign(Scope.ISSUE, issue_key)}"

    def for_subscriber(self, email: str, issue_key: str | None = None) -> PersonalLinks:
        token, preferences = self.signer.sign_all(_MAIL_SCOPES, email)
        return PersonalLinks(
            preferences=self._link(Scope.PREFERENCES, preferences),
            unsubscribe=self._link(Scope.UNSUBSCRIBE, token),
            unsubscribe_mailto=f"mailto:{self.mailto}?subject=unsubscribe%20{token}",
            archive=self.archive(issue_key),
        )
