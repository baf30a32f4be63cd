"""Subscriber preferences: validation, defaults, CSV import (shared by the CLI and the web app)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config import Settings, parse_hhmm
from digest.errors import UsageError
from digest.models import Frequency, Subscriber

if TYPE_CHECKING:
    from digest.store import Store

CSV_FIELDS = ("email", "name", "topics", "keywords", "exclude", "authors", "frequency", "send_at", "tz",
              "max_papers")


def split_list(value: str | None, sep: str = ",") -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(sep) if part.strip())


def validate_email(address: str) -> str:
    from email_validator import EmailNotValidError
    from email_validator import validate_email as _validate

    try:
        return _validate(address.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as err:
        raise UsageError(f"invalid email address {address!r}: {err}") from err


def apply_preferences(settings: Settings, sub: Subscriber, **opts: Any) -> Subscriber:
    """Validate and apply subscriber options given on the command line or in a CSV row."""
    changes: dict[str, Any] = {}
    if opts.get("name") is not None:
        changes["name"] = opts["name"].strip()
    if opts.get("topics") is not None:
        topics = opts["topics"] if isinstance(opts["topics"], tuple) else split_list(opts["topics"])
        unknown = [t for t in topics if t not in settings.enabled_topics]
        if unknown:
            known = ", ".join(settings.enabled_topics)
            raise UsageError(f"unknown topic {unknown[0]!r} (known: {known})")
        changes["topics"] = topics
    for key, sep in (("keywords", ","), ("exclude", ","), ("authors", ";")):
        if opts.get(key) is not None:
            value = opts[key]
            changes[key] = value if isinstance(value, tuple) else split_list(value, sep)
    if opts.get("frequency"):
        try:
            changes["frequency"] = Frequency(opts["frequency"])
        except ValueError as err:
            raise UsageError(f"invalid frequency {opts['frequency']!r}: expected daily or weekly") from err
    if opts.get("send_at"):
        try:
            changes["send_at"] = parse_hhmm(opts["send_at"])
        except ValueError as err:
            raise UsageError(str(err)) from err
    if opts.get("tz"):
        try:
            ZoneInfo(opts["tz"])
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise UsageError(f"unknown time zone {opts['tz']!r}: use an IANA name like Europe/Paris") from err
        changes["tz"] = opts["tz"]
    if opts.get("max_papers") is not None:
        if not 1 <= int(opts["max_papers"]) <= 200:
            raise UsageError("--max-papers must be between 1 and 200")
        changes["max_papers"] = int(opts["max_papers"])
    if opts.get("weekday") is not None:
        changes["weekday"] = int(opts["weekday"])
    if opts.get("send_empty") is not None:
        changes["send_empty"] = bool(opts["send_empty"])
    return replace(sub, **changes)


def new_subscriber(settings: Settings, email: str) -> Subscriber:
    return Subscriber(email=validate_email(email), max_papers=settings.selection.max_papers,
                      weekday=settings.selection.weekly_weekday)


def subscriber_json(sub: Subscriber) -> dict[str, Any]:
    return {
        "email": sub.email, "name": sub.name, "status": sub.status.value, "paused": sub.paused,
        "topics": list(sub.topics), "keywords": list(sub.keywords), "exclude": list(sub.exclude),
        "authors": list(sub.authors), "frequency": sub.frequency.value, "weekday": sub.weekday,
        "send_at": sub.send_at.strftime("%H:%M"), "tz": sub.tz, "max_papers": sub.max_papers,
        "send_empty": sub.send_empty,
    }



@dataclass(slots=True)
class ImportResult:
    added: int = 0
    updated: int = 0
    problems: list[str] = field(default_factory=list)


def import_csv(settings: Settings, store: Store, path: Path) -> ImportResult:
    """Add or update one subscriber per CSV row; invalid rows are reported by line, the rest imported."""
    try:
        fh = open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    result = ImportResult()
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "email" not in header:
            raise UsageError(f"{path}: the header must have an 'email' column")
        unknown = [h for h in header if h not in CSV_FIELDS]
        if unknown:
            raise UsageError(f"{path}: unknown column {unknown[0]!r} (allowed: {','.join(CSV_FIELDS)})")
        for row in reader:
            line = reader.line_num
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str | None)}
            try:
                email = validate_email(row.get("email", ""))
                existing = store.get_subscriber(email)
                max_papers = row.get("max_papers")
                if max_papers and not max_papers.isdigit():
                    raise UsageError(f"invalid max_papers {max_papers!r}: expected a whole number")
                opts = {
                    "name": row.get("name") or None,
                    "topics": split_list(row.get("topics"), ";") or None,
                    "keywords": split_list(row.get("keywords"), ";") or None,
                    "exclude": split_list(row.get("exclude"), ";") or None,
                    "authors": split_list(row.get("authors"), ";") or None,
                    "frequency": row.get("frequency") or None,
                    "send_at": row.get("send_at") or None,
                    "tz": row.get("tz") or None,
                    "max_papers": int(max_papers) if max_papers else None,
                }
                sub = apply_preferences(settings, existing or new_subscriber(settings, email), **opts)
                if existing:
                    store.save_subscriber(sub)
                    result.updated += 1
                else:
                    store.add_subscriber(sub)
                    result.added += 1
            except UsageError as err:
                result.problems.append(f"{path}:{line}: {err}")
    return result
