"""Signed links: the fast signer writes itsdangerous tokens, which itsdangerous verifies, scope by scope."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from digest.links import LinkBuilder, Scope, Signer, TokenError

SECRET = "links-test-secret"
ADDRESSES = ["reader@example.org", "Mixed.Case+tag@Example.ORG", 'odd"quote\\@example.org', "jürgen@exämple.de",
             "tab\there@example.org", "a" * 200 + "@example.org"]


def reference(scope: Scope) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(SECRET, salt=f"digest.{scope.value}")


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("scope", list(Scope))
def test_itsdangerous_verifies_the_fast_tokens(scope: Scope, address: str) -> None:
    token = Signer(SECRET).sign(scope, address)
    assert reference(scope).loads(token) == address.lower()
    assert Signer(SECRET).verify(scope, token) == address.lower()


@pytest.mark.parametrize("address", ["reader@example.org", "jürgen@exämple.de", 'q"uote@example.org'])
def test_fast_tokens_are_byte_for_byte_what_itsdangerous_writes(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_795_000_000
    monkeypatch.setattr(time, "time", lambda: float(now))
    for scope in Scope:
        assert Signer(SECRET, clock=lambda: float(now)).sign(scope, address) == reference(scope).dumps(address.lower())


def test_a_token_never_verifies_for_another_scope_or_key() -> None:
    token = Signer(SECRET).sign(Scope.UNSUBSCRIBE, "reader@example.org")
    with pytest.raises(TokenError):
        Signer(SECRET).verify(Scope.PREFERENCES, token)
    with pytest.raises(TokenError):
        Signer("another-secret").verify(Scope.UNSUBSCRIBE, token)
    with pytest.raises(TokenError):
        Signer(SECRET).verify(Scope.UNSUBSCRIBE, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))


def test_itsdangerous_tokens_still_verify() -> None:
    """Links already in readers' mailboxes (signed by itsdangerous itself, compressed or not) keep working."""
    for address in ("reader@example.org", "x" * 300 + "@example.org"):
        token = reference(Scope.UNSUBSCRIBE).dumps(address)
        assert Signer(SECRET).verify(Scope.UNSUBSCRIBE, token) == address


def test_expiry_follows_the_token_timestamp() -> None:
    signed_at = time.time() - 4 * 24 * 3600
    token = Signer(SECRET, clock=lambda: signed_at).sign(Scope.CONFIRM, "late@example.org")
    with pytest.raises(TokenError) as caught:
        Signer(SECRET).verify(Scope.CONFIRM, token)
    assert caught.value.expired
    assert Signer(SECRET).verify(Scope.CONFIRM, token, max_age=5 * 24 * 3600) == "late@example.org"


def test_timestamp_moves_with_the_clock() -> None:
    now = [1_795_000_000.2]
    signer = Signer(SECRET, clock=lambda: now[0])
    first = signer.sign(Scope.UNSUBSCRIBE, "reader@example.org")
    now[0] += 0.5
    assert signer.sign(Scope.UNSUBSCRIBE, "reader@example.org") == first  # same second, same token
    now[0] += 1
    later = signer.sign(Scope.UNSUBSCRIBE, "reader@example.org")
    assert later != first
    assert reference(Scope.UNSUBSCRIBE).loads(later) == "reader@example.org"


def test_personal_links_carry_scoped_tokens() -> None:
    links = LinkBuilder("https://digest.example.org/", Signer(SECRET), "leave@example.org").for_subscriber(
        "Reader@Example.org", "42")
    unsubscribe = links.unsubscribe.rsplit("/", 1)[1]
    preferences = links.preferences.rsplit("/", 1)[1]
    assert links.unsubscribe.startswith("https://digest.example.org/unsubscribe/")
    assert links.unsubscribe_mailto == f"mailto:leave@example.org?subject=unsubscribe%20{unsubscribe}"
    # The "view in the browser" link is the reader's own signed link, never a guessable /archive/42.
    assert links.archive.startswith("https://digest.example.org/issue/")
    assert reference(Scope.ISSUE).loads(links.archive.rsplit("/", 1)[1]) == "42"
    assert reference(Scope.UNSUBSCRIBE).loads(unsubscribe) == "reader@example.org"
    assert reference(Scope.PREFERENCES).loads(preferences) == "reader@example.org"


def test_tokens_signed_together_each_verify_for_their_own_scope_only() -> None:
    signer = Signer(SECRET)
    unsubscribe, preferences = signer.sign_all((Scope.UNSUBSCRIBE, Scope.PREFERENCES), "Pair@example.org")
    assert unsubscribe != preferences
    assert signer.verify(Scope.UNSUBSCRIBE, unsubscribe) == "pair@example.org"
    assert signer.verify(Scope.PREFERENCES, preferences) == "pair@example.org"
    with pytest.raises(TokenError):
        signer.verify(Scope.PREFERENCES, unsubscribe)
    with pytest.raises(TokenError):
        signer.verify(Scope.UNSUBSCRIBE, preferences)


def test_issue_links_are_signed_and_scoped() -> None:
    signer = Signer(SECRET)
    builder = LinkBuilder("https://d.example", signer, "x@d.example")
    link = builder.archive("42")
    assert link.startswith("https://d.example/issue/")
    token = link.rsplit("/", 1)[1]
    # The issue number is not there in the clear (its payload part is base64 JSON; "42" may still turn
    # up by chance in the timestamp or signature parts, so they are not looked at).
    assert "42" not in token.split(".")[0]
    assert signer.verify(Scope.ISSUE, token) == "42"
    for other in (Scope.CONFIRM, Scope.PREFERENCES, Scope.UNSUBSCRIBE):
        with pytest.raises(TokenError):
            signer.verify(other, token)
        with pytest.raises(TokenError):
            signer.verify(Scope.ISSUE, signer.sign(other, "42"))
    assert builder.archive(None) == "https://d.example/archive"


def test_confirm_tokens_can_carry_a_form_and_stay_scoped() -> None:
    signer = Signer(SECRET)
    token = signer.sign_payload(Scope.CONFIRM, {"email": "a@example.org", "prefs": {"topics": ["nas"]}})
    assert signer.verify(Scope.CONFIRM, token) == "a@example.org"
    assert signer.verify_payload(Scope.CONFIRM, token) == {"email": "a@example.org", "prefs": {"topics": ["nas"]}}
    for other in (Scope.PREFERENCES, Scope.UNSUBSCRIBE, Scope.ISSUE):
        with pytest.raises(TokenError):
            signer.verify(other, token)
    with pytest.raises(TokenError):
        signer.verify(Scope.CONFIRM, token[:-2] + "xx")
