"""The installation's link-signing key: where it comes from, made once on first use, and rotated.

Every signed thing (the unsubscribe, preferences and confirmation links, return paths, the web app's
CSRF cookie) is signed with one key, read through ``signing_key(settings, store)`` and nothing else:

- ``$DIGEST_SECRET_KEY`` (the variable ``[site] secret_env`` names) when it is set: it overrides;
- otherwise the installation's own key, stored in the database (table ``installation_secrets``), made
  from 32 random bytes by the first process that needs one (send, daemon, serve, preview). Every
  process on the same database (senders, the daemon, the web app) therefore signs alike.

There is no built-in fallback key: a key anyone can read would let anyone forge unsubscribe and
preferences links. ``rotate_signing_key`` replaces the stored key; the one it replaced keeps verifying
links (never signing new ones) until the next rotation or ``forget_previous_key``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from digest.errors import ConfigError

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.store import Store

__all__ = ["KEY_BYTES", "KeyOrigin", "SigningKey", "describe_signing_key", "forget_previous_key", "rotate_signing_key",
           "signing_key"]

log = logging.getLogger("digest.signing_key")

KEY_NAME = "link_signing_key"
PREVIOUS_NAME = "link_signing_key.previous"
KEY_BYTES = 32
# An environment key shorter than this is accepted (the operator chose it) but warned about.
_SHORT_ENV_KEY = 32
# Keys that were published (an early release signed with this one when no key was set): whoever has
# read the source could forge links with them, so they are refused even from the environment.
_PUBLISHED_KEYS = frozenset({"digest-insecure-development-key"})

Source = Literal["environment", "database"]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The key to sign with (``current``), the retired keys still accepted when verifying
    (``previous``), and where the key comes from (``source``, ``where``: safe to print)."""

    current: str = field(repr=False)
    previous: tuple[str, ...] = field(default=(), repr=False)
    source: Source = "database"
    where: str = ""


def _new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def signing_key(settings: Settings, store: Store) -> SigningKey:
    """The key every link is signed with: the environment's, else the stored one, made on first use.

    Raises ConfigError if the environment holds a published key.
    """
    env_name = settings.site.secret_env
    from_env = settings.env_signing_key
    if from_env is not None:
        if from_env in _PUBLISHED_KEYS:
            raise ConfigError(f"${env_name} holds a published key that anyone can sign with; unset it "
                              "(the installation then makes its own) or set a long random one")
        if len(from_env) < _SHORT_ENV_KEY:
            log.warning("$%s is shorter than %d characters; a long random key is safer (see docs/deploy.md)",
                        env_name, _SHORT_ENV_KEY)
        return SigningKey(from_env, (), "environment", f"${env_name}")
    created: list[bool] = []

    def make() -> str:
        created.append(True)
        return _new_key()

    current = store.ensure_installation_secret(KEY_NAME, make)
    if created:
        log.info("made this installation's link-signing key (stored in the database)")
    previous = store.installation_secret(PREVIOUS_NAME)
    return SigningKey(current, (previous,) if previous else (), "database",
                      "the database (table installation_secrets)")


@dataclass(frozen=True, slots=True)
class KeyOrigin:
    """Where the signing key comes from (never the key): ``source`` is "environment", "database" or
    "not made yet"; ``variable`` the environment variable that would override it; ``previous_kept``
    whether a rotated-out key still verifies old links (None when the environment's key is used)."""

    source: Literal["environment", "database", "not made yet"]
    variable: str
    previous_kept: bool | None = None

    def as_json(self) -> dict[str, str | bool]:
        shown: dict[str, str | bool] = {"source": self.source, "variable": self.variable}
        if self.previous_kept is not None:
            shown["previous_kept"] = self.previous_kept
        return shown


def describe_signing_key(settings: Settings, store: Store) -> KeyOrigin:
    """Where the signing key comes from, for ``digest status``: never the key itself, never makes one."""
    env_name = settings.site.secret_env
    if settings.env_signing_key is not None:
        return KeyOrigin("environment", env_name)
    stored = store.installation_secret(KEY_NAME) is not None
    return KeyOrigin("database" if stored else "not made yet", env_name,
                     previous_kept=store.installation_secret(PREVIOUS_NAME) is not None)


def rotate_signing_key(store: Store, keep_previous: bool = True) -> bool:
    """Replace the stored key with a new random one. With ``keep_previous`` the replaced key still
    verifies links already sent (never signs); without, they stop working at once (and so do those of
    the key an earlier rotation kept). Returns whether
    a key was replaced (False: there was none, one was made)."""
    return store.rotate_installation_secret(KEY_NAME, _new_key(), PREVIOUS_NAME, keep=keep_previous)


def forget_previous_key(store: Store) -> bool:
    """Stop accepting links signed with the key replaced by the last rotation; returns whether one was kept."""
    return store.drop_installation_secret(PREVIOUS_NAME)
