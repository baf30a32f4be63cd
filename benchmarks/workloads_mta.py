"""End to end through a local MTA: ``digest send`` against a bare smtplib loop, and time to first delivery.

The MTA is a private Postfix (tests/integration/mta.py's ``DiscardPostfix``: its own config, queue and
port under /tmp; every message accepted and then thrown away by the discard transport) when Postfix is
installed and this runs as root, else the aiosmtpd sink of the send part (another process, keeps
nothing). Each round:

* ``digest send``: a fresh interpreter (``send_child``) runs ``Pipeline.send`` for the workload's readers
  (the bench's mixed readers, stored but no issue built yet) through SMTP with ``[smtp] max_connections``
  connections. It reports when the first message was accepted by the MTA and when it ended, its own
  peak RSS and that of it and its workers together. ``first_delivery_s`` is measured from the moment
  the interpreter was launched (imports, database, templates, the first chunk of issues: all that a
  real ``digest send`` does first); issues are built while the first ones are sent, so the "phase"
  ratio counts from the first message on.
* the bare loop: ``smtplib`` over as many connections sends the same bytes (the messages the send
  produced, rendered again from its database; at most ``BARE_SAMPLE`` of them) with nothing else to do.

``mta_ratio`` is the median over the rounds of (messages / seconds of the whole ``Pipeline.send``,
building included) over (messages / seconds of the bare loop). The two loops take turns (the send
first, then the bare loop first, ...) and the MTA's queue is empty before each.

Run alone: ``.venv/bin/python benchmarks/workloads_mta.py [--readers 2000] [--rounds 3] [--sink]``;
``--readers 100000 --rounds 1`` takes some minutes (so does ``DIGEST_BENCH_MTA_READERS=100000 digest
bench``, which otherwise caps this workload at ``MTA_SAMPLE`` readers).
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from email.utils import parseaddr
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: the checkout's package, not an installed one
    sys.path.insert(0, str(REPO))

from benchmarks.suite import BenchError, raw_send, smtp_sink, smtp_workload  # noqa: E402
from digest.config import Settings  # noqa: E402
from digest.models import Outcome, OutgoingMessage, SendResult  # noqa: E402
from tests.integration.mta import DiscardPostfix, postfix_missing, private_dir  # noqa: E402
from tests.samples import (  # noqa: E402
    BENCH_DATE,
    NOW,
    SEED,
)

__all__ = ["MTA_SAMPLE", "bench_mta", "postfix_usable", "send_child"]

MTA_SAMPLE = 2000  # readers at most in `digest bench` (the standalone script takes more)
READERS_ENV = "DIGEST_BENCH_MTA_READERS"  # readers of `digest bench`'s MTA workload instead
BARE_SAMPLE = 3000  # messages at most in the bare loop: a rate, not a total
ROUNDS = 3
WARM_UP = 20
_WARM_UP_MESSAGE = (b"From: warm-up@example.org\r\nTo: warm-up@example.org\r\nSubject: warm-up\r\n\r\n"
                    + b"Wakes the MTA's smtpd processes before a timed loop.\r\n" * 200)

def postfix_usable() -> str | None:
    """None if a private Postfix can run here, else why not."""
    missing = postfix_missing()
    if missing is not None:
        return missing
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


@contextmanager
def _mta(use_postfix: bool) -> Iterator[tuple[str, int, Callable[[], None]]]:
    """(what it is, its port, a function that waits until it has nothing queued)."""
    if use_postfix:
        base = private_dir("digest-bench-postfix-")
        postfix = DiscardPostfix(base)
        try:
            try:
                postfix.start()
            except RuntimeError as err:
                raise BenchError(str(err)) from err
            yield f"Postfix {postfix.version()} (private, discard transport)", postfix.port, postfix.drain
        finally:
            postfix.stop()
            shutil.rmtree(base, ignore_errors=True)
    else:
        with smtp_sink() as (port, _counts):
            yield "aiosmtpd sink (another process, keeps nothing)", port, lambda: None


# ---- the digest side, in its own interpreter ----------------------------------------------------


def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int | str) -> int:
    """The proportional set size of a process: its resident pages, each shared page divided among the
    processes that share it (a forked worker's pages it still shares with its parent count once)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class _TreeMemory:
    """Samples the memory of this process and its children (the render and build processes) every
    50 ms: the peak of the sum of their RSS, which no single process's peak gives, and (every 250 ms,
    reading it costs more) the peak of the sum of their PSS, which counts shared pages once."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.05):
            children: list[str] = []
            for task in Path("/proc/self/task").iterdir():
                with suppress(OSError):
                    children += (task / "children").read_text().split()
            total = _status_kb("self", "VmRSS") + sum(_status_kb(pid, "VmRSS") for pid in children)
            self.peak_kb = max(self.peak_kb, total)
            tick += 1
            if tick % 5 == 0:
                pss = _pss_kb("self") + sum(_pss_kb(pid) for pid in children)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)

    def __enter__(self) -> _TreeMemory:
        if Path("/proc/self/task").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def send_child(settings_file: str) -> None:
    """One ``Pipeline.send`` through SMTP, timed; one JSON line of wall-clock times (time.time()) and
    memory: this process's peak RSS, and the peak of its own plus its workers' (sampled)."""
    from digest.mail.smtp import SMTPMailer
    from digest.pipeline import Pipeline
    from digest.store import Store

    settings = pickle.loads(Path(settings_file).read_bytes())
    first: list[float] = []

    class FirstAccepted(SMTPMailer):
        def send(self, message: OutgoingMessage) -> SendResult:
            result = super().send(message)
            if not first and result.outcome is Outcome.DELIVERED:
                first.append(time.time())
            return result

    called = time.time()
    with _TreeMemory() as memory:
        store = Store(settings.database.url)
        pipeline = Pipeline(settings, store, mailer=FirstAccepted.from_settings(settings), clock=lambda: NOW)
        summary = pipeline.send(BENCH_DATE)
        ended = time.time()
        store.close()
    print(json.dumps({"sent": summary.sent, "failed": summary.failed, "skipped": summary.skipped,
                      "called": called, "first": first[0] if first else None, "ended": ended,
                      "rss_mb": round(_status_kb("self", "VmHWM") / 1024, 1),
                      "tree_rss_mb": round(memory.peak_kb / 1024, 1),
                      "tree_pss_mb": round(memory.peak_pss_kb / 1024, 1)}))


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
    if cap == MTA_SAMPLE and os.environ.get(READERS_ENV):
        count = int(os.environ[READERS_ENV])  # `digest bench` at another scale (100,000 takes minutes)
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
    tree_rss: list[float] = []
    tree_pss: list[float] = []
    messages: list[tuple[str, bytes]] = []
    readers = 0
    with _mta(use_postfix) as (mta, port, drain):

        def bare() -> float:
            drain()
            raw_send(port, sender, warm_up, connections)
            drain()
            return len(messages) / raw_send(port, sender, messages, connections)

        for k in range(rounds):
            bare_first = bool(messages) and k % 2 == 1
            bare_rate = bare() if bare_first else 0.0
            with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
                bench, store, readers = smtp_workload(settings, Path(tmp), port, n_papers, count, seed,
                                                      timeout=120.0)
                store.close()
                drain()
                raw_send(port, sender, warm_up, connections)
                drain()
                report = _run_send(bench, Path(tmp))
                if not messages:
                    messages = _messages(bench, BARE_SAMPLE)
            if not bare_first:
                bare_rate = bare()
            send_rate = report["sent"] / (report["ended"] - report["called"])
            # Issues are built while the first ones are sent: the "phase" is from the first message on.
            phase_rate = report["sent"] / max(1e-9, report["ended"] - report["first"])
            ratios.append(send_rate / bare_rate)
            phase_ratios.append(phase_rate / bare_rate)
            firsts.append(report["first"] - report["launched"])
            firsts_call.append(report["first"] - report["called"])
            send_rates.append(send_rate)
            bare_rates.append(bare_rate)
            rss.append(report["rss_mb"])
            tree_rss.append(report["tree_rss_mb"])
            tree_pss.append(report["tree_pss_mb"])

    def med(values: list[float], digits: int = 1) -> float:
        return round(statistics.median(values), digits)

    return {
        "mta": mta, "readers": readers, "connections": connections, "rounds": rounds,
        "messages": report["sent"], "bare_messages": len(messages),
        "avg_message_kb": round(sum(len(d) for _, d in messages) / max(1, len(messages)) / 1024, 1),
        "send_per_s": med(send_rates), "bare_per_s": med(bare_rates),
        "ratios": " ".join(f"{r:.2f}" for r in ratios), "phase_ratio": med(phase_ratios, 3),
        "firsts": " ".join(f"{s:.2f}" for s in firsts), "first_delivery_call_s": med(firsts_call, 2),
        "sender_rss_mb": max(rss), "send_rss_mb": max(tree_rss), "send_pss_mb": max(tree_pss),
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
    ("phase_ratio", "ratio, from the first message on (median)"),
    ("firsts", "first message accepted, s from launch, each round"),
    ("first_delivery_s", "first message accepted, s from launch (median)"),
    ("first_delivery_call_s", "first message accepted, s from Pipeline.send (median)"),
    ("sender_rss_mb", "peak RSS of the sending process, MB"),
    ("send_rss_mb", "peak RSS of the send with its workers (sampled), MB"),
    ("send_pss_mb", "peak PSS of the send with its workers (shared pages once), MB"),
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
