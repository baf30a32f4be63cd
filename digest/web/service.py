"""What the web pages do to subscribers: subscribe (double opt-in), confirm, preferences, unsubscribe."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from digest.errors import UsageError
from digest.links import MAX_AGE, Scope, Signer, TokenError
from digest.models import Outcome, OutgoingMessage, Subscriber, SubscriberStatus
from digest.subscribers import apply_preferences, new_subscriber, validate_email
from digest.web.confirm_mail import already_subscribed_message, confirmation_message
from digest.web.security import Limit, SlidingWindowLimiter

if TYPE_CHECKING:
    from digest.pipeline import Pipeline
    from digest.store import Store

log = logging.getLogger("digest.web")

# Confirmation (or "already subscribed") emails one address can be sent, whoever asks.
ADDRESS_LIMIT = Limit(count=3, seconds=3600)
MAX_FIELD_CHARS = 1000
MAX_ITEMS = 50


class LinkProblem(Exception):
    """A personal link cannot be used: the HTTP status and what to tell the reader."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass(frozen=True, slots=True)
class PreferenceForm:
    """The preference fields of the subscribe and preferences forms, as typed (kept for re-display)."""

    topics: tuple[str, ...] = ()
    keywords: str = ""
    exclude: str = ""
    authors: str = ""
    frequency: str = ""
    weekday: str = ""
    send_at: str = ""
    tz: str = ""
    paused: bool = False

    @classmethod
    def from_form(cls, form: Mapping[str, Any], topics: Sequence[str]) -> PreferenceForm:
        """Read the fields; raises UsageError for over-long input (before anything is stored)."""
        def text(name: str) -> str:
            value = form.get(name)
            value = value.strip() if isinstance(value, str) else ""
            if len(value) > MAX_FIELD_CHARS:
                raise UsageError(f"the {name} field is too long (at most {MAX_FIELD_CHARS} characters)")
            return value

        send_at = text("send_at")
        if len(send_at) == 8 and send_at[5:6] == ":":  # some browsers send a time input as HH:MM:SS
            send_at = send_at[:5]
        chosen = tuple(dict.fromkeys(t.strip() for t in topics if isinstance(t, str) and t.strip()))
        if len(chosen) > MAX_ITEMS:
            raise UsageError("too many topics")
        return cls(topics=chosen, keywords=text("keywords"), exclude=text("exclude"), authors=text("authors"),
                   frequency=text("frequency"), weekday=text("weekday"), send_at=send_at,
                   tz=text("tz"), paused=form.get("paused") in ("1", "on", "true"))

    @classmethod
    def of(cls, sub: Subscriber) -> PreferenceForm:
        return cls(topics=sub.topics, keywords=", ".join(sub.keywords), exclude=", ".join(sub.exclude),
                   authors="; ".join(sub.authors), frequency=sub.frequency.value, weekday=str(sub.weekday),
                   send_at=sub.send_at.strftime("%H:%M"), tz=sub.tz, paused=sub.paused)

    def carried(self) -> dict[str, Any]:
        """The fields as a confirmation token carries them (only those given, to keep links short)."""
        return {name: (list(value) if isinstance(value, tuple) else value)
                for name in _CARRIED if (value := getattr(self, name))}

    @classmethod
    def from_carried(cls, values: Mapping[str, Any]) -> PreferenceForm:
        """The form back from a confirmation token (made by ``carried``, so signed by this site)."""
        kept = {name: values[name] for name in _CARRIED if isinstance(values.get(name), str | list)}
        if "topics" in kept:
            kept["topics"] = tuple(t for t in kept["topics"] if isinstance(t, str))
        return cls(**kept)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``apply_preferences``: every list is replaced, empty fields clear it."""
        for value, sep in ((self.keywords, ","), (self.exclude, ","), (self.authors, ";")):
            if len([v for v in value.split(sep) if v.strip()]) > MAX_ITEMS:
                raise UsageError(f"at most {MAX_ITEMS} entries per field")
        weekday: int | None = None
        if self.weekday:
            if not self.weekday.isdigit() or not 0 <= int(self.weekday) <= 6:
                raise UsageError(f"invalid weekday {self.weekday!r}")
            weekday = int(self.weekday)
        return {"topics": self.topics, "keywords": self.keywords, "exclude": self.exclude,
                "authors": self.authors, "frequency": self.frequency or None, "send_at": self.send_at or None,
                "tz": self.tz or None, "weekday": weekday}


_CARRIED = ("topics", "keywords", "exclude", "authors", "frequency", "weekday", "send_at", "tz")


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a confirm link says: the address, the preferences its form asked for (None: keep the
    stored ones), and whether it was asked for after the address had left the list."""

    email: str
    preferences: PreferenceForm | None
    returning: bool


class Subscriptions:
    """The subscriber side of the web app, over the pipeline's store, links and mailer.

    Methods are synchronous (database and mail I/O); the app runs them in a thread pool.
    """

    def __init__(self, pipeline: Pipeline, address_limit: Limit = ADDRESS_LIMIT) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.store = pipeline.store
        self.links = pipeline.links
        self.signer: Signer = pipeline.links.signer
        self.address_limiter = SlidingWindowLimiter(address_limit)
        # One mail at a time: the configured mailer (an SMTP connection) is not shared between threads.
        self._mail_lock = threading.Lock()

    def now(self) -> datetime:
        return self.pipeline.clock()

    # ---- subscribe ------------------------------------------------------------------------------

    def request_subscription(self, address: str, form: PreferenceForm) -> OutgoingMessage | None:
        """Record a subscription request and return the one email to send for it (or None).

        Validates everything first (UsageError, nothing stored), and builds the email before anything
        is written, so a request either fails whole or is stored and answered. By the address's state:
        new -> stored as pending with these preferences, and a confirmation email; pending or
        unsubscribed -> nothing stored changes (a stranger may be filling in the form), and a
        confirmation email whose link carries this form's preferences, which take effect only if that
        link is followed; confirmed -> nothing changes, an email with their preferences link;
        suppressed (it bounced) or past the per-address limit -> nothing. The caller shows the same
        answer in every case, so the page never tells whether an address is subscribed.
        """
        email = validate_email(address)
        wanted = apply_preferences(self.settings, new_subscriber(self.settings, email), **form.options())
        if self.address_limiter.hit(email) is not None:
            log.warning("subscribe: too many requests for one address; no email sent")
            return None
        existing = self.store.get_subscriber(email)
        confirmed = existing is not None and existing.status is SubscriberStatus.CONFIRMED
        if not confirmed and self.store.is_suppressed(email):
            # The suppression list outlives subscriber rows and statuses (a removed reader whose mail
            # bounced hard, a reader unsubscribed by a complaint): not mailing them is its whole point.
            log.info("subscribe: address is on the suppression list; no email sent")
            return None
        if existing is None:
            message = self.confirmation(email, form, returning=False)
            # UsageError: a concurrent request added it a moment ago; it is pending, like this one.
            with contextlib.suppress(UsageError):
                self.store.add_subscriber(replace(wanted, status=SubscriberStatus.PENDING), now=self.now())
            return message
        if existing.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
            return self.confirmation(email, form, returning=existing.status is SubscriberStatus.UNSUBSCRIBED)
        if existing.status is SubscriberStatus.CONFIRMED:
            return already_subscribed_message(self.settings, self.links, email, self.now())
        log.info("subscribe: address is suppressed after hard bounces; no email sent")
        return None

    def request_return(self, sub: Subscriber) -> OutgoingMessage | None:
        """An unsubscribed reader asks to come back (from their preferences page): a new confirmation
        email, keeping their stored preferences; nothing changes until its link is followed."""
        if sub.status is not SubscriberStatus.UNSUBSCRIBED:
            return None
        if self.address_limiter.hit(sub.email) is not None:
            log.warning("resubscribe: too many requests for one address; no email sent")
            return None
        return self.confirmation(sub.email, None, returning=True)

    def confirmation(self, email: str, form: PreferenceForm | None, returning: bool) -> OutgoingMessage:
        carried: dict[str, Any] = {"email": email, "returning": returning}
        if form is not None:
            carried["prefs"] = form.carried()
        url = self.links.confirm_url(self.signer.sign_payload(Scope.CONFIRM, carried))
        return confirmation_message(self.settings, self.links, email, self.now(), confirm_url=url)

    def send(self, message: OutgoingMessage) -> bool:
        """Hand one transactional email to the configured mailer; failures are logged, never raised."""
        try:
            with self._mail_lock, self.pipeline.mailer as mailer:
                result = mailer.send(message)
        except Exception as err:  # the reader already has their answer; the log must say what happened
            log.error("confirmation email not sent: %s", err)
            return False
        if result.outcome is not Outcome.DELIVERED:
            log.error("confirmation email not sent: %s %s", result.outcome.value, result.detail)
            return False
        return True

    # ---- personal links -------------------------------------------------------------------------

    def email_for(self, scope: Scope, token: str) -> str:
        """The address a link was made for; LinkProblem (400 forged or other scope, 410 expired)."""
        try:
            return self.signer.verify(scope, token)
        except TokenError as err:
            raise _link_problem(scope, err) from err

    def subscriber_for(self, scope: Scope, token: str) -> Subscriber:
        """The subscriber a link belongs to; LinkProblem as ``email_for``, or 404 if there is none."""
        sub = self.store.get_subscriber(self.email_for(scope, token))
        if sub is None:
            raise LinkProblem(404, "No such subscription",
                              "This address is not on the list (any more). You can subscribe again.")
        return sub

    def confirmation_for(self, token: str) -> tuple[Confirmation, Subscriber]:
        """What a confirm link carries and the subscriber it is for (LinkProblem as ``subscriber_for``)."""
        try:
            value = self.signer.verify_payload(Scope.CONFIRM, token)
        except TokenError as err:
            raise _link_problem(Scope.CONFIRM, err) from err
        if isinstance(value, str):  # a link made before links carried preferences
            wanted = Confirmation(value, None, returning=False)
        elif isinstance(value, dict) and isinstance(value.get("email"), str):
            prefs = value.get("prefs")
            wanted = Confirmation(value["email"], PreferenceForm.from_carried(prefs) if isinstance(prefs, dict)
                                  else None, returning=value.get("returning") is True)
        else:
            raise _link_problem(Scope.CONFIRM, TokenError("invalid link"))
        sub = self.store.get_subscriber(wanted.email)
        if sub is None:
            raise LinkProblem(404, "No such subscription",
                              "This address is not on the list (any more). You can subscribe again.")
        return wanted, sub

    @staticmethod
    def check_confirmable(wanted: Confirmation, sub: Subscriber) -> None:
        """LinkProblem 410 unless following this link may (still) confirm ``sub``."""
        if sub.status in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED):
            return
        if sub.status is SubscriberStatus.UNSUBSCRIBED and wanted.returning:
            return
        raise LinkProblem(410, "This confirmation link is no longer valid",
                          "This address has left the list since the link was sent. Subscribe again to get "
                          "a new confirmation email.")

    def confirm(self, wanted: Confirmation, sub: Subscriber) -> Subscriber:
        """Pending (or unsubscribed, for a link asked for after leaving) -> confirmed, with the
        preferences the link carries; confirmed stays as it is (the reader's later changes stand);
        otherwise LinkProblem 410. Idempotent."""
        self.check_confirmable(wanted, sub)
        if sub.status is SubscriberStatus.CONFIRMED:
            return sub
        changed = sub
        if wanted.preferences is not None:
            try:
                changed = apply_preferences(self.settings, sub, **wanted.preferences.options())
            except UsageError as err:  # e.g. a topic disabled since the form was sent: keep what is stored
                log.warning("confirm: the link's preferences no longer apply (%s); keeping the stored ones", err)
        changed = replace(changed, status=SubscriberStatus.CONFIRMED)
        saved = self.store.save_subscriber(changed, now=self.now())
        log.info("subscriber confirmed")
        return saved

    def save_preferences(self, sub: Subscriber, form: PreferenceForm) -> Subscriber:
        """Apply the preferences form (UsageError for invalid values, nothing saved)."""
        changed = replace(apply_preferences(self.settings, sub, **form.options()), paused=form.paused)
        return self.store.save_subscriber(changed, now=self.now())

    def leave(self, sub: Subscriber) -> None:
        """The preferences page's own "unsubscribe" (its token manages the whole subscription)."""
        if sub.status in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED):
            self.store.set_subscriber_status(sub.email, SubscriberStatus.UNSUBSCRIBED, now=self.now())
            log.info("subscriber unsubscribed")

    def unsubscribe(self, token: str) -> str:
        """Unsubscribe the link's address at once (see ``unsubscribe_by_token``)."""
        try:
            email = unsubscribe_by_token(self.store, self.signer, token, now=self.now())
        except TokenError as err:
            raise LinkProblem(400, "This link is not valid",
                              "The link is incomplete or was not made by this site.") from err
        return email


def _link_problem(scope: Scope, err: TokenError) -> LinkProblem:
    if err.expired:
        return LinkProblem(410, "This link has expired", _EXPIRED[scope])
    return LinkProblem(400, "This link is not valid",
                       "The link is incomplete or was not made by this site. Copy the whole link "
                       "from the email, or use the most recent email you received.")


_EXPIRED = {
    Scope.CONFIRM: (f"Confirmation links work for {(MAX_AGE[Scope.CONFIRM] or 0) // 86400} days. Subscribe again "
                    "to get a new one."),
    Scope.PREFERENCES: "Use the preferences link in a recent issue, or subscribe again with the same address "
                       "to get a new link by email.",
    Scope.UNSUBSCRIBE: "Use the unsubscribe link in a recent issue.",
    Scope.ISSUE: "Use the link in a recent issue, or see the public archive.",
}


def unsubscribe_by_token(store: Store, signer: Signer, token: str, now: datetime | None = None) -> str:
    """End the subscription an unsubscribe token was made for; return its address.

    For the https one-click link and for a mail hook handling ``mailto:`` requests (subject
    ``unsubscribe <token>``). Idempotent: an address already unsubscribed, suppressed or removed is
    left as it is and still counts as done. Raises TokenError for a forged token or one of another
    scope (confirm and preferences tokens never unsubscribe anyone).
    """
    email = signer.verify(Scope.UNSUBSCRIBE, token.strip())
    sub = store.get_subscriber(email)
    if sub is not None and sub.status in (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED):
        store.set_subscriber_status(email, SubscriberStatus.UNSUBSCRIBED, now=now or datetime.now(UTC))
        log.info("subscriber unsubscribed")
    return email
