"""Several senders on one PostgreSQL: racing issue builds and claims, and three `digest send` processes at once."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from smtp_sink import Fault, SmtpSink
from sqlalchemy import func, insert, select

from digest.config import Settings, load_settings
from digest.models import DeliveryStatus, Issue, IssueEntry, IssueSection, Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from digest.store import schema as t
from tests.conftest import SEED_FILE

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N_SUBSCRIBERS = 2000
ISSUE_DATE = "2026-08-19"
SENDERS = 3
NOW = datetime(2026, 8, 19, 12, 0, tzinfo=UTC)
SECRET = "multi-sender-test-key"


# ---- racing inside one process: the store's two concurrency points ----------------------------------


def _paper_issue(store: Store, sub: Subscriber, day: date) -> Issue:
    store.upsert_papers([Paper(id="2408.00001", title="Racing", abstract="Two builders.")], NOW)
    [paper] = store.list_papers(ids=["2408.00001"])
    return Issue(sub, day, (IssueSection("nas", "NAS", (IssueEntry(paper, "because", 1.0),)),))


def _together(n: int, work: object) -> list[object]:
    """Run ``work(i)`` in ``n`` threads released at the same instant; return results, re-raise errors."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)  # type: ignore[operator]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    if errors:
        raise errors[0]
    return results


def test_processes_starting_together_on_a_new_database_all_migrate_it(postgres_url: str) -> None:
    code = "import sys; from digest.store import Store; Store(sys.argv[1]).close(); print('migrated')"
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_url], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(4)]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    store = Store(postgres_url, migrate=False)
    try:
        assert store.schema_version() is not None
    finally:
        store.close()


def test_racing_builders_store_one_issue_and_leave_clean_connections(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        sub = store.add_subscriber(Subscriber(email="race@example.org"), NOW)
        issue = _paper_issue(store, sub, date(2026, 8, 19))
        ids = _together(8, lambda i: store.create_issue(issue, "", lambda n: f"<m{n}@x>", NOW))
        assert len(set(ids)) == 1
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t.issues)).scalar_one() == 1
            assert conn.execute(select(func.count()).select_from(t.deliveries)).scalar_one() == 1
        # The losers' transactions were rolled back: every pooled connection still works.
        later = _together(8, lambda i: store.create_issue(
            _paper_issue(store, sub, date(2026, 9, 1) + timedelta(days=i)), "", lambda n: f"<m{n}@x>", NOW))
        assert len(set(later)) == 8
    finally:
        store.close()


def test_one_builder_per_chunk_at_a_time(postgres_url: str) -> None:
    first, second = Store(postgres_url), Store(postgres_url)
    try:
        day = date(2026, 8, 19)
        with first.building(day, 3) as ours:
            assert ours
            with second.building(day, 3) as theirs, second.building(day, 4) as other_chunk, \
                    second.building(day + timedelta(days=1), 3) as other_day:
                assert not theirs and other_chunk and other_day
        with second.building(day, 3) as ours_now:
            assert ours_now  # released at the end of the block
    finally:
        first.close()
        second.close()


def test_a_put_off_chunk_is_waited_for_until_its_builder_is_done(postgres_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender that put a chunk off takes it once the sender building it lets go (so it never ends its
    run while that chunk's records are still to be stored), and goes on without it if that takes longer
    than BUILD_WAIT_SECONDS."""
    from digest.store import issues as store_issues

    first, second = Store(postgres_url), Store(postgres_url)
    try:
        day = date(2026, 8, 19)
        events: list[str] = []
        got: list[bool] = []

        def wait_for_chunk() -> None:
            with second.building(day, 3, wait=True) as ours:
                events.append("second took it")
                got.append(ours)

        with first.building(day, 3) as ours:
            assert ours
            waiter = threading.Thread(target=wait_for_chunk)
            waiter.start()
            waiter.join(timeout=0.5)
            assert waiter.is_alive(), "the put-off chunk was taken while its builder still held it"
            events.append("first let go")
        waiter.join(timeout=10)
        assert events == ["first let go", "second took it"] and got == [True]

        monkeypatch.setattr(store_issues, "BUILD_WAIT_SECONDS", 0.2)
        with first.building(day, 3) as ours:
            started = time.monotonic()
            with second.building(day, 3, wait=True) as theirs:
                assert not theirs and time.monotonic() - started < 5
        with second.building(day, 3) as ours_now:
            assert ours_now  # the timed-out wait left nothing held
    finally:
        first.close()
        second.close()


def test_racing_claimers_never_share_a_delivery(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        day = date(2026, 8, 19)
        with store.engine.begin() as conn:
            conn.execute(insert(t.subscribers), [
                {"email": f"c{i}@example.org", "created_at": NOW, "updated_at": NOW} for i in range(300)])
        for sub in store.iter_subscribers():
            store.create_issue(_paper_issue(store, sub, day), "", lambda n: f"<m{n}@x>", NOW)

        def claim_all(i: int) -> list[int]:
            mine: list[int] = []
            while batch := store.claim_deliveries(f"w{i}", NOW, 60, 7, issue_date=day):
                mine.extend(d.id for d in batch)
            return mine

        claimed = [d for batch in _together(6, claim_all) for d in batch]  # type: ignore[union-attr]
        assert len(claimed) == 300 and len(set(claimed)) == 300
    finally:
        store.close()


# ---- three `digest send` processes against one database and one SMTP server -------------------------


@dataclass
class Sender:
    proc: subprocess.Popen[bytes]
    out: Path

    def finish(self, timeout: float) -> tuple[int, str]:
        rc = self.proc.wait(timeout)
        return rc, self.out.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def _write_config(tmp_path: Path, url: str, sink: SmtpSink, **delivery: object) -> Path:
    lines = [
        "[database]", f'url = "{url}"',
        "[sources.seed]", "enabled = true", f'path = "{SEED_FILE}"',
        "[mailer]", 'backend = "smtp"',
        "[smtp]", f'host = "{sink.host}"', f"port = {sink.port}", "max_connections = 2",
        'local_hostname = "sender.test"',
        "[demo]", 'subscribers_csv = ""',
        "[delivery]", *(f"{key} = {value}" for key, value in delivery.items()),
    ]
    path = tmp_path / "digest.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _prepare(tmp_path: Path, url: str, sink: SmtpSink, subscribers: int = N_SUBSCRIBERS,
             **delivery: object) -> tuple[Path, Settings, Store]:
    """A migrated database holding the seed listing (tagged) and ``subscribers`` following everything."""
    config = _write_config(tmp_path, url, sink, **delivery)
    settings = load_settings(config)
    store = Store(url)
    Pipeline(settings, store).fetch(["seed"])
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(insert(t.subscribers), [
            {"email": f"reader{i:04d}@example.org", "created_at": now, "updated_at": now, "confirmed_at": now}
            for i in range(subscribers)
        ])
    return config, settings, store


def _start_sender(config: Path, tmp_path: Path, name: str, *args: str) -> Sender:
    out = tmp_path / f"{name}.log"
    env = {**os.environ, "DIGEST_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    # The fixed issue date is months from today: --force says that is meant.
    command = [sys.executable, "-m", "digest", "--config", str(config), "send",
               *(args or ("--date", ISSUE_DATE, "--force"))]
    with out.open("wb") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    return Sender(proc, out)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sent_count(output: str) -> int:
    last = [line for line in output.splitlines() if line.startswith("sent=")][-1]
    return int(last.split()[0].removeprefix("sent="))


def _deliveries(store: Store) -> list[dict[str, object]]:
    c = t.deliveries.c
    query = (select(c.id, c.status, c.in_doubt, c.message_id, c.claimed_by, t.subscribers.c.email)
             .join(t.subscribers, t.subscribers.c.id == c.subscriber_id))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _copies(sink: SmtpSink) -> dict[str, list[str | None]]:
    """Recipient -> the Message-IDs of every copy the server accepted."""
    out: dict[str, list[str | None]] = {}
    headers = BytesHeaderParser()  # the headers alone: a full parse of thousands of messages is slow
    for m in sink.received():
        message_id = headers.parsebytes(m.data)["Message-ID"]
        for rcpt in m.rcpt_tos:
            out.setdefault(rcpt.lower(), []).append(message_id.strip() if message_id else None)
    return out


@pytest.mark.timeout(600)  # 2,000 messages through one 2-core machine
def test_three_senders_deliver_each_issue_exactly_once(postgres_url: str, sink: SmtpSink,
                                                       tmp_path: Path) -> None:
    config, _settings, store = _prepare(tmp_path, postgres_url, sink)
    try:
        started, cpu = time.monotonic(), _children_cpu()
        senders = [_start_sender(config, tmp_path, f"sender{i}") for i in range(SENDERS)]
        results = [s.finish(timeout=240) for s in senders]
        elapsed, cpu = time.monotonic() - started, _children_cpu() - cpu
        for rc, output in results:
            assert rc == 0, output[-2000:]
        per_sender = [_sent_count(output) for _rc, output in results]
        arrivals = [m.at - started for m in sink.received()]
        print(f"\n{N_SUBSCRIBERS} subscribers, {SENDERS} senders: {elapsed:.1f} s in all, first message after "
              f"{min(arrivals):.1f} s, then {N_SUBSCRIBERS / (max(arrivals) - min(arrivals)):.0f} msg/s; "
              f"senders' CPU {cpu:.1f} s; sent per sender {per_sender}")

        records = _deliveries(store)
        assert len(records) == N_SUBSCRIBERS
        assert Counter(r["status"] for r in records) == {DeliveryStatus.SENT.value: N_SUBSCRIBERS}
        assert not any(r["in_doubt"] for r in records)
        assert sum(per_sender) == N_SUBSCRIBERS  # each delivery was counted by exactly one process

        copies = _copies(sink)
        assert len(sink.received()) == N_SUBSCRIBERS
        assert set(copies) == {r["email"] for r in records}
        for r in records:
            assert copies[r["email"]] == [r["message_id"]], r["email"]  # type: ignore[index]
    finally:
        store.close()


def test_deliver_only_senders_share_what_the_daemon_built(postgres_url: str, sink: SmtpSink,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches small enough that the work spreads over the senders.
    config, settings, store = _prepare(tmp_path, postgres_url, sink, subscribers=500, batch_size=40)
    try:
        # The daemon's part: issues built for the readers whose send time has come (here 400 of 500),
        # dated by their local day, which is today in UTC.
        monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
        pipeline = Pipeline(settings, store)
        now = datetime.now(UTC)
        papers = store.list_papers(since=now - timedelta(days=7))
        due = list(store.iter_subscribers())[:400]
        for sub in due:
            issue = pipeline.build_issue(sub, now.date(), now, papers)
            store.create_issue(issue, "", lambda i: pipeline.message_id(i), now)

        senders = [_start_sender(config, tmp_path, f"deliver{i}", "--deliver-only") for i in range(SENDERS)]
        results = [s.finish(timeout=120) for s in senders]
        for rc, output in results:
            assert rc == 0, output[-2000:]
        per_sender = [_sent_count(output) for _rc, output in results]
        assert sum(per_sender) == len(due) and sum(1 for n in per_sender if n) >= 2, per_sender

        records = _deliveries(store)
        assert len(records) == len(due)  # nobody else's issue was built
        assert Counter(r["status"] for r in records) == {DeliveryStatus.SENT.value: len(due)}
        copies = _copies(sink)
        assert copies == {str(r["email"]): [r["message_id"]] for r in records}
    finally:
        store.close()


def _victim_rows(store: Store, pid: int, status: DeliveryStatus) -> list[dict[str, object]]:
    c = t.deliveries.c
    query = (select(c.id, c.lease_until, t.subscribers.c.email)
             .join(t.subscribers, t.subscribers.c.id == c.subscriber_id)
             .where(c.claimed_by.like(f"%:{pid}:%"), c.status == status.value).order_by(c.id))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.timeout(600)  # 2,000 messages through one 2-core machine
def test_a_killed_sender_leaves_nothing_undelivered(postgres_url: str, sink: SmtpSink, tmp_path: Path) -> None:
    lease = 3
    # Small batches keep a live sender's claims well inside the short lease.
    config, _settings, store = _prepare(tmp_path, postgres_url, sink, lease_seconds=lease, batch_size=10)
    try:
        started = time.monotonic()
        senders = [_start_sender(config, tmp_path, f"sender{i}") for i in range(SENDERS)]
        victim = senders[0]
        _wait(lambda: len(sink.received()) >= 300, 180, "the first 300 messages")

        # Catch the victim with a message on the wire: the server takes the whole message for one of its
        # claimed recipients and holds the reply back. The victim is frozen while the server accepts it,
        # then killed: the server has the message, the victim's record still says "sending".
        faults: list[tuple[str, Fault]] = []

        held_back: set[str] = set()

        def victim_is_mid_send() -> bool:
            for row in _victim_rows(store, victim.proc.pid, DeliveryStatus.PENDING):
                email = str(row["email"])
                if email not in dict(faults):
                    faults.append((email, sink.add_fault("after_data", delay=2.0, recipient=email, times=1)))
            fired = {email for email, f in faults if f.fired}
            # A fault can also fire for another sender that took over a claim whose lease ran out.
            sending = {str(r["email"]) for r in _victim_rows(store, victim.proc.pid, DeliveryStatus.SENDING)}
            held_back.update(fired & sending)
            return bool(held_back)

        _wait(victim_is_mid_send, 60, "the victim to hand over a message")
        victim.proc.send_signal(signal.SIGSTOP)
        sink.clear_faults()
        _wait(lambda: all(sink.for_recipient(e) for e in held_back), 10, "the server to accept the held message")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        in_flight = {str(r["email"]) for r in _victim_rows(store, victim.proc.pid, DeliveryStatus.SENDING)}
        claimed = {str(r["email"]) for r in _victim_rows(store, victim.proc.pid, DeliveryStatus.PENDING)}
        assert held_back <= in_flight

        for survivor in senders[1:]:
            rc, output = survivor.finish(timeout=240)
            assert rc == 0, output[-2000:]
        time.sleep(lease + 0.5)  # every lease the victim held has expired
        for attempt in range(3):
            rc, output = _start_sender(config, tmp_path, f"fresh{attempt}").finish(timeout=120)
            assert rc == 0, output[-2000:]
            if Counter(r["status"] for r in _deliveries(store)) == {DeliveryStatus.SENT.value: N_SUBSCRIBERS}:
                break
        elapsed = time.monotonic() - started

        records = _deliveries(store)
        assert Counter(r["status"] for r in records) == {DeliveryStatus.SENT.value: N_SUBSCRIBERS}
        in_doubt = {str(r["email"]) for r in records if r["in_doubt"]}
        assert in_doubt == in_flight  # only what was on the wire is in doubt; claimed-only rows are not
        assert not claimed & in_doubt

        copies = _copies(sink)
        assert set(copies) == {r["email"] for r in records}  # everybody got their issue
        duplicates = 0
        for r in records:
            email = str(r["email"])
            got = copies[email]
            if email in held_back:
                assert got == [r["message_id"]] * 2  # the resend keeps the Message-ID: receivers can dedupe
            elif email in in_doubt:  # on the wire when the victim died: the server may or may not have it
                assert got in ([r["message_id"]], [r["message_id"]] * 2), email
            else:
                assert got == [r["message_id"]], email
            duplicates += len(got) - 1
        print(f"\nkilled sender: {len(in_flight)} in doubt ({duplicates} received twice), "
              f"{len(claimed)} claimed-only rows picked up without doubt; {elapsed:.1f} s in all")
    finally:
        store.close()
