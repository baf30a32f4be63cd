"""The shipped config/digest.toml documents every key and changes nothing: it equals the defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from digest.config import Settings, load_settings

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "digest.toml"


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        if name in ("topics", "source_path"):
            continue
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_fields(annotation, f"{prefix}{name}."))
        else:
            out.append(prefix + name)
    return out


def _has(doc: dict[str, Any], dotted: str) -> bool:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_shipped_config_equals_the_defaults() -> None:
    shipped = load_settings(SHIPPED)
    assert shipped.model_dump(exclude={"source_path"}) == Settings().model_dump(exclude={"source_path"})


def test_shipped_config_names_every_key() -> None:
    doc = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    generic = {"timeout_seconds", "max_retries", "backoff_seconds", "max_retry_after_seconds"}
    missing = [key for key in _fields(Settings)
               if not _has(doc, key) and not (key.startswith("sources.") and key.rsplit(".", 1)[1] in generic)]
    assert missing == []
