"""Request-body bound benchmark: a huge chunked POST against the real web app under uvicorn.

Starts the app (``digest.web.create_app`` under uvicorn, in a child process, on a free 127.0.0.1
port), measures ``GET /`` latency alone, then again while one client streams chunked POSTs of
``--megabytes`` MB to ``/confirm/x`` as fast as the server takes them, one after the other (an
attacker retrying), until 100 GETs have been answered and at least one POST. Prints, per run:

- ``uploads`` and their ``statuses`` (413 each); ``refused_s``: the slowest time from the first body
  byte to the answer's status line;
- ``app_read_kb``: the most body bytes uvicorn handed to the app for one POST (counted around it;
  the bound is 64 KB plus the one message that crosses it), and ``client_sent_kb``: the most the
  client got into the socket before the answer (kernel buffers on both sides included);
- ``get_ms``: median and 95th percentile of ``GET /`` alone and during the upload;
- ``server_rss_mb``: the server's resident memory before and after (peak in brackets).

Usage: python benchmarks/bench_body_limit.py [--megabytes 120] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

CHILD = """
import sys, uvicorn
from digest.config import load_settings
from digest.pipeline import Pipeline
from digest.store import Store
from digest.mail import MemoryMailer
from digest.web import create_app

settings = load_settings(sys.argv[1])
app = create_app(Pipeline(settings, Store(settings.database.url), mailer=MemoryMailer()))

async def counted(scope, receive, send):
    total = 0
    async def counting():
        nonlocal total
        message = await receive()
        total += len(message.get("body", b""))
        return message
    try:
        await app(scope, counting, send)
    finally:
        if scope["type"] == "http" and scope["method"] == "POST":
            print(f"app_read {scope['path']} {total}", flush=True)

uvicorn.run(counted, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", lifespan="off")
"""


# What the attacker sent: one endless urlencoded field (``--content-type`` tries others).
CONTENT_TYPE = "application/x-www-form-urlencoded"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def latencies(client: httpx.Client, count: int, uploads: list[dict[str, float]] | None = None) -> list[float]:
    """``count`` GET / timings in ms (and, given ``uploads``, until at least one upload has finished)."""
    found = []
    while len(found) < count or (uploads is not None and not uploads):
        start = time.perf_counter()
        assert client.get("/").status_code == 200
        found.append((time.perf_counter() - start) * 1000)
        time.sleep(0.01)
    return found


def upload(port: int, total: int, result: dict[str, float], content_type: str = CONTENT_TYPE) -> None:
    chunk = 64 * 1024
    block = f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.sendall(b"POST /confirm/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        start = time.perf_counter()
        conn.setblocking(False)
        answer = b""
        while sent < total and not answer:
            try:
                answer = conn.recv(4096)
                break
            except BlockingIOError:
                pass
            try:
                conn.send(block)
                sent += chunk
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        if not answer:
            conn.setblocking(True)
            if sent >= total:
                conn.sendall(b"0\r\n\r\n")
            try:
                answer = conn.recv(4096)
            except ConnectionResetError:
                answer = b""
        result["refused_s"] = time.perf_counter() - start
        result["status"] = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        result["client_sent_kb"] = sent / 1024


def one_run(megabytes: int, folder: Path, content_type: str = CONTENT_TYPE) -> dict[str, object]:
    port = free_port()
    config = folder / "digest.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{folder / "bench.sqlite3"}"\n'
                      f'[site]\nbase_url = "http://127.0.0.1:{port}"\n[demo]\nsubscribers_csv = ""\n',
                      encoding="utf-8")
    env = {**os.environ, "DIGEST_SECRET_KEY": "bench-body-limit"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(config), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            alone = latencies(client, 100)
            rss_before, _ = rss_mb(proc.pid)
            uploads: list[dict[str, float]] = []
            stop = threading.Event()

            def attacker() -> None:
                while not stop.is_set():
                    result: dict[str, float] = {}
                    upload(port, megabytes * 1024 * 1024, result, content_type)
                    uploads.append(result)

            thread = threading.Thread(target=attacker)
            thread.start()
            during = latencies(client, 100, uploads)
            stop.set()
            thread.join()
            rss_after, rss_peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    read = [int(line.split()[2]) for line in out.splitlines() if line.startswith("app_read /confirm/x")]
    return {
        "uploads": len(uploads), "statuses": sorted({u["status"] for u in uploads}),
        "refused_s": max(u["refused_s"] for u in uploads),
        "client_sent_kb": max(u["client_sent_kb"] for u in uploads),
        "app_read_kb": max(read) / 1024 if read else -1,
        "get_ms_alone_p50": statistics.median(alone), "get_ms_alone_p95": _p95(alone),
        "get_ms_during_p50": statistics.median(during), "get_ms_during_p95": _p95(during),
        "gets_during": len(during),
        "server_rss_mb_before": rss_before, "server_rss_mb_after": rss_after, "server_rss_mb_peak": rss_peak,
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--content-type", default=CONTENT_TYPE)
    args = parser.parse_args()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            figures = one_run(args.megabytes, Path(folder), args.content_type)
        print(json.dumps({"run": run + 1, "megabytes": args.megabytes,
                          **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
