"""TOML file + environment -> typed, validated settings. The only module that reads config or env."""

from __future__ import annotations

import os
import tomllib
from datetime import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from digest.errors import ConfigError
from digest.topics import TopicSpec, default_topics

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_CONFIG_PATH = Path("config/digest.toml")
CONFIG_ENV = "DIGEST_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The database URL schemes the store supports (postgres[ql]:// is mapped to the psycopg 3 driver).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


def check_database_url(url: str) -> str:
    """``url`` if the store supports its scheme; ValueError naming only the scheme (never a password)."""
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme not in DATABASE_SCHEMES:
        shown = repr(scheme) if sep else "(none)"
        raise ValueError(f"unsupported database URL scheme {shown}: use sqlite:///PATH or "
                         "postgresql://USER@HOST/DB")
    return url


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/digest.sqlite3"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file the URL names (relative to the working directory), None for an in-memory
        database or another server."""
        if not self.url.startswith("sqlite:"):
            return None
        path = self.url.split("///", 1)[1].split("?", 1)[0] if "///" in self.url else ""
        return Path(path) if path and path != ":memory:" else None

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        return check_database_url(value)


class SeedSource(_Section):
    enabled: bool = True
    path: str = "seeds/hf_papers_search.txt"


class HttpSource(_Section):
    enabled: bool = False
    url: str = ""
    timeout_seconds: float = 20.0
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)


class HfDailySource(HttpSource):
    url: str = "https://huggingface.co/api/daily_papers"


class HfPapersSource(HttpSource):
    url: str = "https://huggingface.co/papers"
    # Which listing page: {url} or {url}/date/D, {url}/week/YYYY-Www, {url}/month/YYYY-MM, {url}/trending.
    listing: Literal["daily", "weekly", "monthly", "trending"] = "daily"


class ArxivSource(HttpSource):
    url: str = "http://export.arxiv.org/api/query"
    categories: list[str] = ["cs.LG", "cs.CV", "cs.CL", "cs.AI"]
    delay_seconds: float = Field(default=3.0, ge=0)
    page_size: int = Field(default=100, ge=1, le=2000)
    max_results: int = Field(default=500, ge=1)
    lookback_days: int = Field(default=3, ge=1)
    # Paging stops at the previous run's newest submission minus this overlap (late announcements).
    watermark_overlap_hours: float = Field(default=24.0, ge=0)


class ArxivRssSource(HttpSource):
    url: str = "https://rss.arxiv.org/rss"
    categories: list[str] = ["cs.LG"]
    announce_types: list[str] = ["new", "cross"]


class SourcesSettings(_Section):
    seed: SeedSource = SeedSource()
    hf_daily: HfDailySource = HfDailySource()
    hf_papers: HfPapersSource = HfPapersSource()
    arxiv: ArxivSource = ArxivSource()
    arxiv_rss: ArxivRssSource = ArxivRssSource()


class HttpSettings(_Section):
    contact: str = "digest@localhost"
    user_agent: str = ""


class MailerSettings(_Section):
    backend: str = "file"
    path: str = "var/outbox"


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = ""
    password_env: str = "DIGEST_SMTP_PASSWORD"
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=2, ge=1, le=64)
    rate_per_second: float = Field(default=0, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_seconds: float = Field(default=60.0, ge=0)
    hard_bounces_to_suppress: int = Field(default=1, ge=1)
    ca_file: str = ""
    # The name given in EHLO; empty = this machine's FQDN, looked up once.
    local_hostname: str = ""
    # How long every connection holds back after a 421/454 ("slow down"); the rate is halved too.
    slowdown_seconds: float = Field(default=10.0, ge=0)
    dkim_key_file: str = ""
    dkim_selector: str = ""
    dkim_domain: str = ""


class DeliverySettings(_Section):
    batch_size: int = Field(default=500, ge=1)
    # A record left in "sending" by a killed process is re-sent (same Message-ID, so receivers can
    # drop a duplicate) once its lease has expired; set false to leave it as "unknown" instead.
    resend_in_doubt: bool = True
    lease_seconds: float = Field(default=300.0, gt=0)
    workers: int = Field(default=0, ge=0)


class SiteSettings(_Section):
    base_url: str = "http://localhost:8000"
    sender: str = "Paper Digest <digest@localhost>"
    # The env variable that may hold the link-signing key; unset, the installation's own key is used.
    secret_env: str = "DIGEST_SECRET_KEY"
    list_id: str = ""
    unsubscribe_mailto: str = ""
    postal_address: str = "Paper Digest · an open-source newsletter · digest@localhost"
    title: str = "Paper Digest"


class SelectionSettings(_Section):
    max_papers: int = Field(default=20, ge=1, le=200)
    weekly_weekday: int = Field(default=0, ge=0, le=6)
    daily_window_days: int = Field(default=7, ge=1)
    include_other: bool = True


class ScheduleSettings(_Section):
    fetch_cron: str = "15 20 * * 0-4"
    fetch_timezone: str = "America/New_York"
    extra_fetch_cron: str = "0 8,14 * * *"
    dispatch_minutes: int = Field(default=5, ge=1)
    max_lateness_hours: float = Field(default=20.0, gt=0)
    misfire_grace_seconds: int = Field(default=600, ge=1)
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0)


class DemoSettings(_Section):
    # Subscribers added on `digest run` / `send` when the store has none at all, so the embedded demo
    # produces real mail on a fresh clone. Set to "" in a real deployment.
    subscribers_csv: str = "config/demo_subscribers.csv"


class ImapSettings(_Section):
    """The mailbox `digest bounces fetch` reads (and empties of what it consumed)."""

    host: str = ""
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "ssl"
    username: str = ""
    password_env: str = "DIGEST_IMAP_PASSWORD"
    mailbox: str = "INBOX"
    timeout_seconds: float = Field(default=30.0, gt=0)
    ca_file: str = ""
    # Messages that are neither a bounce, a complaint nor an auto-reply stay (marked read) for a person.
    keep_unrecognised: bool = True


class BouncesSettings(_Section):
    """The return path (VERP) and what bounces and complaints do."""

    # Envelope sender domain: bounces come back to {local_part}+{token}@{domain}; empty = the domain
    # of [site] sender. Route it to `digest bounces ingest` (see docs/deploy.md).
    domain: str = ""
    local_part: str = "bounces"
    delimiter: Literal["+", "-", "="] = "+"
    # Soft bounces (4.x.x failures, mailbox full) suppress only after this many within the period.
    soft_bounces_to_suppress: int = Field(default=5, ge=1)
    soft_bounce_days: float = Field(default=30.0, gt=0)
    imap: ImapSettings = ImapSettings()


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole configuration: one section per TOML table (load_settings reads and checks a file;
    ``Settings()`` is the built-in defaults, the embedded demo)."""

    database: DatabaseSettings = DatabaseSettings()
    sources: SourcesSettings = SourcesSettings()
    http: HttpSettings = HttpSettings()
    topics: dict[str, TopicSpec] = Field(default_factory=default_topics)
    mailer: MailerSettings = MailerSettings()
    smtp: SmtpSettings = SmtpSettings()
    delivery: DeliverySettings = DeliverySettings()
    site: SiteSettings = SiteSettings()
    selection: SelectionSettings = SelectionSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    logging: LoggingSettings = LoggingSettings()
    demo: DemoSettings = DemoSettings()
    bounces: BouncesSettings = BouncesSettings()

    # Where the config came from; relative paths in it are resolved against the working directory,
    # as the SPEC's defaults (`var/outbox`, `seeds/...`) are.
    source_path: str | None = None

    @field_validator("topics", mode="before")
    @classmethod
    def _merge_default_topics(cls, value: Any) -> Any:
        # A user's [topics.X] adds a topic, or, for a default's name, overrides just the keys it sets
        # (so `[topics.pruning] min_score = 4` keeps the phrases); defaults stay unless disabled.
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict(default_topics())
        for name, spec in value.items():
            if name in merged and isinstance(spec, dict):
                merged[name] = {**merged[name].model_dump(), **spec}
            else:
                merged[name] = spec
        return merged

    @property
    def enabled_topics(self) -> dict[str, TopicSpec]:
        return {name: spec for name, spec in self.topics.items() if spec.enabled}

    def secret(self, env_name: str) -> str | None:
        return os.environ.get(env_name) or None

    @property
    def smtp_password(self) -> str | None:
        return self.secret(self.smtp.password_env)

    @property
    def env_signing_key(self) -> str | None:
        """The link-signing key set in the environment (``[site] secret_env``), or None.

        Only ``digest.signing_key`` reads this: it falls back to the key stored with the installation.
        """
        return self.secret(self.site.secret_env)

    @property
    def imap_password(self) -> str | None:
        return self.secret(self.bounces.imap.password_env)

    @property
    def user_agent(self) -> str:
        from digest import __version__

        return self.http.user_agent or f"paper-digest/{__version__} (+mailto:{self.http.contact})"


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if first["type"] == "value_error":
        # Our own validators' messages say what is wrong, and the value may hold a password.
        return f"'{key}': {first.get('ctx', {}).get('error', first['msg'])}"
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"'{key}': {first['msg']}{shown}"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load settings from ``path``, else ``$DIGEST_CONFIG``, else ``config/digest.toml``, else defaults.

    Raises ConfigError (one line, naming the file and key) for a missing explicit file, bad TOML, an
    unknown key or a wrong type.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    chosen = Path(path) if path is not None else Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    found: Path | Traversable = chosen
    if not chosen.exists():
        if not explicit:
            return Settings()
        from digest.packaged import locate

        # A shipped config (config/replay.toml) is found outside a checkout too; a file there wins.
        found = locate(chosen)
        if not found.is_file():
            raise ConfigError(f"config file not found: {chosen}")
    try:
        data = tomllib.loads(found.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{chosen}: invalid TOML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{chosen}: cannot read: {err}") from err
    return settings_from_dict(data, origin=str(chosen))


def settings_from_dict(data: dict[str, Any], origin: str = "<config>") -> Settings:
    """Validate a parsed TOML document into Settings (raises ConfigError naming the key)."""
    if "source_path" in data:
        raise ConfigError(f"{origin}: unknown key 'source_path'")
    try:
        settings = Settings.model_validate({**data, "source_path": origin})
    except ValidationError as err:
        raise ConfigError(f"{origin}: {_format_error(err)}") from err
    _check_names(settings, origin)
    return settings


# The mailer backends digest.mail registers (a test keeps the two lists equal). Named here rather than
# asked of digest.mail, which depends on this module: settings know their valid values, mail knows how.
MAILER_BACKENDS = frozenset({"console", "file", "memory", "smtp"})


def _check_names(settings: Settings, origin: str) -> None:
    if settings.mailer.backend not in MAILER_BACKENDS:
        names = ", ".join(sorted(MAILER_BACKENDS))
        raise ConfigError(f"{origin}: 'mailer.backend': unknown backend {settings.mailer.backend!r} "
                          f"(choose one of {names})")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(settings.schedule.fetch_timezone)
    except Exception as err:
        raise ConfigError(f"{origin}: 'schedule.fetch_timezone': unknown time zone "
                          f"{settings.schedule.fetch_timezone!r}") from err


def parse_hhmm(value: str) -> time:
    """``"07:30"`` -> time(7, 30); raises ValueError with a clear message."""
    try:
        hh, mm = value.strip().split(":")
        return time(int(hh), int(mm))
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid time {value!r}: expected HH:MM") from err
