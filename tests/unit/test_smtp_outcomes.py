"""The SMTP outcome table, the DATA payload encoding, the rate limiter and DKIM signing (no sockets)."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest import dkim as digest_dkim
from digest.errors import ConfigError
from digest.mail.smtp import (
    RateLimiter,
    Refusal,
    SMTPMailer,
    Stage,
    classify_error,
    classify_reply,
    refusal_kind,
)
from digest.mail.wire import is_wire_ready, wire_payload
from digest.models import Outcome
from tests.conftest import make_settings

D, T, P, U = Outcome.DELIVERED, Outcome.TRANSIENT, Outcome.PERMANENT, Outcome.UNKNOWN


@pytest.mark.parametrize(
    ("stage", "code", "outcome", "slow_down"),
    [
        (Stage.CONTENT, 250, D, False),
        (Stage.CONTENT, 251, D, False),
        (Stage.RCPT, 421, T, True),
        (Stage.CONTENT, 421, T, True),
        (Stage.CONNECT, 421, T, True),
        (Stage.CONNECT, 454, T, True),  # TLS or AUTH temporarily unavailable
        (Stage.MAIL, 454, T, True),
        (Stage.RCPT, 450, T, False),
        (Stage.RCPT, 451, T, False),
        (Stage.RCPT, 452, T, False),
        (Stage.CONTENT, 451, T, False),
        (Stage.CONTENT, 452, T, False),
        (Stage.DATA, 451, T, False),
        (Stage.RCPT, 550, P, False),
        (Stage.RCPT, 551, P, False),
        (Stage.RCPT, 553, P, False),
        (Stage.RCPT, 552, T, False),  # RFC 5321 4.5.3.1.10: treat as "too many recipients"
        (Stage.DATA, 554, P, False),
        (Stage.CONTENT, 550, P, False),
        (Stage.CONTENT, 552, P, False),
        (Stage.CONTENT, 554, P, False),
        (Stage.MAIL, 550, T, False),  # the sender is refused: not the recipient's bounce
        (Stage.MAIL, 553, T, False),
        (Stage.CONNECT, 554, T, False),  # the session is refused
        (Stage.CONNECT, 535, T, False),  # bad credentials
        (Stage.CONTENT, -1, U, False),  # an unreadable verdict after the message went out
        (Stage.RCPT, -1, T, False),
    ],
)
def test_reply_classes(stage: Stage, code: int, outcome: Outcome, slow_down: bool) -> None:
    verdict = classify_reply(stage, code)
    assert verdict.outcome is outcome
    assert verdict.slow_down is slow_down


A, X, N = Refusal.ADDRESS, Refusal.UNEXPLAINED, Refusal.OTHER


@pytest.mark.parametrize(
    ("stage", "text", "kind"),
    [
        (Stage.RCPT, "5.1.1 <grace@example.com>: no such user", A),
        # No RFC 3463 status at RCPT: an old server's unknown user and a misconfigured relay's refusal
        # of everybody look alike, so one alone suppresses nobody (issue 16 item 3).
        (Stage.RCPT, "No such user here", X),
        (Stage.RCPT, "relay not permitted", X),
        (Stage.RCPT, "5.2.1 Mailbox disabled", A),
        (Stage.RCPT, "5.4.1 Recipient address rejected: Access denied", X),  # a status, not about the address
        (Stage.RCPT, "5.0.0 Recipient rejected", X),
        (Stage.RCPT, "5.1.8 Sender address rejected: Domain not found", N),  # the sender, not the reader
        (Stage.RCPT, "5.1.7 Bad sender's mailbox address syntax", N),
        (Stage.RCPT, "5.7.1 Client host blocked using zen.spamhaus.org", N),
        (Stage.RCPT, " 5.7.26 Unauthenticated email is not accepted (DMARC)", N),
        (Stage.RCPT, "5.7.1 Relaying denied", N),
        (Stage.CONTENT, "5.7.1 Message rejected as spam", N),
        (Stage.CONTENT, "5.6.0 Message content rejected", N),
        (Stage.CONTENT, "5.3.4 Message too big", N),
        (Stage.CONTENT, "Rejected", N),  # no status after the data: the message, not the address
        (Stage.CONTENT, "5.1.1 User unknown", A),
        (Stage.CONTENT, "5.2.1 Mailbox disabled, not accepting messages", A),
        (Stage.CONTENT, "5.2.2 Mailbox full", N),
        (Stage.DATA, "5.5.1 No valid recipients", N),
        (Stage.RCPT, "5.1.10 Recipient not found", A),
        (Stage.CONTENT, "5.1 incomplete code", N),
    ],
)
def test_only_refusals_of_the_address_are_hard_bounces(stage: Stage, text: str, kind: Refusal) -> None:
    assert refusal_kind(stage, text) is kind
    verdict = classify_reply(stage, 550, text)
    assert verdict.outcome is P
    assert (verdict.bounce, verdict.unexplained) == (kind is A, kind is X)
    error = classify_error(stage, smtplib.SMTPResponseException(550, text.encode()))
    assert (error.outcome, error.bounce, error.unexplained) == (P, kind is A, kind is X)


def test_what_is_not_permanent_is_never_a_bounce() -> None:
    for stage, code in ((Stage.RCPT, 450), (Stage.MAIL, 550), (Stage.CONNECT, 554), (Stage.RCPT, 552)):
        assert not classify_reply(stage, code, "5.1.1 no such user").bounce
        assert not classify_reply(stage, code, "relay not permitted").unexplained


@pytest.mark.parametrize(
    ("stage", "error", "outcome"),
    [
        (Stage.CONNECT, ConnectionRefusedError(111, "Connection refused"), T),
        (Stage.CONNECT, socket.gaierror(-2, "Name or service not known"), T),
        (Stage.CONNECT, ssl.SSLCertVerificationError("certificate verify failed"), T),
        (Stage.CONNECT, smtplib.SMTPAuthenticationError(535, b"bad credentials"), T),
        (Stage.CONNECT, smtplib.SMTPConnectError(421, b"too busy"), T),
        (Stage.MAIL, smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), T),
        (Stage.RCPT, ConnectionResetError(104, "Connection reset by peer"), T),
        (Stage.DATA, TimeoutError("timed out"), T),
        (Stage.PAYLOAD, smtplib.SMTPServerDisconnected("Server not connected"), T),
        (Stage.CONTENT, smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), U),
        (Stage.CONTENT, TimeoutError("timed out"), U),
        (Stage.CONTENT, ConnectionResetError(104, "reset"), U),
        (Stage.RCPT, UnicodeEncodeError("ascii", "é", 0, 1, "no"), P),
    ],
)
def test_error_classes(stage: Stage, error: BaseException, outcome: Outcome) -> None:
    assert classify_error(stage, error).outcome is outcome


def test_slow_down_is_flagged_for_errors_carrying_421() -> None:
    assert classify_error(Stage.CONNECT, smtplib.SMTPConnectError(421, b"busy")).slow_down
    assert not classify_error(Stage.CONNECT, ConnectionRefusedError()).slow_down


def test_wire_payload_dot_stuffs_and_terminates() -> None:
    data = b"Subject: x\r\n\r\n.leading dot\r\nmiddle\r\n..two dots\r\nend"
    assert wire_payload(data) == b"Subject: x\r\n\r\n..leading dot\r\nmiddle\r\n...two dots\r\nend\r\n.\r\n"


def test_wire_payload_normalises_bare_line_ends() -> None:
    assert wire_payload(b"a\nb\rc\r\n") == b"a\r\nb\r\nc\r\n.\r\n"
    assert wire_payload(b".x\r\n") == b"..x\r\n.\r\n"


def test_wire_payload_leaves_clean_crlf_bytes_alone() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert wire_payload(data) == data + b".\r\n"


@pytest.mark.parametrize("data", [b"a\r\nb\r\n", b"a\r\nb", b"a\nb\r\n", b"a\r\rb\r\n", b".a\r\n", b"a\r\n.b\r\n",
                                  b"a\r\n..\r\n", b"", b"\r\n", b"a.\r\nb .\r\n", b"\ra\r\n"])
def test_wire_ready_is_exactly_what_the_payload_leaves_alone(data: bytes) -> None:
    assert is_wire_ready(data) == (wire_payload(data) == data + b".\r\n")


def test_rate_limiter_halves_on_slow_down_and_recovers() -> None:
    limiter = RateLimiter(1000.0, recover_seconds=3600)
    limiter.slow_down(0)
    assert limiter.rate == 500.0
    limiter.slow_down(0)
    assert limiter.rate == 250.0
    limiter.recover_seconds = 0
    limiter.wait()
    assert limiter.rate == 1000.0


def test_unlimited_limiter_never_waits_until_told_to_slow_down() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.wait() == 0 for _ in range(100))
    limiter.slow_down(0)
    assert limiter.rate > 0  # halved from the observed rate


def test_from_settings_maps_the_smtp_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SMTP_PW", "s3cret")
    settings = make_settings(tmp_path, smtp={"host": "mail.example.org", "port": 587, "security": "starttls",
                                             "username": "digest", "password_env": "MY_SMTP_PW",
                                             "max_connections": 4, "rate_per_second": 7.5})
    mailer = SMTPMailer.from_settings(settings)
    assert (mailer.host, mailer.port, mailer.security, mailer.username) == ("mail.example.org", 587, "starttls",
                                                                            "digest")
    assert mailer.concurrency == 4
    assert mailer.limiter.rate == 7.5


def test_username_without_password_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGEST_SMTP_PASSWORD", raising=False)
    settings = make_settings(tmp_path, smtp={"username": "digest"})
    with pytest.raises(ConfigError, match="DIGEST_SMTP_PASSWORD"):
        SMTPMailer.from_settings(settings)


# ---- DKIM ---------------------------------------------------------------------------------------


def _rsa_key(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


MESSAGE = (
    b"From: Paper Digest <digest@news.example.org>\r\nTo: reader@example.com\r\nSubject: Today\r\n"
    b"Date: Wed, 19 Aug 2026 08:00:00 +0000\r\nMessage-ID: <digest.1.abc@news.example.org>\r\n"
    b"MIME-Version: 1.0\r\nList-Id: <paper-digest.news.example.org>\r\n"
    b"List-Unsubscribe: <https://news.example.org/u/tok>, <mailto:digest@news.example.org?subject=unsubscribe>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
    b"\r\nHello.\r\n"
)


@pytest.fixture
def dkim_setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    key_file, record = _rsa_key(tmp_path)
    settings = make_settings(tmp_path, smtp={"dkim_key_file": str(key_file), "dkim_selector": "s1"},
                             site={"sender": "Paper Digest <digest@news.example.org>"})

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s1._domainkey.news.example.org." else None

    return settings, dns


def test_dkim_signature_verifies_and_covers_both_unsubscribe_headers(dkim_setup) -> None:  # type: ignore[no-untyped-def]
    settings, dns = dkim_setup
    signed = digest_dkim.sign(MESSAGE, settings)
    assert signed.endswith(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns)
    header = signed[: signed.index(MESSAGE)].decode().replace("\r\n", "").replace(" ", "").replace("\t", "")
    signed_names = header.split("h=")[1].split(";")[0].split(":")
    assert "list-unsubscribe" in signed_names
    assert "list-unsubscribe-post" in signed_names
    assert "d=news.example.org" in header


def test_dkim_signature_breaks_when_unsubscribe_header_is_altered_or_added(dkim_setup) -> None:  # type: ignore[no-untyped-def]
    settings, dns = dkim_setup
    signed = digest_dkim.sign(MESSAGE, settings)
    altered = signed.replace(b"https://news.example.org/u/tok", b"https://evil.example/u/tok")
    assert not dkim.verify(altered, dnsfunc=dns)
    prepended = b"List-Unsubscribe: <https://evil.example/>\r\n" + signed
    assert not dkim.verify(prepended, dnsfunc=dns)


def test_dkim_off_leaves_message_unchanged(tmp_path: Path) -> None:
    assert digest_dkim.sign(MESSAGE, make_settings(tmp_path)) == MESSAGE


def test_dkim_needs_a_selector(tmp_path: Path) -> None:
    key_file, _ = _rsa_key(tmp_path)
    settings = make_settings(tmp_path, smtp={"dkim_key_file": str(key_file)})
    with pytest.raises(ConfigError, match="dkim_selector"):
        digest_dkim.signer_for(settings)


def test_dkim_missing_or_bad_key_is_a_config_error(tmp_path: Path) -> None:
    missing = make_settings(tmp_path, smtp={"dkim_key_file": str(tmp_path / "nope.pem"), "dkim_selector": "s"})
    with pytest.raises(ConfigError, match="cannot read DKIM key"):
        digest_dkim.signer_for(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    bad = make_settings(tmp_path, smtp={"dkim_key_file": str(garbage), "dkim_selector": "s"})
    with pytest.raises(ConfigError, match="unusable DKIM key"):
        digest_dkim.signer_for(bad)
