"""The ASGI app's routes: subscribe, confirm, preferences, unsubscribe (RFC 8058), archive and feeds."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from digest.errors import DigestError, UsageError
from digest.feedback import ImportResult
from digest.links import Scope as LinkScope
from digest.links import TokenError
from digest.models import Subscriber, SubscriberStatus
from digest.redact import redact
from digest.web.archive import MAX_ISSUE_ID, Archive
from digest.web.feedback import MAX_UPLOAD_BYTES, FeedbackService
from digest.web.middleware import BodyLimit, ErrorPages, SecurityHeaders
from digest.web.security import (
    ARCHIVE_HEADERS,
    CSRF_FIELD,
    PAGE_HEADERS,
    PRIVATE_HEADERS,
    Csrf,
    CsrfError,
    Limit,
    SlidingWindowLimiter,
)
from digest.web.service import ADDRESS_LIMIT, LinkProblem, PreferenceForm, Subscriptions
from digest.web.templating import STATIC_DIR, html_env

if TYPE_CHECKING:
    from digest.pipeline import Pipeline

log = logging.getLogger("digest.web")

# Subscribe requests one client IP may make (per process; see SlidingWindowLimiter).
IP_LIMIT = Limit(count=10, seconds=600)
# The largest request body read at all (a form is a few KB); see middleware.BodyLimit.
MAX_FORM_BYTES = 64 * 1024
# How long a request waits for another process's SQLite write lock before answering 503 (a send
# holds it only for short transactions; a reader should not wait 30 s for a page).
DB_WAIT_SECONDS = 3.0
# Hosts always accepted besides [site] base_url's (a local check, a proxy passing its upstream's name).
LOCAL_HOSTS = ("localhost", "127.0.0.1")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class WebApp:
    """The pages. One instance per app; request handlers are its methods."""

    def __init__(self, pipeline: Pipeline, ip_limit: Limit, address_limit: Limit) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.service = Subscriptions(pipeline, address_limit)
        self.archive = Archive(pipeline)
        self.feedback = FeedbackService(pipeline)
        self.csrf = Csrf(pipeline.signing_key.current, pipeline.settings.site.base_url)
        self.ip_limiter = SlidingWindowLimiter(ip_limit)
        self.env = html_env()

    @cached_property
    def time_zones(self) -> list[str]:
        return sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))

    @property
    def topics(self) -> list[tuple[str, str]]:
        return list(self.pipeline.labels.items())

    # ---- rendering ------------------------------------------------------------------------------

    def page(self, request: Request, template: str, context: dict[str, Any] | None = None, *,
             status: int = 200, form: bool = False, private: bool = False,
             background: BackgroundTask | None = None, headers: dict[str, str] | None = None) -> HTMLResponse:
        """Render a page; ``form`` adds a CSRF token (and its cookie), ``private`` forbids caching."""
        ctx: dict[str, Any] = {
            "site_title": self.settings.site.title,
            "postal": self.settings.site.postal_address,
            "css_url": request.url_for("static", path="site.css").path,
            "tz_js_url": request.url_for("static", path="tz.js").path,
            "home_url": request.url_for("home").path,
            "subscribe_url": request.url_for("subscribe").path,
            "archive_url": request.url_for("archive_index").path,
            "feed_url": request.url_for("feed_all").path,
            "private": private,
            "csrf_field": CSRF_FIELD,
            "csrf_token": "",
            **(context or {}),
        }
        cookie = None
        if form:
            ctx["csrf_token"], cookie = self.csrf.token_for(request)
        html = self.env.get_template(template).render(ctx)
        all_headers = {**(PRIVATE_HEADERS if private else {}), **(headers or {})}
        response = HTMLResponse(html, status_code=status, headers=all_headers, background=background)
        self.csrf.set_cookie(response, cookie, request)
        return response

    def problem(self, request: Request, status: int, title: str, message: str, *,
                headers: dict[str, str] | None = None) -> HTMLResponse:
        return self.page(request, "error.html", {"status": status, "title": title, "message": message},
                         status=status, private=True, headers=headers)

    def link_problem(self, request: Request, err: LinkProblem) -> HTMLResponse:
        return self.problem(request, err.status, err.title, err.message)

    async def read_form(self, request: Request) -> FormData:
        # The body is already whole and at most MAX_FORM_BYTES (BodyLimit, around the app).
        return await request.form(max_files=0, max_fields=200)

    def absolute(self, path: str) -> str:
        """An absolute URL on this site, from [site] base_url only (never the request's Host)."""
        return self.pipeline.links.base_url + path

    def check_csrf(self, request: Request, form: FormData) -> HTMLResponse | None:
        value = form.get(CSRF_FIELD)
        try:
            self.csrf.check(request, value if isinstance(value, str) else None)
        except CsrfError as err:
            log.warning("csrf check failed path=%s reason=%s", redact(request.url.path), err)
            return self.problem(request, 403, "This form could not be accepted",
                                f"For your safety it was refused: {err}. Go back, reload the page and try again.")
        return None

    def subscribe_context(self, values: PreferenceForm | None = None, email: str = "",
                          error: str = "") -> dict[str, Any]:
        return {"topics": self.topics, "values": values or PreferenceForm(tz="UTC", send_at="08:00",
                                                                         frequency="daily"),
                "email": email, "error": error, "time_zones": self.time_zones, "weekdays": WEEKDAYS}

    # ---- subscribe ------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self.page(request, "subscribe.html", self.subscribe_context(), form=True)

    async def subscribe_get(self, request: Request) -> Response:
        return RedirectResponse(self.absolute("/"), status_code=303)

    async def subscribe(self, request: Request) -> Response:
        form = await self.read_form(request)
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        client = request.client.host if request.client else "unknown"
        wait = self.ip_limiter.hit(client)
        if wait is not None:
            log.warning("subscribe rate limit reached client=%s", client)
            return self.problem(request, 429, "Too many requests",
                                "Please wait a few minutes before trying again.",
                                headers={"Retry-After": str(int(wait) + 1)})
        address = form.get("email")
        address = address.strip()[:320] if isinstance(address, str) else ""
        values: PreferenceForm | None = None
        try:
            values = PreferenceForm.from_form(form, [t for t in form.getlist("topics") if isinstance(t, str)])
            message = await run_in_threadpool(self.service.request_subscription, address, values)
        except UsageError as err:
            return self.page(request, "subscribe.html", self.subscribe_context(values, address, str(err)),
                             status=400, form=True)
        # Sent after the answer, so the answer (and how long it takes) is the same for every address.
        task = BackgroundTask(self.service.send, message) if message is not None else None
        return self.page(request, "subscribe_sent.html", {"email": address}, private=True, background=task)

    # ---- confirm --------------------------------------------------------------------------------

    async def confirm_get(self, request: Request) -> Response:
        """Never confirms (mail scanners follow links): shows the button that POSTs."""
        try:
            wanted, sub = await run_in_threadpool(self.service.confirmation_for, request.path_params["token"])
            self.service.check_confirmable(wanted, sub)
        except LinkProblem as err:
            return self.link_problem(request, err)
        if sub.status is SubscriberStatus.CONFIRMED:
            return self.page(request, "confirmed.html", {"email": sub.email, "already": True}, private=True)
        return self.page(request, "confirm.html", {"email": sub.email}, form=True, private=True)

    async def confirm_post(self, request: Request) -> Response:
        form = await self.read_form(request)
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        try:
            wanted, sub = await run_in_threadpool(self.service.confirmation_for, request.path_params["token"])
            already = sub.status is SubscriberStatus.CONFIRMED
            sub = await run_in_threadpool(self.service.confirm, wanted, sub)
        except LinkProblem as err:
            return self.link_problem(request, err)
        # No preferences or unsubscribe link here: a confirm token confirms, nothing else (every issue
        # carries the reader's own links).
        return self.page(request, "confirmed.html", {"email": sub.email, "already": already}, private=True)

    # ---- preferences ----------------------------------------------------------------------------

    def preferences_page(self, request: Request, sub: Subscriber, values: PreferenceForm | None = None,
                         error: str = "", status: int = 200, saved: bool = False,
                         imported: ImportResult | None = None) -> HTMLResponse:
        return self.page(request, "preferences.html", {
            "sub": sub, "values": values or PreferenceForm.of(sub), "error": error, "saved": saved,
            "topics": self.topics, "time_zones": self.time_zones, "weekdays": WEEKDAYS, "imported": imported,
            # Explicit form targets: the page is also shown at .../library, after an upload.
            "prefs_url": f"/preferences/{request.path_params['token']}",
            "upload_mb": MAX_UPLOAD_BYTES // (1024 * 1024),
        }, status=status, form=True, private=True)

    async def preferences_get(self, request: Request) -> Response:
        try:
            sub = await run_in_threadpool(self.service.subscriber_for, LinkScope.PREFERENCES,
                                          request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        return self.preferences_page(request, sub, saved=request.query_params.get("saved") == "1")

    async def preferences_owner(self, request: Request, form: FormData) -> Subscriber | Response:
        """The reader a preferences form was posted for, or the page refusing it (CSRF, bad link)."""
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        try:
            sub: Subscriber = await run_in_threadpool(self.service.subscriber_for, LinkScope.PREFERENCES,
                                                      request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        return sub

    async def preferences_post(self, request: Request) -> Response:
        form = await self.read_form(request)
        sub = await self.preferences_owner(request, form)
        if isinstance(sub, Response):
            return sub
        action = form.get("action")
        if action == "resubscribe":
            # Coming back goes through a new confirmation email, like any subscription.
            message = await run_in_threadpool(self.service.request_return, sub)
            task = BackgroundTask(self.service.send, message) if message is not None else None
            return self.page(request, "subscribe_sent.html", {"email": sub.email}, private=True, background=task)
        if action == "unsubscribe":
            await run_in_threadpool(self.service.leave, sub)
        else:
            values: PreferenceForm | None = None
            try:
                values = PreferenceForm.from_form(form, [t for t in form.getlist("topics") if isinstance(t, str)])
                await run_in_threadpool(self.service.save_preferences, sub, values)
            except UsageError as err:
                return self.preferences_page(request, sub, values, str(err), status=400)
        # Post/redirect/get: a reload does not send the form again.
        return RedirectResponse(self.absolute(f"{request.url.path}?saved=1"), status_code=303,
                                headers=PRIVATE_HEADERS)

    async def library_post(self, request: Request) -> Response:
        """A library file (BibTeX, RIS, arXiv ids) from the preferences page: each paper found counts
        as "more like this"."""
        async with request.form(max_files=1, max_fields=20, max_part_size=MAX_UPLOAD_BYTES) as form:
            sub = await self.preferences_owner(request, form)
            if isinstance(sub, Response):
                return sub
            upload = form.get("library")
            if upload is None or isinstance(upload, str):
                return self.preferences_page(request, sub, error="Choose a file to import.", status=400)
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
            try:
                result = await run_in_threadpool(self.feedback.import_upload, sub, data, upload.filename or "")
            except UsageError as err:
                return self.preferences_page(request, sub, error=str(err), status=400)
        return self.preferences_page(request, sub, imported=result)

    # ---- feedback -------------------------------------------------------------------------------

    async def feedback_get(self, request: Request) -> Response:
        """Never records (mail scanners follow links): shows the button that POSTs."""
        try:
            target = await run_in_threadpool(self.feedback.target, request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        return self.page(request, "feedback.html", {"target": target, "state": "ask"}, form=True, private=True)

    async def feedback_post(self, request: Request) -> Response:
        """Records the link's verdict (idempotent: the same verdict again changes nothing), or with
        ``action=undo`` forgets the reader's verdict on the paper."""
        form = await self.read_form(request)
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        try:
            target = await run_in_threadpool(self.feedback.target, request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        if form.get("action") == "undo":
            await run_in_threadpool(self.feedback.undo, target)
            state = "undone"
        else:
            await run_in_threadpool(self.feedback.record, target)
            state = "recorded"
        return self.page(request, "feedback.html", {"target": target, "state": state}, form=True, private=True)

    # ---- unsubscribe ----------------------------------------------------------------------------

    async def unsubscribe_get(self, request: Request) -> Response:
        """Never unsubscribes: mail scanners follow links. Shows the button that POSTs."""
        token = request.path_params["token"]
        try:
            email = self.service.email_for(LinkScope.UNSUBSCRIBE, token)
        except LinkProblem as err:
            return self.link_problem(request, err)
        sub = await run_in_threadpool(self.service.store.get_subscriber, email)
        active = sub is not None and sub.status in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED)
        template = "unsubscribe.html" if active else "unsubscribed.html"
        return self.unsubscribe_page(request, template, email, sub, already=True)

    async def unsubscribe_post(self, request: Request) -> Response:
        """RFC 8058 one-click: unsubscribes at once, idempotently, without cookie or CSRF token (the
        signed token in the URL is the authority; mail providers POST from their own servers)."""
        token = request.path_params["token"]
        try:
            email = await run_in_threadpool(self.service.unsubscribe, token)
        except LinkProblem as err:
            return self.link_problem(request, err)
        sub = await run_in_threadpool(self.service.store.get_subscriber, email)
        return self.unsubscribe_page(request, "unsubscribed.html", email, sub, already=False)

    def unsubscribe_page(self, request: Request, template: str, email: str, sub: Subscriber | None,
                         already: bool) -> HTMLResponse:
        """An unsubscribe token does nothing but unsubscribe: no preferences link, no way back in but
        the subscribe form (and so a new confirmation email)."""
        can_resubscribe = sub is None or sub.status is SubscriberStatus.UNSUBSCRIBED
        return self.page(request, template, {
            "email": email, "already": already, "can_resubscribe": can_resubscribe,
            "mailto": self.service.links.mailto,
        }, private=True)

    async def unsubscribe_help(self, request: Request) -> Response:
        return self.page(request, "help.html", {"topic": "unsubscribe", "mailto": self.service.links.mailto})

    async def preferences_help(self, request: Request) -> Response:
        return self.page(request, "help.html", {"topic": "preferences", "mailto": self.service.links.mailto})

    # ---- archive --------------------------------------------------------------------------------

    async def archive_index(self, request: Request) -> Response:
        days = await run_in_threadpool(self.archive.days, self.pipeline.clock())
        feeds = [(label, request.url_for("feed_topic", topic=name).path) for name, label in self.topics]
        return self.page(request, "archive.html", {"days": days, "feeds": feeds})

    async def archive_entry(self, request: Request) -> Response:
        """``/archive/YYYY-MM-DD``: that day's public edition. ``/archive/N`` (the numbered links of
        older mail) leads to the edition of issue N's day, never to anyone's issue."""
        key: str = request.path_params["key"]
        if _DAY.fullmatch(key):
            try:
                day = date.fromisoformat(key)
            except ValueError:
                day = None
            edition = await run_in_threadpool(self.archive.edition, day) if day is not None else None
            if edition is not None:
                return self.page(request, "edition.html", {"edition": edition})
        elif key.isascii() and key.isdigit() and len(key) <= len(str(MAX_ISSUE_ID)):
            sent = await run_in_threadpool(self.archive.sent_issue_date, int(key))
            if sent is not None:
                return RedirectResponse(self.absolute(f"/archive/{sent.isoformat()}"), status_code=301)
        return self.problem(request, 404, "Nothing here",
                            "There is no edition at this address. See the archive for the ones there are.")

    async def reader_issue(self, request: Request) -> Response:
        """A reader's own issue, as their email showed it, through the signed link in that email."""
        token = request.path_params["token"]
        try:
            issue_id = self.service.signer.verify(LinkScope.ISSUE, token)
        except TokenError as err:
            return self.problem(request, 400, "This link is not valid",
                                "The link is incomplete or was not made by this site. Copy the whole link "
                                "from the email.") if not err.expired else self.problem(
                                    request, 410, "This link has expired", "See the public archive.")
        html = None
        if issue_id.isascii() and issue_id.isdigit() and len(issue_id) <= len(str(MAX_ISSUE_ID)):
            html = await run_in_threadpool(self.archive.reader_issue_html, int(issue_id),
                                           self.absolute(request.url.path))
        if html is None:
            return self.problem(request, 404, "No such issue", "This issue is no longer here.")
        return HTMLResponse(html, headers={**ARCHIVE_HEADERS, **PRIVATE_HEADERS})

    async def feed_all(self, request: Request) -> Response:
        return await self._feed(request, None)

    async def feed_topic(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        if topic not in self.pipeline.labels:
            return self.problem(request, 404, "No such topic", "There is no feed for this topic.")
        return await self._feed(request, topic)

    async def _feed(self, request: Request, topic: str | None) -> Response:
        now: datetime = self.pipeline.clock()
        feed = await run_in_threadpool(self.archive.feed, topic, now)
        xml = self.env.get_template("feed.atom").render(feed=feed)
        return Response(xml, media_type="application/atom+xml; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=900"})

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    # ---- errors ---------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        path = request.url.path
        if status == 404 and request.method in ("GET", "HEAD") and len(path) > 1 and path.endswith("/"):
            # Starlette's own slash redirect would build the URL from the Host header.
            return RedirectResponse(self.absolute(path.rstrip("/") or "/"), status_code=308)
        titles = {404: "Page not found", 405: "Method not allowed", 413: "Too large", 400: "Bad request"}
        messages = {404: "There is nothing at this address.", 405: "This page does not accept that request."}
        return self.problem(request, status, titles.get(status, "Request refused"),
                            messages.get(status, str(exc.detail)), headers=dict(exc.headers or {}))

    async def error_page(self, status: int, request: Request) -> Response:
        """The page for a request refused or failed outside the routes (too large, unexpected error)."""
        if status == 413:
            return self.problem(request, 413, "Too large", "The form is too large.", headers=PAGE_HEADERS)
        return self.problem(request, status, "Something went wrong",
                            "Something went wrong on our side. Please try again later.", headers=PAGE_HEADERS)

    async def digest_error(self, request: Request, exc: Exception) -> Response:
        log.error("request failed path=%s reason=%s", redact(request.url.path), exc)
        return self.problem(request, 503, "Temporarily unavailable",
                            "Something went wrong on our side. Nothing was changed; please try again later.",
                            headers={"Retry-After": "30"})

    async def database_error(self, request: Request, exc: Exception) -> Response:
        # Typically "database is locked": another process held SQLite's write lock past DB_WAIT_SECONDS.
        # Every change is one transaction, so a failed one changed nothing.
        log.error("request failed path=%s reason=database: %s", redact(request.url.path),
                  str(getattr(exc, "orig", None) or exc).splitlines()[0])
        return self.problem(request, 503, "Busy, please try again",
                            "The site is busy right now and nothing was changed. Please try again in a minute.",
                            headers={"Retry-After": "30"})


def _upload_limit(scope: Any) -> int | None:
    """The library upload (a POST to /preferences/<token>/library) may carry a file: a larger body."""
    path = scope.get("path", "")
    if scope.get("method") == "POST" and path.startswith("/preferences/") and path.endswith("/library"):
        return MAX_UPLOAD_BYTES + 64 * 1024  # the file and the form around it
    return None


def create_app(pipeline: Pipeline, *, ip_limit: Limit = IP_LIMIT, address_limit: Limit = ADDRESS_LIMIT,
               debug: bool = False) -> Starlette:
    """The web app over ``pipeline`` (its settings, store, link signer, mailer and renderer).

    ``ip_limit`` bounds subscribe requests per client IP, ``address_limit`` the confirmation emails
    per address; both are counted in this process's memory. Requests must name [site] base_url's host
    or a local one (``LOCAL_HOSTS``); absolute URLs (redirects, links) are built from base_url alone.
    """
    pipeline.store.set_busy_timeout(DB_WAIT_SECONDS)
    web = WebApp(pipeline, ip_limit, address_limit)
    routes = [
        Route("/", web.home, methods=["GET"], name="home"),
        Route("/subscribe", web.subscribe, methods=["POST"], name="subscribe"),
        Route("/subscribe", web.subscribe_get, methods=["GET"]),
        Route("/confirm/{token}", web.confirm_get, methods=["GET"], name="confirm"),
        Route("/confirm/{token}", web.confirm_post, methods=["POST"]),
        Route("/preferences", web.preferences_help, methods=["GET"], name="preferences_help"),
        Route("/preferences/{token}", web.preferences_get, methods=["GET"], name="preferences"),
        Route("/preferences/{token}", web.preferences_post, methods=["POST"]),
        Route("/preferences/{token}/library", web.library_post, methods=["POST"], name="library"),
        Route("/feedback/{token}", web.feedback_get, methods=["GET"], name="feedback"),
        Route("/feedback/{token}", web.feedback_post, methods=["POST"]),
        Route("/unsubscribe", web.unsubscribe_help, methods=["GET"], name="unsubscribe_help"),
        Route("/unsubscribe/{token}", web.unsubscribe_get, methods=["GET"], name="unsubscribe"),
        Route("/unsubscribe/{token}", web.unsubscribe_post, methods=["POST"]),
        Route("/issue/{token}", web.reader_issue, methods=["GET"], name="reader_issue"),
        Route("/archive", web.archive_index, methods=["GET"], name="archive_index"),
        Route("/archive/feed.atom", web.feed_all, methods=["GET"], name="feed_all"),
        Route("/archive/feed/{topic}.atom", web.feed_topic, methods=["GET"], name="feed_topic"),
        Route("/archive/{key}", web.archive_entry, methods=["GET"], name="archive_entry"),
        Route("/healthz", web.health, methods=["GET"], name="health"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(debug=debug, routes=routes, exception_handlers={
        HTTPException: web.http_error,
        DigestError: web.digest_error,
        SQLAlchemyError: web.database_error,
    })
    app.router.redirect_slashes = False
    host = urlsplit(pipeline.links.base_url).hostname
    # The last added is the outermost: headers on every answer, then errors, hosts, body size.
    app.add_middleware(BodyLimit, max_bytes=MAX_FORM_BYTES, refuse=web.error_page, larger=_upload_limit)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[h for h in (host, *LOCAL_HOSTS) if h],
                       www_redirect=False)
    app.add_middleware(ErrorPages, page=web.error_page)
    app.add_middleware(SecurityHeaders)
    app.state.web = web
    return app
