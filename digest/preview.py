"""`digest preview` output: an email as HTML, text or .eml, written to a file and optionally opened."""

from __future__ import annotations

import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from digest.errors import UsageError

Format = Literal["html", "text", "eml"]
SUFFIX: dict[str, str] = {"html": ".html", "text": ".txt", "eml": ".eml"}


def write_preview(content: str | bytes, fmt: Format, out: Path | None = None) -> Path:
    """Write ``content`` to ``out`` (or a new temporary file with the format's suffix) and return the path.

    Text is written as UTF-8; ``eml`` content is the message bytes, written unchanged.
    """
    if fmt not in SUFFIX:
        raise UsageError(f"unknown preview format {fmt!r} (choose html, text or eml)")
    data = content.encode("utf-8") if isinstance(content, str) else content
    if out is None:
        handle = tempfile.NamedTemporaryFile(prefix="digest-preview-", suffix=SUFFIX[fmt], delete=False)
        with handle:
            handle.write(data)
        return Path(handle.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except OSError as err:
        raise UsageError(f"cannot write preview to {out}: {err}") from err
    return out


def open_preview(path: Path, opener: Callable[[str], bool] = webbrowser.open) -> bool:
    """Open a written preview in the default browser (or the desktop's handler for .txt and .eml);
    False when no browser could be started, which the CLI reports without failing."""
    return bool(opener(path.resolve().as_uri()))
