"""The one interface every paper source implements (digest.sources names and builds the sources)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Protocol

from digest.models import FetchResult


class Source(Protocol):
    """A listing of papers.

    ``fetch`` returns the papers the source lists for ``day`` (None: the source's notion of "new now"),
    normalised (see digest.sources.normalize). ``state`` is what the previous successful run of this
    source returned in ``FetchResult.state`` (watermarks, ETag, Last-Modified); the result's ``state`` is
    stored by the caller only if the fetch succeeded. Any failure is raised as SourceError naming the
    source, with a one-line reason; a source never raises anything else.
    """

    name: str

    def fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult: ...
