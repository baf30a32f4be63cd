"""The web app through Starlette's TestClient: every route, tokens, CSRF, rate limits, enumeration, escaping."""

from __future__ import annotations

import email
import email.policy
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import feedparser
import pytest
import time_machine
from starlette.applications import Starlette
from starlette.testclient import TestClient

from digest.email_view import clean_text
from digest.links import Scope, Signer, TokenError
from digest.mail import MemoryMailer
from digest.models import Frequency, Paper, Subscriber, SubscriberStatus
from digest.pipeline import Pipeline
from digest.store import Store
from digest.web import create_app, unsubscribe_by_token
from digest.web.security import Limit
from tests.conftest import NOW, make_settings

BASE_URL = "https://digest.example.org"
SECRET_ENV = "DIGEST_TEST_WEB_SECRET"
ORIGIN = {"origin": BASE_URL, "sec-fetch-site": "same-origin"}  # what a browser's form POST sends


@dataclass
class Web:
    pipeline: Pipeline
    store: Store
    mailer: MemoryMailer
    app: Starlette
    client: TestClient

    @property
    def signer(self) -> Signer:
        return self.pipeline.links.signer

    def token(self, scope: Scope, address: str) -> str:
        return self.signer.sign(scope, address)

    def csrf(self, path: str = "/") -> str:
        """The CSRF token of the form on ``path`` (the GET also sets the matching cookie)."""
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, f"no CSRF field on {path}"
        return match.group(1)

    def subscribe(self, address: str, topics: tuple[str, ...] = ("pruning",), **fields: str) -> object:
        data = {"email": address, "topics": list(topics), "csrf_token": self.csrf("/"), **fields}
        return self.client.post("/subscribe", data=data, headers=ORIGIN)

    def add(self, address: str, status: SubscriberStatus = SubscriberStatus.CONFIRMED, **kw: object) -> Subscriber:
        return self.store.add_subscriber(Subscriber(email=address, status=status, **kw))  # type: ignore[arg-type]

    def status(self, address: str) -> SubscriberStatus | None:
        sub = self.store.get_subscriber(address)
        return sub.status if sub else None

    def mails(self) -> list[EmailMessage]:
        return [email.message_from_bytes(m.data, policy=email.policy.default)  # type: ignore[misc]
                for m in self.mailer.outbox]


def make_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **limits: Limit) -> Web:
    monkeypatch.setenv(SECRET_ENV, "test-secret-for-the-web-suite")
    settings = make_settings(tmp_path, site={"base_url": BASE_URL, "secret_env": SECRET_ENV,
                                              "sender": "Paper Digest <digest@example.org>"})
    store = Store(settings.database.url)
    mailer = MemoryMailer()
    pipeline = Pipeline(settings, store, mailer=mailer, clock=lambda: NOW)
    app = create_app(pipeline, **limits)
    return Web(pipeline, store, mailer, app, TestClient(app, base_url=BASE_URL, follow_redirects=False))


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    w = make_web(tmp_path, monkeypatch)
    yield w
    w.client.close()
    w.store.close()


def _link(message: EmailMessage, path: str) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(re.escape(BASE_URL) + re.escape(path) + r"[A-Za-z0-9_.\-]+", body.get_content())
    assert match, f"no {path} link in the email"
    return match.group(0)


# ---- subscribe ----------------------------------------------------------------------------------


def test_home_is_the_subscribe_form(web: Web) -> None:
    page = web.client.get("/")
    assert page.status_code == 200
    assert 'action="/subscribe"' in page.text and 'method="post"' in page.text
    assert 'name="email"' in page.text
    for name in web.pipeline.labels:
        assert f'name="topics" value="{name}"' in page.text
    assert "digest_csrf=" in page.headers["set-cookie"] and "HttpOnly" in page.headers["set-cookie"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script" not in page.text.replace('<script src="/static/tz.js" defer></script>', "")


def test_subscribe_stores_pending_and_sends_one_confirmation(web: Web) -> None:
    answer = web.subscribe("New.Reader@Example.org", topics=("pruning", "diffusion"), keywords="sparse, moe",
                           frequency="weekly", weekday="2", send_at="07:30", tz="Europe/Paris")
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    sub = web.store.get_subscriber("new.reader@example.org")
    assert sub is not None and sub.status is SubscriberStatus.PENDING
    assert sub.topics == ("pruning", "diffusion") and sub.keywords == ("sparse", "moe")
    assert (sub.frequency, sub.weekday, sub.send_at.strftime("%H:%M"), sub.tz) == (Frequency.WEEKLY, 2, "07:30",
                                                                                  "Europe/Paris")
    [mail] = web.mails()
    assert mail["To"] == "new.reader@example.org"
    assert mail.get_content_type() == "multipart/alternative"
    assert "List-Unsubscribe" not in mail  # nothing to unsubscribe from before confirming
    link = _link(mail, "/confirm/")
    assert web.signer.verify(Scope.CONFIRM, link.rsplit("/", 1)[1]) == "new.reader@example.org"
    html = mail.get_body(("html",))
    assert html is not None and link in html.get_content()


def test_plain_post_without_browser_headers_works_as_the_spec_says(web: Web) -> None:
    answer = web.client.post("/subscribe", data={"email": "script@example.org", "topics": ["pruning", "nas"]})
    assert answer.status_code == 200
    assert web.status("script@example.org") is SubscriberStatus.PENDING
    assert len(web.mailer.outbox) == 1


def test_get_subscribe_redirects_to_the_form(web: Web) -> None:
    answer = web.client.get("/subscribe")
    assert answer.status_code == 303 and answer.headers["location"] == f"{BASE_URL}/"


@pytest.mark.parametrize(("fields", "message"), [
    ({"email": "not-an-address"}, "invalid email address"),
    ({"email": "ok@example.org", "topics": ["no-such-topic"]}, "unknown topic"),
    ({"email": "ok@example.org", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"email": "ok@example.org", "send_at": "25:99"}, "invalid time"),
    ({"email": "ok@example.org", "keywords": "x" * 1001}, "too long"),
])
def test_invalid_input_is_refused_with_the_form_again(web: Web, fields: dict[str, object], message: str) -> None:
    data = {"topics": ["pruning"], **fields, "csrf_token": web.csrf("/")}
    answer = web.client.post("/subscribe", data=data, headers=ORIGIN)
    assert answer.status_code == 400
    assert message in answer.text
    assert 'name="email"' in answer.text  # the form, to correct and resend
    assert web.store.count_subscribers() == {}
    assert web.mailer.outbox == []


def _answer_without_address(text: str, address: str) -> str:
    return text.replace(address, "ADDRESS")


def test_same_answer_whatever_the_state_of_the_address(web: Web) -> None:
    """No enumeration: new, pending, confirmed, unsubscribed and suppressed addresses look the same."""
    states = {"new": None, "pending": SubscriberStatus.PENDING, "confirmed": SubscriberStatus.CONFIRMED,
              "unsubscribed": SubscriberStatus.UNSUBSCRIBED, "suppressed": SubscriberStatus.SUPPRESSED}
    answers = {}
    for name, status in states.items():
        address = f"{name}@example.org"
        if status is not None:
            web.add(address, status, topics=("nas",))
        reply = web.subscribe(address, topics=("pruning",))
        answers[name] = (reply.status_code, _answer_without_address(reply.text, address),
                         sorted(k for k in reply.headers if k != "content-length"))
    assert len(set(map(repr, answers.values()))) == 1, answers
    assert answers["new"][0] == 200

    sent = {str(m["To"]): m for m in web.mails()}
    assert set(sent) == {"new@example.org", "pending@example.org", "confirmed@example.org",
                         "unsubscribed@example.org"}  # nothing to an address that bounced
    for address in ("new@example.org", "pending@example.org", "unsubscribed@example.org"):
        assert "/confirm/" in sent[address].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # An anonymous form changes nothing stored about an address already known (issue 16, item 5).
    assert web.status("new@example.org") is SubscriberStatus.PENDING
    assert web.status("pending@example.org") is SubscriberStatus.PENDING
    assert web.status("unsubscribed@example.org") is SubscriberStatus.UNSUBSCRIBED
    # A confirmed reader is told how to manage their subscription; an anonymous form changes nothing.
    notice = sent["confirmed@example.org"].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "already" in notice and "/preferences/" in notice and "/confirm/" not in notice
    confirmed = web.store.get_subscriber("confirmed@example.org")
    assert confirmed is not None and confirmed.topics == ("nas",) and confirmed.status is SubscriberStatus.CONFIRMED
    assert web.status("suppressed@example.org") is SubscriberStatus.SUPPRESSED


def test_rate_limit_per_client_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web = make_web(tmp_path, monkeypatch, ip_limit=Limit(3, 600))
    codes = [web.subscribe(f"r{i}@example.org").status_code for i in range(3)]
    refused = web.subscribe("r3@example.org")
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 601
    assert "r3@example.org" not in refused.text
    assert web.store.get_subscriber("r3@example.org") is None
    assert len(web.mailer.outbox) == 3


def test_rate_limit_per_address_sends_no_more_mail_but_answers_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = make_web(tmp_path, monkeypatch, address_limit=Limit(2, 3600))
    answers = [web.subscribe("target@example.org") for _ in range(5)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert len(web.mailer.outbox) == 2
    web.subscribe("other@example.org")
    assert len(web.mailer.outbox) == 3  # the limit is per address


# ---- CSRF -----------------------------------------------------------------------------------------


def test_csrf_refuses_browser_posts_without_a_valid_token(web: Web) -> None:
    good = web.csrf("/")
    cases = {
        "missing": ({"email": "x1@example.org", "topics": ["nas"]}, ORIGIN),
        "forged": ({"email": "x2@example.org", "csrf_token": good[:-3] + "abc"}, ORIGIN),
        "cross-site": ({"email": "x3@example.org", "csrf_token": good},
                       {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}),
        "other origin": ({"email": "x4@example.org", "csrf_token": good}, {"origin": "https://evil.example"}),
        "null origin": ({"email": "x5@example.org", "csrf_token": good}, {"origin": "null"}),
        "same-site": ({"email": "x8@example.org", "csrf_token": good},
                      {"origin": "https://sub.digest.example.org", "sec-fetch-site": "same-site"}),
    }
    for name, (data, headers) in cases.items():
        answer = web.client.post("/subscribe", data=data, headers=headers)
        assert answer.status_code == 403, name
        assert "refused" in answer.text
    # A token from another browser (another cookie) does not fit this one.
    other = TestClient(web.app, base_url=BASE_URL)
    stolen = re.search(r'name="csrf_token" value="([^"]+)"', other.get("/").text).group(1)  # type: ignore[union-attr]
    answer = web.client.post("/subscribe", data={"email": "x6@example.org", "csrf_token": stolen}, headers=ORIGIN)
    assert answer.status_code == 403
    assert web.store.count_subscribers() == {} and web.mailer.outbox == []
    assert web.client.post("/subscribe", data={"email": "x7@example.org", "csrf_token": good},
                           headers=ORIGIN).status_code == 200
    # Chromium sends "Origin: null" under some referrer policies; Sec-Fetch-Site is what decides then.
    assert web.client.post("/subscribe", data={"email": "x9@example.org", "csrf_token": good},
                           headers={"origin": "null", "sec-fetch-site": "same-origin"}).status_code == 200


def test_csrf_protects_preferences_and_confirm(web: Web) -> None:
    web.add("p@example.org", topics=("nas",))
    web.add("c@example.org", SubscriberStatus.PENDING)
    prefs = f"/preferences/{web.token(Scope.PREFERENCES, 'p@example.org')}"
    confirm = f"/confirm/{web.token(Scope.CONFIRM, 'c@example.org')}"
    assert web.client.post(prefs, data={"topics": ["pruning"]}, headers=ORIGIN).status_code == 403
    assert web.client.post(prefs, data={"topics": ["pruning"], "csrf_token": "forged"},
                           headers=ORIGIN).status_code == 403
    assert web.client.post(confirm, data={}, headers=ORIGIN).status_code == 403
    assert web.store.get_subscriber("p@example.org").topics == ("nas",)  # type: ignore[union-attr]
    assert web.status("c@example.org") is SubscriberStatus.PENDING


# ---- confirm ------------------------------------------------------------------------------------


def test_confirm_get_asks_and_post_confirms_idempotently(web: Web) -> None:
    web.subscribe("c@example.org")
    path = _link(web.mails()[0], "/confirm/").removeprefix(BASE_URL)
    page = web.client.get(path)
    assert page.status_code == 200 and "Confirm" in page.text and 'method="post"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert web.status("c@example.org") is SubscriberStatus.PENDING  # a link scanner's GET confirms nothing
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = web.client.post(path, data={"csrf_token": token}, headers=ORIGIN)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert web.status("c@example.org") is SubscriberStatus.CONFIRMED
    assert "/preferences/" not in done.text and "/unsubscribe/" not in done.text  # a confirm token only confirms
    again = web.client.post(path, data={"csrf_token": token}, headers=ORIGIN)
    assert again.status_code == 200 and "already subscribed" in again.text
    assert "already subscribed" in web.client.get(path).text
    assert len(web.mailer.outbox) == 1  # confirming sends nothing more


def test_confirm_link_does_not_revive_an_unsubscribed_address(web: Web) -> None:
    web.add("gone@example.org", SubscriberStatus.UNSUBSCRIBED)
    path = f"/confirm/{web.token(Scope.CONFIRM, 'gone@example.org')}"
    assert web.client.get(path).status_code == 410
    assert web.client.post(path, data={"csrf_token": web.csrf('/')}, headers=ORIGIN).status_code == 410
    assert web.status("gone@example.org") is SubscriberStatus.UNSUBSCRIBED


# ---- tokens: forged, tampered, expired, wrong scope -----------------------------------------------


def _routes(token: str) -> list[tuple[str, str]]:
    return [("GET", f"/confirm/{token}"), ("POST", f"/confirm/{token}"),
            ("GET", f"/preferences/{token}"), ("POST", f"/preferences/{token}"),
            ("GET", f"/unsubscribe/{token}"), ("POST", f"/unsubscribe/{token}")]


def _snapshot(web: Web) -> list[tuple[object, ...]]:
    return [(s.email, s.status, s.topics, s.paused) for s in web.store.list_subscribers()]


def test_forged_and_tampered_tokens_are_refused_and_change_nothing(web: Web) -> None:
    web.add("v@example.org", SubscriberStatus.PENDING, topics=("nas",))
    before = _snapshot(web)
    real = web.token(Scope.UNSUBSCRIBE, "v@example.org")
    foreign = Signer("some-other-secret").sign(Scope.UNSUBSCRIBE, "v@example.org")
    for token in ("garbage", real[:-2] + ("AA" if not real.endswith("AA") else "BB"), foreign):
        for method, path in _routes(token):
            data = {"csrf_token": web.csrf("/"), "topics": ["pruning"], "List-Unsubscribe": "One-Click"}
            answer = web.client.request(method, path, data=data if method == "POST" else None,
                                        headers=ORIGIN if method == "POST" else None)
            assert answer.status_code == 400, (method, path)
            assert "not valid" in answer.text
    assert _snapshot(web) == before
    assert web.mailer.outbox == []


def test_a_token_only_works_for_its_own_scope(web: Web) -> None:
    """A confirm or preferences token cannot unsubscribe; an unsubscribe token cannot confirm or edit."""
    web.add("a@example.org", SubscriberStatus.PENDING, topics=("nas",))
    web.add("b@example.org", topics=("nas",))
    before = _snapshot(web)
    wrong = {
        "/unsubscribe/": (web.token(Scope.CONFIRM, "b@example.org"), web.token(Scope.PREFERENCES, "b@example.org")),
        "/confirm/": (web.token(Scope.UNSUBSCRIBE, "a@example.org"), web.token(Scope.PREFERENCES, "a@example.org")),
        "/preferences/": (web.token(Scope.CONFIRM, "b@example.org"), web.token(Scope.UNSUBSCRIBE, "b@example.org")),
    }
    for prefix, tokens in wrong.items():
        for token in tokens:
            for method in ("GET", "POST"):
                data = {"csrf_token": web.csrf("/"), "topics": ["pruning"], "List-Unsubscribe": "One-Click"}
                answer = web.client.request(method, prefix + token, data=data if method == "POST" else None,
                                            headers=ORIGIN if method == "POST" else None)
                assert answer.status_code == 400, (method, prefix)
    assert _snapshot(web) == before
    with pytest.raises(TokenError):
        unsubscribe_by_token(web.store, web.signer, web.token(Scope.CONFIRM, "b@example.org"))
    assert web.status("b@example.org") is SubscriberStatus.CONFIRMED


def test_expired_links_answer_410_and_change_nothing(web: Web) -> None:
    web.add("late@example.org", SubscriberStatus.PENDING)
    web.add("old@example.org", topics=("nas",))
    with time_machine.travel(datetime.now(UTC) - timedelta(days=4)):
        confirm = web.token(Scope.CONFIRM, "late@example.org")
    with time_machine.travel(datetime.now(UTC) - timedelta(days=400)):
        prefs = web.token(Scope.PREFERENCES, "old@example.org")
        unsubscribe = web.token(Scope.UNSUBSCRIBE, "old@example.org")
    before = _snapshot(web)
    for method in ("GET", "POST"):
        for path in (f"/confirm/{confirm}", f"/preferences/{prefs}"):
            data = {"csrf_token": web.csrf("/"), "topics": ["pruning"]} if method == "POST" else None
            answer = web.client.request(method, path, data=data, headers=ORIGIN if data else None)
            assert answer.status_code == 410, (method, path)
            assert "expired" in answer.text
    assert _snapshot(web) == before
    # Unsubscribe links never expire: people unsubscribe from year-old mail.
    assert web.client.post(f"/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert web.status("old@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_valid_token_for_an_unknown_address_is_404(web: Web) -> None:
    for path in (f"/confirm/{web.token(Scope.CONFIRM, 'ghost@example.org')}",
                 f"/preferences/{web.token(Scope.PREFERENCES, 'ghost@example.org')}"):
        assert web.client.get(path).status_code == 404
    assert web.store.count_subscribers() == {}


# ---- preferences --------------------------------------------------------------------------------


def test_preferences_change_everything_and_pause(web: Web) -> None:
    web.add("me@example.org", topics=("nas",), keywords=("old",))
    path = f"/preferences/{web.token(Scope.PREFERENCES, 'me@example.org')}"
    page = web.client.get(path)
    assert page.status_code == 200 and "me@example.org" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert 'value="nas" checked' in page.text and 'value="old"' in page.text
    form = {"csrf_token": web.csrf(path), "action": "save", "topics": ["pruning", "diffusion"],
            "keywords": "mixture of experts, moe", "authors": "Ada Lovelace; Alan Turing", "exclude": "medical",
            "frequency": "weekly", "weekday": "4", "send_at": "18:45:00", "tz": "America/New_York", "paused": "1"}
    saved = web.client.post(path, data=form, headers=ORIGIN)
    assert saved.status_code == 303 and saved.headers["location"] == f"{BASE_URL}{path}?saved=1"
    sub = web.store.get_subscriber("me@example.org")
    assert sub is not None
    assert sub.topics == ("pruning", "diffusion") and sub.keywords == ("mixture of experts", "moe")
    assert sub.authors == ("Ada Lovelace", "Alan Turing") and sub.exclude == ("medical",)
    assert (sub.frequency, sub.weekday, sub.send_at.strftime("%H:%M"), sub.tz, sub.paused) == (
        Frequency.WEEKLY, 4, "18:45", "America/New_York", True)
    after = web.client.get(saved.headers["location"].removeprefix(BASE_URL))
    assert "Saved" in after.text and "Paused" in after.text

    # Unticking everything: follow every topic again, and resume.
    form = {"csrf_token": web.csrf(path), "action": "save", "keywords": "", "authors": "", "exclude": "",
            "frequency": "daily", "send_at": "08:00", "tz": "UTC"}
    assert web.client.post(path, data=form, headers=ORIGIN).status_code == 303
    sub = web.store.get_subscriber("me@example.org")
    assert sub is not None and sub.follows_everything and not sub.paused and sub.frequency is Frequency.DAILY


def test_invalid_preferences_are_refused_and_nothing_saved(web: Web) -> None:
    web.add("me@example.org", topics=("nas",))
    path = f"/preferences/{web.token(Scope.PREFERENCES, 'me@example.org')}"
    form = {"csrf_token": web.csrf(path), "topics": ["pruning"], "tz": "Nowhere/Land"}
    answer = web.client.post(path, data=form, headers=ORIGIN)
    assert answer.status_code == 400 and "unknown time zone" in answer.text
    assert 'value="pruning" checked' in answer.text  # what they typed is kept
    assert web.store.get_subscriber("me@example.org").topics == ("nas",)  # type: ignore[union-attr]


def test_preferences_resubscribe_goes_through_a_new_confirmation(web: Web) -> None:
    web.add("back@example.org", SubscriberStatus.UNSUBSCRIBED, topics=("nas",))
    path = f"/preferences/{web.token(Scope.PREFERENCES, 'back@example.org')}"
    assert "You are unsubscribed" in web.client.get(path).text
    answer = web.client.post(path, data={"csrf_token": web.csrf(path), "action": "resubscribe"}, headers=ORIGIN)
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert web.status("back@example.org") is SubscriberStatus.UNSUBSCRIBED  # not until the link is followed
    confirm = _link(web.mails()[-1], "/confirm/").removeprefix(BASE_URL)
    done = web.client.post(confirm, data={"csrf_token": web.csrf(confirm)}, headers=ORIGIN)
    assert done.status_code == 200 and "You are subscribed" in done.text
    sub = web.store.get_subscriber("back@example.org")
    assert sub is not None and sub.status is SubscriberStatus.CONFIRMED and sub.topics == ("nas",)


def test_preferences_page_can_leave_without_an_unsubscribe_token(web: Web) -> None:
    web.add("leaving@example.org")
    path = f"/preferences/{web.token(Scope.PREFERENCES, 'leaving@example.org')}"
    page = web.client.get(path)
    assert "/unsubscribe/" not in page.text  # no token of another scope is handed out
    answer = web.client.post(path, data={"csrf_token": web.csrf(path), "action": "unsubscribe"}, headers=ORIGIN)
    assert answer.status_code == 303
    assert web.status("leaving@example.org") is SubscriberStatus.UNSUBSCRIBED


# ---- unsubscribe --------------------------------------------------------------------------------


def test_unsubscribe_get_never_unsubscribes(web: Web) -> None:
    web.add("u@example.org")
    path = f"/unsubscribe/{web.token(Scope.UNSUBSCRIBE, 'u@example.org')}"
    for _ in range(3):  # a mail scanner following the link, several times
        page = web.client.get(path)
        assert page.status_code == 200
        assert 'method="post"' in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    head = web.client.head(path)
    assert head.status_code == 200
    assert web.status("u@example.org") is SubscriberStatus.CONFIRMED


def test_one_click_post_unsubscribes_at_once_idempotently_without_cookie_or_csrf(web: Web) -> None:
    web.add("u@example.org")
    path = f"/unsubscribe/{web.token(Scope.UNSUBSCRIBE, 'u@example.org')}"
    provider = TestClient(web.app, base_url=BASE_URL)  # a mailbox provider's server: no cookie, no token, no Origin
    body = "List-Unsubscribe=One-Click"
    first = provider.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert first.status_code == 200 and "You are unsubscribed" in first.text
    assert web.status("u@example.org") is SubscriberStatus.UNSUBSCRIBED
    again = provider.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert again.status_code == 200
    multipart = provider.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert multipart.status_code == 200
    assert web.status("u@example.org") is SubscriberStatus.UNSUBSCRIBED
    # The page now offers to come back, and does not offer the button again.
    page = web.client.get(path)
    assert "not subscribed" in page.text and "Subscribe again" in page.text
    web.store.remove_subscriber("u@example.org")
    assert provider.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
                         ).status_code == 200


def test_one_click_leaves_other_readers_and_suppression_alone(web: Web) -> None:
    web.add("u@example.org")
    web.add("other@example.org")
    web.add("bounced@example.org", SubscriberStatus.SUPPRESSED)
    web.client.post(f"/unsubscribe/{web.token(Scope.UNSUBSCRIBE, 'u@example.org')}",
                    data={"List-Unsubscribe": "One-Click"})
    web.client.post(f"/unsubscribe/{web.token(Scope.UNSUBSCRIBE, 'bounced@example.org')}",
                    data={"List-Unsubscribe": "One-Click"})
    assert web.status("u@example.org") is SubscriberStatus.UNSUBSCRIBED
    assert web.status("other@example.org") is SubscriberStatus.CONFIRMED
    assert web.status("bounced@example.org") is SubscriberStatus.SUPPRESSED


def test_unsubscribe_by_token_for_a_mail_hook(web: Web) -> None:
    web.add("hook@example.org")
    token = web.token(Scope.UNSUBSCRIBE, "hook@example.org")
    assert unsubscribe_by_token(web.store, web.signer, f"  {token}\n") == "hook@example.org"
    assert unsubscribe_by_token(web.store, web.signer, token) == "hook@example.org"
    assert web.status("hook@example.org") is SubscriberStatus.UNSUBSCRIBED
    with pytest.raises(TokenError):
        unsubscribe_by_token(web.store, web.signer, "forged")


def test_help_pages_document_the_mailto_address(web: Web) -> None:
    unsubscribe = web.client.get("/unsubscribe")
    assert unsubscribe.status_code == 200
    assert "mailto:digest@example.org?subject=unsubscribe" in unsubscribe.text
    assert web.client.get("/preferences").status_code == 200


# ---- archive and feeds ----------------------------------------------------------------------------


@pytest.fixture
def sent_issue(web: Web, seed_papers: list[Paper]) -> tuple[int, Subscriber]:
    web.store.upsert_papers(seed_papers, now=NOW - timedelta(hours=2))
    web.pipeline.tag_pending()
    sub = web.add("private.reader@example.org", topics=("pruning", "diffusion"))
    summary = web.pipeline.send(NOW.date())
    assert summary.sent == 1
    [row] = web.store.list_issues()
    return row.id, sub


def test_archive_index_and_public_edition(web: Web, sent_issue: tuple[int, Subscriber]) -> None:
    issue_id, sub = sent_issue
    day = (NOW - timedelta(hours=2)).date().isoformat()
    index = web.client.get("/archive")
    assert index.status_code == 200 and f'href="/archive/{day}"' in index.text
    assert 'href="/archive/feed/pruning.atom"' in index.text
    assert f"/archive/{issue_id}" not in index.text
    page = web.client.get(f"/archive/{day}")
    assert page.status_code == 200
    # Every paper of the day, by topic: not what any reader got.
    papers = web.store.list_papers(since=NOW - timedelta(days=1))
    assert papers
    for paper in papers[:10]:
        assert html.escape(clean_text(paper.title)) in page.text
    assert "Pruning" in page.text
    assert sub.email not in page.text and "Why:" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert web.client.get("/archive/2001-01-01").status_code == 404
    assert web.client.get("/archive/2001-13-45").status_code == 404


def test_the_emails_archive_link_is_the_readers_own_issue(web: Web, sent_issue: tuple[int, Subscriber]) -> None:
    issue_id, sub = sent_issue
    mail = email.message_from_bytes(web.mailer.outbox[0].data, policy=email.policy.default)
    link = _link(mail, "/issue/")
    assert web.signer.verify(Scope.ISSUE, link.rsplit("/", 1)[1]) == str(issue_id)
    page = web.client.get(link.removeprefix(BASE_URL))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store" and "noindex" in page.headers["x-robots-tag"]
    mail_html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    issue = web.store.load_issue(issue_id, web.pipeline.labels)
    assert issue is not None and issue.count > 0
    for entry in issue.entries:  # the same content as the email
        shown = html.escape(clean_text(entry.paper.title), quote=False)
        assert shown in mail_html and shown in page.text
    # The page may be forwarded: no address, no preferences or unsubscribe token.
    assert sub.email not in page.text
    assert "/unsubscribe/" not in page.text and "/preferences/" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]


def test_numbered_archive_links_lead_to_the_public_edition_only(web: Web, sent_issue: tuple[int, Subscriber]) -> None:
    """Old mail linked /archive/N (sequential): it now leads to the day's public edition, nothing personal."""
    issue_id, _ = sent_issue
    moved = web.client.get(f"/archive/{issue_id}")
    assert moved.status_code == 301
    assert moved.headers["location"] == f"{BASE_URL}/archive/{NOW.date().isoformat()}"
    for n in (issue_id + 1, 0, 10**30):
        answer = web.client.get(f"/archive/{n}")
        assert answer.status_code == 404 and "default-src 'none'" in answer.headers["content-security-policy"]
    assert web.client.get("/archive/not-a-number").status_code == 404
    pending = web.add("later@example.org")
    issue = replace(web.pipeline.build_issue(pending, NOW.date(), NOW), subscriber=pending)
    unsent = web.store.create_issue(issue, subject="", message_id=lambda i: f"<u.{i}@example.org>", now=NOW)
    assert web.client.get(f"/archive/{unsent}").status_code == 404
    assert web.client.get(f"/issue/{web.token(Scope.ISSUE, str(unsent))}").status_code == 404


def test_atom_feeds_parse_and_list_recent_papers(web: Web, sent_issue: tuple[int, Subscriber]) -> None:
    everything = web.client.get("/archive/feed.atom")
    assert everything.status_code == 200
    assert everything.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(everything.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10" and 0 < len(parsed.entries) <= 50
    assert all(e.link.startswith("http") and e.title and e.id for e in parsed.entries)

    pruning = web.store.list_papers(since=NOW - timedelta(days=30), topic="pruning")[:50]
    topic_feed = feedparser.parse(web.client.get("/archive/feed/pruning.atom").content)
    assert topic_feed.bozo == 0
    assert "Pruning" in topic_feed.feed.title
    assert pruning and [e.title for e in topic_feed.entries] == [clean_text(p.title) for p in pruning]
    assert web.client.get("/archive/feed/no-such-topic.atom").status_code == 404


# ---- escaping -----------------------------------------------------------------------------------


def test_everything_shown_is_escaped(web: Web) -> None:
    evil = '"><script>alert(1)</script>'
    answer = web.client.post("/subscribe", data={"email": f"x{evil}@example.org", "keywords": evil,
                                                 "csrf_token": web.csrf("/")}, headers=ORIGIN)
    assert answer.status_code == 400
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text

    web.add("esc@example.org", keywords=(evil,))
    page = web.client.get(f"/preferences/{web.token(Scope.PREFERENCES, 'esc@example.org')}")
    assert "<script>alert(1)</script>" not in page.text and "&#34;&gt;&lt;script&gt;" in page.text

    hostile = Paper(id="2608.00001", title=f"Pruning {evil} & <b>bold</b>", abstract="Pruning sparse nets.",
                    authors=(f"Eve {evil}",), url="javascript:alert(1)")
    web.store.upsert_papers([hostile], now=NOW - timedelta(hours=1))
    web.pipeline.tag_pending()
    feed = web.client.get("/archive/feed.atom")
    assert b"<script>" not in feed.content and b"javascript:" not in feed.content
    parsed = feedparser.parse(feed.content)
    assert parsed.bozo == 0
    [entry] = [e for e in parsed.entries if e.id.endswith("2608.00001")]
    assert "<script>alert(1)</script>" in entry.title  # the literal text, as text


# ---- the rest -----------------------------------------------------------------------------------


def test_static_files_health_and_errors(web: Web) -> None:
    css = web.client.get("/static/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text  # no external fonts or CDNs
    assert "Intl.DateTimeFormat" in web.client.get("/static/tz.js").text
    assert web.client.get("/healthz").text == "ok\n"
    missing = web.client.get("/no/such/page")
    assert missing.status_code == 404 and "Page not found" in missing.text
    wrong = web.client.put("/subscribe")
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
    huge = web.client.post("/subscribe", content=b"email=" + b"a" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413


def test_digest_serve_runs_the_app_and_keeps_tokens_out_of_the_log(tmp_path: Path) -> None:
    """The real command: uvicorn in its own process, a plain POST /subscribe, SIGTERM to stop."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "digest.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'serve.sqlite3'}"
[mailer]
backend = "file"
path = "{tmp_path / 'outbox'}"
[site]
base_url = "http://127.0.0.1:{port}"
secret_env = "{SECRET_ENV}"
[demo]
subscribers_csv = ""
""", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), SECRET_ENV: "serve-secret"}
    proc = subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "digest serve did not start"
                time.sleep(0.2)
            assert client.get("/").status_code == 200
            answer = client.post("/subscribe", data={"email": "served@example.org", "topics": ["pruning", "nas"]})
            assert answer.status_code == 200 and "Check your inbox" in answer.text
            token = Signer("serve-secret").sign(Scope.UNSUBSCRIBE, "served@example.org")
            assert client.get(f"/unsubscribe/{token}").status_code == 200
            # A refused CSRF post logs its path (issue 16, item 7: it logged the whole token).
            prefs = Signer("serve-secret").sign(Scope.PREFERENCES, "served@example.org")
            refused = client.post(f"/preferences/{prefs}", data={"topics": ["nas"]},
                                  headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"})
            assert refused.status_code == 403
            deadline = time.monotonic() + 10
            while not list((tmp_path / "outbox").glob("*.eml")) and time.monotonic() < deadline:
                time.sleep(0.1)
            [mail] = (tmp_path / "outbox").glob("*.eml")
            assert f"http://127.0.0.1:{port}/confirm/" in email.message_from_bytes(
                mail.read_bytes(), policy=email.policy.default).get_body(("plain",)).get_content()  # type: ignore
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises SIGTERM so process managers see the usual exit status.
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert "Finished server process" in log
    assert "GET /unsubscribe/[token]" in log
    assert "csrf check failed path=/preferences/[token]" in log
    assert token not in log and prefs not in log
