"""The ASGI app's routes: subscribe, confirm, preferences, unsubscribe (RFC 8058), archive and feeds."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import available_timezones

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.errors import DigestError, UsageError
from digest.links import Scope as LinkScope
from digest.models import Subscriber, SubscriberStatus
from digest.web.archive import Archive
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
MAX_FORM_BYTES = 64 * 1024
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


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


class WebApp:
    """The pages. One instance per app; request handlers are its methods."""

    def __init__(self, pipeline: Pipeline, ip_limit: Limit, address_limit: Limit) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.service = Subscriptions(pipeline, address_limit)
        self.archive = Archive(pipeline)
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
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_FORM_BYTES:
            raise HTTPException(413, "The form is too large.")
        return await request.form(max_files=0, max_fields=200)

    def check_csrf(self, request: Request, form: FormData) -> HTMLResponse | None:
        value = form.get(CSRF_FIELD)
        try:
            self.csrf.check(request, value if isinstance(value, str) else None)
        except CsrfError as err:
            log.warning("csrf check failed path=%s reason=%s", request.url.path, err)
            return self.problem(request, 403, "This form could not be accepted",
                                f"For your safety it was refused: {err}. Go back, reload the page and try again.")
        return None

    def subscribe_context(self, values: PreferenceForm | None = None, email: str = "",
                          error: str = "") -> dict[str, Any]:
        return {"topics": self.topics, "values": values or PreferenceForm(tz="UTC", send_at="08:00",
                                                                         frequency="daily"),
                "email": email, "error": error, "time_zones": self.time_zones, "weekdays": WEEKDAYS}

    def personal_paths(self, request: Request, email: str) -> dict[str, str]:
        """In-page links for a reader who proved their address (relative: they work behind any host)."""
        signer = self.service.signer
        return {
            "preferences_path": request.url_for("preferences", token=signer.sign(LinkScope.PREFERENCES, email)).path,
            "unsubscribe_path": request.url_for("unsubscribe", token=signer.sign(LinkScope.UNSUBSCRIBE, email)).path,
        }

    # ---- subscribe ------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self.page(request, "subscribe.html", self.subscribe_context(), form=True)

    async def subscribe_get(self, request: Request) -> Response:
        return RedirectResponse(request.url_for("home").path, status_code=303)

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
        token = request.path_params["token"]
        try:
            sub = await run_in_threadpool(self.service.subscriber_for, LinkScope.CONFIRM, token)
            if sub.status not in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED):
                self.service.confirm(sub)  # raises the 410 it deserves
        except LinkProblem as err:
            return self.link_problem(request, err)
        if sub.status is SubscriberStatus.CONFIRMED:
            return self.page(request, "confirmed.html",
                             {"email": sub.email, "already": True, **self.personal_paths(request, sub.email)},
                             private=True)
        return self.page(request, "confirm.html", {"email": sub.email}, form=True, private=True)

    async def confirm_post(self, request: Request) -> Response:
        form = await self.read_form(request)
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        token = request.path_params["token"]
        try:
            sub = await run_in_threadpool(self.service.subscriber_for, LinkScope.CONFIRM, token)
            already = sub.status is SubscriberStatus.CONFIRMED
            sub = await run_in_threadpool(self.service.confirm, sub)
        except LinkProblem as err:
            return self.link_problem(request, err)
        return self.page(request, "confirmed.html",
                         {"email": sub.email, "already": already, **self.personal_paths(request, sub.email)},
                         private=True)

    # ---- preferences ----------------------------------------------------------------------------

    def preferences_page(self, request: Request, sub: Subscriber, values: PreferenceForm | None = None,
                         error: str = "", status: int = 200, saved: bool = False) -> HTMLResponse:
        return self.page(request, "preferences.html", {
            "sub": sub, "values": values or PreferenceForm.of(sub), "error": error, "saved": saved,
            "topics": self.topics, "time_zones": self.time_zones, "weekdays": WEEKDAYS,
            **self.personal_paths(request, sub.email),
        }, status=status, form=True, private=True)

    async def preferences_get(self, request: Request) -> Response:
        try:
            sub = await run_in_threadpool(self.service.subscriber_for, LinkScope.PREFERENCES,
                                          request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        return self.preferences_page(request, sub, saved=request.query_params.get("saved") == "1")

    async def preferences_post(self, request: Request) -> Response:
        form = await self.read_form(request)
        refused = self.check_csrf(request, form)
        if refused is not None:
            return refused
        try:
            sub = await run_in_threadpool(self.service.subscriber_for, LinkScope.PREFERENCES,
                                          request.path_params["token"])
        except LinkProblem as err:
            return self.link_problem(request, err)
        if form.get("action") == "resubscribe":
            await run_in_threadpool(self.service.resubscribe, sub)
        else:
            values: PreferenceForm | None = None
            try:
                values = PreferenceForm.from_form(form, [t for t in form.getlist("topics") if isinstance(t, str)])
                await run_in_threadpool(self.service.save_preferences, sub, values)
            except UsageError as err:
                return self.preferences_page(request, sub, values, str(err), status=400)
        # Post/redirect/get: a reload does not send the form again.
        return RedirectResponse(f"{request.url.path}?saved=1", status_code=303, headers=PRIVATE_HEADERS)

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
        can_resubscribe = sub is not None and sub.status is SubscriberStatus.UNSUBSCRIBED
        return self.page(request, template, {
            "email": email, "already": already, "can_resubscribe": can_resubscribe,
            "mailto": self.service.links.mailto, **self.personal_paths(request, email),
        }, form=can_resubscribe, private=True)

    async def unsubscribe_help(self, request: Request) -> Response:
        return self.page(request, "help.html", {"topic": "unsubscribe", "mailto": self.service.links.mailto})

    async def preferences_help(self, request: Request) -> Response:
        return self.page(request, "help.html", {"topic": "preferences", "mailto": self.service.links.mailto})

    # ---- archive --------------------------------------------------------------------------------

    async def archive_index(self, request: Request) -> Response:
        days = await run_in_threadpool(self.archive.days)
        feeds = [(label, request.url_for("feed_topic", topic=name).path) for name, label in self.topics]
        return self.page(request, "archive.html", {"days": days, "feeds": feeds})

    async def archive_issue(self, request: Request) -> Response:
        html = await run_in_threadpool(self.archive.issue_html, request.path_params["issue_id"])
        if html is None:
            return self.problem(request, 404, "No such issue",
                                "There is no sent issue with this number. See the archive for the ones there are.")
        return HTMLResponse(html, headers=ARCHIVE_HEADERS)

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
        titles = {404: "Page not found", 405: "Method not allowed", 413: "Too large", 400: "Bad request"}
        messages = {404: "There is nothing at this address.", 405: "This page does not accept that request."}
        status = exc.status_code
        return self.problem(request, status, titles.get(status, "Request refused"),
                            messages.get(status, str(exc.detail)), headers=dict(exc.headers or {}))

    async def digest_error(self, request: Request, exc: Exception) -> Response:
        log.error("request failed path=%s reason=%s", request.url.path, exc)
        return self.problem(request, 503, "Temporarily unavailable",
                            "Something went wrong on our side. Nothing was changed; please try again later.")


def create_app(pipeline: Pipeline, *, ip_limit: Limit = IP_LIMIT, address_limit: Limit = ADDRESS_LIMIT,
               debug: bool = False) -> Starlette:
    """The web app over ``pipeline`` (its settings, store, link signer, mailer and renderer).

    ``ip_limit`` bounds subscribe requests per client IP, ``address_limit`` the confirmation emails
    per address; both are counted in this process's memory.
    """
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
        Route("/unsubscribe", web.unsubscribe_help, methods=["GET"], name="unsubscribe_help"),
        Route("/unsubscribe/{token}", web.unsubscribe_get, methods=["GET"], name="unsubscribe"),
        Route("/unsubscribe/{token}", web.unsubscribe_post, methods=["POST"]),
        Route("/archive", web.archive_index, methods=["GET"], name="archive_index"),
        Route("/archive/feed.atom", web.feed_all, methods=["GET"], name="feed_all"),
        Route("/archive/feed/{topic}.atom", web.feed_topic, methods=["GET"], name="feed_topic"),
        Route("/archive/{issue_id:int}", web.archive_issue, methods=["GET"], name="archive_issue"),
        Route("/healthz", web.health, methods=["GET"], name="health"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(debug=debug, routes=routes, exception_handlers={
        HTTPException: web.http_error,
        DigestError: web.digest_error,
    })
    app.add_middleware(SecurityHeaders)
    app.state.web = web
    return app
