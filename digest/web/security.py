"""Web safeguards: CSRF (signed double-submit cookie + fetch metadata), rate limits, response headers."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf_token"
# A form left open longer than this must be reloaded before it can be sent.
CSRF_MAX_AGE = 24 * 3600

# Pages built by the app: nothing from elsewhere, no inline script, forms only to this site, and no
# Referer to other sites, because token URLs (/preferences/<token>) must never leak to the sites papers
# link to ("no-referrer" would also make browsers send "Origin: null" with the site's own forms).
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# The archive shows the email's own HTML, whose CSS is inline; no script of any kind may run.
ARCHIVE_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                                "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
}
# Pages reached through a personal link are nobody's business but the reader's.
PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}


class CsrfError(Exception):
    """A state-changing form failed the CSRF check; the message says why, for the 403 page."""


class Csrf:
    """Signed double-submit cookie, plus the browser's own cross-site signals.

    A random value lives in an HttpOnly, SameSite=Lax cookie; each form carries that value signed with
    the site secret and a timestamp (itsdangerous, HMAC, constant-time comparison). A POST passes when

    * the browser does not say it is cross-site: ``Sec-Fetch-Site`` is ``same-origin`` or ``none``,
      or, for browsers that do not send it, ``Origin`` is absent or this site; and
    * the form's token verifies and matches the cookie; or, for a client that sends neither ``Origin``
      nor ``Sec-Fetch-Site`` (a script, not a browser; every current browser sends ``Origin`` with a
      form POST), no token at all is given. A CSRF attack needs a victim's browser, and a browser
      always announces itself, so this keeps the SPEC's plain ``POST /subscribe`` working for scripts.
    """

    def __init__(self, secret: str, site_origin: str = "", max_age: int = CSRF_MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="digest.csrf")
        self._site_netloc = urlsplit(site_origin).netloc.lower() if site_origin else ""
        self.max_age = max_age

    def token_for(self, request: Request) -> tuple[str, str | None]:
        """The token to put in a form, and the cookie value to set (None if the request has one)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        new_cookie = None
        if not cookie or len(cookie) > 128:
            cookie = new_cookie = secrets.token_urlsafe(32)
        return self._serializer.dumps(cookie), new_cookie

    @staticmethod
    def set_cookie(response: Response, value: str | None, request: Request) -> None:
        if value is not None:
            response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="lax", path="/",
                                secure=request.url.scheme == "https")

    def check(self, request: Request, submitted: str | None) -> None:
        """Raise CsrfError unless this POST may change state (see the class docstring)."""
        fetch_site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        # Sec-Fetch-Site is set by the browser alone (scripts cannot forge it), so where it is present it
        # decides; Origin is the fallback for browsers without it (and may be "null" under some
        # referrer policies even for the site's own forms, which is why it does not come first).
        if fetch_site is not None:
            if fetch_site not in ("same-origin", "none"):
                raise CsrfError("the form was sent from another site")
        elif origin is not None and not self._same_origin(request, origin):
            raise CsrfError("the form was sent from another site")
        if not submitted:
            if fetch_site is None and origin is None:
                return
            raise CsrfError("the form is missing its security token")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        try:
            expected = self._serializer.loads(submitted, max_age=self.max_age)
        except BadSignature as err:
            raise CsrfError("the form's security token is invalid or has expired") from err
        if not isinstance(expected, str) or not cookie or not hmac.compare_digest(expected, cookie):
            raise CsrfError("the form's security token does not match this browser (are cookies blocked?)")

    def _same_origin(self, request: Request, origin: str) -> bool:
        netloc = urlsplit(origin).netloc.lower()
        if not netloc:  # "null": sandboxed frames, some privacy modes; never the site's own form
            return False
        host = request.headers.get("host", "").lower()
        return netloc == host or (bool(self._site_netloc) and netloc == self._site_netloc)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events per ``seconds`` for one key."""

    count: int
    seconds: float


class SlidingWindowLimiter:
    """Counts events per key over a sliding window, in this process's memory.

    Each process (uvicorn worker) keeps its own counts, so N workers allow up to N times the limit,
    and a restart forgets them; a single-worker deployment (the documented one) gets the exact limit.
    Thread-safe. Keys are swept when their window has passed, so memory stays bounded by the traffic
    of one window.
    """

    def __init__(self, limit: Limit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def hit(self, key: str) -> float | None:
        """Record one event for ``key`` if allowed and return None; else return seconds to wait."""
        now = self._clock()
        horizon = now - self.limit.seconds
        with self._lock:
            if now - self._last_sweep > self.limit.seconds:
                self._sweep(horizon)
                self._last_sweep = now
            events = self._events.setdefault(key, deque())
            while events and events[0] <= horizon:
                events.popleft()
            if len(events) >= self.limit.count:
                return max(0.0, events[0] + self.limit.seconds - now)
            events.append(now)
            return None

    def _sweep(self, horizon: float) -> None:
        stale = [key for key, events in self._events.items() if not events or events[-1] <= horizon]
        for key in stale:
            del self._events[key]

    def __len__(self) -> int:
        return len(self._events)
