"""The send path (a reply at RCPT or after the data, digest.mail.smtp) and the bounce path (a DSN's
Status and Diagnostic-Code, digest.bounces.parse.classify_status) read the same refusal alike: about
the address (a hard bounce), unexplained (counts only when repeated on a later issue), or not about the
address. The few statuses where a DSN knows more are listed, with the reason, in DELIBERATE."""

from __future__ import annotations

from enum import StrEnum

import pytest

from digest.bounces.parse import FailureKind, classify_status
from digest.mail.smtp import Stage, classify_reply
from digest.models import Outcome


class Says(StrEnum):
    ADDRESS = "address"
    UNEXPLAINED = "unexplained"
    NOT_ADDRESS = "not about the address"


def send_says(stage: Stage, code: int, text: str) -> Says:
    verdict = classify_reply(stage, code, text)
    if verdict.outcome is Outcome.PERMANENT and verdict.bounce:
        return Says.ADDRESS
    if verdict.outcome is Outcome.PERMANENT and verdict.unexplained:
        return Says.UNEXPLAINED
    return Says.NOT_ADDRESS  # another refusal of the message or the sender, or no refusal at all (552 at RCPT)


BOUNCE_SAYS = {FailureKind.HARD: Says.ADDRESS, FailureKind.UNEXPLAINED: Says.UNEXPLAINED,
               FailureKind.REFUSED: Says.NOT_ADDRESS}


def bounce_says(status: str | None, diagnostic: str) -> Says:
    kind, _ = classify_status(status, diagnostic)
    assert kind in BOUNCE_SAYS, (status, diagnostic, kind)
    return BOUNCE_SAYS[kind]


# (reply code, reply text, what the send path says at RCPT, after the data)
REPLIES = [
    (550, "5.1.1 <ada@example.net>: Recipient address rejected: User unknown", Says.ADDRESS, Says.ADDRESS),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; not found", Says.ADDRESS, Says.ADDRESS),
    (550, "5.2.1 mailbox disabled", Says.ADDRESS, Says.ADDRESS),
    (550, "5.0.0", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (550, "5.0.0 relay not permitted", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (550, "relay not permitted", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (554, "no", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (554, "Message refused", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (550, "5.0.0 message content rejected", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (550, "5.4.1 routing failed", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (553, "5.3.0 mail system error", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (550, "5.5.0 requested action not taken", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (554, "5.6.0 message content rejected", Says.UNEXPLAINED, Says.NOT_ADDRESS),
    (552, "5.3.4 message too big for system", Says.NOT_ADDRESS, Says.NOT_ADDRESS),
    (550, "5.7.1 message refused as spam", Says.NOT_ADDRESS, Says.NOT_ADDRESS),
    (550, "5.7.26 unauthenticated sender", Says.NOT_ADDRESS, Says.NOT_ADDRESS),
    (553, "5.1.7 bad sender mailbox address syntax", Says.NOT_ADDRESS, Says.NOT_ADDRESS),
    (553, "5.1.8 sender domain does not exist", Says.NOT_ADDRESS, Says.NOT_ADDRESS),
]

# Where a DSN is read more strictly or more gently than the send path reads the same reply at RCPT,
# on purpose: the reporting MTA saw the final answer for this one address, not a relay's first word.
DELIBERATE = [
    # "unable to route": the domain has no mail server; a relay would not say it of everyone
    (550, "5.4.4 unable to route", FailureKind.HARD),
    (550, "5.2.2 mailbox full", FailureKind.SOFT),  # it may empty again: counted as a soft bounce
    (550, "user unknown", FailureKind.HARD),  # the words say it is the address
    (553, "5.3.0 <ada@example.net>... Addressee unknown", FailureKind.HARD),
]


def _dsn(code: int, text: str) -> tuple[str, str]:
    """The Status and Diagnostic-Code a relay writes for that reply (5.0.0 when it gave no status)."""
    status = text.split()[0] if text[:2] == "5." else "5.0.0"
    return status, f"{code} {text}"


def test_the_table_is_what_the_send_path_says() -> None:
    for code, text, at_rcpt, after_data in REPLIES:
        assert send_says(Stage.RCPT, code, text) is at_rcpt, (code, text)
        assert send_says(Stage.CONTENT, code, text) is after_data, (code, text)


@pytest.mark.parametrize(("code", "text", "at_rcpt", "after_data"), REPLIES)
def test_a_dsn_names_what_the_send_path_says(code: int, text: str, at_rcpt: Says, after_data: Says) -> None:
    status, diagnostic = _dsn(code, text)
    # The DSN says at which step the reply came (Postfix, Exim): exactly the send path's verdict there.
    assert bounce_says(status, f"{diagnostic} (in reply to RCPT TO command)") is at_rcpt
    assert bounce_says(status, f"{diagnostic} (in reply to end of DATA command)") is after_data
    assert bounce_says(status, f"SMTP error from remote mail server after end of data: {diagnostic}") is after_data
    # It does not say (most DSNs): one of the two, RCPT's unless the status or words are about the message.
    unsaid = bounce_says(status, diagnostic)
    assert unsaid in (at_rcpt, after_data)
    about_the_message = status[2:5] in ("3.4", "6.0") or "essage" in text
    assert unsaid is (Says.NOT_ADDRESS if about_the_message else at_rcpt)


@pytest.mark.parametrize("status", ["5.0.0", "5.4.1", "5.3.0"])
def test_a_bare_status_is_unexplained_as_at_rcpt(status: str) -> None:
    # A DSN with a Status and no Diagnostic-Code: the reply the send path would have seen is "550 <status>".
    assert bounce_says(status, "") is send_says(Stage.RCPT, 550, status) is Says.UNEXPLAINED
    assert classify_status(status) == (FailureKind.UNEXPLAINED, status)


@pytest.mark.parametrize(("code", "text", "kind"), DELIBERATE)
def test_where_a_dsn_knows_more(code: int, text: str, kind: FailureKind) -> None:
    status, diagnostic = _dsn(code, text)
    assert send_says(Stage.RCPT, code, text) is Says.UNEXPLAINED
    assert classify_status(status, diagnostic)[0] is kind


def test_kinds_that_are_not_refusals_stay_as_they_were() -> None:
    assert classify_status("5.1.1") == (FailureKind.HARD, "5.1.1")
    assert classify_status("5.0.0", "smtp; 550 5.1.1 <ada@example.net>: User unknown") == (FailureKind.HARD, "5.1.1")
    assert classify_status("4.0.0", "smtp; 450 4.2.0 try later") == (FailureKind.SOFT, "4.2.0")
    assert classify_status("5.0.0", action="delayed") == (FailureKind.DELAYED, "5.0.0")
    assert classify_status(None, "no code at all") == (FailureKind.REFUSED, None)
