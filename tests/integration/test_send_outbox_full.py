"""`digest send` into a file outbox that cannot take the messages (a full disk): it leaves no partial
files, says what it left pending and exits 1; the next send delivers it (issue 16 item 12).

The disk is "full" by the sender's own file size limit (RLIMIT_FSIZE, which Python meets with EFBIG, as
it ignores SIGXFSZ): every message file is cut off part-way, as on a disk that fills up mid-write. The
database is PostgreSQL, a server process of its own, so the limit touches the outbox only.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.models import DeliveryStatus, Paper, Subscriber
from digest.pipeline import Pipeline
from digest.store import Store
from tests.conftest import SEED_FILE, make_settings

pytestmark = pytest.mark.postgres

READERS = 20
LIMIT_BYTES = 4096  # far below one message (tens of KB)


def _send(config: Path, limit: int | None) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([sys.executable, "-m", "digest", "--config", str(config), "send"],
                          capture_output=True, text=True, timeout=180, cwd=config.parent, env=env,
                          preexec_fn=limited)


def test_a_full_outbox_leaves_no_partial_files_and_the_run_says_what_is_pending(
    tmp_path: Path, postgres_url: str, seed_papers: list[Paper]
) -> None:
    outbox = tmp_path / "outbox"
    config = tmp_path / "digest.toml"
    config.write_text(f"""
[database]
url = "{postgres_url}"

[sources.seed]
path = "{SEED_FILE.as_posix()}"

[mailer]
backend = "file"
path = "{outbox.as_posix()}"

[smtp]
retry_backoff_seconds = 1  # the first retry of a temporary failure (any mailer's)

[demo]
subscribers_csv = ""

[logging]
level = "WARNING"
""", encoding="utf-8")
    settings = make_settings(tmp_path, database={"url": postgres_url})
    store = Store(settings.database.url)
    try:
        store.upsert_papers(seed_papers, now=datetime.now(UTC))
        for k in range(READERS):
            store.add_subscriber(Subscriber(email=f"reader{k:02d}@example.org"))
        Pipeline(settings, store).tag_pending()

        full = _send(config, LIMIT_BYTES)
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        assert full.stdout.strip().splitlines()[-1] == f"sent=0 skipped=0 failed=0 pending={READERS}"
        assert f"{READERS} deliveries left pending" in full.stderr
        assert sorted(p.name for p in outbox.iterdir()) == []  # no .tmp, no cut-off .eml
        assert store.delivery_counts() == {DeliveryStatus.PENDING.value: READERS}

        # Room again: once the retry delay is over, the next send delivers what was left.
        time.sleep(1.2)
        room = _send(config, None)
        assert room.returncode == 0, room.stderr
        assert room.stdout.strip().splitlines()[-1] == f"sent={READERS} skipped=0 failed=0"
        assert len(list(outbox.glob("*.eml"))) == READERS and not list(outbox.glob("*.tmp"))
    finally:
        store.close()
