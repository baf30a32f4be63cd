"""digest: personal email digests of new machine-learning papers, grouped by topic.

The library surface, one name per stage, for a script that runs the service its own way::

    import digest

    settings = digest.load_settings("digest.toml")        # config (digest.config)
    store = digest.Store(settings.database.url)           # the database (digest.store)
    pipeline = digest.Pipeline(settings, store)           # the stages, wired (digest.pipeline)
    pipeline.fetch()                                      # fetch: sources -> papers (digest.sources)
    pipeline.tag_pending()                                # tag: papers -> topics (digest.tagger)
    pipeline.send()                                       # build issues (digest.selection, digest.issues),
                                                          # compose (digest.compose) and send (digest.mail)

Each stage also stands alone: ``Tagger(settings.enabled_topics).tag_paper(paper)``, ``select(papers,
subscriber, ...)`` for one reader's Issue, ``Composer(settings, key).compose(issue, message_id, now)``
for its message (``Renderer`` the fast path, ``ReferenceRenderer`` the plain one), ``build_mailer`` for
the configured mailer. The values passed between stages are the frozen dataclasses of digest.models.
docs/architecture.md says who owns what. Names load on first use, so ``import digest`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Name -> the module that defines it (loaded on first use: the CLI starts without SQLAlchemy or Jinja).
_SURFACE = {
    "load_settings": "digest.config",
    "Settings": "digest.config",
    "Store": "digest.store",
    "Pipeline": "digest.pipeline",
    "build_sources": "digest.sources",
    "Tagger": "digest.tagger",
    "select": "digest.selection",
    "SelectionContext": "digest.selection",
    "Composer": "digest.compose",
    "Renderer": "digest.render",
    "ReferenceRenderer": "digest.render",
    "build_mailer": "digest.mail",
    "SigningKey": "digest.signing_key",
    "Paper": "digest.models",
    "Subscriber": "digest.models",
    "Issue": "digest.models",
    "OutgoingMessage": "digest.models",
    "DigestError": "digest.errors",
}

__all__ = [
    "Composer",
    "DigestError",
    "Issue",
    "OutgoingMessage",
    "Paper",
    "Pipeline",
    "ReferenceRenderer",
    "Renderer",
    "SelectionContext",
    "Settings",
    "SigningKey",
    "Store",
    "Subscriber",
    "Tagger",
    "__version__",
    "build_mailer",
    "build_sources",
    "load_settings",
    "select",
]


def __getattr__(name: str) -> Any:
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'digest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once; later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SURFACE))


if TYPE_CHECKING:  # what a type checker sees (at run time __getattr__ loads these)
    from digest.compose import Composer
    from digest.config import Settings, load_settings
    from digest.errors import DigestError
    from digest.mail import build_mailer
    from digest.models import Issue, OutgoingMessage, Paper, Subscriber
    from digest.pipeline import Pipeline
    from digest.render import ReferenceRenderer, Renderer
    from digest.selection import SelectionContext, select
    from digest.signing_key import SigningKey
    from digest.sources import build_sources
    from digest.store import Store
    from digest.tagger import Tagger
