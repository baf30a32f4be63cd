"""The ASGI layers around the pages: request bodies bounded as they arrive, and errors that still
carry the security headers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.web.security import PAGE_HEADERS

log = logging.getLogger("digest.web")

# Builds the page for a refused or failed request (status, request) -> response.
ErrorPage = Callable[[int, Request], Awaitable[Response]]


class BodyLimit:
    """Reads a request's whole body before the app sees any of it, and refuses it with 413 as soon as
    more than ``max_bytes`` have arrived, whatever the framing (Content-Length or chunked).

    The body is counted message by message as the server hands it over, so at most ``max_bytes`` plus
    one network read is ever held, and nothing is parsed until the whole body is known to be within
    bounds. A declared ``Content-Length`` over the limit is refused before reading anything. The 413
    asks the client to close the connection: the rest of the body is never read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, refuse: ErrorPage,
                 larger: Callable[[Scope], int | None] = lambda scope: None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse
        # A larger bound for a few requests (a file upload), by method and path; None keeps max_bytes.
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger(scope) or self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > max_bytes):
                await self._refuse(scope, send)
                return
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            total += len(message.get("body", b""))
            if total > max_bytes:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        replay += [m for m in messages if m["type"] != "http.request"]

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = await self.refuse(413, Request(scope))
        response.headers["Connection"] = "close"

        async def nothing() -> Message:  # the page needs no body, and must not wait for the rest of it
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)


class SecurityHeaders:
    """Adds the page security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._defaults = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._defaults if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


class ErrorPages:
    """Turns an unexpected exception into the site's 500 page, inside the security headers (Starlette's
    own last resort sits outside every middleware and answers a bare text page)."""

    def __init__(self, app: ASGIApp, page: ErrorPage) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:
                raise
            log.exception("request failed path=%s", scope.get("path", ""))
            response = await self.page(500, Request(scope))
            await response(scope, receive, send)
