"""Issue 16 ("Safe by default"), the web side: each finding of the attacker's afternoon, tried again.

Real parts: the app under a real uvicorn server for request bodies and Host headers, a real SQLite
file held locked by another connection, and the web app's own pages through Starlette's TestClient.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.links import Scope as LinkScope
from digest.mail import MemoryMailer
from digest.models import Frequency, Paper, Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.store import Store
from digest.web import create_app
from digest.web.app import MAX_FORM_BYTES
from tests.conftest import NOW, make_settings

BASE_URL = "https://digest.example.org"
SECRET_ENV = "DIGEST_TEST_SAFETY_SECRET"
ORIGIN = {"origin": BASE_URL, "sec-fetch-site": "same-origin"}
PAGE_HEADER_NAMES = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


@dataclass
class Web:
    pipeline: Pipeline
    store: Store
    mailer: MemoryMailer
    client: TestClient
    db_path: Path

    def token(self, scope: LinkScope, value: str) -> str:
        return self.pipeline.links.signer.sign(scope, value)

    def csrf(self, path: str = "/") -> str:
        page = self.client.get(path)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, f"no CSRF field on {path}"
        return match.group(1)

    def subscribe(self, address: str, topics: tuple[str, ...] = ("pruning",), **fields: str) -> object:
        data = {"email": address, "topics": list(topics), "csrf_token": self.csrf("/"), **fields}
        return self.client.post("/subscribe", data=data, headers=ORIGIN)

    def mails(self) -> list[EmailMessage]:
        return [email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
                for m in self.mailer.outbox]

    def confirm_path(self, message: EmailMessage) -> str:
        body = message.get_body(("plain",))
        assert body is not None
        match = re.search(re.escape(BASE_URL) + r"(/confirm/[A-Za-z0-9_.\-]+)", body.get_content())
        assert match, "no confirm link in the email"
        return match.group(1)


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    monkeypatch.setenv(SECRET_ENV, "safety-suite-secret")
    settings = make_settings(tmp_path, site={"base_url": BASE_URL, "secret_env": SECRET_ENV,
                                              "sender": "Paper Digest <digest@example.org>"})
    store = Store(settings.database.url)
    mailer = MemoryMailer()
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: NOW)
    client = TestClient(create_app(pipeline), base_url=BASE_URL, follow_redirects=False)
    db_path = Path(settings.database.url.split("///", 1)[1])
    yield Web(pipeline, store, mailer, client, db_path)
    client.close()
    store.close()


# ---- item 2: request bodies are bounded as they arrive, chunked or not ---------------------------


class CountingReceive:
    """Wraps the app and counts the body bytes the server hands to it (what the app read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.read[path] = self.read.get(path, 0) + len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, CountingReceive, Store]]:
    """The app under a real uvicorn on a free port, base_url pointing at it."""
    monkeypatch.setenv(SECRET_ENV, "safety-suite-secret")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(tmp_path, site={"base_url": url, "secret_env": SECRET_ENV})
    store = Store(settings.database.url)
    counting = CountingReceive(create_app(Pipeline(settings, store, mailer=MemoryMailer())))
    server = uvicorn.Server(uvicorn.Config(counting, log_config=None, lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield url, counting, store
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        store.close()


def _chunked_post(url: str, path: str, total: int, chunk: int = 16 * 1024) -> tuple[bytes, int]:
    """POST ``total`` bytes with Transfer-Encoding: chunked over a raw socket until the server answers
    or closes; returns (the answer's first bytes, how many body bytes were sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode())
        conn.setblocking(False)
        block = f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
        answer = b""
        while sent < total:
            try:
                answer += conn.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                conn.sendall(block)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
                continue
            sent += chunk
        conn.setblocking(True)
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = conn.recv(65536)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def test_a_chunked_body_is_refused_once_64_kb_have_arrived(served: tuple[str, CountingReceive, Store]) -> None:
    url, counting, _ = served
    answer, sent = _chunked_post(url, "/confirm/x", total=8 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"content-security-policy" in answer.lower()  # the error keeps the security headers
    # The server stopped handing the body over soon after the limit: at most one network read past it
    # (asyncio reads at most 256 KiB at once), never the megabytes the client was sending.
    assert counting.read["/confirm/x"] <= MAX_FORM_BYTES + 256 * 1024, counting.read
    assert sent < 8 * 1024 * 1024
    # The same with a declared length: refused before reading any of it.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /subscribe HTTP/1.1\r\nHost: {host}\r\nContent-Length: 200000000\r\n\r\n".encode())
        assert conn.recv(65536).startswith(b"HTTP/1.1 413")
    assert counting.read.get("/subscribe", 0) == 0


def test_a_small_chunked_form_still_works(served: tuple[str, CountingReceive, Store]) -> None:
    import httpx

    url, _, store = served

    def body() -> Iterator[bytes]:  # a generator body: httpx sends it chunked
        yield b"email=chunked%40example.org&"
        yield b"topics=pruning"

    with httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post("/subscribe", content=body(),
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert store.get_subscriber("chunked@example.org") is not None


# ---- item 4: every token does only what its scope says ---------------------------------------------


def test_each_scope_is_refused_by_every_other_endpoint(web: Web) -> None:
    web.store.add_subscriber(Subscriber(email="a@example.org", topics=("nas",)))
    web.store.add_subscriber(Subscriber(email="p@example.org", status=SubscriberStatus.PENDING))
    carried = web.pipeline.links.signer.sign_payload(
        LinkScope.CONFIRM, {"email": "p@example.org", "returning": True, "prefs": {"topics": ["pruning"]}})
    tokens = {
        "confirm": web.token(LinkScope.CONFIRM, "p@example.org"),
        "confirm+form": carried,
        "preferences": web.token(LinkScope.PREFERENCES, "a@example.org"),
        "unsubscribe": web.token(LinkScope.UNSUBSCRIBE, "a@example.org"),
        "issue": web.token(LinkScope.ISSUE, "1"),
        "csrf": web.csrf("/"),
    }
    own = {"confirm": {"confirm", "confirm+form"}, "preferences": {"preferences"},
           "unsubscribe": {"unsubscribe"}, "issue": {"issue"}}
    before = [(s.email, s.status, s.topics) for s in web.store.list_subscribers()]
    for endpoint, mine in own.items():
        for name, token in tokens.items():
            if name in mine:
                continue
            methods = ("GET",) if endpoint == "issue" else ("GET", "POST")
            for method in methods:
                data = {"csrf_token": web.csrf("/"), "topics": ["pruning"], "action": "resubscribe",
                        "List-Unsubscribe": "One-Click"} if method == "POST" else None
                answer = web.client.request(method, f"/{endpoint}/{token}", data=data,
                                            headers=ORIGIN if method == "POST" else None)
                assert answer.status_code == 400, (name, method, endpoint, answer.status_code)
    assert [(s.email, s.status, s.topics) for s in web.store.list_subscribers()] == before
    assert web.mailer.outbox == []


def test_an_unsubscribe_token_only_unsubscribes(web: Web) -> None:
    """Seen: the unsubscribe page handed out a fresh preferences link, through which a script
    re-subscribed the reader and changed their topics."""
    web.store.add_subscriber(Subscriber(email="u@example.org", topics=("nas",)))
    path = f"/unsubscribe/{web.token(LinkScope.UNSUBSCRIBE, 'u@example.org')}"
    asking = web.client.get(path)
    done = web.client.post(path, data={"List-Unsubscribe": "One-Click"})
    after = web.client.get(path)
    for page in (asking, done, after):
        assert page.status_code == 200
        assert "/preferences/" not in page.text and "/confirm/" not in page.text
        assert 'name="csrf_token"' not in page.text or 'action="/preferences' not in page.text
    assert web.store.get_subscriber("u@example.org").status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    # Coming back: the subscribe form, then a new confirmation email; nothing changes before it is used.
    assert 'href="/"' in after.text
    web.subscribe("u@example.org", topics=("pruning",))
    assert web.store.get_subscriber("u@example.org").status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    [mail] = web.mails()
    confirm = web.confirm_path(mail)
    assert web.client.post(confirm, data={"csrf_token": web.csrf(confirm)}, headers=ORIGIN).status_code == 200
    back = web.store.get_subscriber("u@example.org")
    assert back is not None and back.status is SubscriberStatus.CONFIRMED and back.topics == ("pruning",)


# ---- item 5: a subscribe form never overwrites what is stored ------------------------------------


@pytest.mark.parametrize("state", [SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED])
def test_subscribe_for_a_known_address_changes_nothing_until_its_own_link_is_followed(
    web: Web, state: SubscriberStatus
) -> None:
    victim = "victim@example.org"
    web.store.add_subscriber(Subscriber(email=victim, status=state, topics=("nas",), tz="Europe/Paris",
                                        frequency=Frequency.WEEKLY, weekday=2))
    assert web.subscribe(victim, topics=("diffusion",), keywords="spam", tz="Asia/Tokyo", send_at="03:00",
                         frequency="daily").status_code == 200  # type: ignore[attr-defined]
    stored = web.store.get_subscriber(victim)
    assert stored is not None
    assert (stored.status, stored.topics, stored.keywords, stored.tz, stored.frequency, stored.weekday) == (
        state, ("nas",), (), "Europe/Paris", Frequency.WEEKLY, 2)
    # The attacker's form is in the link mailed to the victim: it applies only if the victim uses it.
    [attackers] = web.mails()
    attackers_link = web.confirm_path(attackers)
    assert web.client.get(attackers_link).status_code == 200  # a mail scanner opening it changes nothing
    assert web.store.get_subscriber(victim) == stored


@pytest.mark.parametrize("row", [None, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.PENDING])
def test_a_suppressed_address_gets_no_mail_from_the_form(web: Web, row: SubscriberStatus | None) -> None:
    """The suppression list outlives subscriber rows: an address that bounced hard or complained and
    was then removed (row None) or unsubscribed is not mailed a confirmation by whoever fills the form."""
    gone = "gone@example.org"
    if row is not None:
        web.store.add_subscriber(Subscriber(email=gone, status=row, topics=("nas",)))
    with sqlite3.connect(web.db_path) as db:
        db.execute("INSERT INTO suppressions (email, kind, reason, created_at) VALUES (?, 'complaint', 'test', ?)",
                   (gone, NOW.isoformat(sep=" ")))
    assert web.subscribe(gone, topics=("nas",)).status_code == 200  # type: ignore[attr-defined]
    assert web.mails() == []
    stored = web.store.get_subscriber(gone)
    assert (stored.status if stored is not None else None) == row
    # Another address is still welcome.
    web.subscribe("fresh@example.org", topics=("nas",))
    assert [m["To"] for m in web.mails()] == ["fresh@example.org"]


def test_the_readers_own_link_confirms_the_readers_own_choices(web: Web) -> None:
    web.subscribe("me@example.org", topics=("nas",), tz="Europe/Paris", send_at="07:30")
    web.subscribe("me@example.org", topics=("diffusion",), keywords="spam", tz="Asia/Tokyo")  # someone else
    mine, theirs = web.mails()
    path = web.confirm_path(mine)
    assert web.client.post(path, data={"csrf_token": web.csrf(path)}, headers=ORIGIN).status_code == 200
    sub = web.store.get_subscriber("me@example.org")
    assert sub is not None and sub.status is SubscriberStatus.CONFIRMED
    assert (sub.topics, sub.keywords, sub.tz, sub.send_at.strftime("%H:%M")) == (("nas",), (), "Europe/Paris",
                                                                                 "07:30")
    # The other link, followed later, changes nothing: the reader is confirmed and keeps their choices.
    other = web.confirm_path(theirs)
    assert web.client.post(other, data={"csrf_token": web.csrf("/")}, headers=ORIGIN).status_code == 200
    assert web.store.get_subscriber("me@example.org") == sub


# ---- item 6: only addresses that can be mailed are stored ----------------------------------------


def test_an_idna_domain_is_stored_and_mailed_in_ascii(web: Web) -> None:
    assert web.subscribe("User@Bücher.de").status_code == 200  # type: ignore[attr-defined]
    sub = web.store.get_subscriber("user@xn--bcher-kva.de")
    assert sub is not None and sub.email == "user@xn--bcher-kva.de"
    [mail] = web.mails()
    assert mail["To"] == "user@xn--bcher-kva.de"
    assert web.mailer.outbox[0].recipient == "user@xn--bcher-kva.de"
    # The same mailbox typed either way is one subscriber.
    web.subscribe("user@xn--bcher-kva.de")
    assert len(web.store.list_subscribers()) == 1


def test_a_non_ascii_local_part_is_refused_at_the_door(web: Web) -> None:
    answer = web.subscribe("üser@example.org")
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert "before the @" in answer.text  # type: ignore[attr-defined]
    assert web.store.list_subscribers() == [] and web.mailer.outbox == []


def test_the_cli_applies_the_same_address_check(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from digest.cli import cli

    db = tmp_path / "cli.sqlite3"
    config = tmp_path / "digest.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n[demo]\nsubscribers_csv = ""\n', encoding="utf-8")
    runner = CliRunner()
    refused = runner.invoke(cli, ["--config", str(config), "subscribers", "add", "üser@example.org"])
    assert refused.exit_code == 2 and "before the @" in refused.output and "Traceback" not in refused.output
    added = runner.invoke(cli, ["--config", str(config), "subscribers", "add", "reader@bücher.de"])
    assert added.exit_code == 0, added.output
    csv = tmp_path / "in.csv"
    csv.write_text("email\nimported@münchen.example\nünicode@example.org\n", encoding="utf-8")
    imported = runner.invoke(cli, ["--config", str(config), "subscribers", "import", str(csv)])
    assert imported.exit_code != 0 and "before the @" in imported.output and ":3:" in imported.output
    csv.write_text("email\nimported@münchen.example\n", encoding="utf-8")  # a bad file imports nothing
    imported = runner.invoke(cli, ["--config", str(config), "subscribers", "import", str(csv)])
    assert imported.exit_code == 0, imported.output
    store = Store(f"sqlite:///{db}")
    try:
        assert sorted(s.email for s in store.list_subscribers()) == ["imported@xn--mnchen-3ya.example",
                                                                    "reader@xn--bcher-kva.de"]
    finally:
        store.close()


# ---- item 8: nothing personal on public, guessable addresses -------------------------------------


def test_public_archive_and_feeds_show_nothing_of_any_reader(web: Web, seed_papers: list[Paper]) -> None:
    from datetime import timedelta

    web.store.upsert_papers(seed_papers, now=NOW - timedelta(hours=2))
    web.pipeline.tag_pending()
    web.store.add_subscriber(Subscriber(email="profiled@example.org", keywords=("sparsity",),
                                        name="Profiled Reader"))
    assert web.pipeline.send(NOW.date()).sent == 1
    [row] = web.store.list_issues()
    public = [web.client.get("/archive"), web.client.get(f"/archive/{NOW.date().isoformat()}"),
              web.client.get("/archive/feed.atom"), web.client.get("/archive/feed/pruning.atom")]
    public += [web.client.get(f"/archive/{n}", follow_redirects=True) for n in range(1, row.id + 3)]
    for page in public:
        for personal in ("profiled@example.org", "Profiled Reader", "Why:"):
            assert personal not in page.text, (page.url, personal)


# ---- item 10: errors are pages, with the security headers, and quick --------------------------------


def test_a_huge_issue_number_is_a_404_page(web: Web) -> None:
    answer = web.client.get("/archive/99999999999999999999999")
    assert answer.status_code == 404
    for name in PAGE_HEADER_NAMES:
        assert name in answer.headers


def test_a_locked_database_answers_503_and_stores_nothing(web: Web) -> None:
    with web.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() <= 5000  # not SQLite's 30 s for batch jobs
    csrf = web.csrf("/")
    holder = sqlite3.connect(web.db_path, timeout=1, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        answer = web.client.post("/subscribe", data={"email": "locked@example.org", "csrf_token": csrf},
                                 headers=ORIGIN)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503 and "try again" in answer.text
    assert answer.headers["retry-after"].isdigit()
    for name in PAGE_HEADER_NAMES:
        assert name in answer.headers
    assert web.store.get_subscriber("locked@example.org") is None and web.mailer.outbox == []


def test_an_unexpected_failure_is_the_sites_500_page_with_its_headers(web: Web) -> None:
    web.store.add_subscriber(Subscriber(email="odd@example.org"))
    with sqlite3.connect(web.db_path) as raw:  # a row no code path writes: the status is unknown
        raw.execute("UPDATE subscribers SET status = 'bogus' WHERE email = 'odd@example.org'")
    answer = web.client.get(f"/preferences/{web.token(LinkScope.PREFERENCES, 'odd@example.org')}")
    assert answer.status_code == 500
    assert "Something went wrong" in answer.text and "Traceback" not in answer.text
    for name in PAGE_HEADER_NAMES:
        assert name in answer.headers


# ---- item 11: absolute URLs come from base_url only -------------------------------------------------


def test_an_unknown_host_cannot_steer_a_redirect(served: tuple[str, CountingReceive, Store]) -> None:
    import httpx

    url, _, _ = served
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client:
        for path in ("/subscribe", "/archive/"):
            evil = client.get(path, headers={"host": "evil.example"})
            assert evil.status_code == 400 and "evil.example" not in evil.headers.get("location", "")
            for host in ("localhost", url.removeprefix("http://")):
                moved = client.get(path, headers={"host": host})
                assert moved.status_code in (303, 308), (path, host)
                assert moved.headers["location"].startswith(url + "/"), moved.headers["location"]
