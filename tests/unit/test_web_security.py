"""The web app's rate limiter and CSRF token rules, without sockets (a fake clock, fake requests)."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request

from digest.redact import RedactTokens
from digest.web.security import CSRF_COOKIE, Csrf, CsrfError, Limit, SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_allows_count_then_waits_for_the_oldest_event() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(Limit(count=3, seconds=60), clock=clock)
    for step in range(3):
        clock.now += step * 10  # events at 1000, 1010, 1030
        assert limiter.hit("ip") is None
    assert limiter.hit("ip") == pytest.approx(30.0)  # now 1030; the first event leaves the window at 1060
    assert limiter.hit("other") is None  # keys are counted apart
    clock.now = 1060.0
    assert limiter.hit("ip") is None
    assert limiter.hit("ip") is not None


def test_refused_hits_are_not_counted_and_old_keys_are_swept() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(Limit(count=1, seconds=10), clock=clock)
    assert limiter.hit("a") is None
    for _ in range(5):
        assert limiter.hit("a") is not None
    clock.now += 10.5
    assert limiter.hit("a") is None  # refusals did not extend the wait
    for n in range(100):
        limiter.hit(f"k{n}")
    clock.now += 30
    limiter.hit("fresh")
    assert len(limiter) == 1


def _request(headers: dict[str, str], cookie: str | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"host", b"digest.example.org"))
    if cookie is not None:
        raw.append((b"cookie", f"{CSRF_COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": "POST", "path": "/subscribe", "headers": raw, "query_string": b""})


def test_csrf_token_matches_only_its_own_cookie_and_secret() -> None:
    csrf = Csrf("secret", "https://digest.example.org")
    token, cookie = csrf.token_for(_request({}))
    assert cookie is not None
    browser = {"sec-fetch-site": "same-origin"}
    csrf.check(_request(browser, cookie), token)
    with pytest.raises(CsrfError):
        csrf.check(_request(browser, "another-cookie"), token)
    with pytest.raises(CsrfError):
        csrf.check(_request(browser, cookie), Csrf("other-secret").token_for(_request({}, cookie))[0])
    with pytest.raises(CsrfError):
        csrf.check(_request(browser, cookie), None)
    again, new_cookie = csrf.token_for(_request({}, cookie))
    assert new_cookie is None  # the browser keeps its cookie; the new token fits it
    csrf.check(_request(browser, cookie), again)


def test_csrf_origin_rules_for_browsers_without_fetch_metadata() -> None:
    csrf = Csrf("secret", "https://digest.example.org")
    token, cookie = csrf.token_for(_request({}))
    csrf.check(_request({"origin": "https://digest.example.org"}, cookie), token)
    with pytest.raises(CsrfError):
        csrf.check(_request({"origin": "https://evil.example"}, cookie), token)
    csrf.check(_request({}), None)  # a script: no browser, no ambient authority to abuse


def test_access_log_lines_never_show_link_tokens() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", "/preferences/ImFAYi5jIg.aw.sig?saved=1", "1.1", 200), None)
    assert RedactTokens().filter(record)
    line = record.getMessage()
    assert "ImFAYi5jIg" not in line and "/preferences/[token]?saved=1" in line
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "POST /unsubscribe/abc.def done", None, None)
    RedactTokens().filter(plain)
    assert plain.getMessage() == "POST /unsubscribe/[token] done"


def test_every_log_line_hides_tokens_wherever_they_appear() -> None:
    """Issue 16, item 7: CSRF refusals, errors, mailto subjects and tracebacks, not only access lines."""
    from digest.links import Scope, Signer

    signer = Signer("redaction-test")
    token = signer.sign(Scope.PREFERENCES, "reader@example.org")
    carried = signer.sign_payload(Scope.CONFIRM, {"email": "reader@example.org", "prefs": {"topics": ["nas"]}})
    lines = [
        ("csrf check failed path=%s reason=%s", (f"/preferences/{token}", "bad")),
        ("request failed path=%s reason=%s", (f"/confirm/{carried}", "x")),
        ("mail hook got %r", (f"mailto:leave@example.org?subject=unsubscribe%20{token}",)),
        ("token %s in free text, %s too", (token, carried)),
        ("issue page %s", (f"/issue/{signer.sign(Scope.ISSUE, '42')}",)),
    ]
    for msg, args in lines:
        record = logging.LogRecord("digest.web", logging.WARNING, __file__, 1, msg, args, None)
        assert RedactTokens().filter(record)
        shown = record.getMessage()
        assert token not in shown and carried not in shown and "[token]" in shown, shown
    try:
        raise ValueError(f"bad link /unsubscribe/{token}")
    except ValueError:
        import sys

        record = logging.LogRecord("digest.web", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactTokens().filter(record)
    formatted = logging.Formatter().format(record)
    assert token not in formatted and "/unsubscribe/[token]" in formatted
    # Addresses, versions, paper ids and hostnames are left alone.
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "first.last@example.org 2403.12345 v1.2.3", None, None)
    RedactTokens().filter(plain)
    assert plain.getMessage() == "first.last@example.org 2403.12345 v1.2.3"
