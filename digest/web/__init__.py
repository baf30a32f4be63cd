"""The web side: subscribe with double opt-in, confirm, preferences, one-click unsubscribe, archive."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from digest import redact
from digest.web.app import create_app
from digest.web.service import unsubscribe_by_token

if TYPE_CHECKING:
    from digest.pipeline import Pipeline

__all__ = ["create_app", "serve", "unsubscribe_by_token"]

log = logging.getLogger("digest.web")


def serve(pipeline: Pipeline, host: str, port: int) -> None:
    """Serve the app with uvicorn until SIGINT/SIGTERM (one process: the rate limits live in memory).

    Behind a reverse proxy, set ``FORWARDED_ALLOW_IPS`` to the proxy's address so the client IP used by
    the rate limit is the reader's, not the proxy's (uvicorn trusts 127.0.0.1 by default).
    """
    import uvicorn

    app = create_app(pipeline)
    # Tokens never reach a log line, uvicorn's included (its loggers propagate to the root handler;
    # any handler of their own gets the filter too).
    redact.install(logging.getLogger("uvicorn"), logging.getLogger("uvicorn.access"),
                   logging.getLogger("uvicorn.error"))
    log.info("serving on http://%s:%d (links in mail use %s)", host, port, pipeline.settings.site.base_url)
    # log_config=None keeps the CLI's one-line log format for uvicorn's messages too.
    uvicorn.run(app, host=host, port=port, proxy_headers=True, log_config=None, server_header=False)
