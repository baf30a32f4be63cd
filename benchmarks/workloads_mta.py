"""End to end through a local MTA: ``digest send`` against a bare smtplib loop, and time to first delivery.

The MTA is a private Postfix (its own config, queue and port under /tmp; every message accepted and
then thrown away by the discard transport) when Postfix is installed and this runs as root, else the
aiosmtpd sink of the send part (another process, keeps nothing). Each round:

* ``digest send``: a fresh interpreter (``send_child``) runs ``Pipeline.send`` for the workload's readers
  (the bench's mixed readers, stored but no issue built yet) through SMTP with ``[smtp] max_connections``
  connections. It reports when the first message was accepted by the MTA, when the issues were built,
  and when it ended. ``first_delivery_s`` is measured from the moment the interpreter was launched
  (imports, database, templates, building: all that a real ``digest send`` does first).
* the bare loop: ``smtplib`` over as many connections sends the same bytes (the messages the send
  produced, rendered again from its database; at most ``BARE_SAMPLE`` of them) with nothing else to do.

``mta_ratio`` is the median over the rounds of (messages / seconds of the whole ``Pipeline.send``,
building included) over (messages / seconds of the bare loop). The two loops take turns (the send
first, then the bare loop first, ...) and the MTA's queue is empty before each.

Run alone: ``.venv/bin/python benchmarks/workloads_mta.py [--readers 2000] [--rounds 3] [--sink]``.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: the checkout's package, not an installed one
    sys.path.insert(0, str(REPO))

from benchmarks.suite import BenchError, _raw_send, _sink  # noqa: E402
from digest.config import Settings  # noqa: E402
from digest.models import Outcome, OutgoingMessage, SendResult  # noqa: E402
from tests.samples import (  # noqa: E402
    BENCH_DATE,
    NOW,
    SEED,
    authors_of,
    bench_settings,
    make_papers,
    make_subscribers,
    prepare_store,
)

__all__ = ["MTA_SAMPLE", "bench_mta", "postfix_usable", "send_child"]

MTA_SAMPLE = 2000  # readers at most in `digest bench` (the standalone script takes more)
BARE_SAMPLE = 3000  # messages at most in the bare loop: a rate, not a total
ROUNDS = 3
WARM_UP = 20
_WARM_UP_MESSAGE = (b"From: warm-up@example.org\r\nTo: warm-up@example.org\r\nSubject: warm-up\r\n\r\n"
                    + b"Wakes the MTA's smtpd processes before a timed loop.\r\n" * 200)

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
local_recipient_maps =
alias_maps =
alias_database =
default_transport = discard:bench
relay_transport = discard:bench
notify_classes =
biff = no
smtputf8_enable = no
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
"""

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def postfix_usable() -> str | None:
    """None if a private Postfix can run here, else why not."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "postfix is not installed"
    if os.geteuid() != 0:
        return "a private Postfix needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"the private Postfix does not listen on 127.0.0.1:{port}")


class _Postfix:
    """A private Postfix on 127.0.0.1 that accepts every message and discards it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.etc, self.queue, self.data = (base / n for n in ("etc", "queue", "data"))
        for folder in (self.etc, self.queue, self.data):
            folder.mkdir()
        postfix = pwd.getpwnam("postfix")
        os.chown(self.data, postfix.pw_uid, postfix.pw_gid)
        self.port = _free_port()
        (self.etc / "main.cf").write_text(MAIN_CF.format(queue=self.queue, data=self.data, base=base))
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        done = self._postfix("start")
        if done.returncode != 0:
            raise BenchError(f"postfix start failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        _wait_port(self.port)

    def stop(self) -> None:
        self._postfix("stop")
        if self._postfix("status").returncode == 0:
            self._postfix("abort")

    def queued(self) -> int:
        return sum(1 for sub in ("maildrop", "incoming", "active", "deferred") if (self.queue / sub).exists()
                   for path in (self.queue / sub).rglob("*") if path.is_file())

    def drain(self, seconds: float = 120.0) -> None:
        """Wait until the queue is empty (the discard transport has caught up)."""
        deadline = time.monotonic() + seconds
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def _mta(use_postfix: bool) -> Iterator[tuple[str, int, Callable[[], None]]]:
    """(what it is, its port, a function that waits until it has nothing queued)."""
    if use_postfix:
        base = Path(tempfile.mkdtemp(prefix="digest-bench-postfix-", dir="/tmp"))
        base.chmod(0o755)
        postfix = _Postfix(base)
        try:
            postfix.start()
            version = subprocess.run(["postconf", "-c", str(postfix.etc), "-h", "mail_version"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
            yield f"Postfix {version} (private, discard transport)", postfix.port, postfix.drain
        finally:
            postfix.stop()
            shutil.rmtree(base, ignore_errors=True)
    else:
        with _sink() as (port, _counts):
            yield "aiosmtpd sink (another process, keeps nothing)", port, lambda: None


# ---- the digest side, in its own interpreter ----------------------------------------------------


def send_child(settings_file: str) -> None:
    """One ``Pipeline.send`` through SMTP, timed; one JSON line of wall-clock times (time.time())."""
    from digest.mail.smtp import SMTPMailer
    from digest.pipeline import Pipeline, Progress
    from digest.store import Store

    settings = pickle.loads(Path(settings_file).read_bytes())
    first: list[float] = []

    class FirstAccepted(SMTPMailer):
        def send(self, message: OutgoingMessage) -> SendResult:
            result = super().send(message)
            if not first and result.outcome is Outcome.DELIVERED:
                first.append(time.time())
            return result

    class Built(Progress):
        at: float | None = None

        def start(self, total: int | None) -> None:
            self.at = time.time()

    called = time.time()
    store = Store(settings.database.url)
    progress = Built()
    pipeline = Pipeline(settings, store, mailer=FirstAccepted.from_settings(settings), clock=lambda: NOW)
    summary = pipeline.send(BENCH_DATE, progress=progress)
    ended = time.time()
    store.close()
    rss = 0.0
    for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else ():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    print(json.dumps({"sent": summary.sent, "failed": summary.failed, "skipped": summary.skipped,
                      "called": called, "built": progress.at, "first": first[0] if first else None,
                      "ended": ended, "rss_mb": round(rss, 1)}))


def _run_send(settings: Settings, directory: Path) -> dict[str, Any]:
    settings_file = directory / "settings.pickle"
    settings_file.write_bytes(pickle.dumps(settings))
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.workloads_mta import send_child; " \
           "send_child(sys.argv[1])"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    done = subprocess.run([sys.executable, "-c", code, str(settings_file)], capture_output=True, text=True,
                          timeout=7200, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"mta benchmark: digest send failed: {tail[0]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if report["failed"] or not report["sent"] or report["first"] is None:
        raise BenchError(f"mta benchmark: digest send sent={report['sent']} failed={report['failed']}")
    report["launched"] = launched
    return report


def _messages(settings: Settings, limit: int) -> list[tuple[str, bytes]]:
    """The bytes the send produced for its first ``limit`` deliveries, rendered again from its database
    (same issues, Message-IDs, signing key and clock: the same bytes)."""
    from digest.pipeline import Pipeline
    from digest.store import Store

    store = Store(settings.database.url)
    try:
        pipeline = Pipeline(settings, store, clock=lambda: NOW)
        messages = []
        for issue_id, message_id in _delivered(store, limit):
            issue = store.load_issue(issue_id, pipeline.labels)
            assert issue is not None
            message = pipeline.render_message(issue, message_id, NOW)
            messages.append((message.recipient, message.data))
        return messages
    finally:
        store.close()


def _delivered(store: Any, limit: int) -> list[tuple[int, str]]:
    from sqlalchemy import select as sql_select

    from digest.store import schema as t

    with store.engine.connect() as conn:
        rows = conn.execute(sql_select(t.deliveries.c.issue_id, t.deliveries.c.message_id)
                            .order_by(t.deliveries.c.id).limit(limit)).all()
    return [(int(issue_id), str(message_id)) for issue_id, message_id in rows]


def bench_mta(settings: Settings, n_subscribers: int, n_papers: int, rounds: int = ROUNDS,
              use_postfix: bool | None = None, seed: int = SEED, cap: int | None = MTA_SAMPLE) -> dict[str, Any]:
    """The MTA workload (see the module's docstring)."""
    count = min(n_subscribers, cap) if cap else n_subscribers
    if use_postfix is None:
        use_postfix = postfix_usable() is None
    connections = settings.smtp.max_connections
    sender = parseaddr(settings.site.sender)[1]
    warm_up = [(f"warm-up{k}@example.org", _WARM_UP_MESSAGE) for k in range(WARM_UP)]
    ratios: list[float] = []
    phase_ratios: list[float] = []
    firsts: list[float] = []
    firsts_call: list[float] = []
    send_rates: list[float] = []
    bare_rates: list[float] = []
    rss: list[float] = []
    builds: list[float] = []
    messages: list[tuple[str, bytes]] = []
    readers = 0
    with _mta(use_postfix) as (mta, port, drain):

        def bare() -> float:
            drain()
            _raw_send(port, sender, warm_up, connections)
            drain()
            return len(messages) / _raw_send(port, sender, messages, connections)

        for k in range(rounds):
            bare_first = bool(messages) and k % 2 == 1
            bare_rate = bare() if bare_first else 0.0
            with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
                bench = bench_settings(
                    settings, Path(tmp), mailer={"backend": "smtp"},
                    smtp={"host": "127.0.0.1", "port": port, "security": "none", "username": "",
                          "rate_per_second": 0, "local_hostname": "bench.local", "timeout_seconds": 120.0},
                )
                papers = make_papers(n_papers)
                store, readers = prepare_store(bench, n_papers, make_subscribers(
                    count, list(bench.enabled_topics), authors_of(papers), seed=seed))
                store.close()
                drain()
                _raw_send(port, sender, warm_up, connections)
                drain()
                report = _run_send(bench, Path(tmp))
                if not messages:
                    messages = _messages(bench, BARE_SAMPLE)
            if not bare_first:
                bare_rate = bare()
            send_rate = report["sent"] / (report["ended"] - report["called"])
            built = report["built"] or report["called"]
            phase_rate = report["sent"] / max(1e-9, report["ended"] - built)
            ratios.append(send_rate / bare_rate)
            phase_ratios.append(phase_rate / bare_rate)
            firsts.append(report["first"] - report["launched"])
            firsts_call.append(report["first"] - report["called"])
            builds.append(built - report["called"])
            send_rates.append(send_rate)
            bare_rates.append(bare_rate)
            rss.append(report["rss_mb"])

    def med(values: list[float], digits: int = 1) -> float:
        return round(statistics.median(values), digits)

    return {
        "mta": mta, "readers": readers, "connections": connections, "rounds": rounds,
        "messages": report["sent"], "bare_messages": len(messages),
        "avg_message_kb": round(sum(len(d) for _, d in messages) / max(1, len(messages)) / 1024, 1),
        "send_per_s": med(send_rates), "bare_per_s": med(bare_rates),
        "build_s": med(builds, 2),
        "ratios": " ".join(f"{r:.2f}" for r in ratios), "phase_ratio": med(phase_ratios, 3),
        "firsts": " ".join(f"{s:.2f}" for s in firsts), "first_delivery_call_s": med(firsts_call, 2),
        "sender_rss_mb": max(rss),
        "mta_ratio": med(ratios, 3), "first_delivery_s": med(firsts, 2),
    }


LABELS = [
    ("mta", "MTA"), ("readers", "readers (mixed preferences, no issue built yet)"),
    ("connections", "SMTP connections (both loops)"), ("rounds", "rounds (send and bare loop, in turns)"),
    ("messages", "messages sent by digest send, each round"), ("bare_messages", "messages in the bare loop"),
    ("avg_message_kb", "average message, KB"),
    ("send_per_s", "digest send, whole run, messages/s (median)"),
    ("bare_per_s", "bare smtplib loop, same bytes, messages/s (median)"),
    ("ratios", "ratio in each round"), ("mta_ratio", "ratio, whole run (median)"),
    ("phase_ratio", "ratio, delivery phase only (median)"), ("build_s", "building issues, s (median)"),
    ("firsts", "first message accepted, s from launch, each round"),
    ("first_delivery_s", "first message accepted, s from launch (median)"),
    ("first_delivery_call_s", "first message accepted, s from Pipeline.send (median)"),
    ("sender_rss_mb", "peak RSS of the sending process, MB"),
]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=MTA_SAMPLE)
    parser.add_argument("--papers", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--connections", type=int, default=0, help="[smtp] max_connections (default: config)")
    parser.add_argument("--sink", action="store_true", help="the aiosmtpd sink even where Postfix can run")
    args = parser.parse_args()
    settings = Settings()
    if args.connections:
        settings = settings.model_copy(update={"smtp": settings.smtp.model_copy(
            update={"max_connections": args.connections})})
    figures = bench_mta(settings, args.readers, args.papers, rounds=args.rounds,
                        use_postfix=False if args.sink else None, cap=None)
    for key, label in LABELS:
        print(f"  {label:<55}  {figures[key]}")
    print(f"mta_ratio={figures['mta_ratio']}")
    print(f"first_delivery_s={figures['first_delivery_s']}")


if __name__ == "__main__":
    main()
