"""A completed source response, shared by HTTP (digest.sources.http) and replay (digest.sources.replay)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

__all__ = ["MAX_RESPONSE_BYTES", "HttpResponse"]

# The largest real response is the RSS feed at its 2,000-item cap (a few MB).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A completed response: 2xx with its body, or 304 (``not_modified``) with none."""

    url: str
    status: int
    content: bytes
    headers: httpx.Headers

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> dict[str, str]:
        """What to remember for the next conditional request: ``url``, ``etag``, ``last_modified``."""
        found = {"url": self.url}
        if etag := self.headers.get("etag"):
            found["etag"] = etag
        if last_modified := self.headers.get("last-modified"):
            found["last_modified"] = last_modified
        return found
