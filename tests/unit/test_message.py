"""The MIME bytes: parse back with the stdlib, carry the bulk-mail headers, and admit no header injection."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from digest.config import Settings
from digest.errors import RenderError
from digest.links import PersonalLinks
from digest.message import Base64Body, Utf8Body, base64_lines, build_message, list_id_for, make_message_id
from digest.models import Paper, RenderedEmail
from digest.render import Renderer
from tests.samples import issue_of, sample_links

SETTINGS = Settings()
LINKS = sample_links(SETTINGS, "reader@example.org", "2026-11-27")
WHEN = datetime(2026, 11, 27, 7, 30, tzinfo=UTC)
MID = make_message_id(12, "localhost", "0123456789abcdef01234567")


def build(rendered: RenderedEmail, **overrides: object) -> bytes:
    args: dict[str, object] = {"sender": "Paper Digest <digest@localhost>", "recipient": "reader@example.org",
                               "message_id": MID, "date": WHEN, "list_id": "<paper-digest.localhost>",
                               "links": LINKS}
    args.update(overrides)
    return build_message(rendered, **args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return msg


@pytest.fixture(scope="module")
def rendered() -> RenderedEmail:
    papers = [Paper(id=f"2611.{i:05d}", title=f"Über $\\ell_p$ paper {i} — naïve 数据", upvotes=i,
                    abstract="Ünïcode abstract. Second sentence.") for i in range(1, 21)]
    return Renderer(SETTINGS).render(issue_of([("a", "Topic A", papers[:10]), ("b", "Topic B", papers[10:])]),
                                     LINKS)


def test_a_real_email_parses_as_multipart_alternative_text_then_html(rendered: RenderedEmail) -> None:
    msg = parse(build(rendered))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content() == rendered.text
    assert parts[1].get_content().rstrip("\n") == rendered.html.rstrip("\n")
    assert rendered.text.count("\n") > 50


def test_headers_for_bulk_mail(rendered: RenderedEmail) -> None:
    msg = parse(build(rendered))
    assert msg["From"] == "Paper Digest <digest@localhost>"
    assert msg["To"] == "reader@example.org"
    assert msg["Subject"] == rendered.subject
    assert parsedate_to_datetime(msg["Date"]) == WHEN
    assert msg["Message-ID"] == MID
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "<paper-digest.localhost>"
    assert msg["List-Unsubscribe"] == f"<{LINKS.unsubscribe}>, <{LINKS.unsubscribe_mailto}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_wire_format_is_ascii_crlf_with_short_lines(rendered: RenderedEmail) -> None:
    data = build(rendered)
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    subject = re.search(rb"^Subject: .*?(?=\r\n\S)", head, re.MULTILINE | re.DOTALL)
    assert subject and all(len(line) <= 78 for line in subject.group(0).split(b"\r\n"))
    assert b"=?utf-8?b?" in subject.group(0)


def test_deterministic(rendered: RenderedEmail) -> None:
    assert build(rendered) == build(rendered)


def test_plain_ascii_bodies_go_7bit_and_others_base64() -> None:
    msg = parse(build(RenderedEmail(subject="Hello", html="<p>hi</p>", text="Hi there.\n")))
    parts = list(msg.iter_parts())
    # A 7bit part is kept as sent, CRLF line ends included.
    assert parts[0]["Content-Transfer-Encoding"] == "7bit" and parts[0].get_content() == "Hi there.\r\n"
    msg = parse(build(RenderedEmail(subject="Héllo", html="<p>hé</p>", text="Hé\n")))
    assert [p["Content-Transfer-Encoding"] for p in msg.iter_parts()] == ["base64", "base64"]
    assert msg["Subject"] == "Héllo"


def test_a_body_that_contains_the_boundary_cannot_end_its_part() -> None:
    data = build(RenderedEmail(subject="s", html="<p>x</p>", text="placeholder\n"))
    boundary = re.search(rb'boundary="([^"]+)"', data).group(1).decode()
    tricky = f"before\n--{boundary}--\nContent-Type: text/html\n\n<script>x</script>\n"
    msg = parse(build(RenderedEmail(subject="s", html="<p>x</p>", text=tricky)))
    parts = list(msg.iter_parts())
    assert len(parts) == 2 and parts[0].get_content() == tricky
    assert parts[0]["Content-Transfer-Encoding"] == "base64"


@pytest.mark.parametrize("evil", [
    "Hi\r\nBcc: victim@example.org",
    "Hi\nBcc: victim@example.org",
    "Hi\rBcc: victim@example.org",
    "Hi\u2028Bcc: victim@example.org",
    "Hé\r\nBcc: victim@example.org",
    "Hi\r\n\r\n<html>body injection",
])
def test_no_header_injection_through_the_subject(evil: str) -> None:
    msg = parse(build(RenderedEmail(subject=evil, html="<p>x</p>", text="x\n")))
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert "victim@example.org" in msg["Subject"] or "body injection" in msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"


def test_no_header_injection_through_links_or_list_id() -> None:
    links = PersonalLinks(preferences="https://h/p", unsubscribe="https://h/u\r\nBcc: a@b.c",
                          unsubscribe_mailto="mailto:u@h\nX-Evil: 1", archive="https://h/a")
    msg = parse(build(RenderedEmail(subject="s", html="<p>x</p>", text="x\n"), links=links,
                      list_id="<x>\r\nBcc: a@b.c"))
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert "\n" not in msg["List-Unsubscribe"] and "\n" not in msg["List-Id"]


@pytest.mark.parametrize("recipient", [
    "reader@example.org\r\nBcc: victim@example.org",
    "reader@example.org, victim@example.org",
    "not an address",
    "",
])
def test_bad_recipients_are_refused(recipient: str) -> None:
    with pytest.raises(RenderError):
        build(RenderedEmail(subject="s", html="<p>x</p>", text="x\n"), recipient=recipient)


def test_non_ascii_sender_name_is_encoded() -> None:
    msg = parse(build(RenderedEmail(subject="s", html="<p>x</p>", text="x\n"), sender="Zoë's Digest <z@localhost>"))
    assert msg["From"].addresses[0].display_name == "Zoë's Digest"
    assert msg["From"].addresses[0].addr_spec == "z@localhost"


def test_message_id_is_random_private_and_well_formed() -> None:
    a = make_message_id(12, "localhost")
    # Issue numbers restart in every database: only the random part keeps ids apart.
    assert len({make_message_id(12, "localhost") for _ in range(1000)} | {a}) == 1001
    assert re.fullmatch(r"<digest\.12\.[0-9a-f]{24}@localhost>", a)
    assert make_message_id(12, "localhost", "abc123") == "<digest.12.abc123@localhost>"
    assert make_message_id(1, "bad domain\r\n").endswith("@localhost>")
    for bad in ("", "a>b", "x@y", "a\r\nBcc: z", "a" * 65):
        with pytest.raises(RenderError):
            make_message_id(1, "localhost", bad)
    msg = parse(build(RenderedEmail(subject="s", html="<p>x</p>", text="x\n"), message_id=a))
    assert msg["Message-ID"] == a
    with pytest.raises(RenderError):
        build(RenderedEmail(subject="s", html="x", text="x"), message_id="no-brackets")


def test_list_id_defaults_and_config() -> None:
    assert list_id_for(Settings()) == "<paper-digest.localhost>"
    custom = Settings.model_validate({"site": {"sender": "News <news@papers.example.org>"}})
    assert list_id_for(custom) == "<paper-digest.papers.example.org>"
    configured = Settings.model_validate({"site": {"list_id": "ml-papers.example.org"}})
    assert list_id_for(configured) == "<ml-papers.example.org>"
    named = Settings.model_validate({"site": {"list_id": "ML papers <ml.example.org>"}})
    assert list_id_for(named) == "ML papers <ml.example.org>"


def test_date_header_round_trips_for_other_zones(rendered: RenderedEmail) -> None:
    from zoneinfo import ZoneInfo

    when = datetime(2026, 11, 27, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
    msg = parse(build(rendered, date=when))
    assert parsedate_to_datetime(msg["Date"]) == when
    assert date(2026, 11, 27) == parsedate_to_datetime(msg["Date"]).date()


def test_the_same_instant_in_two_zones_keeps_each_zone(rendered: RenderedEmail) -> None:
    from zoneinfo import ZoneInfo

    utc = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    paris = utc.astimezone(ZoneInfo("Europe/Paris"))
    assert utc == paris and hash(utc) == hash(paris)  # one key to a cache keyed by the datetime alone
    first, second = parse(build(rendered, date=paris)), parse(build(rendered, date=utc))
    assert first["Date"] == "Fri, 27 Nov 2026 08:00:00 +0100"
    assert second["Date"] == "Fri, 27 Nov 2026 07:00:00 +0000"


@pytest.mark.parametrize("length", [0, 1, 56, 57, 58, 113, 114, 115, 171, 1000, 4321])
def test_base64_bodies_of_any_length_decode_exactly_with_short_lines(length: int) -> None:
    text = ("é" + "x" * 55) * (length // 56 + 1)
    text = text[:length] + "é"
    data = build(RenderedEmail(subject="s", html=text, text=text))
    parts = list(parse(data).iter_parts())
    assert [p.get_content() for p in parts] == [text + "\n", text + "\n"]
    body = data.split(b"\r\n\r\n")[-1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_bodies_the_renderer_prepared_give_the_same_bytes_as_plain_strings() -> None:
    renderer = Renderer(SETTINGS)
    papers = [Paper(id=f"2611.{i:05d}", title=f"Ünï {i}", abstract="Text. " * 50, upvotes=i) for i in range(1, 15)]
    for i, email in enumerate(["a@example.org", "b@example.org", "c@example.org"]):
        links = sample_links(SETTINGS, email, "2026-11-27")
        issue = issue_of([("a", "Topic A", papers)], email=email)
        prepared = renderer.mime(issue, links)
        if i:  # the first reader's body is assembled for them alone; from the second on it is kept
            assert isinstance(prepared.html, Base64Body) and prepared.html.lead, "the shared body kept no encoded lead"
        rendered = renderer.render(issue, links)
        data = build(prepared, recipient=email, links=links)
        assert data == build(rendered, recipient=email, links=links), i
        assert list(parse(data).iter_parts())[1].get_content() == rendered.html + "\n"


@pytest.mark.parametrize("length", [1, 2, 56, 57, 58, 113, 114, 115, 171, 1000, 4321])
@pytest.mark.parametrize("ending", ["", "\n", "é"])
def test_a_body_with_an_encoded_lead_is_byte_for_byte_the_whole_body_encoded(length: int, ending: str) -> None:
    data = ("é" + "x<p>" * 20).encode() * (length // 80 + 1)
    data = data[:length] + ending.encode()  # not ASCII: a body that goes base64 whole
    whole = Utf8Body(data).encoded("=_b")
    assert whole[0] == b"base64"
    for keep in sorted({0, 57, (len(data) - 1) // 57 * 57}):
        if keep >= len(data):
            continue
        encoding, *pieces = Base64Body(base64_lines(data[:keep]), data[keep:]).encoded("=_b")
        assert (encoding, b"".join(pieces)) == (whole[0], b"".join(whole[1:])), keep
        assert Base64Body(base64_lines(data[:keep]), data[keep:]).utf8() == data


@pytest.mark.parametrize("text", ["plain ascii\nlines\n", "crlf\r\nand\rcr\n", "", "x" * 1200, "é\n"])
def test_mime_bodies_from_bytes_match_the_string_rules(text: str) -> None:
    encoding, *body = Utf8Body(text.encode()).encoded("=_boundary")
    expected = "7bit" if text.isascii() and all(len(x) <= 998 for x in text.split("\n")) else "base64"
    assert encoding.decode() == expected
    message = build(RenderedEmail(subject="s", html="<p>é</p>", text=text))
    assert next(iter(parse(message).iter_parts())).get_content().replace("\r\n", "\n") == (
        text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") + "\n")
    assert b"".join(body) in message


def test_a_trailing_line_break_in_an_address_is_refused() -> None:
    with pytest.raises(RenderError):
        build(RenderedEmail(subject="s", html="<p>x</p>", text="x\n"), recipient="reader@example.org\n")


@pytest.mark.parametrize("text", ["plain\nlines\n", ".starts with a dot\n", "a\n.b\n", "é and\n.dot\n", "x" * 1200,
                                  "no dot here. really.\n", "..\n"])
def test_wire_ready_is_said_only_when_smtp_may_send_the_bytes_as_they_are(text: str) -> None:
    from digest.mail.wire import wire_payload
    from digest.message import build_message_wire

    data, ready = build_message_wire(RenderedEmail(subject=".subject", html="<p>é\n.x</p>", text=text),
                                     sender="D <d@localhost>", recipient="r@example.org",
                                     message_id="<1@localhost>", date=datetime(2026, 11, 27, tzinfo=UTC),
                                     list_id="<l.localhost>", links=sample_links(SETTINGS, "r@example.org", "1"))
    as_is = wire_payload(data) == data + b".\r\n"
    assert ready == as_is
    seven_bit_dot = text.isascii() and all(len(x) <= 998 for x in text.split("\n")) and (
        text.startswith(".") or "\n." in text)
    assert ready == (not seven_bit_dot)
