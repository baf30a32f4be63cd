"""Signed, scoped links in mail and on the web: confirm, preferences, unsubscribe, a reader's own issue."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from base64 import urlsafe_b64decode as _urlsafe_b64decode
from base64 import urlsafe_b64encode as _urlsafe_b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from digest.models import Verdict


class Scope(StrEnum):
    """What a token may do; a token signed for one scope never verifies for another."""

    CONFIRM = "confirm"
    PREFERENCES = "preferences"
    UNSUBSCRIBE = "unsubscribe"
    # A reader's own issue ("view in the browser"): the payload is the issue id, not an address.
    ISSUE = "issue"
    # "More like this" / "Less like this" on one paper: see FeedbackLinks (not an itsdangerous token).
    FEEDBACK = "feedback"


# How long each kind of token lives, in seconds. Links in sent mail must keep working for a long time
# (people unsubscribe from year-old mail); a confirmation link should not.
MAX_AGE: dict[Scope, int | None] = {
    Scope.CONFIRM: 3 * 24 * 3600,
    Scope.PREFERENCES: 365 * 24 * 3600,
    Scope.UNSUBSCRIBE: None,
    Scope.ISSUE: None,
    Scope.FEEDBACK: None,
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
        # Feedback tags: keyed BLAKE2b, one key per signing key (the newest signs, all verify).
        self._feedback_keys = [_feedback_state(key) for key in reversed(self._secret)]

    @property
    def feedback_state(self) -> Any:
        """A keyed BLAKE2b state of the current key, for FeedbackLinks (copied, never updated)."""
        return self._feedback_keys[0]

    def verify_feedback(self, token: str, email_of: Callable[[int], str | None]) -> tuple[int, str, str, Verdict]:
        """(subscriber id, their address, paper id, verdict) of a feedback token; TokenError if it is
        forged or altered, or its reader is gone (``email_of`` finds a reader's address by id: a reused
        id under another address fails the tag)."""
        parts = token.split(".")
        if (len(parts) != 4 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 18
                or parts[2] not in _VERDICTS or len(parts[3]) != _TAG_CHARS):
            raise TokenError("invalid link")
        try:
            paper_id = _unb64(parts[1]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as err:
            raise TokenError("invalid link") from err
        email = email_of(int(parts[0]))
        if email is None:
            raise TokenError("invalid link")
        verdict = Verdict(parts[2])
        for key in self._feedback_keys:
            if hmac.compare_digest(_feedback_tag(key, email, paper_id, verdict), parts[3]):
                return int(parts[0]), email, paper_id, verdict
        raise TokenError("invalid link")
        try:
            email = _unb64(parts[0]).decode("utf-8")
            paper_id = _unb64(parts[1]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as err:
            raise TokenError("invalid link") from err
        verdict = Verdict(parts[2])
        for key in self._feedback_keys:
            if hmac.compare_digest(_feedback_tag(key, email, paper_id, verdict), parts[3]):
                return email, paper_id, verdict
        raise TokenError("invalid link")

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


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64")
    return _urlsafe_b64decode(text + "=" * (-len(text) % 4))


# A feedback tag: 16 hex characters, half of one keyed BLAKE2b digest of (address, paper): the first
# half is the "more" link's, the second the "less" link's. One hash serves both links of a card, and
# knowing one half tells nothing of the other (each is its own part of a pseudo-random output), so each
# token stays good for its own verdict only.
_TAG_CHARS = 16
_VERDICTS = frozenset(v.value for v in Verdict)


def _feedback_state(secret: str) -> Any:
    key = hashlib.sha256(b"digest.feedback\x00" + secret.encode("utf-8")).digest()
    return hashlib.blake2b(key=key, digest_size=_TAG_CHARS)


def _reader_state(state: Any, email: str) -> Any:
    """The keyed hash with the reader's part of a feedback tag's message in: (address, NUL)."""
    reader = state.copy()
    reader.update(email.lower().encode("utf-8") + b"\x00")
    return reader


def _paper_digest(reader: Any, paper_id: str) -> str:
    """The digest of (address, paper): the paper's part added to a copy of ``_reader_state``; a reader's
    links hash their address once, whatever the number of papers."""
    h = reader.copy()
    h.update(paper_id.encode("utf-8"))
    hexdigest: str = h.hexdigest()
    return hexdigest


def _feedback_digest(state: Any, email: str, paper_id: str) -> str:
    return _paper_digest(_reader_state(state, email), paper_id)


def _feedback_tag(state: Any, email: str, paper_id: str, verdict: Verdict) -> str:
    digest = _feedback_digest(state, email, paper_id)
    return digest[:_TAG_CHARS] if verdict is Verdict.MORE else digest[_TAG_CHARS:]


def _b64(data: bytes) -> bytes:
    return _urlsafe_b64encode(data).rstrip(b"=")


def _json(value: str) -> bytes:
    """``value`` as itsdangerous' compact JSON writes it (UTF-8, non-ASCII kept as is)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return b'"' + value.encode("ascii") + b'"'  # nothing to escape: what json.dumps would write
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class FeedbackLinks:
    """A reader's "More like this" / "Less like this" links, made per paper as a mail needs them.

    ``{base}/feedback/{reader id}.{paper}.{verdict}.{tag}``: the paper id in URL-safe base64, the tag a
    keyed hash of the reader's address and the paper (see _TAG_CHARS), so a token is good for one reader,
    one paper and one verdict, and a changed part fails. The address itself is not in the link (a
    reader's issue page carries these links, and may be forwarded). About a microsecond per paper
    (hashlib, no JSON, no itsdangerous): every card of every email carries two of them.
    """

    __slots__ = ("_head", "_state")

    def __init__(self, base_url: str, state: Any, email: str, subscriber_id: int) -> None:
        self._state = _reader_state(state, email)  # hashed once here; each paper's link adds its id
        self._head = f"{base_url}/feedback/{subscriber_id}."

    def pairs(self, paper_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(more, less) URL of each paper, in order."""
        head, state, part = self._head, self._state, _paper_part
        out = []
        for paper_id in paper_ids:
            digest = _paper_digest(state, paper_id)
            at = head + (_PAPER_PARTS.get(paper_id) or part(paper_id))
            out.append((f"{at}.more.{digest[:_TAG_CHARS]}", f"{at}.less.{digest[_TAG_CHARS:]}"))
        return out

    def url(self, paper_id: str, verdict: Verdict) -> str:
        more, less = self.pairs([paper_id])[0]
        return more if verdict is Verdict.MORE else less


_PAPER_PARTS: dict[str, str] = {}


def _paper_part(paper_id: str) -> str:
    """A paper id in URL-safe base64 (ids may hold "/" or ":"), remembered: the same papers repeat."""
    part = _b64(paper_id.encode("utf-8")).decode("ascii")
    if len(_PAPER_PARTS) > 100_000:
        _PAPER_PARTS.clear()
    _PAPER_PARTS[paper_id] = part
    return part


@dataclass(frozen=True, slots=True)
class PersonalLinks:
    """The links one subscriber's email carries; ``feedback`` None shows no feedback links (the
    public pages)."""

    preferences: str
    unsubscribe: str
    unsubscribe_mailto: str
    archive: str
    feedback: FeedbackLinks | None = None


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

    def for_subscriber(self, email: str, issue_key: str | None = None,
                       subscriber_id: int | None = None) -> PersonalLinks:
        """The links of ``email``'s message; with ``subscriber_id`` (a stored reader) feedback links too."""
        token, preferences = self.signer.sign_all(_MAIL_SCOPES, email)
        return PersonalLinks(
            preferences=self._link(Scope.PREFERENCES, preferences),
            unsubscribe=self._link(Scope.UNSUBSCRIBE, token),
            unsubscribe_mailto=f"mailto:{self.mailto}?subject=unsubscribe%20{token}",
            archive=self.archive(issue_key),
            feedback=self.feedback(email, subscriber_id) if subscriber_id is not None else None,
        )

    def feedback(self, email: str, subscriber_id: int) -> FeedbackLinks:
        return FeedbackLinks(self.base_url, self.signer.feedback_state, email, subscriber_id)
