"""CSV import: all or nothing, problems by line number, chunked writes that keep what was there."""

from __future__ import annotations

from pathlib import Path

from digest.config import Settings
from digest.models import Frequency, Subscriber, SubscriberStatus
from digest.store import Store
from digest.subscribers import import_csv
from tests.conftest import NOW

HEADER = "email,name,topics,keywords,exclude,authors,frequency,send_at,tz,max_papers\n"


def _row(i: int) -> str:
    return f"reader{i}@example.org,Reader {i},pruning;nas,low-rank,,Song Han,daily,07:30,Europe/Paris,10\n"


def test_a_bad_row_anywhere_imports_nothing_and_names_every_bad_line(tmp_path: Path, settings: Settings,
                                                                      store: Store) -> None:
    rows = [_row(i) for i in range(3000)]
    rows[1500] = "not-an-address,x\n"  # file line 1502 (the header is line 1)
    rows[2998] = "late@example.org,,,,,,,25:99,,\n"  # line 3000
    (tmp_path / "people.csv").write_text(HEADER + "".join(rows))
    result = import_csv(settings, store, tmp_path / "people.csv")
    assert result.invalid == 2 and (result.added, result.updated) == (0, 0)
    assert [p.split(": ", 1)[0] for p in result.problems] == [f"{tmp_path / 'people.csv'}:1502",
                                                              f"{tmp_path / 'people.csv'}:3000"]
    assert store.count_subscribers() == {}


def test_a_big_import_adds_updates_and_keeps_status(tmp_path: Path, settings: Settings, store: Store) -> None:
    store.add_subscriber(Subscriber(email="reader7@example.org", status=SubscriberStatus.UNSUBSCRIBED), NOW)
    store.add_subscriber(Subscriber(email="reader8@example.org", frequency=Frequency.WEEKLY, max_papers=3), NOW)
    rows = [_row(i) for i in range(5000)] + ["READER9@example.org,,,,,,weekly,,,\n"]  # a later row updates
    (tmp_path / "people.csv").write_text(HEADER + "".join(rows))
    result = import_csv(settings, store, tmp_path / "people.csv")
    assert (result.added, result.updated, result.invalid) == (4998, 2, 0)
    assert store.count_subscribers() == {"confirmed": 4999, "unsubscribed": 1}
    left = store.get_subscriber("reader7@example.org")
    assert left is not None and left.status is SubscriberStatus.UNSUBSCRIBED and left.topics == ("pruning", "nas")
    nine = store.get_subscriber("reader9@example.org")
    assert nine is not None and nine.frequency is Frequency.WEEKLY and nine.tz == "Europe/Paris"
    eight = store.get_subscriber("reader8@example.org")
    assert eight is not None and eight.max_papers == 10 and eight.keywords == ("low-rank",)
    # Importing the same file again changes nothing and adds no one.
    again = import_csv(settings, store, tmp_path / "people.csv")
    assert (again.added, again.updated) == (0, 5000)
    assert sum(store.count_subscribers().values()) == 5000
