"""The polite HTTP layer against a real HTTP server on 127.0.0.1: retries, timeouts, pacing, 304."""

from __future__ import annotations

import itertools
import socket

import httpx
import pytest
from httpserver import HttpServer, Reply

from digest.config import HttpSource
from digest.errors import SourceError
from digest.sources.http import HostPacer, PoliteHttp

AGENT = "paper-digest/0.1.0 (+mailto:digest@example.org)"


def polite(client: httpx.Client, sleeps: list[float] | None = None, interval: float = 0.0,
           **settings: float) -> PoliteHttp:
    cfg = HttpSource(enabled=True, url="http://unused/", **{  # type: ignore[arg-type]
        "timeout_seconds": 2.0, "max_retries": 2, "backoff_seconds": 0.01, **settings})
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    return PoliteHttp("test", client, cfg, AGENT, interval=interval, pacer=HostPacer(), sleep=record)


def test_user_agent_and_body(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(body=b"hello", content_type="text/plain"))
    response = polite(http_client).get(http_server.url("/a"), {"x": "1"})
    assert response.status == 200 and response.content == b"hello"
    seen = http_server.requests_to("/a")[0]
    assert seen.headers["user-agent"] == AGENT
    assert seen.query == {"x": "1"}


def test_5xx_is_retried_then_succeeds(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(status=500), Reply(status=502), Reply(body=b"ok"))
    sleeps: list[float] = []
    assert polite(http_client, sleeps).get(http_server.url("/a")).content == b"ok"
    assert len(http_server.requests_to("/a")) == 3
    assert len(sleeps) == 2


def test_5xx_forever_gives_up_with_a_reason(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(status=500))
    with pytest.raises(SourceError) as info:
        polite(http_client).get(http_server.url("/a"))
    assert info.value.reason == (f"HTTP 500 Internal Server Error from {http_server.url('/a')} "
                                 "(gave up after 3 attempts)")
    assert len(http_server.requests_to("/a")) == 3


def test_429_retry_after_is_honoured(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(status=429, headers={"Retry-After": "2"}), Reply(body=b"ok"))
    sleeps: list[float] = []
    assert polite(http_client, sleeps).get(http_server.url("/a")).content == b"ok"
    assert sleeps == [2.0]


def test_429_asking_too_long_fails_at_once(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(SourceError, match="retry after 3600 s, more than max_retry_after_seconds = 120"):
        polite(http_client, max_retry_after_seconds=120).get(http_server.url("/a"))
    assert len(http_server.requests_to("/a")) == 1


def test_timeout_is_retried_then_reported(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/slow", Reply(body=b"late", delay=2.0))
    with pytest.raises(SourceError, match=r"timed out after 0.2 s: GET .*/slow \(gave up after 2 attempts\)"):
        polite(http_client, timeout_seconds=0.2, max_retries=1).get(http_server.url("/slow"))
    assert len(http_server.requests_to("/slow")) == 2


def test_cut_off_transfer_is_a_connection_failure(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/cut", Reply(body=b"x" * 10_000, truncate=100))
    with pytest.raises(SourceError, match=r"connection failed: GET .*/cut"):
        polite(http_client, max_retries=1).get(http_server.url("/cut"))
    assert len(http_server.requests_to("/cut")) == 2


def test_dropped_connection_then_recovery(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(close=True), Reply(body=b"ok"))
    assert polite(http_client).get(http_server.url("/a")).content == b"ok"


def test_refused_connection(http_client: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="connection failed"):
        polite(http_client, max_retries=1).get(f"http://127.0.0.1:{port}/")


def test_404_is_not_retried(http_server: HttpServer, http_client: httpx.Client) -> None:
    with pytest.raises(SourceError, match="HTTP 404 Not Found"):
        polite(http_client).get(http_server.url("/missing"))
    assert len(http_server.requests) == 1


def test_etag_and_last_modified_round_trip(http_server: HttpServer, http_client: httpx.Client) -> None:
    modified = "Tue, 18 Aug 2026 10:00:00 GMT"
    http_server.route("/feed", Reply(body=b"v1", etag='"v1"', last_modified=modified))
    http = polite(http_client)
    first = http.get(http_server.url("/feed"))
    assert first.validators == {"url": http_server.url("/feed"), "etag": '"v1"', "last_modified": modified}
    again = http.get(http_server.url("/feed"), etag='"v1"')
    assert again.not_modified and again.content == b""
    by_date = http.get(http_server.url("/feed"), last_modified=modified)
    assert by_date.not_modified
    changed = http.get(http_server.url("/feed"), etag='"v0"')
    assert changed.status == 200 and changed.content == b"v1"


def test_requests_to_one_host_are_spaced(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/a", Reply(body=b"ok"))
    http = polite(http_client, interval=0.25)
    for _ in range(3):
        http.get(http_server.url("/a"))
    times = [r.at for r in http_server.requests_to("/a")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 2
    assert all(gap >= 0.2 for gap in gaps), gaps  # client-side starts are 0.25 s apart


def test_redirects_are_followed_and_paced(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/old", Reply(status=301, headers={"Location": "/new?x=1"}))
    http_server.route("/new", Reply(body=b"moved", etag='"m"'))
    response = polite(http_client, interval=0.25).get(http_server.url("/old"))
    assert response.content == b"moved"
    assert response.url == http_server.url("/old")  # conditional state stays keyed on the configured URL
    old, new = http_server.requests
    assert (old.path, new.path, new.query) == ("/old", "/new", {"x": "1"})
    assert new.headers["user-agent"] == AGENT
    assert new.at - old.at >= 0.2  # a redirect hop is a request like any other


def test_redirect_loop_is_a_source_error(http_server: HttpServer, http_client: httpx.Client) -> None:
    http_server.route("/loop", Reply(status=302, headers={"Location": "/loop"}))
    with pytest.raises(SourceError, match="more than 5 redirects"):
        polite(http_client).get(http_server.url("/loop"))
    assert len(http_server.requests) == 6
