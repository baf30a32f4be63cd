"""Start-up stays light: short commands do not import what only other commands use.

Structural, not timed (benchmarks/bench_startup.py prints the CPU figures): each command runs in a
fresh interpreter, which then lists the packages it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from digest.models import Subscriber
from digest.store import Store
from tests.conftest import NOW

# Imported by the commands that use them, never by `--help` or `subscribers list`.
HEAVY = {"alembic", "jinja2", "mjml", "premailer", "httpx", "feedparser", "apscheduler", "rich", "uvicorn",
         "starlette", "cssutils", "lxml", "mako"}

RUN = """
import json, sys
from digest.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="digest")
except SystemExit as end:
    code = end.code
else:
    code = 0
dialects = {name for name in sys.modules if name.startswith("sqlalchemy.dialects.")}
loaded = sorted({name.split(".")[0] for name in sys.modules} | dialects)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def loaded_by(args: list[str], cwd: Path) -> set[str]:
    env = {**os.environ, "DIGEST_SECRET_KEY": "startup-test"}
    env.pop("DIGEST_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return set(report["loaded"])


def test_help_loads_no_database_config_or_rendering(tmp_path: Path) -> None:
    loaded = loaded_by(["--help"], tmp_path)
    assert "click" in loaded  # the probe sees what was imported
    assert not loaded & (HEAVY | {"sqlalchemy", "pydantic"}), sorted(loaded & (HEAVY | {"sqlalchemy", "pydantic"}))


def _database(tmp_path: Path) -> Store:
    database = tmp_path / "var" / "digest.sqlite3"
    store = Store(f"sqlite:///{database}")
    store.add_subscriber(Subscriber(email="ada@example.org"), NOW)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "digest.toml").write_text(f'[database]\nurl = "sqlite:///{database}"\n')
    return store


def test_subscribers_list_reads_an_up_to_date_sqlite_file_without_the_database_layer(tmp_path: Path) -> None:
    _database(tmp_path).close()
    for args in (["subscribers", "list"], ["subscribers", "list", "--json"]):
        loaded = loaded_by(args, tmp_path)
        assert "pydantic" in loaded  # the config is validated as ever
        assert not loaded & (HEAVY | {"sqlalchemy"}), sorted(loaded & (HEAVY | {"sqlalchemy"}))


def test_subscribers_list_of_a_database_to_migrate_loads_only_the_store(tmp_path: Path) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    store = _database(tmp_path)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    store.close()
    loaded = loaded_by(["subscribers", "list"], tmp_path)
    assert {"sqlalchemy", "alembic"} <= loaded  # the Store migrates it, as any command would
    # Then up to date: the store is not opened again, nor handed to alembic.
    loaded = loaded_by(["subscribers", "list"], tmp_path)
    assert not loaded & (HEAVY | {"sqlalchemy"}), sorted(loaded & (HEAVY | {"sqlalchemy"}))


def test_status_of_an_up_to_date_database_is_not_handed_to_alembic(tmp_path: Path) -> None:
    _database(tmp_path).close()
    loaded = loaded_by(["status"], tmp_path)
    assert "sqlalchemy" in loaded and "alembic" not in loaded
    # SQLite needs no PostgreSQL dialect.
    assert "sqlalchemy.dialects.postgresql" not in loaded


def test_schema_head_read_from_the_files_is_alembics() -> None:
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from digest.store.base import schema_head

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("digest.store") / "migrations"))
    assert schema_head() == ScriptDirectory.from_config(cfg).get_current_head()
