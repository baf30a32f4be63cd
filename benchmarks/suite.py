"""`digest bench`: one generated workload, six measurements (render, send, memory, tagger, distinct, mta).

The workload: ``n_papers`` recorded papers (tests/fixtures/render/papers.jsonl, tagged by the real
tagger; more are made by pairing their titles and abstracts anew) first seen over the last two days,
and ``n_subscribers`` readers with mixed preferences (everything; one to three topics; topics and
keywords; keywords only; followed authors; some with an exclusion; 5, 10 or 20 papers), all due on
the benchmark's date. Every part builds what it needs from the same seed.

* render: the real path (``Pipeline.render_message``: shared bodies, MIME bytes) for every reader, in
  one process and in two processes at once (wall clock, from a common start), against the naive path
  (Jinja -> MJML -> premailer per email, one process: the "50 emails a second per core" the
  performance issue starts from) on a sample. ``render_speedup`` is the real path at its best (one
  process or two at once, emails per CPU second of the busier process) over the naive path's emails
  per CPU second; the table also gives the speed-up per core (one process each).
* send: ``Pipeline.send`` through SMTP to an aiosmtpd sink in another process (so it does not share
  the sender's interpreter), timed from the moment the issues are built to the end of the run; then a
  bare ``smtplib`` loop sends the same bytes over the same number of connections.
* memory: a full ``send`` of every reader (build, render, record) to a null mailer in a fresh
  interpreter, which reports its peak resident set (VmHWM).
* tagger: papers tagged per second (wall clock) over the workload's papers.
* distinct and mta: the workloads in the repository's benchmarks/ (workloads_distinct.py: every reader
  a different set of 20 recorded papers; workloads_mta.py: ``digest send`` through a local MTA against
  a bare smtplib loop, and the time to the first delivery).

Lives outside the package: it needs a checkout of the repository (the workload comes from
tests/samples.py and tests/fixtures) and, for the send part, aiosmtpd (the ``dev`` extra). ``digest
bench`` runs it from a checkout; an installed wheel has neither and says so.
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import resource
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.feedback import feedback_tastes
from digest.compose import Composer
from digest.config import Settings
from digest.errors import DigestError, UsageError
from digest.gcpause import frozen_heap
from digest.mail.base import Mailer
from digest.models import Issue, Outcome, OutgoingMessage, Paper, SendResult
from digest.pipeline import Pipeline
from digest.selection import Pool, select
from digest.send_engine import NoProgress, SendSummary
from digest.store import Store
from tests.samples import (
    BENCH_DATE,
    NOW,
    SEED,
    authors_of,
    bench_settings,
    make_papers,
    make_subscriber,
    make_subscribers,
    prepare_store,
    tagged_papers,
)

__all__ = ["PARTS", "BenchError", "NullMailer", "run_bench"]

# The checkout this runs from: the child interpreters below import this module from there too.
REPO = Path(__file__).resolve().parent.parent

PARTS = ("render", "send", "memory", "tagger", "distinct", "mta")
NAIVE_SAMPLE = 100
RENDER_ROUNDS = 10
ONE_PROCESS_SAMPLE = 10_000
# The send with feedback: this share of the readers have bench_feedback.VERDICTS verdicts each.
FEEDBACK_SHARE = 0.1
SEND_SAMPLE = 1200
WARM_UP_MESSAGES = 60
_WARM_UP_MESSAGE = (b"From: warm-up@example.org\r\nTo: warm-up@example.org\r\nSubject: warm-up\r\n\r\n"
                    + b"Keeps the sink busy for a moment before a timed loop.\r\n" * 1000)
SEND_ROUNDS = 4
RENDER_PROCESSES = 2
POOL_ROUNDS = 3
TAG_SECONDS = 2.0

log = logging.getLogger("digest")


def _child(call: str) -> str:
    """Code for ``python -c`` that runs ``call`` from this module (the checkout first on the path)."""
    return f"import sys; sys.path.insert(0, {str(REPO)!r}); import benchmarks.suite as suite; suite.{call}"


class BenchError(DigestError):
    """A part of the benchmark could not run to the end (exit 1, one line)."""


class NullMailer(Mailer):
    """Accepts every message and keeps nothing (what the memory part sends to). With the default
    ``concurrency`` of 1 it is handed one message at a time, as the file mailer is."""

    name = "null"

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self.count = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendResult:
        with self._lock:
            self.count += 1
            self.bytes += len(message.data)
        return SendResult(Outcome.DELIVERED, "discarded")


@contextmanager
def _quiet() -> Iterator[None]:
    """The pipeline's per-reader log lines (an empty issue, say) would flood a 100,000-reader run."""
    logger = logging.getLogger("digest")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- render ---------------------------------------------------------------------------------------


def _issues(pipeline: Pipeline, papers: list[Paper], indexes: range, seed: int,
            feedback_share: float = 0.0) -> list[tuple[Issue, str]]:
    """The issues the send loop would build for readers ``indexes`` (ids from 1), with Message-IDs;
    ``feedback_share`` of the readers re-ranked by their taste (bench_feedback)."""
    pool = Pool(papers, pipeline.selection_context)
    tastes = feedback_tastes(papers, feedback_share, seed, NOW)
    topics = list(pipeline.labels)
    authors = authors_of(papers)
    built = []
    for i in indexes:
        sub = replace(make_subscriber(i, topics, authors, seed), id=i + 1)
        issue = select(pool, sub, set(), NOW, BENCH_DATE, pipeline.selection_context, since=NOW - timedelta(days=7),
                       taste=tastes(i))
        if issue.count == 0:
            continue
        issue = Issue(subscriber=sub, date=BENCH_DATE, sections=issue.sections, top_pick=issue.top_pick, id=i + 1)
        built.append((issue, pipeline.message_id(i + 1)))
    return built


def _render_share(settings: Settings, papers: list[Paper], indexes: range, seed: int,
                  barrier: Any = None, naive_sample: int = 0, feedback_share: float = 0.0) -> dict[str, Any]:
    """Render readers ``indexes`` on the real path (after a common start when ``barrier`` is given) and
    a sample of ``naive_sample`` of them on the naive path; times and sizes.

    With a sample, the two paths take turns (RENDER_ROUNDS rounds, each a slice of the readers in
    order and then a slice of the sample): the CPU this machine gives a process drifts by a third from
    one second to the next, and the ratio of the two paths should not depend on which ran when."""
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'render.sqlite3'}")
        pipeline = Pipeline(settings, store, clock=lambda: NOW)
        jobs = _issues(pipeline, papers, indexes, seed, feedback_share)
        reference = Composer(settings, pipeline.signing_key, pipeline.renderer.reference())
        for issue, mid in jobs[:50]:  # the first emails of a run fill the caches
            pipeline.render_message(issue, mid, NOW)
        sample = jobs[:: max(1, len(jobs) // naive_sample)][:naive_sample] if naive_sample else []
        rounds = RENDER_ROUNDS if sample else 1
        with frozen_heap():  # as a send does (digest.gcpause)
            if barrier is not None:
                barrier.wait()
            start = time.perf_counter()
            cpu = naive_wall = naive_cpu = 0.0
            size = 0
            for k in range(rounds):
                cpu0 = time.process_time()
                for issue, mid in jobs[k * len(jobs) // rounds:(k + 1) * len(jobs) // rounds]:
                    size += len(pipeline.render_message(issue, mid, NOW).data)
                wall1, cpu1 = time.perf_counter(), time.process_time()
                cpu += cpu1 - cpu0
                for issue, mid in sample[k * len(sample) // rounds:(k + 1) * len(sample) // rounds]:
                    reference.compose(issue, mid, NOW)
                naive_wall += time.perf_counter() - wall1
                naive_cpu += time.process_time() - cpu1
            end = time.perf_counter() - naive_wall
        store.close()
    return {"emails": len(jobs), "start": start, "end": end, "cpu": cpu, "bytes": size,
            "naive": len(sample), "naive_wall": naive_wall, "naive_cpu": naive_cpu}


def smtp_workload(settings: Settings, directory: Path, port: int, n_papers: int, readers: int, seed: int,
                  timeout: float) -> tuple[Settings, Store, int]:
    """The settings of a send through SMTP to 127.0.0.1:``port`` (no TLS, no rate limit), with a fresh
    database in ``directory`` holding the workload (``n_papers`` tagged papers, ``readers`` readers of
    mixed preferences): (settings, store, readers stored)."""
    bench = bench_settings(
        settings, directory, mailer={"backend": "smtp"},
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "username": "",
              "rate_per_second": 0, "local_hostname": "bench.local", "timeout_seconds": timeout},
    )
    papers = make_papers(n_papers)
    store, stored = prepare_store(bench, n_papers, make_subscribers(
        readers, list(bench.enabled_topics), authors_of(papers), seed=seed))
    return bench, store, stored


def _render_process(settings: Settings, papers: list[Paper], indexes: range, seed: int, barrier: Any,
                    results: Any, feedback_share: float = 0.0) -> None:
    try:
        results.put(_render_share(settings, papers, indexes, seed, barrier, feedback_share=feedback_share))
    except BaseException as err:  # the parent must hear of it, not wait for ever
        results.put({"error": f"{type(err).__name__}: {err}"})
        raise


def _render_pool(settings: Settings, papers: list[Paper], n_subscribers: int, processes: int,
                 seed: int, feedback_share: float = 0.0) -> tuple[int, float, float]:
    """Every reader's email in ``processes`` processes at once (forked before this one has rendered
    anything, so they start cold, as a send does): (emails, seconds from the common start to the last
    end, CPU seconds of the process that used the most)."""
    step = -(-n_subscribers // processes)
    shares = run_together(_render_process, [
        (settings, papers, range(k * step, min(n_subscribers, (k + 1) * step)), seed) for k in range(processes)],
        "render", extra=(feedback_share,), timeout=3600)
    span = max(s["end"] for s in shares) - min(s["start"] for s in shares)
    return sum(s["emails"] for s in shares), span, max(s["cpu"] for s in shares)


def run_together(target: Callable[..., None], args: list[tuple[Any, ...]], what: str,
                 extra: tuple[Any, ...] = (), timeout: float = 1800) -> list[dict[str, Any]]:
    """One process per ``args``, started together: ``target(*args, barrier, results, *extra)`` waits at
    the barrier, then puts one dict of figures (or ``{"error": ...}``) on ``results``; their dicts.
    Forked where the platform can (workers start at once with everything imported; nothing in this
    process runs threads), spawned elsewhere."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, results, *extra), daemon=True) for a in args]
    for proc in procs:
        proc.start()
    shares: list[dict[str, Any]] = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    errors = [s["error"] for s in shares if "error" in s]
    if errors:
        raise BenchError(f"{what} worker failed: {errors[0]}")
    return shares


def bench_render(settings: Settings, n_subscribers: int, n_papers: int, processes: int = RENDER_PROCESSES,
                 naive_sample: int = NAIVE_SAMPLE, seed: int = SEED) -> dict[str, Any]:
    """Every reader's email in ``processes`` processes at once (POOL_ROUNDS times, see _render_pool),
    then up to ONE_PROCESS_SAMPLE readers in this process and the naive path on ``naive_sample`` of them."""
    papers = tagged_papers(settings, n_papers)
    figures: dict[str, Any] = {"processes": processes, "render_per_s_pool": 0.0}
    if processes > 1 and n_subscribers >= processes:
        # A round lasts well under a second at 10,000 readers, where one stall of this machine would
        # move its figure by a fifth: the median of POOL_ROUNDS rounds, each with fresh processes.
        # Each round also renders the send where FEEDBACK_SHARE of the readers gave feedback, right after:
        # the two figures then meet the same load.
        rates, cpu_rates, fb_rates = [], [], []
        for _ in range(POOL_ROUNDS):
            emails, span, cpu = _render_pool(settings, papers, n_subscribers, processes, seed)
            rates.append(_rate(emails, span))
            cpu_rates.append(_rate(emails, cpu))
            fb_emails, fb_span, _ = _render_pool(settings, papers, n_subscribers, processes, seed, FEEDBACK_SHARE)
            fb_rates.append(_rate(fb_emails, fb_span))
        figures["emails"] = emails
        figures["pool_rounds"] = " ".join(f"{rate:.0f}" for rate in rates)
        figures["render_per_s_pool"] = statistics.median(rates)
        figures["render_per_s_pool_cpu"] = statistics.median(cpu_rates)
        figures["pool_rounds_feedback"] = " ".join(f"{rate:.0f}" for rate in fb_rates)
        figures["render_per_s_pool_feedback"] = statistics.median(fb_rates)
    one = _render_share(settings, papers, range(min(n_subscribers, ONE_PROCESS_SAMPLE)), seed,
                        naive_sample=naive_sample)
    figures.update({
        "emails_1": one["emails"],
        "render_per_s_1": _rate(one["emails"], one["end"] - one["start"]),
        "render_per_s_1_cpu": _rate(one["emails"], one["cpu"]),
        "naive_per_s": _rate(one["naive"], one["naive_wall"]),
        "naive_per_s_cpu": _rate(one["naive"], one["naive_cpu"]),
        "avg_message_kb": round(one["bytes"] / max(1, one["emails"]) / 1024, 1),
    })
    figures["render_per_s"] = max(figures["render_per_s_1"], figures["render_per_s_pool"])
    fb = _render_share(settings, papers, range(min(n_subscribers, ONE_PROCESS_SAMPLE)), seed,
                       feedback_share=FEEDBACK_SHARE)
    figures["render_per_s_1_feedback"] = _rate(fb["emails"], fb["end"] - fb["start"])
    figures["render_per_s_feedback"] = max(figures["render_per_s_1_feedback"],
                                           figures.get("render_per_s_pool_feedback", 0.0))
    figures["feedback_ratio"] = round(figures["render_per_s_feedback"] / figures["render_per_s"], 2) \
        if figures["render_per_s"] else 0.0
    # By CPU time, as the per-core figure: the ratio of what the two paths cost, whatever else this
    # machine runs meanwhile (a busy neighbour stretches wall-clock rounds, not CPU seconds).
    naive_cpu = figures["naive_per_s_cpu"]
    best_cpu = max(figures["render_per_s_1_cpu"], figures.get("render_per_s_pool_cpu", 0.0))
    figures["render_speedup"] = round(best_cpu / naive_cpu, 1) if naive_cpu else 0.0
    figures["render_speedup_1_cpu"] = round(figures["render_per_s_1_cpu"] / naive_cpu, 1) if naive_cpu else 0.0
    return figures


# ---- send -----------------------------------------------------------------------------------------


class _Counter:
    """aiosmtpd handler of the sink: counts what it accepts and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 OK: queued"


def sink_main() -> None:
    """The SMTP sink's own interpreter: aiosmtpd on 127.0.0.1, counting and keeping nothing. Writes its
    port on stdout, then answers each line on stdin with ``count bytes``; stops at end of input."""
    from aiosmtpd.controller import Controller

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    class _Bound(Controller):
        # Serve on the socket bound above: the port is ours without a race.
        def _create_server(self) -> Any:
            return self.loop.create_server(self._factory_invoker, sock=sock)

    handler = _Counter()
    controller = _Bound(handler, hostname="127.0.0.1", port=port, server_hostname="sink.bench",
                        enable_SMTPUTF8=False, ready_timeout=10.0)
    controller.start()
    print(port, flush=True)
    for _ in sys.stdin:
        print(handler.count, handler.bytes, flush=True)
    controller.stop()


@contextmanager
def smtp_sink() -> Iterator[tuple[int, Callable[[], tuple[int, int]]]]:
    """The sink in a separate process (so it does not share the sender's interpreter): its port, and a
    function giving what it has received so far."""
    try:
        import aiosmtpd  # noqa: F401
    except ImportError as err:
        raise UsageError("the send benchmark needs aiosmtpd: pip install -e '.[dev]'") from err
    proc = subprocess.Popen([sys.executable, "-c", _child("sink_main()")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    try:
        line = stdout.readline()
        if not line.strip():
            raise BenchError("the SMTP sink did not start")

        def counts() -> tuple[int, int]:
            stdin.write("count\n")
            stdin.flush()
            count, size = stdout.readline().split()
            return int(count), int(size)

        yield int(line), counts
    finally:
        stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Clocked(NoProgress):
    """Notes when the send loop starts delivering (the issues are built by then), after ``warm_up``."""

    def __init__(self, warm_up: Callable[[], object] = lambda: None) -> None:
        self.warm_up = warm_up
        self.built: float | None = None
        self.started: float | None = None

    def start(self, total: int | None) -> None:
        self.built = time.perf_counter()
        self.warm_up()
        self.started = time.perf_counter()


def raw_send(port: int, sender: str, messages: list[tuple[str, bytes]], connections: int) -> float:
    """Seconds a bare smtplib loop takes to send ``messages`` over ``connections`` connections."""
    shares = [messages[k::connections] for k in range(connections)]
    errors: list[BaseException] = []
    gate = threading.Barrier(connections + 1)

    def run(share: list[tuple[str, bytes]]) -> None:
        try:
            gate.wait()
            conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=60)
            for recipient, data in share:
                conn.sendmail(sender, [recipient], data)
            conn.quit()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"raw smtplib loop failed: {errors[0]}")
    return time.perf_counter() - start


def bench_send(settings: Settings, n_subscribers: int, n_papers: int, sample: int = SEND_SAMPLE,
               rounds: int = SEND_ROUNDS, seed: int = SEED) -> dict[str, Any]:
    """``rounds`` rounds of the real loop (``Pipeline.send`` on a fresh database of the same readers) and
    the bare loop (the same bytes: the readers, ids and clock are the same every round), in turns: real
    first, then bare first, and so on, so a drift in the machine's load or the sink's speed weighs on
    both alike. ``send_ratio`` is the median of the rounds' ratios: a burst of other load spoils one
    round, not the figure."""
    count = min(n_subscribers, sample)
    connections = settings.smtp.max_connections
    sender = parseaddr(settings.site.sender)[1]
    real_messages = real_seconds = raw_seconds = build_seconds = 0.0
    ratios: list[float] = []
    messages: list[tuple[str, bytes]] = []
    # A short burst just before each timed loop: the sink idles while a database is prepared or issues
    # are built, and an idle process (or CPU) starts slow; whichever loop came after the idling would
    # pay for it.
    warm_up = [(f"warm-up{k}@example.org", _WARM_UP_MESSAGE) for k in range(WARM_UP_MESSAGES)]
    with smtp_sink() as (port, counts):

        def bare() -> float:
            raw_send(port, sender, warm_up, connections)
            before, _ = counts()
            seconds = raw_send(port, sender, messages, connections)
            received = counts()[0] - before
            if received != len(messages):
                raise BenchError(f"raw loop: sent {len(messages)} but the sink received {received}")
            return seconds

        for round_number in range(rounds):
            bare_first = bool(messages) and round_number % 2 == 1
            bare_seconds = bare() if bare_first else 0.0
            with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
                bench, store, _ = smtp_workload(settings, Path(tmp), port, n_papers, count, seed, timeout=60.0)
                pipeline = Pipeline(bench, store, clock=lambda: NOW)
                pipeline.renderer  # noqa: B018 (built once per process, before the loop: templates compile here)
                before, _ = counts()
                progress = _Clocked(lambda: raw_send(port, sender, warm_up, connections))
                begin = time.perf_counter()
                # The issues first: a send builds them while it delivers, and this figure is the
                # delivery's (the MTA workload times the whole of it).
                with _quiet():
                    pipeline.issues.store_issues(pipeline.due_subscribers(BENCH_DATE), BENCH_DATE, NOW,
                                                 SendSummary(), None)
                    built = time.perf_counter()
                    summary = pipeline.send(BENCH_DATE, progress=progress)
                end = time.perf_counter()
                built_at = progress.started or begin
                received = counts()[0] - before - len(warm_up)
                if summary.failed or summary.unknown or received != summary.sent:
                    raise BenchError(f"send benchmark: {summary.line()} but the sink received {received}")
                if not messages:
                    # The messages it sent, byte for byte, for the bare smtplib loop.
                    messages = _stored_messages(pipeline)
                store.close()
            if not bare_first:
                bare_seconds = bare()
            real_messages += summary.sent
            real_seconds += end - built_at
            build_seconds += built - begin
            raw_seconds += bare_seconds
            ratios.append(round((summary.sent / (end - built_at)) / (len(messages) / bare_seconds), 3))
    real_rate, raw_rate = _rate(int(real_messages), real_seconds), _rate(len(messages) * rounds, raw_seconds)
    return {
        "readers": count, "rounds": rounds, "messages": int(real_messages), "connections": connections,
        "build_per_s": _rate(count * rounds, build_seconds),
        "send_per_s": real_rate, "raw_per_s": raw_rate, "ratios": " ".join(f"{r:.3f}" for r in ratios),
        "send_ratio": round(statistics.median(ratios), 3),
        "avg_message_kb": round(sum(len(data) for _, data in messages) / max(1, len(messages)) / 1024, 1),
    }


def _loaded(pipeline: Pipeline) -> Iterator[Issue]:
    """Every stored issue, a batch at a time, as the send loop reads them."""
    ids = pipeline.store.delivery_issue_ids()
    papers: dict[str, Paper] = {}
    for start in range(0, len(ids), 500):
        loaded = pipeline.store.load_issues(ids[start:start + 500], pipeline.labels, papers)
        yield from (loaded[i] for i in ids[start:start + 500] if i in loaded)


def _stored_messages(pipeline: Pipeline) -> list[tuple[str, bytes]]:
    messages = []
    for issue in _loaded(pipeline):
        assert issue.id is not None
        delivery = pipeline.store.delivery_for_issue(issue.id)
        assert delivery is not None
        message = pipeline.render_message(issue, delivery.message_id, NOW)
        messages.append((message.recipient, message.data))
    return messages


# ---- memory ---------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident set in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def memory_child(settings_file: str) -> None:
    """Entry point of the memory part's fresh interpreter: one full send to a null mailer, then one
    JSON line with the counts, the time and the peak RSS: this process's, plus that of a render
    process if it started one (the largest child it waited for), as both were alive together."""
    settings, concurrency = pickle.loads(Path(settings_file).read_bytes())
    store = Store(settings.database.url)
    mailer = NullMailer(concurrency)
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: NOW)
    start = time.perf_counter()
    with _quiet():
        summary = pipeline.send(BENCH_DATE)
    seconds = time.perf_counter() - start
    store.close()
    own = _peak_rss_mb()
    children = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps({"sent": summary.sent, "skipped": summary.skipped, "failed": summary.failed,
                      "seconds": round(seconds, 2), "sender_rss_mb": own, "render_rss_mb": children,
                      "peak_rss_mb": round(own + children, 1), "mailed": mailer.count}))


def bench_memory(settings: Settings, n_subscribers: int, n_papers: int, concurrency: int = 1,
                 seed: int = SEED) -> dict[str, Any]:
    """A full send in a fresh interpreter; with ``concurrency`` 1 (the file mailer's) it renders in the
    sending process, with 2 or more it starts a render process for a large run, as for SMTP."""
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        bench = bench_settings(settings, Path(tmp))
        papers = make_papers(n_papers)
        started = time.perf_counter()
        store, count = prepare_store(bench, n_papers, make_subscribers(
            n_subscribers, list(bench.enabled_topics), authors_of(papers), seed=seed))
        store.close()
        prepared = time.perf_counter() - started
        settings_file = Path(tmp) / "settings.pickle"
        settings_file.write_bytes(pickle.dumps((bench, concurrency)))
        code = _child("memory_child(sys.argv[1])")
        done = subprocess.run([sys.executable, "-c", code, str(settings_file)], capture_output=True, text=True,
                              timeout=3600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BenchError(f"memory benchmark: the send failed: {tail[0]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"readers": count, "concurrency": concurrency, "prepare_seconds": round(prepared, 1), **report,
            "full_send_per_s": _rate(report["sent"] + report["skipped"], report["seconds"])}


# ---- tagger ---------------------------------------------------------------------------------------


def bench_tagger(settings: Settings, n_papers: int, seconds: float = TAG_SECONDS) -> dict[str, Any]:
    from digest.tagger import Tagger

    tagger = Tagger(settings.enabled_topics)
    pairs = [(p.title, p.abstract) for p in make_papers(n_papers)]
    for title, abstract in pairs[:20]:
        tagger.tag(title, abstract)
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for title, abstract in pairs:
            tagger.tag(title, abstract)
        done += len(pairs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"papers": len(pairs), "tagged": done, "tag_per_s": _rate(done, wall), "tag_per_s_cpu": _rate(done, cpu)}


# ---- the run --------------------------------------------------------------------------------------


@dataclass
class BenchReport:
    """Every figure measured, by part; ``keys`` are the last lines ``digest bench`` prints."""

    n_subscribers: int
    n_papers: int
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if "render" in self.parts:
            found["render_per_s"] = self.parts["render"]["render_per_s"]
            found["render_speedup"] = self.parts["render"]["render_speedup"]
            found["render_per_s_feedback"] = self.parts["render"]["render_per_s_feedback"]
        if "send" in self.parts:
            found["send_ratio"] = self.parts["send"]["send_ratio"]
        if "memory" in self.parts:
            found["peak_rss_mb"] = self.parts["memory"]["peak_rss_mb"]
        if "tagger" in self.parts:
            found["tag_per_s"] = self.parts["tagger"]["tag_per_s"]
        if "distinct" in self.parts:
            found["distinct_per_s"] = self.parts["distinct"]["distinct_per_s"]
        if "mta" in self.parts:
            found["mta_ratio"] = self.parts["mta"]["mta_ratio"]
            found["first_delivery_s"] = self.parts["mta"]["first_delivery_s"]
        return found


def run_bench(settings: Settings, n_subscribers: int = 10_000, n_papers: int = 300, parts: list[str] | None = None,
              out: Callable[[str], None] = print) -> BenchReport:
    """Run the chosen parts (all by default) on one generated workload; print a table as each part
    ends, then the key=value lines. UsageError for an unknown part or a workload too small."""
    chosen = list(parts or PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise UsageError(f"unknown bench part {unknown[0]!r} (one of {', '.join(PARTS)})")
    if n_subscribers < 1 or n_papers < 1:
        raise UsageError("--subscribers and --papers must be at least 1")
    report = BenchReport(n_subscribers, n_papers)
    # Every scratch database makes its own link-signing key and says so: a dozen lines of noise here
    # (forked workers inherit the level; the send children run with their output captured).
    logging.getLogger("digest.signing_key").setLevel(logging.WARNING)
    out(f"workload: {n_subscribers} readers with mixed preferences, {n_papers} papers, issue date {BENCH_DATE}; "
        f"{os.cpu_count()} CPUs")
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "render": lambda: bench_render(settings, n_subscribers, n_papers),
        "send": lambda: bench_send(settings, n_subscribers, n_papers),
        "memory": lambda: bench_memory(settings, n_subscribers, n_papers),
        "tagger": lambda: bench_tagger(settings, n_papers),
        # Workloads that live with the repository's benchmarks (benchmarks/workloads_*.py).
        "distinct": lambda: _workload("workloads_distinct").bench_distinct_fresh(settings, n_subscribers, n_papers),
        "mta": lambda: _workload("workloads_mta").bench_mta(settings, n_subscribers, n_papers),
    }
    for part in PARTS:
        if part not in chosen:
            continue
        start = time.perf_counter()
        report.parts[part] = runs[part]()
        report.seconds[part] = round(time.perf_counter() - start, 1)
        out(_table(part, report.parts[part], report.seconds[part]))
    for key, value in report.keys.items():
        out(f"{key}={value}")
    return report


_LABELS = {
    "render": [
        ("emails", "emails rendered, processes at once"), ("emails_1", "emails rendered, 1 process"),
        ("render_per_s_1", "real path, 1 process, emails/s (wall)"),
        ("render_per_s_1_cpu", "real path, 1 process, emails/s (CPU)"),
        ("pool_rounds", "real path, processes at once, each round, emails/s"),
        ("render_per_s_pool", "real path, processes at once, emails/s (wall, median)"),
        ("render_per_s_pool_cpu", "real path, processes at once, emails/s (CPU of the busier, median)"),
        ("processes", "processes"),
        ("naive_per_s", "naive path, sample, emails/s (wall)"), ("naive_per_s_cpu", "naive path, emails/s (CPU)"),
        ("render_speedup", "speed-up: real path at its best vs naive path (1 process), CPU"),
        ("render_speedup_1_cpu", "speed-up per core: 1 process each (CPU)"), ("avg_message_kb", "average message, KB"),
        ("pool_rounds_feedback", "a tenth of readers with 50 verdicts: processes at once, each round, emails/s"),
        ("render_per_s_1_feedback", "a tenth with 50 verdicts: 1 process, emails/s (wall)"),
        ("render_per_s_feedback", "a tenth with 50 verdicts: best, emails/s"),
        ("feedback_ratio", "with feedback / without"),
    ],
    "send": [
        ("readers", "readers in the send sample"), ("rounds", "rounds (real and bare loops, in turns)"),
        ("messages", "messages sent by Pipeline.send"), ("connections", "SMTP connections"),
        ("build_per_s", "issues built per second"), ("send_per_s", "Pipeline.send delivery, messages/s"),
        ("raw_per_s", "bare smtplib loop, same bytes, messages/s"), ("ratios", "ratio in each round"),
        ("send_ratio", "ratio (median of the rounds)"),
        ("avg_message_kb", "average message, KB"),
    ],
    "memory": [
        ("readers", "readers"), ("concurrency", "null mailer, messages at once (1: as the file mailer)"),
        ("sent", "sent"), ("skipped", "skipped (nothing new for them)"),
        ("seconds", "full send (build + render + record), s"), ("full_send_per_s", "readers per second"),
        ("sender_rss_mb", "peak RSS of the sending process, MB"),
        ("render_rss_mb", "peak RSS of its largest child (build or render process), MB"),
        ("peak_rss_mb", "peak RSS, both, MB"),
        ("prepare_seconds", "preparing the database, s"),
    ],
    "tagger": [("papers", "papers"), ("tagged", "papers tagged"), ("tag_per_s", "papers/s (wall)"),
               ("tag_per_s_cpu", "papers/s (CPU)")],
}


def _workload(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` of the checkout: workloads that need its data and test servers."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def _table(part: str, figures: dict[str, Any], seconds: float) -> str:
    labels = _LABELS.get(part) or _workload(f"workloads_{part}").LABELS
    rows = [(label, figures[key]) for key, label in labels if key in figures]
    width = max(len(label) for label, _ in rows)
    lines = [f"{part} ({seconds:.0f} s)"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0
