"""The paper sources by short name, and ``build_sources``: the enabled ones, built from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.errors import UsageError
from digest.sources.base import Source

if TYPE_CHECKING:  # httpx and the settings cost start-up time; only building sources needs them
    import httpx

    from digest.config import Settings

__all__ = ["SOURCE_NAMES", "Source", "build_sources"]

# Also the order in which sources run: the offline seed first, then the richest listings.
SOURCE_NAMES: tuple[str, ...] = ("seed", "hf_daily", "hf_papers", "arxiv", "arxiv_rss")


def build_sources(settings: Settings, client: httpx.Client, names: list[str] | None = None) -> list[Source]:
    """The enabled sources in the order of ``SOURCE_NAMES`` (only those in ``names`` if given).

    ``client`` is shared by the HTTP sources (the caller closes it); each request also carries
    ``settings.user_agent``. Naming a source that does not exist or is not enabled is a UsageError:
    silently fetching nothing would look like an empty day.
    """
    wanted = list(dict.fromkeys(names)) if names else None
    if wanted:
        unknown = [n for n in wanted if n not in SOURCE_NAMES]
        if unknown:
            raise UsageError(f"unknown source {unknown[0]!r} (choose from {', '.join(SOURCE_NAMES)})")
        disabled = [n for n in wanted if not getattr(settings.sources, n).enabled]
        if disabled:
            raise UsageError(f"source {disabled[0]!r} is not enabled: set enabled = true in "
                             f"[sources.{disabled[0]}]")
    chosen = [n for n in SOURCE_NAMES if (n in wanted if wanted else getattr(settings.sources, n).enabled)]
    return [_build(name, settings, client) for name in chosen]


def _build(name: str, settings: Settings, client: httpx.Client) -> Source:
    cfg = settings.sources
    agent = settings.user_agent
    if name == "seed":
        from digest.packaged import locate
        from digest.sources.seed import SeedSource

        return SeedSource(locate(cfg.seed.path), name="seed")
    if name == "hf_daily":
        from digest.sources.hf_daily import HfDailySource

        return HfDailySource(cfg.hf_daily, client, agent)
    if name == "hf_papers":
        from digest.sources.hf_papers import HfPapersSource

        return HfPapersSource(cfg.hf_papers, client, agent)
    if name == "arxiv":
        from digest.sources.arxiv import ArxivSource

        return ArxivSource(cfg.arxiv, client, agent)
    from digest.sources.arxiv_rss import ArxivRssSource

    return ArxivRssSource(cfg.arxiv_rss, client, agent)
