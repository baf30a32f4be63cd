"""Topic definitions as data: the schema of a `[topics.NAME]` config table and the built-in defaults."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TopicExample(BaseModel):
    """An example paper given inline: ``{ title = "...", abstract = "..." }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    abstract: str = ""


# At most this many examples define a topic in words (more would slow start-up for little gain).
MAX_EXAMPLES = 5


class TopicSpec(BaseModel):
    """One topic: what it is called and the evidence that a paper is mainly about it.

    Every pattern is a case-insensitive Python regular expression matched at word boundaries in the
    title and the abstract (write ``(?-i:NAS)`` for a case-sensitive part). A paper gets the topic when
    its evidence adds up to ``min_score``:

    - ``strong``: one match anywhere is enough ("neural architecture search", "Krylov subspace").
    - ``phrases``: each match scores 1 point; the topic's ordinary vocabulary ("subspace", "pruning").
    - ``weak``: each match scores 0.5 points; supporting evidence that cannot carry a paper alone
      ("search space", "text-to-image").
    - A match in the title counts ``title_weight`` times, so one title phrase is usually enough.
    - ``exclude``: a match overlapping one of these does not count ("diffusion MRI" hides the
      "diffusion" in it), so traps never count as evidence.
    - ``veto``: if one of these occurs anywhere, the paper does not get the topic at all; for words
      the paper uses in another sense ("network-attached storage" makes every "NAS" mean storage).

    Or in words, without any pattern: ``description`` and up to five ``examples`` (arXiv ids looked up
    in the store, or inline ``{ title, abstract }`` tables); the tagger then decides by similarity to
    them (digest.described). The built-in topics also have a learned model (digest.learned).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    label: str = ""
    description: str = ""
    strong: list[str] = Field(default_factory=list)
    phrases: list[str] = Field(default_factory=list)
    weak: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    veto: list[str] = Field(default_factory=list)
    examples: list[str | TopicExample] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    min_score: float = Field(default=2.0, gt=0)
    title_weight: float = Field(default=3.0, ge=0)

    @field_validator("strong", "phrases", "weak", "exclude", "veto")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern.strip():
                raise ValueError("empty pattern")
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
                # The tagger embeds each pattern in a larger expression, where global flags such as
                # "(?i)" are not allowed: write "(?i:...)" instead.
                re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)
            except re.error as err:
                raise ValueError(f"invalid regular expression {pattern!r}: {err}") from None
            if compiled.match(""):
                raise ValueError(f"pattern {pattern!r} matches the empty string")
        return patterns

    @field_validator("examples")
    @classmethod
    def _check_examples(cls, examples: list[str | TopicExample]) -> list[str | TopicExample]:
        for example in examples:
            if isinstance(example, str) and not re.fullmatch(r"[\w.\-/:]+", example.strip()):
                raise ValueError(f"example {example!r} is not a paper id (or give {{ title, abstract }})")
        return [e.strip() if isinstance(e, str) else e for e in examples]

    @model_validator(mode="after")
    def _check_evidence(self) -> TopicSpec:
        if self.enabled and not (self.strong or self.phrases or self.weak or self.examples):
            raise ValueError("an enabled topic needs patterns ('strong', 'phrases' or 'weak') or "
                             "a 'description' with 'examples'")
        return self

    @property
    def has_patterns(self) -> bool:
        return bool(self.strong or self.phrases or self.weak)


@cache
def _default_topics_raw() -> dict[str, Any]:
    text = resources.files("digest").joinpath("defaults/topics.toml").read_text(encoding="utf-8")
    topics: dict[str, Any] = tomllib.loads(text)["topics"]
    return topics


def default_topics() -> dict[str, TopicSpec]:
    """The built-in topics (pruning, diffusion, subspace, nas), fresh objects on each call."""
    return {name: TopicSpec.model_validate(spec) for name, spec in _default_topics_raw().items()}
