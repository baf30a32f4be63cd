"""Bad files, paths and databases: one clear line and the documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.models import DeliveryStatus, Subscriber
from digest.store import Store
from tests.conftest import NOW, SEED_FILE


def _cli(cwd: Path, *args: str, stdin: bytes | None = None,
         config: str = "digest.toml") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    proc = subprocess.run([sys.executable, "-m", "digest", "--config", config, *args], cwd=cwd,
                          capture_output=True, input=stdin, timeout=180, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _one_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def _write_config(home: Path, db: str, outbox: Path | None = None) -> None:
    (home / "digest.toml").write_text(
        f'[database]\nurl = {json.dumps(db)}\n[demo]\nsubscribers_csv = ""\n'
        f'[sources.seed]\npath = {json.dumps(str(SEED_FILE))}\n'
        f'[mailer]\nbackend = "file"\npath = {json.dumps(str(outbox or home / "outbox"))}\n')


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _write_config(tmp_path, f"sqlite:///{tmp_path / 'd.sqlite3'}")
    return tmp_path


def _count(home: Path) -> int:
    return len(_cli(home, "subscribers", "list", "--json").stdout.splitlines())


def test_csv_that_is_not_utf8(home: Path) -> None:
    (home / "people.csv").write_bytes(b"email,name\nok@example.org,Ok\nbad@example.org,Caf\xe9\n")
    _one_error(_cli(home, "subscribers", "import", "people.csv"), 2, "people.csv:3", "not UTF-8")
    assert _count(home) == 0


def test_csv_with_a_field_over_128_kb(home: Path) -> None:
    big = "x" * (130 * 1024)
    (home / "people.csv").write_text(f"email,name\nok@example.org,Ok\nbig@example.org,{big}\n")
    _one_error(_cli(home, "subscribers", "import", "people.csv"), 2, "people.csv:3", "128 KB")
    assert _count(home) == 0


def test_tag_input_that_is_not_utf8(home: Path) -> None:
    good = json.dumps({"id": "1", "title": "Pruning large language models"}).encode()
    (home / "in.jsonl").write_bytes(good + b"\n" + b'{"id": "2", "title": "\xff\xfe"}\n')
    _one_error(_cli(home, "tag", "--input", "in.jsonl"), 2, "in.jsonl:2", "not UTF-8")
    _one_error(_cli(home, "tag", "--input", "-", stdin=b"\x80\n"), 2, "stdin:1", "not UTF-8")


def test_sqlite_folder_that_cannot_be_created(home: Path) -> None:
    (home / "plainfile").write_text("")
    _write_config(home, f"sqlite:///{home / 'plainfile' / 'db' / 'd.sqlite3'}")
    _one_error(_cli(home, "subscribers", "add", "ada@example.org"), 1, "cannot create the database folder",
               "plainfile")


def test_database_at_an_unknown_revision(home: Path) -> None:
    Store(f"sqlite:///{home / 'd.sqlite3'}").close()
    with sqlite3.connect(home / "d.sqlite3") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    _one_error(_cli(home, "subscribers", "list"), 1, "'0999'", "does not know")


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/digest", "nonsense", "oracle://x"])
def test_unsupported_database_url_is_bad_config(home: Path, url: str) -> None:
    _write_config(home, url)
    line = _one_error(_cli(home, "status"), 2, "database.url", "unsupported database URL")
    assert "hunter2" not in line


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A real read-only filesystem (a tmpfs mounted ro); skipped where mounting is not allowed."""
    target = tmp_path / "ro"
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize("inside", [False, True], ids=["outbox-is-the-mount", "outbox-to-be-made-inside"])
def test_outbox_on_a_read_only_filesystem(home: Path, read_only_dir: Path, inside: bool) -> None:
    outbox = read_only_dir / "outbox" if inside else read_only_dir
    _write_config(home, f"sqlite:///{home / 'd.sqlite3'}", outbox)
    store = Store(f"sqlite:///{home / 'd.sqlite3'}")
    store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    assert _cli(home, "fetch").returncode == 0
    _one_error(_cli(home, "send"), 1, "outbox", str(read_only_dir), "ead-only file system")
    # Nothing lost: the reader's issue waits, pending, for a writable outbox.
    assert store.delivery_counts() == {DeliveryStatus.PENDING.value: 1}


@pytest.mark.parametrize("day", ["0001-01-01", "2999-12-31"])
def test_a_send_date_far_from_today_needs_force(home: Path, day: str) -> None:
    Store(f"sqlite:///{home / 'd.sqlite3'}").add_subscriber(Subscriber(email="ada@example.org"), NOW)
    assert _cli(home, "fetch").returncode == 0
    _one_error(_cli(home, "send", "--date", day), 2, "--force", day)
    assert not (home / "outbox").exists()
    assert _cli(home, "send", "--date", day, "--dry-run").returncode == 0  # a dry run sends nothing
    forced = _cli(home, "send", "--date", day, "--force")
    assert forced.returncode == 0 and forced.stdout.strip().splitlines()[-1].startswith("sent=1 ")
