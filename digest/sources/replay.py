"""Offline replay: a source URL ``file://...`` reads recorded responses instead of the network.

The URL names either one recorded response (served for every request and every day) or a folder of
them by listing day, ``<folder>/<YYYY-MM-DD>.<ext>`` (``.json`` for hf_daily, ``.html`` for hf_papers,
``.xml`` for arxiv and arxiv_rss; any extension is accepted). With a day, that day's file is read;
without one, the latest day in the folder, as the live source answers its latest listing. The bytes
then go through the source's own parser and the store's merge, exactly as an HTTP body does.

Accepted forms: ``file:///absolute/path``, ``file://localhost/absolute/path`` and ``file:relative/path``
(relative to the working directory, as every relative path in the config is; ``file:examples/replay/...``
means the recordings shipped in the package when the working directory has no such folder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from digest.errors import SourceError
from digest.packaged import locate_path
from digest.sources.response import MAX_RESPONSE_BYTES, HttpResponse

__all__ = ["Replay", "ReplayHttp"]

_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Replay:
    """A ``file:`` source URL resolved to the recorded response for a given day (or SourceError)."""

    def __init__(self, source: str, url: str) -> None:
        self.source = source
        self.url = url
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(source, f"invalid URL {url!r}: a file URL names a local path "
                                      "(file:///absolute/path or file:relative/path)")
        if not parts.path:
            raise SourceError(source, f"invalid URL {url!r}: no path")
        # A relative path is read from the working directory; the shipped recordings (examples/replay/,
        # see digest.packaged) are found outside a checkout too.
        self.path = locate_path(unquote(parts.path))

    def path_for(self, day: date | None) -> Path:
        """The file to read for ``day`` (None: the latest recorded day of a folder)."""
        path = self.path
        if path.is_file():
            return path
        if not path.exists():
            what = "folder" if self.url.endswith("/") else "file or folder"
            raise SourceError(self.source, f"recorded {what} not found: {path} (from url {self.url!r})")
        if not path.is_dir():
            raise SourceError(self.source, f"{path} is neither a file nor a folder")
        days = self._days(path)
        if not days:
            raise SourceError(self.source, f"no recorded days in {path}/ (expected files named YYYY-MM-DD.ext)")
        if day is None:
            return days[max(days)]
        found = days.get(day.isoformat())
        if found is None:
            have = sorted(days)
            span = have[0] if len(have) == 1 else f"{have[0]} to {have[-1]}"
            raise SourceError(self.source, f"no recorded response for {day} in {path}/ (it has {len(have)} "
                                           f"day{'s' if len(have) != 1 else ''}: {span})")
        return found

    def _days(self, folder: Path) -> dict[str, Path]:
        days: dict[str, Path] = {}
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            raise SourceError(self.source, f"cannot list {folder}: {err.strerror or err}") from err
        for entry in entries:
            stem = entry.name.split(".", 1)[0]
            # The first file of a day wins (sorted: a stray "2026-08-18.json.bak" loses to ".json").
            if _DAY_FILE.match(stem) and entry.is_file() and stem not in days:
                days[stem] = entry
        return days


class ReplayHttp:
    """Stands in for PoliteHttp while a replayed source fetches: every GET answers ``path``'s bytes.

    The URL a source asks for (query parameters, ``/date/D`` pages) does not matter: the day was
    chosen when ``path`` was. Conditional state is keyed on the file's URI.
    """

    def __init__(self, source: str, path: Path, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.source = source
        self.path = path
        self._max_bytes = max_bytes

    def url_for(self, url: str, params: Mapping[str, str] | None = None) -> str:
        return self.path.resolve().as_uri()

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str | None = None,
        error_detail: Callable[[bytes], str | None] | None = None,
    ) -> HttpResponse:
        try:
            size = self.path.stat().st_size
            if size > self._max_bytes:
                raise SourceError(self.source, f"{self.path} is larger than {self._max_bytes} bytes")
            content = self.path.read_bytes()
        except OSError as err:
            raise SourceError(self.source, f"cannot read {self.path}: {err.strerror or err}") from err
        return HttpResponse(self.url_for(url), 200, content, httpx.Headers())
