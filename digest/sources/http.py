"""Polite HTTP GET for sources: timeouts, bounded retries, Retry-After, conditional requests, pacing.

Every failure leaves this module as ``SourceError(source, one-line reason)``:

    httpx.TimeoutException, httpx.TransportError   retried with backoff, then SourceError
    HTTP 429 / 5xx                                  retried (Retry-After honoured), then SourceError
    HTTP 429 / 503 with Retry-After above the cap   SourceError at once
    other HTTP 4xx, bad URL, too many redirects     SourceError at once
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

import httpx

from digest.config import HttpSource
from digest.errors import SourceError
from digest.models import FetchResult
from digest.sources.response import MAX_RESPONSE_BYTES, HttpResponse

if TYPE_CHECKING:  # replay imports this module; only replayed fetches need it
    from digest.sources.replay import ReplayHttp

__all__ = [
    "ARXIV_MIN_INTERVAL",
    "DEFAULT_PACER",
    "MAX_RESPONSE_BYTES",
    "HostPacer",
    "HttpResponse",
    "PoliteHttp",
    "conditional_validators",
    "min_interval",
    "new_client",
    "parse_retry_after",
    "reported_as",
]

log = logging.getLogger(__name__)

# arXiv's terms of use: no more than one request every three seconds, one connection at a time.
ARXIV_MIN_INTERVAL = 3.0
_ARXIV_DOMAIN = "arxiv.org"
_MAX_BACKOFF_SECONDS = 60.0
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def min_interval(url: str | httpx.URL, configured: float) -> float:
    """The pause between two requests to ``url``'s host: ``configured``, never under 3 s for arxiv.org.

    The floor does not apply to other hosts, so tests against 127.0.0.1 can run fast.
    """
    host = (httpx.URL(url).host if isinstance(url, str) else url.host).lower().rstrip(".")
    if host == _ARXIV_DOMAIN or host.endswith("." + _ARXIV_DOMAIN):
        return max(configured, ARXIV_MIN_INTERVAL)
    return max(configured, 0.0)


class HostPacer:
    """Serialises requests per host and spaces their starts by at least an interval.

    One pacer shared by all sources in a process keeps the promise "one connection at a time" even
    when two sources talk to the same host. Thread-safe.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last_start: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str, interval: float) -> Iterator[None]:
        """Hold ``host`` for one request, after waiting until ``interval`` s since the previous start."""
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            last = self._last_start.get(host)
            if last is not None and interval > 0:
                wait = last + interval - self._clock()
                if wait > 0:
                    self._sleep(wait)
            self._last_start[host] = self._clock()
            yield


DEFAULT_PACER = HostPacer()


@contextmanager
def reported_as(source: str) -> Iterator[None]:
    """Turn anything but SourceError raised inside into SourceError(source, ...): a source's contract
    is that it raises nothing else, so a parser bug on odd data still only fails that one source."""
    try:
        yield
    except SourceError:
        raise
    except Exception as err:
        log.exception("%s: unexpected error", source)
        raise SourceError(source, f"unexpected {type(err).__name__}: {_one_line(err)}") from err


def conditional_validators(state: Mapping[str, str], url: str) -> tuple[str | None, str | None]:
    """The (ETag, Last-Modified) remembered for exactly this URL, else (None, None)."""
    if state.get("url") != url:
        return None, None
    return state.get("etag") or None, state.get("last_modified") or None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; absent or unparseable -> None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def new_client(user_agent: str, timeout_seconds: float = 20.0) -> httpx.Client:
    """An ``httpx.Client`` suitable for the sources (the caller closes it)."""
    return httpx.Client(
        headers={"User-Agent": user_agent},
        timeout=timeout_seconds,
        follow_redirects=True,
    )


class PoliteHttp:
    """GET with a timeout, bounded retries with backoff and jitter, Retry-After, ETag/Last-Modified.

    ``settings`` gives the timeout, retry count, backoff base and the longest Retry-After accepted.
    ``interval`` is the minimum pause between requests to one host (floored for arxiv.org, see
    ``min_interval``). ``sleep`` and ``rng`` are injectable so tests can observe the waits. Bodies
    larger than ``max_bytes`` are refused.
    """

    def __init__(
        self,
        source: str,
        client: httpx.Client,
        settings: HttpSource,
        user_agent: str,
        *,
        interval: float = 0.0,
        pacer: HostPacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.source = source
        self._client = client
        self._settings = settings
        self._user_agent = user_agent
        self._interval = interval
        self._pacer = pacer or DEFAULT_PACER
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._max_bytes = max_bytes

    def url_for(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """The full URL a GET of ``url`` with ``params`` requests (the key for conditional state)."""
        try:
            return str(httpx.URL(url).copy_merge_params(dict(params or {})))
        except (httpx.InvalidURL, TypeError, ValueError) as err:
            raise SourceError(self.source, f"invalid URL {url!r}: {err}") from err

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
        """GET ``url``; returns a 2xx or 304 response, or raises SourceError with a one-line reason.

        ``etag`` / ``last_modified`` make the request conditional (a 304 comes back as
        ``not_modified``). Connection errors, timeouts, 429 and 5xx are retried up to
        ``settings.max_retries`` times; anything else fails at once. ``error_detail`` may turn the body
        of a failed response into a short explanation (e.g. the message in arXiv's error feed).
        """
        full_url = self.url_for(url, params)
        target = self._checked(httpx.URL(full_url), url)
        headers = {"User-Agent": self._user_agent}
        if accept:
            headers["Accept"] = accept
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        attempts = self._settings.max_retries + 1
        attempt = redirects = 0
        while True:
            outcome, wait = self._attempt(target, headers, attempt, error_detail)
            if isinstance(outcome, HttpResponse):
                # Conditional state is keyed on the URL asked for, not where a redirect led.
                return replace(outcome, url=full_url)
            if isinstance(outcome, httpx.URL):
                # Redirects are followed here rather than by httpx so that every hop is paced too.
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise SourceError(self.source, f"more than {_MAX_REDIRECTS} redirects from {_short(target)}")
                target = self._checked(outcome, str(outcome))
                continue
            attempt += 1
            if attempt >= attempts:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                raise SourceError(self.source, f"{outcome} (gave up after {tries})")
            self._sleep(wait)

    def _checked(self, target: httpx.URL, shown: str) -> httpx.URL:
        if target.scheme not in ("http", "https"):
            raise SourceError(self.source, f"invalid URL {shown!r}: only http, https and file URLs are supported")
        if not target.host:
            raise SourceError(self.source, f"invalid URL {shown!r}: no host")
        return target

    def _attempt(
        self,
        target: httpx.URL,
        headers: dict[str, str],
        attempt: int,
        error_detail: Callable[[bytes], str | None] | None,
    ) -> tuple[HttpResponse | httpx.URL | str, float]:
        """One paced request: a 2xx/304 response (body read), a redirect's target, or (reason, seconds
        to wait) for a retryable failure; anything else raises SourceError."""
        timeout = self._settings.timeout_seconds
        shown = _short(target)
        try:
            with self._pacer.slot(target.host, min_interval(target, self._interval)), self._client.stream(
                "GET", target, headers=headers, timeout=timeout, follow_redirects=False
            ) as response:
                content = self._read(response, shown)
        except httpx.TimeoutException:
            return f"timed out after {timeout:g} s: GET {shown}", self._backoff(attempt)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
            raise SourceError(self.source, f"invalid URL {shown}: {err}") from err
        except httpx.TransportError as err:
            return f"connection failed: GET {shown}: {_one_line(err)}", self._backoff(attempt)
        except httpx.HTTPError as err:
            raise SourceError(self.source, f"GET {shown} failed: {_one_line(err)}") from err

        status = response.status_code
        if 200 <= status < 300 or status == 304:
            return HttpResponse(str(target), status, content, response.headers), 0.0
        location = response.headers.get("location")
        if status in _REDIRECTS and location:
            return target.join(location), 0.0
        reason = " ".join(f"HTTP {status} {response.reason_phrase} from {shown}".split())
        detail = _describe(error_detail, content)
        if detail:
            reason = f"{reason}: {detail}"
        if status != 429 and status < 500:
            raise SourceError(self.source, reason)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        limit = self._settings.max_retry_after_seconds
        if retry_after is not None and retry_after > limit:
            raise SourceError(
                self.source,
                f"{reason}: server asks to retry after {retry_after:.0f} s, "
                f"more than max_retry_after_seconds = {limit:g}",
            )
        return reason, max(retry_after or 0.0, self._backoff(attempt))

    def _read(self, response: httpx.Response, shown: str) -> bytes:
        # Streamed with a cap: a misbehaving server must not be able to exhaust memory.
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise SourceError(self.source, f"response from {shown} is larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half the exponential delay is fixed, half random, so retries from several
        # clients spread out but never collapse to zero.
        base: float = min(self._settings.backoff_seconds * 2**attempt, _MAX_BACKOFF_SECONDS)
        return base / 2 + self._rng.uniform(0, base / 2)


def _describe(error_detail: Callable[[bytes], str | None] | None, content: bytes) -> str:
    if error_detail is None or not content:
        return ""
    try:
        return _one_line_text(error_detail(content) or "")
    except Exception:  # an explanation is a courtesy; never let it hide the HTTP error
        return ""


def _one_line_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _short(url: httpx.URL) -> str:
    text = str(url)
    return text if len(text) <= 160 else text[:157] + "..."


def _one_line(err: Exception) -> str:
    return _one_line_text(str(err)) or type(err).__name__


S = TypeVar("S", bound=HttpSource)


class HttpListingSource(Generic[S]):
    """What every HTTP source shares: its settings section, one polite client, errors under its name.

    Subclasses set ``default_name``, may override ``request_interval`` (seconds between requests to
    one host), and implement ``_fetch``; ``fetch`` turns any unexpected error into a SourceError.
    A ``file:`` URL replays recorded responses (see digest.sources.replay): ``replaying`` is then true
    and ``_http`` answers from the file chosen for the day being fetched.
    """

    default_name = "http"

    def __init__(
        self,
        settings: S,
        client: httpx.Client,
        user_agent: str,
        *,
        name: str | None = None,
        pacer: HostPacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name or self.default_name
        self.settings = settings
        self._now = now
        self._http: PoliteHttp | ReplayHttp = PoliteHttp(
            self.name, client, settings, user_agent, interval=self.request_interval(settings), pacer=pacer,
            sleep=sleep)
        self.replaying = settings.url[:5].lower() == "file:"

    @staticmethod
    def request_interval(settings: S) -> float:
        return 0.0

    def fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        """See digest.sources.base.Source: the papers listed, the state to keep, or SourceError."""
        with reported_as(self.name):
            if self.replaying:
                from digest.sources.replay import Replay, ReplayHttp

                self._http = ReplayHttp(self.name, Replay(self.name, self.settings.url).path_for(day))
            return self._fetch(day, state)

    def _fetch(self, day: date | None, state: Mapping[str, str]) -> FetchResult:
        raise NotImplementedError
