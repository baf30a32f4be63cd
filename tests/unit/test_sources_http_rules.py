"""The polite HTTP layer's rules, driven through httpx.MockTransport (no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from digest.config import HttpSource
from digest.errors import SourceError
from digest.sources.http import (
    ARXIV_MIN_INTERVAL,
    HostPacer,
    PoliteHttp,
    conditional_validators,
    min_interval,
    parse_retry_after,
    reported_as,
)


@pytest.mark.parametrize(
    ("url", "configured", "expected"),
    [
        ("http://export.arxiv.org/api/query", 0.5, ARXIV_MIN_INTERVAL),
        ("https://arxiv.org/a", 0.0, ARXIV_MIN_INTERVAL),
        ("https://rss.arxiv.org/rss/cs.LG", 10.0, 10.0),
        ("http://127.0.0.1:8080/api/query", 0.05, 0.05),
        ("https://notarxiv.org/x", 0.0, 0.0),
    ],
)
def test_min_interval_never_below_three_seconds_for_arxiv(url: str, configured: float, expected: float) -> None:
    assert min_interval(url, configured) == expected


def test_retry_after_forms() -> None:
    now = datetime(2026, 8, 18, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Tue, 18 Aug 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 18 Aug 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_conditional_validators_only_for_the_same_url() -> None:
    state = {"url": "http://h/a?date=2026-08-18", "etag": '"x"', "last_modified": "Tue, 18 Aug 2026 GMT"}
    assert conditional_validators(state, "http://h/a?date=2026-08-18") == ('"x"', "Tue, 18 Aug 2026 GMT")
    assert conditional_validators(state, "http://h/a?date=2026-08-19") == (None, None)
    assert conditional_validators({}, "http://h/a") == (None, None)


class FakeClock:
    """A clock that only moves when slept on, so pacing is checked without waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_spaces_request_starts_per_host() -> None:
    clock = FakeClock()
    pacer = HostPacer(clock=clock, sleep=clock.sleep)
    with pacer.slot("export.arxiv.org", 3.0):
        clock.now += 0.5  # the request itself took half a second
    with pacer.slot("export.arxiv.org", 3.0):
        pass
    with pacer.slot("other.example", 3.0):
        pass
    assert clock.sleeps == [2.5]


def _http(handler: httpx.MockTransport, sleeps: list[float], **settings: float) -> PoliteHttp:
    cfg = HttpSource(enabled=True, url="http://h/", **settings)  # type: ignore[arg-type]
    return PoliteHttp(
        "test", httpx.Client(transport=handler), cfg, "digest-test/1 (+mailto:t@example.org)",
        pacer=HostPacer(), sleep=sleeps.append, rng=random.Random(7),
    )


def test_backoff_grows_with_jitter_and_stays_bounded() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    sleeps: list[float] = []
    http = _http(httpx.MockTransport(handler), sleeps, max_retries=4, backoff_seconds=1.0)
    with pytest.raises(SourceError, match=r"HTTP 503 Service Unavailable .* \(gave up after 5 attempts\)"):
        http.get("http://h/x")
    assert len(calls) == 5
    assert len(sleeps) == 4
    for attempt, slept in enumerate(sleeps):
        base = 2.0**attempt
        assert base / 2 <= slept <= base
    assert calls[0].headers["user-agent"] == "digest-test/1 (+mailto:t@example.org)"


def test_retry_after_beyond_the_cap_fails_at_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "600"})

    sleeps: list[float] = []
    http = _http(httpx.MockTransport(handler), sleeps, max_retries=3, max_retry_after_seconds=120)
    with pytest.raises(SourceError) as info:
        http.get("http://h/x")
    assert "HTTP 429" in info.value.reason
    assert "retry after 600 s, more than max_retry_after_seconds = 120" in info.value.reason
    assert len(calls) == 1 and sleeps == []


def test_client_errors_are_not_retried_and_can_be_explained() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, content=b"bad query")

    http = _http(httpx.MockTransport(handler), [], max_retries=3)
    with pytest.raises(SourceError, match=r"HTTP 400 Bad Request from http://h/x\?q=1: said bad query$"):
        http.get("http://h/x", {"q": "1"}, error_detail=lambda body: "said " + body.decode())
    assert len(calls) == 1


def test_invalid_urls_are_source_errors() -> None:
    http = _http(httpx.MockTransport(lambda r: httpx.Response(200)), [])
    with pytest.raises(SourceError, match="only http, https and file URLs"):
        http.get("ftp://h/x")
    with pytest.raises(SourceError, match="no host"):
        http.get("http:///path-without-host")


def test_conditional_headers_and_304() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(304)

    response = _http(httpx.MockTransport(handler), []).get(
        "http://h/x", etag='"abc"', last_modified="Tue, 18 Aug 2026 10:00:00 GMT"
    )
    assert response.not_modified and response.content == b""
    assert seen[0].headers["if-none-match"] == '"abc"'
    assert seen[0].headers["if-modified-since"] == "Tue, 18 Aug 2026 10:00:00 GMT"


def test_oversized_bodies_are_refused() -> None:
    handler = httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * 5000))
    cfg = HttpSource(enabled=True, url="http://h/")
    http = PoliteHttp("test", httpx.Client(transport=handler), cfg, "ua", pacer=HostPacer(), max_bytes=4096)
    with pytest.raises(SourceError, match="larger than 4096 bytes"):
        http.get("http://h/big")


def test_reported_as_turns_surprises_into_source_errors() -> None:
    with pytest.raises(SourceError) as info, reported_as("hf_daily"):
        raise KeyError("paper")
    assert info.value.source == "hf_daily"
    assert info.value.reason == "unexpected KeyError: 'paper'"
    with pytest.raises(SourceError, match=r"^arxiv: kept$"), reported_as("hf_daily"):
        raise SourceError("arxiv", "kept")
