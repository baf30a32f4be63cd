"""A real threaded HTTP/1.1 server on 127.0.0.1 with scripted routes, for integration tests.

    with HttpServer() as server:
        server.route("/api/daily_papers", Reply(body=data, etag='"v1"'))
        server.route("/api/query", Reply(status=503, headers={"Retry-After": "1"}), Reply(body=page),
                     query={"start": "0"})
        httpx.get(server.url("/api/daily_papers"))
        server.requests[-1].headers["user-agent"]

A route answers its replies in order and repeats the last one. The most specific route wins: same
path, and every ``query`` item present in the request. Unmatched requests get 404. Every request is
recorded (method, path, query, headers, body, arrival time).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpServer", "Recorded", "Reply"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``delay``: seconds to wait before answering (longer than a client's timeout makes it time out).
    ``etag`` / ``last_modified``: sent as headers; a request whose If-None-Match / If-Modified-Since
    matches gets 304 with no body instead. ``truncate``: send only that many bytes of the body while
    announcing its full Content-Length, then drop the connection (a transfer cut off mid-way).
    ``close``: drop the connection without answering at all.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    etag: str | None = None
    last_modified: str | None = None
    truncate: int | None = None
    close: bool = False

    @classmethod
    def file(cls, path: str | Path, content_type: str | None = None, **kwargs: Any) -> Reply:
        """A 200 carrying the bytes of ``path``, typed by its suffix unless ``content_type`` is given."""
        path = Path(path)
        guessed = {
            ".json": "application/json",
            ".xml": "application/xml",
            ".html": "text/html; charset=utf-8",
            ".txt": "text/plain; charset=utf-8",
        }.get(path.suffix, "application/octet-stream")
        return cls(body=path.read_bytes(), content_type=content_type or guessed, **kwargs)


@dataclass(frozen=True)
class Recorded:
    """A request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class _Route:
    path: str
    query: dict[str, str]
    replies: list[Reply]
    served: int = 0


class HttpServer:
    """Start with ``start()`` or a ``with`` block; ``url(path)`` gives the address to request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._routes: list[_Route] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[Recorded] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> HttpServer:
        handler = _handler_for(self)
        server = _QuietServer((self._host, self._port), handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    def url(self, path: str = "") -> str:
        return f"http://{self._host}:{self.port}{path}"

    # -- script ----------------------------------------------------------------------------------

    def route(self, path: str, *replies: Reply, query: Mapping[str, str] | None = None) -> None:
        """Answer GET/POST/HEAD on ``path`` with ``replies`` in order, the last one repeating."""
        if not replies:
            raise ValueError("a route needs at least one reply")
        with self._lock:
            self._routes = [r for r in self._routes if not (r.path == path and r.query == dict(query or {}))]
            self._routes.append(_Route(path, dict(query or {}), list(replies)))

    def reset(self) -> None:
        """Forget routes and recorded requests."""
        with self._lock:
            self._routes.clear()
            self.requests.clear()

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next_reply(self, recorded: Recorded) -> Reply | None:
        with self._lock:
            self.requests.append(recorded)
            matches = [
                r for r in self._routes
                if r.path == recorded.path and all(recorded.query.get(k) == v for k, v in r.query.items())
            ]
            if not matches:
                return None
            route = max(matches, key=lambda r: len(r.query))
            reply = route.replies[min(route.served, len(route.replies) - 1)]
            route.served += 1
            return reply

    def _wait(self, seconds: float) -> None:
        # Interruptible, so stop() never waits for a slow reply to finish.
        self._stopping.wait(seconds)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections are scripted (truncate, close); the client side reports them


def _handler_for(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: clients reuse connections
        timeout = 10

        def log_message(self, format: str, *args: object) -> None:
            pass  # tests read server.requests instead of stderr noise

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def _answer(self, head: bool = False) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                method=self.command,
                path=split.path,
                query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
            )
            reply = server._next_reply(recorded)
            if reply is None:
                self._send(404, b"no route\n", "text/plain", {}, head)
                return
            if reply.delay:
                server._wait(reply.delay)
            if reply.close:
                self._drop()
                return
            headers = dict(reply.headers)
            if reply.etag:
                headers["ETag"] = reply.etag
            if reply.last_modified:
                headers["Last-Modified"] = reply.last_modified
            if reply.status == 200 and _not_modified(reply, recorded.headers):
                self._send(304, b"", None, headers, head=True)
                return
            if reply.truncate is not None:
                self._send_truncated(reply, headers)
                return
            self._send(reply.status, reply.body, reply.content_type, headers, head)

        def _send(
            self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str], head: bool
        ) -> None:
            self.send_response(status)
            if content_type and status != 304:
                self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and status != 304:
                self.wfile.write(body)

        def _send_truncated(self, reply: Reply, headers: Mapping[str, str]) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body[: reply.truncate])
            self.wfile.flush()
            self._drop()

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def _not_modified(reply: Reply, headers: Mapping[str, str]) -> bool:
    if_none_match = headers.get("if-none-match")
    if reply.etag and if_none_match:
        return if_none_match.strip() == "*" or reply.etag in [t.strip() for t in if_none_match.split(",")]
    if_modified_since = headers.get("if-modified-since")
    return bool(reply.last_modified and if_modified_since and if_modified_since == reply.last_modified)
