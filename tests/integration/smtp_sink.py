"""A real SMTP server for tests: aiosmtpd on a free 127.0.0.1 port, in a thread, recording every message.

Reusable by any integration test (mailer tests, the crash test, benchmarks, the daemon, multi-sender
tests)::

    from smtp_sink import SmtpSink

    with SmtpSink() as sink:                       # plain SMTP on 127.0.0.1:<free port>
        ...point [smtp] host/port at sink.host / sink.port and send...
        sink.wait_for(3)                            # block until 3 messages arrived (or time out)
        [m.rcpt_tos for m in sink.messages]         # Received records, in arrival order
        sink.counts()                               # Counter: recipient -> copies received

Faults are scripted with ``add_fault(stage, ...)``; each fires on the matching command:

    stage        when it fires
    "greeting"   instead of the 220 banner on a new connection
    "ehlo"       on EHLO/HELO
    "mail"       on MAIL FROM
    "rcpt"       on RCPT TO            (``recipient=`` narrows it to one address)
    "data"       on the DATA command, before the server says 354
    "after_data" once the whole message arrived, instead of the final 250

and does one of: ``reply="451 4.3.0 Try later"`` (a 421 reply also closes the connection, as real
servers do), ``disconnect=True`` (drop the connection without a reply), or ``delay=seconds`` (then
carry on normally, or reply if ``reply`` is given too). A delay alone at "after_data" records the
message as accepted first and then waits before the 250: the server has it, the client does not know
yet (the window a killed sender leaves "in doubt"). ``times=N`` makes it fire N times then
disappear (default: every time). A message dropped or refused at "after_data" is still recorded, in
``sink.dropped`` / ``sink.refused``: a real server may or may not have kept it.

TLS: pass ``tls=TlsFiles`` (see ``make_tls_files``, which writes a self-signed certificate for
127.0.0.1 and localhost with the ``cryptography`` package) to offer STARTTLS, with
``implicit_tls=True`` for SMTPS instead; ``require_starttls=True`` refuses mail before STARTTLS.
``auth={"user": "password"}`` enables AUTH PLAIN/LOGIN (only after TLS, as aiosmtpd insists, unless
``auth_require_tls=False``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["greeting", "ehlo", "mail", "rcpt", "data", "after_data"]
STAGES: tuple[str, ...] = ("greeting", "ehlo", "mail", "rcpt", "data", "after_data")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


def make_tls_files(directory: Path, hostnames: tuple[str, ...] = ("localhost",),
                   ips: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """Write a fresh self-signed certificate and key (PEM) valid for ``hostnames`` and ``ips``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else ips[0])])
    alt = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@dataclass(slots=True)
class Fault:
    """One scripted misbehaviour; see the module docstring."""

    stage: str
    reply: str | None = None
    disconnect: bool = False
    delay: float = 0.0
    recipient: str | None = None
    times: int | None = None
    fired: int = 0

    def matches(self, stage: str, recipients: list[str]) -> bool:
        if self.stage != stage or (self.times is not None and self.fired >= self.times):
            return False
        return self.recipient is None or self.recipient.lower() in (r.lower() for r in recipients)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the server got it: envelope, raw bytes (dot-unstuffed), connection facts."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: Any = None
    tls: bool = False
    auth_user: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str | None:
        value = self.message["Message-ID"]
        return str(value).strip() if value is not None else None


class _Handler:
    """aiosmtpd hooks: apply faults, record envelopes."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        status = await self.sink._fault(server, "ehlo", [])
        return [status] if status is not None else responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        status = await self.sink._fault(server, "mail", [])
        if status is not None:
            return status
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        status = await self.sink._fault(server, "rcpt", [address])
        if status is not None:
            return status
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = Received(
            mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""), peer=session.peer, tls=_is_tls(server, session),
            auth_user=_login_of(session),
        )
        fault = self.sink._take_fault("after_data", list(envelope.rcpt_tos))
        if fault is None or (fault.reply is None and not fault.disconnect):
            # Accepted; a delay-only fault is a server that keeps the message, then is slow to say so
            # (the window in which a client killed mid-send leaves a message in doubt).
            self.sink._record(received, "messages")
            if fault is not None:
                await asyncio.sleep(fault.delay)
            return "250 OK: queued"
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.disconnect:
            self.sink._record(received, "dropped")
            _drop(server)
            return "250 OK"  # never reaches the client: the transport is closed
        self.sink._record(received, "refused")
        if fault.reply is not None and fault.reply.startswith("421"):
            server.loop.call_soon(_drop, server)
        return fault.reply or "250 OK"


def _is_tls(server: SMTP, session: Session) -> bool:
    transport = server.transport
    return session.ssl is not None or (transport is not None and transport.get_extra_info("ssl_object") is not None)


def _login_of(session: Session) -> str | None:
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", "replace")
    return None


def _drop(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


class _FaultySMTP(SMTP):
    """aiosmtpd's server with two more places to misbehave: the greeting and the DATA command."""

    def __init__(self, handler: Any, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self.transport is None:
            self._sink._count_connection()
        super().connection_made(transport)

    async def push(self, status: Any) -> None:
        if not self._greeted:
            self._greeted = True
            replaced = await self._sink._fault(self, "greeting", [])
            if replaced is not None:
                await super().push(replaced)
                _drop(self)
                return
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and envelope.rcpt_tos and not arg:
            status = await self._sink._fault(self, "data", list(envelope.rcpt_tos))
            if status is not None:
                await self.push(status)
                return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    """Serves on a socket bound before start, so the port is free and ours without a race."""

    def __init__(self, handler: Any, sock: socket.socket, sink: SmtpSink, **kwargs: Any) -> None:
        self._sock = sock
        self._sink = sink
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, self._sink, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpSink:
    """A running SMTP server that records messages and misbehaves on request (see module docstring)."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
        auth: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        timeout: float = 300.0,
    ) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.messages: list[Received] = []
        self.dropped: list[Received] = []
        self.refused: list[Received] = []
        self.faults: list[Fault] = []
        self.connections = 0
        self._counting = False
        self._users = dict(auth or {})
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port: int = sock.getsockname()[1]
        server_ctx: ssl.SSLContext | None = None
        if tls is not None:
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(tls.cert, tls.key)
        kwargs: dict[str, Any] = {
            "server_hostname": "sink.test", "timeout": timeout, "enable_SMTPUTF8": False,
            "auth_require_tls": auth_require_tls, "ready_timeout": 10.0,
        }
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
        if implicit_tls:
            kwargs["ssl_context"] = server_ctx
        elif server_ctx is not None:
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = require_starttls
        self._controller = _Controller(_Handler(self), sock, self, **kwargs)
        self.ca_file = str(tls.cert) if tls is not None else ""

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        self._controller.start()
        with self._lock:
            self.connections = 0  # the controller's own start-up probe is not a client
            self._counting = True
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- scripting ------------------------------------------------------------------------------

    def add_fault(self, stage: Stage, reply: str | None = None, *, disconnect: bool = False, delay: float = 0.0,
                  recipient: str | None = None, times: int | None = None) -> Fault:
        """Script one misbehaviour (see the module docstring); returns it (``fault.fired`` counts)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        if reply is None and not disconnect and not delay:
            raise ValueError("a fault needs reply=, disconnect=True or delay=")
        fault = Fault(stage, reply, disconnect, delay, recipient, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def clear(self) -> None:
        """Forget received messages and the connection count (faults stay)."""
        with self._lock:
            self.messages.clear()
            self.dropped.clear()
            self.refused.clear()
            self.connections = 0

    # ---- reading --------------------------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def received(self) -> list[Received]:
        """A snapshot of the accepted messages."""
        with self._lock:
            return list(self.messages)

    def counts(self) -> Counter[str]:
        """Recipient -> number of accepted copies."""
        with self._lock:
            return Counter(r.lower() for m in self.messages for r in m.rcpt_tos)

    def for_recipient(self, address: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    # ---- called from the server thread ----------------------------------------------------------

    def _take_fault(self, stage: str, recipients: list[str]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(stage, recipients):
                    fault.fired += 1
                    return fault
        return None

    async def _fault(self, server: SMTP, stage: str, recipients: list[str]) -> str | None:
        """Apply a matching fault: the reply to send instead of the normal one, or None to go on."""
        fault = self._take_fault(stage, recipients)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.disconnect:
            _drop(server)
            # The reply is written to a closed transport and lost, which is the point.
            return "421 4.4.2 connection dropped by the test sink"
        if fault.reply is not None and fault.reply.startswith("421") and stage != "greeting":
            server.loop.call_soon(_drop, server)
        return fault.reply

    def _record(self, received: Received, kind: str) -> None:
        with self._arrived:
            getattr(self, kind).append(received)
            self._arrived.notify_all()

    def _count_connection(self) -> None:
        with self._lock:
            if self._counting:
                self.connections += 1

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                            auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            if self._users.get(user) == auth_data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)
