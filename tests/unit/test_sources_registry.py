"""build_sources: which sources run, in which order, and what naming a wrong one does."""

from __future__ import annotations

import httpx
import pytest

from digest.config import Settings
from digest.errors import UsageError
from digest.sources import SOURCE_NAMES, build_sources

ALL_ON = {name: {"enabled": True} for name in ("hf_daily", "hf_papers", "arxiv", "arxiv_rss")}


def test_enabled_sources_in_fixed_order() -> None:
    settings = Settings.model_validate({"sources": {"arxiv_rss": {"enabled": True}, "hf_daily": {"enabled": True}}})
    with httpx.Client() as client:
        assert [s.name for s in build_sources(settings, client)] == ["seed", "hf_daily", "arxiv_rss"]


def test_every_source_can_be_built() -> None:
    settings = Settings.model_validate({"sources": ALL_ON})
    with httpx.Client() as client:
        sources = build_sources(settings, client)
    assert tuple(s.name for s in sources) == SOURCE_NAMES
    assert all(callable(getattr(s, "fetch", None)) for s in sources)


def test_names_select_among_enabled_sources() -> None:
    settings = Settings.model_validate({"sources": ALL_ON})
    with httpx.Client() as client:
        assert [s.name for s in build_sources(settings, client, ["arxiv_rss", "hf_daily"])] == [
            "hf_daily", "arxiv_rss"]


def test_unknown_or_disabled_names_are_usage_errors() -> None:
    settings = Settings()
    with httpx.Client() as client:
        with pytest.raises(UsageError, match="unknown source 'nope'"):
            build_sources(settings, client, ["nope"])
        with pytest.raises(UsageError, match=r"source 'arxiv' is not enabled: set enabled = true in \[sources.arxiv\]"):
            build_sources(settings, client, ["arxiv"])
