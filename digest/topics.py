"""Topic definitions as data: the schema of a `[topics.NAME]` config table and the built-in defaults."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TopicSpec(BaseModel):
    """One topic. ``phrases`` are case-insensitive regular expressions matched at word boundaries;
    ``exclude`` patterns remove a match they overlap (e.g. "diffusion MRI" for diffusion)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    label: str = ""
    description: str = ""
    phrases: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    threshold: float = 1.0


@cache
def _default_topics_raw() -> dict[str, Any]:
    text = resources.files("digest").joinpath("defaults/topics.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["topics"]


def default_topics() -> dict[str, TopicSpec]:
    """The built-in topics (pruning, diffusion, subspace, nas), fresh objects on each call."""
    return {name: TopicSpec.model_validate(spec) for name, spec in _default_topics_raw().items()}
