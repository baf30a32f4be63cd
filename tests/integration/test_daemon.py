"""`digest daemon` as a real process: delivers a due issue to a file outbox, stops cleanly on a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import time as clock_time
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.mail import MemoryMailer
from digest.models import Subscriber
from digest.pipeline import Pipeline
from digest.scheduler import DISPATCH_JOB, FETCH_JOB, Daemon, build_scheduler, next_run_times
from digest.store import Store
from tests.conftest import SEED_FILE, make_settings

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{(tmp_path / 'digest.sqlite3').as_posix()}"

[sources.seed]
path = "{SEED_FILE.as_posix()}"

[mailer]
backend = "file"
path = "{(tmp_path / 'outbox').as_posix()}"

[schedule]
dispatch_minutes = 1
max_lateness_hours = 24
shutdown_timeout_seconds = 20

[logging]
level = "DEBUG"

[demo]
subscribers_csv = ""
""", encoding="utf-8")
    return path


def _digest(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "digest", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=config.parent)


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "daemon"],
                                stdout=out, stderr=out, cwd=config.parent)


def _wait(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _delivery_statuses(config: Path) -> list[str]:
    store = Store(load_settings(config).database.url)
    try:
        return sorted(status for status, n in store.delivery_counts().items() for _ in range(n))
    finally:
        store.close()


def test_daemon_delivers_a_due_issue_then_stops_cleanly_and_a_restart_sends_nothing_twice(tmp_path: Path) -> None:
    config = _config(tmp_path)
    added = _digest(config, "subscribers", "add", "reader@example.org", "--send-at", "00:00", "--tz", "UTC")
    assert added.returncode == 0, added.stderr
    outbox = tmp_path / "outbox"
    log = tmp_path / "daemon.log"

    proc = _start(config, log)
    _wait(lambda: any(outbox.glob("*.eml")), proc, log, "an issue in the outbox")
    _wait(lambda: "send done" in log.read_text(), proc, log, "the send to finish")
    assert _stop(proc, signal.SIGTERM) == 0
    text = log.read_text()
    assert "stopping signal=SIGTERM" in text and "daemon stopped cleanly" in text
    assert "Traceback" not in text

    emls = list(outbox.glob("*.eml"))
    assert len(emls) == 1 and emls[0].name.startswith("reader_example.org--")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in emls[0].read_bytes()
    assert _delivery_statuses(config) == ["sent"]

    status = _digest(config, "status")
    assert status.returncode == 0, status.stderr
    assert "sent=1" in status.stdout and "dispatch" in status.stdout and "fetch" in status.stdout

    # A restart the same day: the issue is delivered already, so nothing goes out again.
    log.write_text("")
    proc = _start(config, log)
    _wait(lambda: "dispatch nothing due" in log.read_text(), proc, log, "the start-up dispatch")
    assert _stop(proc, signal.SIGINT) == 0
    assert "daemon stopped cleanly" in log.read_text()
    assert len(list(outbox.glob("*.eml"))) == 1
    assert _delivery_statuses(config) == ["sent"]


def test_daemon_with_a_bad_cron_exits_2_with_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    bad = config.read_text().replace("dispatch_minutes = 1", 'dispatch_minutes = 1\nfetch_cron = "0 25 * * *"')
    config.write_text(bad)
    result = _digest(config, "daemon")
    assert result.returncode == 2
    assert "schedule.fetch_cron" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgres
def test_job_store_and_dispatch_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path, database={"url": postgres_url})
    store = Store(settings.database.url)
    mailer = MemoryMailer()
    pipeline = Pipeline(settings, store, mailer=mailer)
    try:
        for _ in range(2):  # a restart replaces the jobs instead of adding copies
            sched = build_scheduler(pipeline)
            sched.start(paused=True)
            ids = sorted(job.id for job in sched.get_jobs())
            sched.shutdown(wait=False)
        assert ids == [DISPATCH_JOB, FETCH_JOB]
        assert set(next_run_times(pipeline)) >= {DISPATCH_JOB, FETCH_JOB}

        store.add_subscriber(Subscriber(email="pg@example.org", tz="UTC", send_at=clock_time(0, 0), send_empty=True))
        settings_late = make_settings(tmp_path, database={"url": postgres_url}, schedule={"max_lateness_hours": 24})
        daemon = Daemon(Pipeline(settings_late, store, mailer=mailer))
        assert len(daemon.dispatch()) == 1
        assert daemon.dispatch() == {}
        assert [m.recipient for m in mailer.outbox] == ["pg@example.org"]
    finally:
        store.close()
