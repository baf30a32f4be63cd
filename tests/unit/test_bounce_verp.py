"""The per-delivery return path: round trip, forgery, unsigned and foreign addresses, RFC limits."""

from __future__ import annotations

import pytest

from digest.bounces.parse import FailureKind, classify_status
from digest.bounces.verp import ReturnPath, Verdict


@pytest.fixture
def rp() -> ReturnPath:
    return ReturnPath("k" * 32, "Bounces.Example.org")


def test_round_trip(rp: ReturnPath) -> None:
    for delivery_id in (1, 42, 10**12):
        address = rp.address(delivery_id)
        local = address.split("@")[0]
        assert len(local) <= 64 and local == local.lower()
        assert address.endswith("@bounces.example.org")
        check = rp.check(address)
        assert (check.verdict, check.delivery_id) == (Verdict.VALID, delivery_id)
        assert rp.check(address.upper()).verdict is Verdict.VALID  # MTAs that fold case


def test_forged_unsigned_foreign(rp: ReturnPath) -> None:
    good = rp.address(42)
    other_key = ReturnPath("x" * 32, "bounces.example.org").address(42)
    assert rp.check(other_key).verdict is Verdict.FORGED
    assert rp.check(good.replace("42-", "43-")).verdict is Verdict.FORGED  # someone else's delivery
    assert rp.check("bounces+42-zz@bounces.example.org").verdict is Verdict.FORGED
    assert rp.check("bounces@bounces.example.org").verdict is Verdict.UNSIGNED
    assert rp.check(good.replace("example.org", "example.net")).verdict is Verdict.FOREIGN
    assert rp.check("bouncesx@bounces.example.org").verdict is Verdict.FOREIGN
    assert rp.find([other_key, "ada@example.org", good]).delivery_id == 42
    assert rp.find([other_key, "ada@example.org"]).verdict is Verdict.FORGED


@pytest.mark.parametrize(("status", "diagnostic", "action", "kind"), [
    ("5.1.1", "smtp; 550 5.1.1 User unknown", "failed", FailureKind.HARD),
    ("5.1.10", "", "failed", FailureKind.HARD),
    ("5.2.1", "", "failed", FailureKind.HARD),
    ("5.4.4", "Host or domain name not found", "failed", FailureKind.HARD),
    ("5.1.8", "bad sender's system address", "failed", FailureKind.REFUSED),  # about us, not them
    ("5.2.2", "mailbox full", "failed", FailureKind.SOFT),
    ("4.4.1", "connection timed out", "failed", FailureKind.SOFT),
    ("4.4.1", "connection timed out", "delayed", FailureKind.DELAYED),
    ("5.7.1", "550 5.7.1 message rejected as spam", "failed", FailureKind.REFUSED),
    ("5.7.1", "550 5.7.1 user unknown", "failed", FailureKind.REFUSED),  # policy stays policy
    ("5.0.0", "smtp; 550 5.1.1 <a@b>: Recipient address rejected", "failed", FailureKind.HARD),
    ("5.0.0", "smtp; 554 Message refused", "failed", FailureKind.REFUSED),  # the words name the message
    ("5.0.0", "", "failed", FailureKind.UNEXPLAINED),  # a bare 5xx: as the send path's at RCPT
    ("5.0.0", "smtp; 550 relay not permitted", "failed", FailureKind.UNEXPLAINED),
    ("5.3.0", "553 5.3.0 <a@b>... Addressee unknown", "failed", FailureKind.HARD),
    ("5.6.0", "content rejected", "failed", FailureKind.REFUSED),
    (None, "550 no such user here", "failed", FailureKind.HARD),
])
def test_classify_status(status: str | None, diagnostic: str, action: str, kind: FailureKind) -> None:
    assert classify_status(status, diagnostic, action)[0] is kind


def test_a_rotated_key_still_verifies_old_return_paths() -> None:
    old = ReturnPath("old-key" * 5, "b.example.org").address(9)
    rotated = ReturnPath("new-key" * 5, "b.example.org", previous_keys=("old-key" * 5,))
    assert rotated.check(old).verdict is Verdict.VALID
    assert rotated.address(9) != old  # new mail is signed with the new key
    assert ReturnPath("new-key" * 5, "b.example.org").check(old).verdict is Verdict.FORGED


def test_a_status_field_in_no_standard_form_is_not_kept() -> None:
    # It would not fit the 16 characters a status is stored in, and means nothing anyway.
    kind, used = classify_status("failed, very badly indeed (see below)", "554 rejected", "failed")
    assert (kind, used) == (FailureKind.UNEXPLAINED, None)  # a 5xx with no reason: as the send path's at RCPT
    assert classify_status("4.4.7 (delivery time expired)", "", "delayed")[1] == "4.4.7"
