"""The link-signing key: made per installation on first use, used by every path, never a public one."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from digest.config import Settings
from digest.links import Scope, Signer, TokenError
from digest.mail.memory import MemoryMailer
from digest.models import Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.signing_key import signing_key
from digest.store import Store
from digest.web import create_app
from tests.conftest import NOW, SEED_FILE, make_settings

# The fixed key an earlier release signed every link with when no key was set: it is in the public
# history of the repository, so a link signed with it is a forgery anyone can make.
PUBLISHED_KEY = "digest-insecure-development-key"
ENV = "DIGEST_SIGNING_TEST_KEY"


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv(ENV, raising=False)
    return make_settings(tmp_path, site={"secret_env": ENV, "base_url": "https://digest.example.org"})


def _unsubscribe_token(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    match = re.search(r"/unsubscribe/([A-Za-z0-9_.\-]+)", str(msg["List-Unsubscribe"]))
    assert match, msg["List-Unsubscribe"]
    return match.group(1)


def _send_one(pipeline: Pipeline, address: str = "reader@example.org") -> bytes:
    pipeline.store.add_subscriber(Subscriber(email=address), NOW)
    pipeline.fetch(["seed"])
    summary = pipeline.send(NOW.date())
    assert summary.sent == 1
    mailer = pipeline.mailer
    assert isinstance(mailer, MemoryMailer)
    return mailer.outbox[-1].data


def test_without_a_key_a_send_signs_with_a_random_installation_key(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch)
    store = Store(settings.database.url)
    pipeline = Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: NOW)
    token = _unsubscribe_token(_send_one(pipeline))

    with pytest.raises(TokenError):
        Signer(PUBLISHED_KEY).verify(Scope.UNSUBSCRIBE, token)
    key = signing_key(settings, store)
    assert key.source == "database"
    assert len(base64.urlsafe_b64decode(key.current + "=" * (-len(key.current) % 4))) >= 32
    assert Signer(key.current).verify(Scope.UNSUBSCRIBE, token) == "reader@example.org"
    # Every other process on the database (web app, daemon, another sender) reads the same key.
    other = Pipeline(settings, Store(settings.database.url), mailer=MemoryMailer(), clock=lambda: NOW)
    assert other.links.signer.verify(Scope.UNSUBSCRIBE, token) == "reader@example.org"
    # A second installation (another database) makes a key of its own.
    elsewhere = make_settings(tmp_path / "b", site={"secret_env": ENV})
    assert signing_key(elsewhere, Store(elsewhere.database.url)).current != key.current


def test_the_web_app_refuses_links_forged_with_the_published_key(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch)
    store = Store(settings.database.url)
    store.add_subscriber(Subscriber(email="victim@example.org"), NOW)
    app = create_app(Pipeline(settings, store, mailer=MemoryMailer(), clock=lambda: NOW))
    forged = Signer(PUBLISHED_KEY).sign(Scope.UNSUBSCRIBE, "victim@example.org")
    with TestClient(app) as client:
        client.post(f"/unsubscribe/{forged}", content="List-Unsubscribe=One-Click",
                    headers={"content-type": "application/x-www-form-urlencoded"})
        prefs = client.get(f"/preferences/{Signer(PUBLISHED_KEY).sign(Scope.PREFERENCES, 'victim@example.org')}")
    assert store.get_subscriber("victim@example.org").status is SubscriberStatus.CONFIRMED  # type: ignore[union-attr]
    assert "victim@example.org" not in prefs.text


def test_an_environment_key_overrides_and_a_published_one_is_refused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, monkeypatch)
    store = Store(settings.database.url)
    made = signing_key(settings, store)
    monkeypatch.setenv(ENV, "an-operator-chosen-key-that-is-long-enough-0123456789")
    key = signing_key(settings, store)
    assert (key.source, key.current) == ("environment", "an-operator-chosen-key-that-is-long-enough-0123456789")
    assert key.current != made.current
    monkeypatch.setenv(ENV, PUBLISHED_KEY)
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match="published key"):
        signing_key(settings, store)


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "digest", "--config", "digest.toml", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180, env={**base, **(env or {})})


@pytest.fixture
def cli_dir(tmp_path: Path) -> Path:
    (tmp_path / "digest.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "d.sqlite3"}"\n'
        f'[mailer]\nbackend = "file"\npath = "{tmp_path / "outbox"}"\n'
        f'[sources.seed]\npath = "{SEED_FILE}"\n[demo]\nsubscribers_csv = ""\n'
        '[site]\nbase_url = "https://digest.example.org"\n')
    return tmp_path


def test_cli_send_preview_status_and_rotation(cli_dir: Path) -> None:
    assert _cli(cli_dir, "subscribers", "add", "ada@example.org").returncode == 0
    status = json.loads(_cli(cli_dir, "status", "--json").stdout)
    assert status["signing_key"]["source"] == "not made yet"
    assert _cli(cli_dir, "run").returncode == 0
    [eml] = list((cli_dir / "outbox").glob("*.eml"))
    token = _unsubscribe_token(eml.read_bytes())
    store = Store(f"sqlite:///{cli_dir / 'd.sqlite3'}")
    stored = store.installation_secret("link_signing_key")
    assert stored and Signer(stored).verify(Scope.UNSUBSCRIBE, token) == "ada@example.org"

    status_text = _cli(cli_dir, "status")
    report = json.loads(_cli(cli_dir, "status", "--json").stdout)
    assert report["signing_key"] == {"source": "database", "variable": "DIGEST_SECRET_KEY", "previous_kept": False}
    assert "signing key: the installation's own, stored in the database" in status_text.stdout
    assert stored not in status_text.stdout + json.dumps(report)
    env_status = _cli(cli_dir, "status", env={"DIGEST_SECRET_KEY": "x" * 40})
    assert "signing key: from $DIGEST_SECRET_KEY" in env_status.stdout and "x" * 40 not in env_status.stdout

    preview = _cli(cli_dir, "preview", "--subscriber", "ada@example.org", "--format", "eml")
    assert Signer(stored).verify(Scope.UNSUBSCRIBE, _unsubscribe_token(preview.stdout.encode())) == "ada@example.org"

    # Rotation: new links use the new key; old links keep working until told otherwise.
    assert _cli(cli_dir, "rotate-key").returncode == 0
    pipeline = Pipeline(Settings.model_validate({"database": {"url": store.url}}), store)
    assert pipeline.links.signer.verify(Scope.UNSUBSCRIBE, token) == "ada@example.org"
    new_key = store.installation_secret("link_signing_key")
    assert new_key and new_key != stored
    assert pipeline.links.unsubscribe("ada@example.org").rsplit("/", 1)[1] != token
    assert _cli(cli_dir, "rotate-key", "--invalidate-old-links").returncode == 0
    fresh = Pipeline(Settings.model_validate({"database": {"url": store.url}}), store)
    with pytest.raises(TokenError):
        fresh.links.signer.verify(Scope.UNSUBSCRIBE, token)
    refused = _cli(cli_dir, "rotate-key", env={"DIGEST_SECRET_KEY": "y" * 40})
    assert refused.returncode == 2 and "DIGEST_SECRET_KEY" in refused.stderr and "Traceback" not in refused.stderr
    published = _cli(cli_dir, "send", env={"DIGEST_SECRET_KEY": PUBLISHED_KEY})
    assert published.returncode == 2 and len(published.stderr.strip().splitlines()) == 1
