"""Config: defaults, TOML loading, and one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import Settings, load_settings, settings_from_dict
from digest.errors import ConfigError


def test_defaults_are_the_embedded_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    s = load_settings()
    assert s.sources.seed.enabled and s.sources.seed.path == "seeds/hf_papers_search.txt"
    assert s.database.url == "sqlite:///var/digest.sqlite3"
    assert (s.mailer.backend, s.mailer.path) == ("file", "var/outbox")
    assert set(s.enabled_topics) == {"pruning", "diffusion", "subspace", "nas"}
    assert not s.sources.hf_daily.enabled and not s.sources.arxiv.enabled


def test_spec_example_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("""
[database]
url = "sqlite:///x.sqlite3"
[sources.arxiv]
enabled = true
categories = ["cs.LG"]
delay_seconds = 3.0
[smtp]
host = "mail.example.org"
port = 587
security = "starttls"
max_connections = 4
rate_per_second = 10
[site]
base_url = "https://digest.example.org"
""")
    s = load_settings(path)
    assert s.sources.arxiv.enabled and s.sources.arxiv.categories == ["cs.LG"]
    assert (s.smtp.port, s.smtp.security, s.smtp.max_connections) == (587, "starttls", 4)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[smtp]\nport = 'abc'\n", "smtp.port"),
        ("[smtp]\nprot = 25\n", "unknown key 'smtp.prot'"),
        ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
        ("[smtp]\nsecurity = 'tls'\n", "smtp.security"),
        ("[mailer]\nbackend = 'pigeon'\n", "mailer.backend"),
        ("[smtp\nport = 1\n", "invalid TOML"),
        ("[topics.x]\nlabel = 1\n", "topics.x.label"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_env_names_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[site]\ntitle = 'From env'\n")
    monkeypatch.setenv("DIGEST_CONFIG", str(path))
    assert load_settings().site.title == "From env"


def test_user_topic_is_added_to_defaults() -> None:
    s = settings_from_dict({"topics": {"rl": {"label": "Reinforcement learning",
                                               "description": "RL",
                                               "phrases": ["reinforcement learning"]}}})
    assert set(s.enabled_topics) == {"pruning", "diffusion", "subspace", "nas", "rl"}


def test_default_topic_can_be_disabled() -> None:
    s = settings_from_dict({"topics": {"nas": {"enabled": False}}})
    assert "nas" not in s.enabled_topics


def test_secrets_come_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PW", "hunter2")
    s = settings_from_dict({"smtp": {"password_env": "MY_PW"}})
    assert s.smtp_password == "hunter2"
    assert Settings().smtp_password is None or isinstance(Settings().smtp_password, str)


def test_default_topic_keys_can_be_overridden_one_by_one() -> None:
    s = settings_from_dict({"topics": {"pruning": {"min_score": 4, "label": "Sparsity"}}})
    pruning = s.topics["pruning"]
    assert pruning.min_score == 4 and pruning.label == "Sparsity"
    assert pruning.strong or pruning.phrases  # the default evidence is kept
