"""Bounces through a real MTA: Debian's Postfix (a private instance on 127.0.0.1) in front of the
digest, its own DSNs coming back through a pipe transport to `digest bounces ingest`, or landing in a
maildir that a real Dovecot serves to `digest bounces fetch`.

200 readers, 10 of them unknown mailboxes: exactly those 10 are suppressed and a second send skips
them. A forged bounce, an auto-reply and an ARF complaint travel the same way.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import Settings, settings_from_dict
from digest.models import Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.store import Store
from tests.integration.bounce_helpers import bounce_for
from tests.integration.mta import (
    BOUNCE_DOMAIN,
    READERS_DOMAIN,
    Dovecot,
    Postfix,
    dovecot_missing,
    pipe_user_missing,
    postfix_missing,
    private_dir,
)

REPO = Path(__file__).resolve().parents[2]
DIGEST = str(Path(sys.executable).parent / "digest")
SECRET = "mta-bounce-test-secret-0123456789abcdef"
IMAP_PASSWORD = "imap-test-password"
READERS = [f"reader{i:03d}@{READERS_DOMAIN}" for i in range(200)]
UNKNOWN = set(READERS[7::20])  # 10 readers without a mailbox
TODAY = datetime.now(UTC).date()


@dataclass
class World:
    base: Path
    config: Path
    settings: Settings
    store: Store
    postfix: Postfix

    def digest(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DIGEST_SECRET_KEY": SECRET,
               "DIGEST_IMAP_PASSWORD": IMAP_PASSWORD}
        return subprocess.run([DIGEST, "--config", str(self.config), *args], capture_output=True, text=True,
                              timeout=300, env=env, cwd=self.base)

    def send(self, day: date) -> str:
        proc = self.digest("send", "--date", day.isoformat())
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()[-1]

    def statuses(self) -> dict[str, str]:
        return {s.email: s.status.value for s in self.store.iter_subscribers()}

    def inject(self, raw: bytes, to: str) -> None:
        """Hand a message to Postfix as another MTA would (null sender, as bounces and reports come)."""
        with smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=30) as smtp:
            smtp.sendmail("<>", [to], raw)


def _wait(what: str, done: Callable[[], bool], log: Callable[[], str], seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; mail log tail:\n{log()[-4000:]}")


def _world(postgres_url: str, bounce_to: str, imap_port: int = 0,
           refused: dict[str, str] | None = None) -> Iterator[World]:
    for reason in (postfix_missing(), pipe_user_missing(DIGEST) if bounce_to == "pipe" else None):
        if reason:
            pytest.skip(reason)
    base = private_dir("digest-bounces-")
    data = {
        "database": {"url": postgres_url},
        "sources": {"seed": {"path": str(REPO / "seeds" / "hf_papers_search.txt")}},
        "mailer": {"backend": "smtp"},
        "smtp": {"host": "127.0.0.1", "port": 25, "max_connections": 2, "local_hostname": "digest.test"},
        "site": {"sender": "Paper Digest <digest@digest.test>"},
        "bounces": {"domain": BOUNCE_DOMAIN, "soft_bounces_to_suppress": 3},
        "demo": {"subscribers_csv": ""},
        "logging": {"level": "WARNING"},
    }
    postfix = Postfix(base, sorted(set(READERS) - UNKNOWN), bounce_to, DIGEST, base / "digest.toml",
                      {"DIGEST_SECRET_KEY": SECRET}, refused)
    data["smtp"]["port"] = postfix.port  # type: ignore[index]
    if imap_port:
        data["bounces"]["imap"] = {"host": "127.0.0.1", "port": imap_port,  # type: ignore[index]
                                   "security": "none", "username": "bounces"}
    config = base / "digest.toml"
    config.write_text(_toml(data))
    settings = settings_from_dict(data)
    store = Store(postgres_url)
    store.add_subscribers([Subscriber(email=r, send_empty=True) for r in READERS])
    Pipeline(settings, store).fetch(["seed"])
    postfix.start()
    try:
        yield World(base, config, settings, store, postfix)
    finally:
        postfix.stop()
        store.close()
        shutil.rmtree(base, ignore_errors=True)


def _toml(data: dict[str, object], prefix: str = "") -> str:
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    out = [f"[{prefix}]"] if prefix and plain else []
    for key, value in plain.items():
        out.append(f"{key} = {_value(value)}")
    for key, value in tables.items():
        out.append(_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def via_pipe(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    yield from _world(postgres_url, "pipe")


def test_postfix_dsns_through_the_pipe_suppress_exactly_the_unknown(via_pipe: World) -> None:
    w = via_pipe
    started = time.monotonic()
    assert w.send(TODAY) == "sent=200 skipped=0 failed=0"
    sent = time.monotonic()
    _wait("10 readers suppressed", lambda: list(w.statuses().values()).count("suppressed") == len(UNKNOWN)
          and w.postfix.queue_empty(), w.postfix.log)
    print(f"\npipe: send of 200 through Postfix {sent - started:.1f} s, then all 10 DSNs ingested "
          f"{time.monotonic() - sent:.1f} s later")
    statuses = w.statuses()
    assert {r for r, s in statuses.items() if s == "suppressed"} == UNKNOWN
    assert all(statuses[r] == "confirmed" for r in set(READERS) - UNKNOWN)
    assert all(w.postfix.delivered(r) == 1 for r in set(READERS) - UNKNOWN)
    assert w.postfix.log().count("relay=digestbounce") == len(UNKNOWN)
    info = w.store.bounce_info()
    for reader in UNKNOWN:
        assert info[reader]["hard_bounces"] == 1
        assert info[reader]["last_bounce"]["status"] == "5.1.1"
        assert "unknown user" in info[reader]["last_bounce"]["diagnostic"].lower()

    # Through the same MTA: a forged bounce and an auto-reply change nothing; a complaint for one
    # reader unsubscribes exactly that reader.
    victim, complainer = sorted(set(READERS) - UNKNOWN)[:2]
    forged = bounce_for(w.settings, w.store, "postfix_unknown_user.eml", victim, TODAY)
    forged = forged.replace(b"bounces+", b"bounces+9")  # every copy of the return path now fails to verify
    w.inject(forged, f"bounces+1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}")
    w.inject(bounce_for(w.settings, w.store, "autoreply_out_of_office.eml", victim, TODAY),
             f"bounces+1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}")
    w.inject(bounce_for(w.settings, w.store, "arf_abuse.eml", complainer, TODAY), f"fbl@{BOUNCE_DOMAIN}")
    _wait("3 more reports through the pipe", lambda: w.postfix.log().count("relay=digestbounce") == 13
          and w.postfix.queue_empty(), w.postfix.log)
    statuses = w.statuses()
    assert statuses[victim] == "confirmed"
    assert statuses[complainer] == "unsubscribed"
    assert {r for r, s in statuses.items() if s != "confirmed"} == UNKNOWN | {complainer}

    assert w.send(TODAY + timedelta(days=1)) == f"sent={len(READERS) - len(UNKNOWN) - 1} skipped=0 failed=0"
    _wait("the second issue delivered", w.postfix.queue_empty, w.postfix.log)
    assert all(w.postfix.delivered(r) == 2 for r in set(READERS) - UNKNOWN - {complainer})
    assert w.postfix.delivered(complainer) == 1
    assert w.postfix.log().count("relay=digestbounce") == 13  # no new bounce: nobody unknown was mailed
    assert w.statuses() == statuses


# Readers whose mail the relay fails with a bare 5.0.0 and no reason (Postfix's error transport).
REFUSED = set(READERS[3::50])


@pytest.fixture
def via_pipe_refusing(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    yield from _world(postgres_url, "pipe", refused=dict.fromkeys(REFUSED, "5.0.0 relay not permitted"))


def test_postfix_bare_5_0_0_dsns_suppress_only_when_repeated_on_the_next_issue(via_pipe_refusing: World) -> None:
    w = via_pipe_refusing
    assert w.send(TODAY) == "sent=200 skipped=0 failed=0"
    bounced = len(UNKNOWN) + len(REFUSED)
    _wait(f"{bounced} DSNs through the pipe", lambda: w.postfix.log().count("relay=digestbounce") == bounced
          and w.postfix.queue_empty(), w.postfix.log)
    statuses = w.statuses()
    assert {r for r, s in statuses.items() if s == "suppressed"} == UNKNOWN  # 5.1.1: at once
    info = w.store.bounce_info()
    for reader in REFUSED:
        assert statuses[reader] == "confirmed" and info[reader]["hard_bounces"] == 0
        assert (info[reader]["last_bounce"]["kind"], info[reader]["last_bounce"]["status"]) == ("unexplained", "5.0.0")
    events = {e["email"]: (e["kind"], e["action"]) for e in w.store.bounce_events(1000)}
    assert {r: events[r] for r in REFUSED} == dict.fromkeys(REFUSED, ("unexplained", "recorded"))

    # The next issue is refused alike: the second sighting suppresses exactly those readers.
    assert w.send(TODAY + timedelta(days=1)) == f"sent={len(READERS) - len(UNKNOWN)} skipped=0 failed=0"
    _wait(f"{len(REFUSED)} more DSNs", lambda: w.postfix.log().count("relay=digestbounce") == bounced + len(REFUSED)
          and w.postfix.queue_empty(), w.postfix.log)
    statuses = w.statuses()
    assert {r for r, s in statuses.items() if s == "suppressed"} == UNKNOWN | REFUSED
    info = w.store.bounce_info()
    assert all(info[r]["hard_bounces"] == 1 and "earlier issue" in info[r]["status_reason"] for r in REFUSED)


@pytest.fixture
def via_imap(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, Dovecot]]:
    reason = dovecot_missing()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    from tests.integration.mta import free_port

    port = free_port()
    for world in _world(postgres_url, "maildir", imap_port=port):
        dovecot = Dovecot(private_dir("digest-dovecot-"), world.postfix.bounce_box, "bounces", IMAP_PASSWORD, port)
        yield world, dovecot
        dovecot.stop()
        shutil.rmtree(dovecot.base, ignore_errors=True)


def test_postfix_dsns_in_dovecot_fetched_over_imap(via_imap: tuple[World, Dovecot]) -> None:
    w, dovecot = via_imap
    assert w.send(TODAY) == "sent=200 skipped=0 failed=0"
    new = w.postfix.bounce_box / "new"
    _wait("10 DSNs in the bounce mailbox", lambda: new.exists() and len(list(new.iterdir())) == len(UNKNOWN)
          and w.postfix.queue_empty(), w.postfix.log)
    victim = sorted(set(READERS) - UNKNOWN)[0]
    forged = bounce_for(w.settings, w.store, "postfix_unknown_user.eml", victim, TODAY)
    w.inject(forged.replace(b"bounces+", b"bounces+9"), f"bounces+1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}")
    w.inject(bounce_for(w.settings, w.store, "autoreply_vacation.eml", victim, TODAY), f"bounces@{BOUNCE_DOMAIN}")
    w.inject(b"From: someone@example.net\r\nSubject: hello\r\n\r\nJust saying hello.\r\n", f"bounces@{BOUNCE_DOMAIN}")
    _wait("13 messages in the bounce mailbox", lambda: len(list(new.iterdir())) == len(UNKNOWN) + 3
          and w.postfix.queue_empty(), w.postfix.log)
    assert w.statuses() == dict.fromkeys(READERS, "confirmed")  # nothing acted yet: they wait in IMAP

    dovecot.start()
    started = time.monotonic()
    proc = w.digest("bounces", "fetch")
    print(f"\nimap: digest bounces fetch of 13 messages {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-2000:] + dovecot.log()[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        "fetched=13 bounces=10 complaints=0 ignored=2 unrecognised=1 deferred=0")
    statuses = w.statuses()
    assert {r for r, s in statuses.items() if s == "suppressed"} == UNKNOWN
    assert {r for r, s in statuses.items() if s != "confirmed"} == UNKNOWN
    # Consumed messages are gone; the one nobody could read stays for a person, marked read.
    left = [p for folder in ("new", "cur") for p in (w.postfix.bounce_box / folder).iterdir()]
    assert len(left) == 1 and b"Just saying hello" in left[0].read_bytes()
    again = w.digest("bounces", "fetch")
    assert again.stdout.strip().splitlines()[-1].startswith("fetched=0 ")

    assert w.send(TODAY + timedelta(days=1)) == f"sent={len(READERS) - len(UNKNOWN)} skipped=0 failed=0"
    _wait("the second issue delivered", w.postfix.queue_empty, w.postfix.log)
    assert len(list(new.iterdir())) == 0  # no new DSN: nobody unknown was mailed again
    assert w.store.count_subscribers().get(SubscriberStatus.SUPPRESSED.value) == len(UNKNOWN)


def test_fetch_reports_an_unreachable_server(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    from tests.integration.mta import free_port

    Store(f"sqlite:///{tmp_path / 'd.sqlite3'}").close()

    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "d.sqlite3"}"\n[demo]\nsubscribers_csv = ""\n'
                      f'[bounces.imap]\nhost = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\n')
    proc = subprocess.run([DIGEST, "--config", str(config), "bounces", "fetch"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: IMAP 127.0.0.1:")
    assert proc.stderr.strip().endswith("Connection refused")
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "d.sqlite3"}"\n')
    proc = subprocess.run([DIGEST, "--config", str(config), "bounces", "fetch"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "bounces.imap.host" in proc.stderr
