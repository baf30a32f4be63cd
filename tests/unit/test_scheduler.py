"""The daemon under a controlled clock: fetch schedule, local send hours, catch-up after downtime, stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic, sleep
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from digest import scheduler
from digest.config import Settings
from digest.errors import ConfigError
from digest.mail import MemoryMailer
from digest.models import DeliveryStatus, Frequency, Outcome, OutgoingMessage, SendResult, Subscriber
from digest.pipeline import Pipeline
from digest.scheduler import (
    DISPATCH_JOB,
    FETCH_JOB,
    Daemon,
    build_scheduler,
    due_now,
    fetch_overdue,
    fetch_trigger,
    job_specs,
    next_run_times,
)
from digest.store import Store
from tests.conftest import make_settings

ET = ZoneInfo("America/New_York")


class Clock:
    """The injected clock: tests move ``now`` by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingMailer(MemoryMailer):
    """Keeps (recipient, clock time) of every delivered message."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.sent_at: list[tuple[str, datetime]] = []

    def send(self, message: OutgoingMessage) -> SendResult:
        result = super().send(message)
        if result.outcome is Outcome.DELIVERED:
            self.sent_at.append((message.recipient, self.clock()))
        return result


def _settings(tmp_path: Path, **schedule: Any) -> Settings:
    return make_settings(tmp_path, schedule=schedule)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Any]:
    """A factory: (settings overrides for [schedule], start time) -> (pipeline, clock, mailer, daemon)."""
    stores: list[Store] = []

    def make(start: datetime, **schedule: Any) -> tuple[Pipeline, Clock, RecordingMailer, Daemon]:
        settings = _settings(tmp_path, **schedule)
        store = Store(settings.database.url)
        stores.append(store)
        clock = Clock(start)
        mailer = RecordingMailer(clock=clock)
        pipeline = Pipeline(settings, store, mailer=mailer, clock=clock)
        return pipeline, clock, mailer, Daemon(pipeline)

    yield make
    for store in stores:
        store.close()


def _add(pipeline: Pipeline, email: str, tz: str, at: time = time(8, 0), **extra: Any) -> Subscriber:
    sub = Subscriber(email=email, tz=tz, send_at=at, send_empty=True, **extra)
    return pipeline.store.add_subscriber(sub, now=pipeline.clock())


def simulate(daemon: Daemon, clock: Clock, end: datetime) -> list[tuple[str, datetime]]:
    """Run the daemon's real jobs and triggers from ``clock.now`` to ``end``, firing each job at its
    next fire time with the clock set to that instant (dispatch also fires at the start)."""
    specs = job_specs(daemon.pipeline.settings, clock.now)
    upcoming = {s.id: s.first_run or s.trigger.get_next_fire_time(None, clock.now) for s in specs}
    by_id = {s.id: s for s in specs}
    fired: list[tuple[str, datetime]] = []
    scheduler._register(daemon)
    try:
        while True:
            job_id, when = min(((k, v) for k, v in upcoming.items() if v is not None), key=lambda kv: kv[1])
            if when >= end:
                return fired
            clock.now = when
            by_id[job_id].func()
            fired.append((job_id, when))
            upcoming[job_id] = by_id[job_id].trigger.get_next_fire_time(when, when + timedelta(microseconds=1))
    finally:
        scheduler._unregister(daemon)


# ---- the fetch schedule ---------------------------------------------------------------------------


def test_default_fetch_schedule_is_after_the_arxiv_announcement_sunday_to_thursday(tmp_path: Path) -> None:
    trigger = fetch_trigger(_settings(tmp_path))
    now = datetime(2026, 8, 16, 0, 0, tzinfo=ET)  # a Sunday
    fires = []
    while True:
        now = trigger.get_next_fire_time(None, now + timedelta(seconds=1))
        if now >= datetime(2026, 8, 23, tzinfo=ET):
            break
        fires.append(now.astimezone(ET))
    evening = [f.strftime("%a %H:%M") for f in fires if f.hour == 20]
    assert evening == ["Sun 20:15", "Mon 20:15", "Tue 20:15", "Wed 20:15", "Thu 20:15"]
    assert sum(1 for f in fires if (f.hour, f.minute) in ((8, 0), (14, 0))) == 14


def test_fetch_schedule_is_in_its_time_zone_across_dst(tmp_path: Path) -> None:
    trigger = fetch_trigger(_settings(tmp_path, extra_fetch_cron=""))
    summer = trigger.get_next_fire_time(None, datetime(2026, 8, 16, 12, tzinfo=UTC))
    winter = trigger.get_next_fire_time(None, datetime(2026, 12, 13, 12, tzinfo=UTC))
    assert summer.astimezone(UTC) == datetime(2026, 8, 17, 0, 15, tzinfo=UTC)  # EDT
    assert winter.astimezone(UTC) == datetime(2026, 12, 14, 1, 15, tzinfo=UTC)  # EST


@pytest.mark.parametrize(("field", "days"), [
    ("0-4", "sun,mon,tue,wed,thu"),
    ("1-5", "mon,tue,wed,thu,fri"),
    ("5-7", "sun,fri,sat"),
    ("7", "sun"),
    ("*/2", "sun,tue,thu,sat"),
    ("sat,sun", "sun,sat"),
    ("MON-FRI", "mon,tue,wed,thu,fri"),
    ("*", "*"),
])
def test_crontab_weekdays_count_from_sunday(field: str, days: str) -> None:
    assert scheduler._cron_day_of_week(field) == days


@pytest.mark.parametrize(("key", "value"), [("fetch_cron", "61 * * * *"), ("fetch_cron", "0 8 * *"),
                                            ("extra_fetch_cron", "0 8 * * 9")])
def test_invalid_cron_is_a_config_error_naming_the_key(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"schedule.{key}"):
        fetch_trigger(_settings(tmp_path, **{key: value}))


# ---- sends at each reader's local hour ------------------------------------------------------------


def test_three_time_zones_get_their_issue_at_their_local_hour(env: Any) -> None:
    start = datetime(2026, 8, 17, 0, 0, tzinfo=UTC)
    pipeline, clock, mailer, daemon = env(start, dispatch_minutes=5, max_lateness_hours=0.5)
    zones = {"la@example.org": "America/Los_Angeles", "berlin@example.org": "Europe/Berlin",
             "tokyo@example.org": "Asia/Tokyo"}
    for email, tz in zones.items():
        _add(pipeline, email, tz)

    fired = simulate(daemon, clock, datetime(2026, 8, 19, 0, 0, tzinfo=UTC))

    for email, tz in zones.items():
        times = [t for who, t in mailer.sent_at if who == email]
        assert len(times) == 2, email
        for t in times:
            local = t.astimezone(ZoneInfo(tz))
            assert time(8, 0) <= local.time() < time(8, 5), (email, local)
    records = pipeline.store.deliveries_on([date(2026, 8, d) for d in (16, 17, 18, 19)])
    by_email = {s.email: s.id for s in pipeline.store.iter_subscribers()}
    dates = {email: sorted(d for (sid, d), rec in records.items() if sid == by_email[email]
                           and rec.status is DeliveryStatus.SENT) for email in zones}
    assert dates["la@example.org"] == [date(2026, 8, 17), date(2026, 8, 18)]
    assert dates["berlin@example.org"] == [date(2026, 8, 17), date(2026, 8, 18)]
    assert dates["tokyo@example.org"] == [date(2026, 8, 18), date(2026, 8, 19)]

    fetches = [t.astimezone(ET).strftime("%a %H:%M") for job, t in fired if job == FETCH_JOB]
    assert fetches == ["Sun 20:15", "Mon 08:00", "Mon 14:00", "Mon 20:15", "Tue 08:00", "Tue 14:00"]
    last = {r.source: r.last_fetch_at for r in pipeline.store.source_records()}
    assert last["seed"] == datetime(2026, 8, 18, 14, 0, tzinfo=ET)
    assert sum(1 for job, _ in fired if job == DISPATCH_JOB) == 2 * 24 * 12


def test_first_dispatch_fetches_when_a_scheduled_fetch_was_missed(env: Any) -> None:
    start = datetime(2026, 8, 17, 12, 0, tzinfo=UTC)
    pipeline, clock, _, daemon = env(start)
    assert fetch_overdue(pipeline, clock.now)  # never fetched
    daemon.dispatch()
    assert pipeline.store.count_papers() > 0
    assert not fetch_overdue(pipeline, clock.now)
    clock.now = datetime(2026, 8, 17, 12, 30, tzinfo=ET)  # 14:00 ET not yet reached
    assert not fetch_overdue(pipeline, clock.now)
    clock.now = datetime(2026, 8, 17, 14, 0, tzinfo=ET)
    assert fetch_overdue(pipeline, clock.now)


# ---- restart after downtime -----------------------------------------------------------------------


def test_restart_after_downtime_sends_each_due_issue_once_and_skips_stale_ones(env: Any) -> None:
    start = datetime(2026, 8, 17, 4, 0, tzinfo=UTC)
    pipeline, clock, mailer, daemon = env(start, max_lateness_hours=10)
    _add(pipeline, "berlin@example.org", "Europe/Berlin")      # 06:00 UTC
    _add(pipeline, "ny@example.org", "America/New_York")       # 12:00 UTC
    _add(pipeline, "tokyo@example.org", "Asia/Tokyo")          # 23:00 UTC the day before
    simulate(daemon, clock, datetime(2026, 8, 17, 5, 0, tzinfo=UTC))
    before = len(mailer.outbox)

    # Down for two days and a bit; a new process (fresh Daemon) comes up at 13:00 UTC.
    clock.now = datetime(2026, 8, 19, 13, 0, tzinfo=UTC)
    restarted = Daemon(pipeline)
    simulate(restarted, clock, datetime(2026, 8, 19, 22, 0, tzinfo=UTC))

    after = [who for who, t in mailer.sent_at if t >= datetime(2026, 8, 19, 13, 0, tzinfo=UTC)]
    assert sorted(after) == ["berlin@example.org", "ny@example.org"]  # Tokyo's is 14 h late: skipped
    assert len(mailer.outbox) == before + 2
    issue_dates = {rec_date for (_, rec_date) in pipeline.store.deliveries_on(
        [date(2026, 8, d) for d in (17, 18, 19)])}
    assert date(2026, 8, 18) not in issue_dates  # nothing sent for the day the daemon was down

    # And once more: another restart the same evening sends nothing.
    clock.now = datetime(2026, 8, 19, 22, 0, tzinfo=UTC)
    assert Daemon(pipeline).dispatch() == {}
    assert len(mailer.outbox) == before + 2


def test_stale_issue_is_not_sent_even_when_nothing_newer_exists(env: Any) -> None:
    pipeline, clock, mailer, daemon = env(datetime(2026, 8, 17, 20, 0, tzinfo=UTC), max_lateness_hours=4)
    _add(pipeline, "berlin@example.org", "Europe/Berlin")  # due 06:00 UTC: 14 h ago
    assert due_now(pipeline, clock.now) == {}
    daemon.dispatch()
    assert mailer.outbox == []


# ---- what counts as due ---------------------------------------------------------------------------


def test_due_now_follows_the_delivery_records(env: Any) -> None:
    now = datetime(2026, 8, 17, 12, 0, tzinfo=UTC)  # a Monday; 14:00 in Berlin
    pipeline, clock, mailer, daemon = env(now)
    store = pipeline.store
    due_sub = _add(pipeline, "due@example.org", "Europe/Berlin")
    _add(pipeline, "later@example.org", "Europe/Berlin", at=time(18, 0))
    _add(pipeline, "paused@example.org", "Europe/Berlin", paused=True)
    _add(pipeline, "weekly-mon@example.org", "Europe/Berlin", frequency=Frequency.WEEKLY, weekday=0)
    _add(pipeline, "weekly-tue@example.org", "Europe/Berlin", frequency=Frequency.WEEKLY, weekday=1)
    _add(pipeline, "samoa@example.org", "Pacific/Apia")  # 01:00 on Tuesday there: not yet, and Monday's is over

    due = due_now(pipeline, now)
    assert {d: sorted(s.email for s in subs) for d, subs in due.items()} == {
        date(2026, 8, 17): ["due@example.org", "weekly-mon@example.org"],
    }

    # Sent: not due again. A pending record waiting for its retry: not due until then.
    mailer.failures["weekly-mon@example.org"] = SendResult(Outcome.TRANSIENT, "421 try later", retry_after=600)
    daemon.dispatch()
    assert [m.recipient for m in mailer.outbox] == ["due@example.org"]
    assert due_now(pipeline, now) == {}
    clock.now = now + timedelta(minutes=11)
    assert [s.email for subs in due_now(pipeline, clock.now).values() for s in subs] == ["weekly-mon@example.org"]
    assert store.issue_id_for(due_sub.id, date(2026, 8, 17)) is not None


def test_an_issue_older_than_one_already_received_is_not_sent(env: Any) -> None:
    # `digest send` dates issues in UTC: at 02:00 UTC a New Yorker got the issue dated the 18th
    # while their local date is still the 17th; the daemon must not send them the 17th's too.
    now = datetime(2026, 8, 18, 2, 0, tzinfo=UTC)
    pipeline, _, _, _ = env(now)
    _add(pipeline, "ny@example.org", "America/New_York")
    assert list(due_now(pipeline, now)) == [date(2026, 8, 17)]
    pipeline.send(date(2026, 8, 18))
    assert due_now(pipeline, now) == {}


def test_an_empty_issue_is_rebuilt_only_after_a_new_fetch(env: Any) -> None:
    now = datetime(2026, 8, 17, 12, 0, tzinfo=UTC)
    pipeline, clock, mailer, daemon = env(now)
    pipeline.store.add_subscriber(Subscriber(email="picky@example.org", tz="UTC", keywords=("zzzz-no-such-term",)),
                                  now=now)
    daemon.dispatch()  # fetches (never fetched), builds nothing: no issue, no mail
    runs = pipeline.store.last_send_run()
    assert runs is not None and mailer.outbox == []
    clock.now = now + timedelta(minutes=5)
    daemon.dispatch()
    assert pipeline.store.last_send_run().id == runs.id  # not rebuilt: nothing was fetched since
    clock.now = datetime(2026, 8, 17, 14, 0, tzinfo=ET)
    daemon.dispatch()  # the 14:00 ET fetch was missed: fetched now, so the issue is tried again
    assert pipeline.store.last_send_run().id != runs.id


def test_next_run_times_and_status(env: Any) -> None:
    now = datetime(2026, 8, 17, 12, 30, tzinfo=UTC)
    pipeline, _, _, _ = env(now)
    _add(pipeline, "berlin@example.org", "Europe/Berlin", at=time(18, 0))
    runs = next_run_times(pipeline)
    assert runs[FETCH_JOB] == datetime(2026, 8, 17, 14, 0, tzinfo=ET)
    assert runs["send"] == datetime(2026, 8, 17, 16, 0, tzinfo=UTC)

    from digest.status import collect_status, format_status

    report = collect_status(pipeline)
    assert report.due_now is not None and report.due_now.count == 0
    text = format_status(report)
    assert "fetch" in text and "due at the next dispatch: 0" in text


# ---- the real scheduler ---------------------------------------------------------------------------


def test_jobs_have_fixed_ids_and_do_not_multiply_on_restart(env: Any) -> None:
    pipeline, _, _, _ = env(datetime.now(UTC))
    for _ in range(2):
        sched = build_scheduler(pipeline)
        sched.start(paused=True)
        jobs = {j.id: j for j in sched.get_jobs()}
        sched.shutdown(wait=False)
    assert set(jobs) == {FETCH_JOB, DISPATCH_JOB}
    assert jobs[FETCH_JOB].func_ref == "digest.scheduler:fetch_job"
    assert (jobs[DISPATCH_JOB].coalesce, jobs[DISPATCH_JOB].max_instances) == (True, 1)
    assert jobs[FETCH_JOB].misfire_grace_time == pipeline.settings.schedule.misfire_grace_seconds
    stored = scheduler._stored_run_times(pipeline)
    assert set(stored) == {FETCH_JOB, DISPATCH_JOB}


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    """Poll ``condition`` (monotonic time, which time-machine leaves alone) until true or timed out."""
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        if condition():
            return True
        sleep(0.05)
    return condition()


def _run_in_thread(daemon: Daemon) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(install_signals=False)), daemon=True)
    thread.start()
    assert daemon.started.wait(30)
    return thread, result


def test_daemon_removes_unknown_jobs_and_fires_fetch_on_schedule(env: Any) -> None:
    sunday_evening = datetime(2026, 8, 16, 20, 14, 59, 500000, tzinfo=ET)
    with time_machine.travel(sunday_evening, tick=True):
        pipeline, _, _, _ = env(datetime.now(UTC))
        pipeline.clock = lambda: datetime.now(UTC)
        pipeline.fetch()  # so start-up has no fetch to catch up on
        legacy = build_scheduler(pipeline)
        legacy.start(paused=True)
        legacy.add_job(scheduler.dispatch_job, "interval", minutes=1, id="legacy", replace_existing=True)
        legacy.shutdown(wait=False)

        daemon = Daemon(pipeline)
        thread, result = _run_in_thread(daemon)
        assert scheduler._stored_run_times(pipeline).keys() == {FETCH_JOB, DISPATCH_JOB}
        assert wait_for(lambda: pipeline.store.source_records()[0].last_fetch_at
                        >= datetime(2026, 8, 16, 20, 15, tzinfo=ET)), "the 20:15 ET fetch did not run"
        daemon.request_stop()
        thread.join(60)
    assert result == [0] and not daemon.abandoned


class BlockingMailer(MemoryMailer):
    """Holds the first message until released: a send in flight when the stop comes."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, message: OutgoingMessage) -> SendResult:
        self.entered.set()
        assert self.release.wait(60)
        return super().send(message)


def _daemon_with_blocking_mailer(tmp_path: Path, timeout: float) -> tuple[Daemon, BlockingMailer]:
    settings = _settings(tmp_path, shutdown_timeout_seconds=timeout, max_lateness_hours=24)
    store = Store(settings.database.url)
    mailer = BlockingMailer()
    pipeline = Pipeline(settings, store, mailer=mailer)
    for n in range(3):
        pipeline.store.add_subscriber(Subscriber(email=f"r{n}@example.org", tz="UTC", send_at=time(0, 0),
                                                 send_empty=True))
    return Daemon(pipeline), mailer


def _statuses(store: Store) -> list[str]:
    today = datetime.now(UTC).date()
    return sorted(r.status.value for r in store.deliveries_on([today - timedelta(days=1), today]).values())


def test_stop_finishes_the_message_in_flight_and_takes_no_new_work(tmp_path: Path) -> None:
    daemon, mailer = _daemon_with_blocking_mailer(tmp_path, timeout=30)
    thread, result = _run_in_thread(daemon)
    assert mailer.entered.wait(60)
    daemon.request_stop()
    mailer.release.set()
    thread.join(60)
    assert result == [0] and not daemon.abandoned
    assert [m.recipient for m in mailer.outbox] == ["r0@example.org"]
    assert _statuses(daemon.pipeline.store) == ["pending", "pending", "sent"]
    daemon.pipeline.store.close()


def test_stop_timeout_abandons_the_message_in_flight_as_sending(tmp_path: Path) -> None:
    daemon, mailer = _daemon_with_blocking_mailer(tmp_path, timeout=0.5)
    thread, result = _run_in_thread(daemon)
    assert mailer.entered.wait(60)
    daemon.request_stop()
    thread.join(60)
    assert result == [0] and daemon.abandoned
    assert "sending" in _statuses(daemon.pipeline.store)  # in doubt, and the record says so
    mailer.release.set()
    assert wait_for(lambda: "sending" not in _statuses(daemon.pipeline.store))
    daemon.pipeline.store.close()
