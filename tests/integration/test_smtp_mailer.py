"""One Mailer contract suite run on every backend, then the SMTP backend against a misbehaving real server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from smtp_sink import SmtpSink, TlsFiles, make_tls_files

from digest.errors import DeliveryError
from digest.mail import ConsoleMailer, FileMailer, Mailer, MemoryMailer
from digest.mail.smtp import SMTPMailer
from digest.models import Outcome, OutgoingMessage

SENDER = "digest@news.example.org"


def make_message(recipient: str, body: str = "Hello.", n: int = 0) -> OutgoingMessage:
    mid = f"<digest.{n}.{abs(hash(recipient)) % 10**8}@news.example.org>"
    data = (
        f"From: Paper Digest <{SENDER}>\r\nTo: {recipient}\r\nSubject: Issue {n}\r\n"
        f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n"
        f"{body}\r\n.a line that starts with a dot\r\n"
    ).encode()
    return OutgoingMessage(sender=SENDER, recipient=recipient, message_id=mid, data=data)


# ---- the contract, on every backend -------------------------------------------------------------


@dataclass
class Backend:
    """A mailer plus a way to read back what reached its destination (raw bytes per message)."""

    mailer: Mailer
    delivered: Callable[[], list[bytes]]


def _console_messages(stream: io.StringIO) -> list[bytes]:
    parts = stream.getvalue().split("\n" + "-" * 79 + "\n")
    return [p.encode() for p in parts if p]


@pytest.fixture(params=["file", "console", "memory", "smtp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "file":
        out = tmp_path / "outbox"
        yield Backend(FileMailer(out), lambda: [p.read_bytes() for p in sorted(out.glob("*.eml"))])
    elif kind == "console":
        stream = io.StringIO()
        yield Backend(ConsoleMailer(stream), lambda: _console_messages(stream))
    elif kind == "memory":
        memory = MemoryMailer()
        yield Backend(memory, lambda: [m.data for m in memory.outbox])
    else:
        with SmtpSink() as sink:
            mailer = SMTPMailer(sink.host, sink.port, max_connections=3, timeout=10, local_hostname="client.test")
            yield Backend(mailer, lambda: [m.data for m in sink.received()])
            mailer.close()


def test_send_delivers_the_exact_bytes(backend: Backend) -> None:
    message = make_message("reader@example.com")
    with backend.mailer as mailer:
        result = mailer.send(message)
    assert result.outcome is Outcome.DELIVERED
    assert "\n" not in result.detail
    assert backend.delivered() == [message.data]


def test_open_and_close_are_idempotent_and_reusable(backend: Backend) -> None:
    mailer = backend.mailer
    mailer.close()  # before any open
    mailer.open()
    mailer.open()
    assert mailer.send(make_message("a@example.com", n=1)).outcome is Outcome.DELIVERED
    mailer.close()
    mailer.close()
    with mailer as entered:
        assert entered is mailer
        assert mailer.send(make_message("b@example.com", n=2)).outcome is Outcome.DELIVERED
    assert len(backend.delivered()) == 2


def test_send_is_safe_from_more_threads_than_its_concurrency(backend: Backend) -> None:
    mailer = backend.mailer
    assert mailer.concurrency >= 1
    recipients = [f"reader{i}@example.com" for i in range(24)]
    results: dict[str, Outcome] = {}
    lock = threading.Lock()

    def worker(chunk: list[str]) -> None:
        for r in chunk:
            outcome = mailer.send(make_message(r, body=f"for {r}")).outcome
            with lock:
                results[r] = outcome

    threads = [threading.Thread(target=worker, args=(recipients[i::6],)) for i in range(6)]
    with mailer:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert set(results.values()) == {Outcome.DELIVERED}
    delivered = backend.delivered()
    assert len(delivered) == 24
    assert sorted(delivered) == sorted(make_message(r, body=f"for {r}").data for r in recipients)


def test_non_ascii_body_survives(backend: Backend) -> None:
    message = make_message("reader@example.com", body="Zoë’s “sparse” attention — ∑ experts")
    with backend.mailer as mailer:
        assert mailer.send(message).outcome is Outcome.DELIVERED
    assert backend.delivered() == [message.data]


# ---- SMTP: connections, rate, TLS, auth ---------------------------------------------------------


def test_messages_built_here_go_out_as_they_are_and_arrive_byte_for_byte(sink: SmtpSink) -> None:
    """build_message's messages skip the SMTP scan (wire_ready); one with a 7bit line starting with a
    dot is not marked ready and is dot-stuffed: both arrive exactly as built."""
    from datetime import UTC, datetime

    from digest.links import PersonalLinks
    from digest.message import build_message_wire
    from digest.models import RenderedEmail

    links = PersonalLinks("https://h.example/p/t", "https://h.example/u/t", "mailto:u@h.example", "https://h.example/a")
    sent = []
    with smtp_mailer(sink) as mailer:
        for n, text in enumerate(["Plain text.\n", "A line\n.that starts with a dot\n", "Ünïcode\n.dot\n"]):
            data, ready = build_message_wire(RenderedEmail(f"Issue {n}", "<p>é</p>", text), sender=SENDER,
                                             recipient=f"r{n}@example.com", message_id=f"<{n}@news.example.org>",
                                             date=datetime(2026, 11, 27, tzinfo=UTC), list_id="<l.example.org>",
                                             links=links)
            assert ready == (n != 1)
            message = OutgoingMessage(SENDER, f"r{n}@example.com", f"<{n}@news.example.org>", data, wire_ready=ready)
            assert mailer.send(message).outcome is Outcome.DELIVERED
            sent.append(data)
    assert [m.data for m in sink.received()] == sent


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def smtp_mailer(sink: SmtpSink, **kwargs: object) -> SMTPMailer:
    options: dict[str, object] = {"timeout": 5.0, "local_hostname": "client.test", "slowdown_seconds": 0.2}
    options.update(kwargs)
    return SMTPMailer(sink.host, sink.port, **options)  # type: ignore[arg-type]


def test_one_connection_is_reused_across_messages(sink: SmtpSink) -> None:
    with smtp_mailer(sink, max_connections=2) as mailer:
        for i in range(25):
            assert mailer.send(make_message(f"r{i}@example.com", n=i)).outcome is Outcome.DELIVERED
    assert len(sink.received()) == 25
    assert sink.connections == 1


def test_parallel_connections_are_capped_by_max_connections(sink: SmtpSink) -> None:
    sink.add_fault("after_data", delay=0.02)  # keep each connection busy a little
    mailer = smtp_mailer(sink, max_connections=3)
    with mailer:
        threads = [threading.Thread(target=lambda k=k: [mailer.send(make_message(f"t{k}.{i}@example.com"))
                                                        for i in range(8)]) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(sink.received()) == 48
    assert 1 < sink.connections <= 3


def test_rate_limit_spaces_sends_across_threads(sink: SmtpSink) -> None:
    mailer = smtp_mailer(sink, max_connections=2, rate_per_second=20)
    started = time.monotonic()
    with mailer:
        threads = [threading.Thread(target=lambda k=k: [mailer.send(make_message(f"q{k}.{i}@example.com"))
                                                        for i in range(6)]) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    elapsed = time.monotonic() - started
    assert len(sink.received()) == 12
    assert elapsed >= 11 / 20 - 0.02  # 12 sends at 20/s need at least 11 gaps of 50 ms


def test_starttls_with_self_signed_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with SmtpSink(tls=tls, require_starttls=True) as server:
        with smtp_mailer(server, security="starttls", ca_file=str(tls.cert)) as mailer:
            result = mailer.send(make_message("tls@example.com"))
        assert result.outcome is Outcome.DELIVERED
        [received] = server.received()
        assert received.tls


def test_starttls_verifies_the_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with SmtpSink(tls=tls) as server:
        untrusting = smtp_mailer(server, security="starttls")  # no ca_file: the self-signed cert is unknown
        result = untrusting.send(make_message("tls@example.com"))
        assert result.outcome is Outcome.TRANSIENT
        assert "certificate verify failed" in result.detail
        with pytest.raises(DeliveryError, match="certificate verify failed"):
            untrusting.open()
        assert server.received() == []


def test_tls_checks_the_host_name(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls", hostnames=("mail.other.test",), ips=())
    with SmtpSink(tls=tls) as server:
        result = smtp_mailer(server, security="starttls", ca_file=str(tls.cert)).send(make_message("x@example.com"))
    assert result.outcome is Outcome.TRANSIENT
    assert "127.0.0.1" in result.detail and "certificate" in result.detail.lower()


def test_implicit_tls(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with SmtpSink(tls=tls, implicit_tls=True) as server:
        with smtp_mailer(server, security="ssl", ca_file=str(tls.cert)) as mailer:
            assert mailer.send(make_message("ssl@example.com")).outcome is Outcome.DELIVERED
        assert server.received()[0].tls


def test_starttls_not_offered_is_not_silently_skipped(sink: SmtpSink) -> None:
    result = smtp_mailer(sink, security="starttls").send(make_message("x@example.com"))
    assert result.outcome is Outcome.TRANSIENT
    assert "STARTTLS" in result.detail
    assert sink.received() == []


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def test_auth_over_starttls(tls_files: TlsFiles) -> None:
    with SmtpSink(tls=tls_files, auth={"digest": "s3cret"}) as server:
        with smtp_mailer(server, security="starttls", ca_file=str(tls_files.cert), username="digest",
                         password="s3cret") as mailer:
            assert mailer.send(make_message("auth@example.com")).outcome is Outcome.DELIVERED
        assert server.received()[0].auth_user == "digest"


def test_wrong_password_fails_open_and_is_transient_per_message(tls_files: TlsFiles) -> None:
    with SmtpSink(tls=tls_files, auth={"digest": "s3cret"}) as server:
        mailer = smtp_mailer(server, security="starttls", ca_file=str(tls_files.cert), username="digest",
                             password="wrong")
        with pytest.raises(DeliveryError, match="535"):
            mailer.open()
        result = mailer.send(make_message("auth@example.com"))
        assert result.outcome is Outcome.TRANSIENT  # a set-up problem, never the recipient's bounce
        assert "535" in result.detail
        assert server.received() == []


# ---- SMTP: each fault lands in its outcome class ------------------------------------------------

FAULTS = [
    # (stage, fault, expected outcome, text the detail must carry)
    ("rcpt", {"reply": "421 4.7.0 Too many connections, slow down"}, Outcome.TRANSIENT, "421"),
    ("rcpt", {"reply": "451 4.3.0 Temporary lookup failure"}, Outcome.TRANSIENT, "451"),
    ("rcpt", {"reply": "452 4.2.2 Mailbox full"}, Outcome.TRANSIENT, "452"),
    ("rcpt", {"reply": "550 5.1.1 No such user"}, Outcome.PERMANENT, "550 5.1.1 No such user"),
    ("after_data", {"reply": "421 4.7.0 Slow down"}, Outcome.TRANSIENT, "421"),
    ("after_data", {"reply": "451 4.7.1 Greylisted, try later"}, Outcome.TRANSIENT, "451"),
    ("after_data", {"reply": "452 4.3.1 Insufficient system storage"}, Outcome.TRANSIENT, "452"),
    ("after_data", {"reply": "550 5.7.1 Message rejected as spam"}, Outcome.PERMANENT, "550 5.7.1"),
    ("data", {"reply": "451 4.3.0 Not now"}, Outcome.TRANSIENT, "451"),
    ("data", {"reply": "554 5.5.1 No valid recipients"}, Outcome.PERMANENT, "554"),
    ("mail", {"reply": "553 5.7.1 Sender not allowed"}, Outcome.TRANSIENT, "553"),
    ("mail", {"reply": "454 4.7.0 TLS not available"}, Outcome.TRANSIENT, "454"),
    ("greeting", {"reply": "421 4.3.2 Service not available"}, Outcome.TRANSIENT, "421"),
    ("greeting", {"reply": "554 5.7.1 No service for you"}, Outcome.TRANSIENT, "554"),
    ("ehlo", {"reply": "421 4.3.2 Closing"}, Outcome.TRANSIENT, "421"),
    ("rcpt", {"disconnect": True}, Outcome.TRANSIENT, "connection lost at rcpt"),
    ("data", {"disconnect": True}, Outcome.TRANSIENT, "connection lost at data"),
    ("after_data", {"disconnect": True}, Outcome.UNKNOWN, "after the message was sent"),
]


@pytest.mark.parametrize(("stage", "fault", "outcome", "text"), FAULTS,
                         ids=[f"{s}-{f.get('reply', 'disconnect')[:3]}" for s, f, _, _ in FAULTS])
def test_fault_lands_in_its_class(sink: SmtpSink, stage: str, fault: dict, outcome: Outcome, text: str) -> None:
    sink.add_fault(stage, recipient=None if stage in ("greeting", "ehlo", "mail") else "victim@example.com",
                   **fault)  # type: ignore[arg-type]
    mailer = smtp_mailer(sink, max_connections=1)
    result = mailer.send(make_message("victim@example.com"))
    assert result.outcome is outcome, result.detail
    assert text in result.detail
    # Of these refusals only the unknown user is the address's hard bounce.
    assert result.bounce is ("5.1.1" in text)
    if outcome is not Outcome.UNKNOWN:
        assert sink.received() == []
    if stage not in ("greeting", "ehlo", "mail"):
        # The connection (or a new one) carries on with the next message.
        assert mailer.send(make_message("bystander@example.com")).outcome is Outcome.DELIVERED
        assert [m.rcpt_tos for m in sink.received()] == [("bystander@example.com",)]
    mailer.close()


def test_disconnect_after_data_leaves_the_message_with_the_server(sink: SmtpSink) -> None:
    sink.add_fault("after_data", disconnect=True)
    result = smtp_mailer(sink).send(make_message("lost@example.com"))
    assert result.outcome is Outcome.UNKNOWN
    assert [m.rcpt_tos for m in sink.dropped] == [("lost@example.com",)]


def test_slow_down_pauses_then_retries_once(sink: SmtpSink) -> None:
    fault = sink.add_fault("rcpt", "421 4.7.0 Slow down", times=1)
    mailer = smtp_mailer(sink, slowdown_seconds=0.3)
    started = time.monotonic()
    result = mailer.send(make_message("busy@example.com"))
    assert result.outcome is Outcome.DELIVERED  # a short "slow down" costs a pause, not a deferral
    assert time.monotonic() - started >= 0.3
    assert fault.fired == 1
    assert mailer.limiter.rate > 0  # unlimited before; now paced at half the observed rate


def test_persistent_slow_down_is_transient_not_failed(sink: SmtpSink) -> None:
    fault = sink.add_fault("rcpt", "421 4.7.0 Slow down")
    result = smtp_mailer(sink).send(make_message("busy@example.com"))
    assert result.outcome is Outcome.TRANSIENT
    assert fault.fired == 2  # the first try and exactly one retry after the pause


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = SMTPMailer("127.0.0.1", port, timeout=2, local_hostname="client.test")
    result = mailer.send(make_message("x@example.com"))
    assert result.outcome is Outcome.TRANSIENT
    assert "cannot connect" in result.detail
    with pytest.raises(DeliveryError, match="cannot start a session"):
        mailer.open()
    mailer.close()  # safe after a failed open


def test_slow_server_within_the_timeout_delivers(sink: SmtpSink) -> None:
    sink.add_fault("rcpt", delay=0.3, times=1)
    sink.add_fault("after_data", delay=0.3, times=1)
    result = smtp_mailer(sink, timeout=3).send(make_message("patient@example.com"))
    assert result.outcome is Outcome.DELIVERED


def test_slow_server_before_data_times_out_as_transient(sink: SmtpSink) -> None:
    sink.add_fault("rcpt", delay=1.5, times=1)
    result = smtp_mailer(sink, timeout=0.5).send(make_message("slow@example.com"))
    assert result.outcome is Outcome.TRANSIENT
    assert sink.received() == []


def test_slow_server_after_data_times_out_as_unknown(sink: SmtpSink) -> None:
    sink.add_fault("after_data", delay=1.5, times=1)
    result = smtp_mailer(sink, timeout=0.5).send(make_message("slow@example.com"))
    assert result.outcome is Outcome.UNKNOWN  # the server has it; we never heard so
    assert sink.wait_for(1, timeout=5)


def test_idle_connection_closed_by_the_server_is_replaced(tmp_path: Path) -> None:
    with SmtpSink(timeout=0.6) as server:  # the server drops connections idle for 0.6 s
        with smtp_mailer(server) as mailer:
            assert mailer.send(make_message("first@example.com")).outcome is Outcome.DELIVERED
            time.sleep(1.5)
            result = mailer.send(make_message("second@example.com"))
        assert result.outcome is Outcome.DELIVERED, result.detail
        assert len(server.received()) == 2
        assert server.connections == 2
