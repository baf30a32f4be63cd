"""Subscriber preferences: validation, defaults, CSV import (shared by the CLI and the web app)."""

from __future__ import annotations

import csv
import io
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
    """The address as it is stored and mailed: lower-case, the domain in ASCII (IDNA "xn--" form).

    The one check for every way in (web form, ``subscribers add``, ``import``): an address that could
    not be sent to is refused here, with UsageError, before anything is stored. A domain in Unicode
    (``user@bücher.de``) is accepted and kept in ASCII (``user@xn--bcher-kva.de``), which any SMTP
    server takes; a local part (before the @) in Unicode would need SMTPUTF8 on every relay on the
    way, so it is refused.
    """
    from email_validator import EmailNotValidError
    from email_validator import validate_email as _validate

    address = address.strip()
    local = address.rpartition("@")[0]
    if local and not local.isascii():
        raise UsageError(f"invalid email address {address!r}: letters outside ASCII before the @ cannot be "
                         "mailed by this list; use an address with only ASCII letters before the @")
    try:
        checked = _validate(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        raise UsageError(f"invalid email address {address!r}: {err}") from err
    if checked.ascii_email is None:  # not reached with allow_smtputf8=False; kept as the guarantee
        raise UsageError(f"invalid email address {address!r}: it has no ASCII form")
    return checked.ascii_email.lower()


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


def new_subscriber(settings: Settings, email: str, validated: bool = False) -> Subscriber:
    """A confirmed reader with the configured defaults; ``validated``: ``email`` is already normalised."""
    return Subscriber(email=email if validated else validate_email(email), max_papers=settings.selection.max_papers,
                      weekday=settings.selection.weekly_weekday)


def subscriber_json(sub: Subscriber) -> dict[str, Any]:
    return {
        "email": sub.email, "name": sub.name, "status": sub.status.value, "paused": sub.paused,
        "topics": list(sub.topics), "keywords": list(sub.keywords), "exclude": list(sub.exclude),
        "authors": list(sub.authors), "frequency": sub.frequency.value, "weekday": sub.weekday,
        "send_at": sub.send_at.strftime("%H:%M"), "tz": sub.tz, "max_papers": sub.max_papers,
        "send_empty": sub.send_empty,
    }



# The csv module's own limit (128 KiB per field), named here so the error can say it.
MAX_FIELD_BYTES = 128 * 1024
# Rows written per transaction: a 50,000-row import holds the database's write lock in short turns.
IMPORT_CHUNK = 2000
# Problems listed at most (the count is always given); a file with thousands of bad rows says enough.
MAX_PROBLEMS = 50


@dataclass(slots=True)
class ImportResult:
    """What an import did: ``problems`` (``path:line: reason``, at most MAX_PROBLEMS of them, of
    ``invalid`` rows in all) means nothing was written."""

    added: int = 0
    updated: int = 0
    problems: list[str] = field(default_factory=list)
    invalid: int = 0


def import_csv(settings: Settings, store: Store, path: Path) -> ImportResult:
    """Add or update one subscriber per CSV row, all or nothing.

    The whole file is read and every row validated first: if any row is invalid, the result lists
    the problems by line number and nothing is written. Otherwise new addresses are inserted and
    existing ones updated (their status kept) in transactions of IMPORT_CHUNK rows; a later row for
    the same address updates the earlier one. UsageError (one line) for a file that cannot be read,
    is not UTF-8, has a field over 128 KB or a bad header.
    """
    rows = _read_rows(path)
    result = ImportResult()
    # Per address: the options asked for and the reader they make when the address is new.
    wanted: dict[str, tuple[dict[str, Any], Subscriber]] = {}
    for line, row in rows:
        try:
            email = validate_email(row.get("email", ""))
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
            earlier = wanted.get(email)
            if earlier is not None:  # a later row for the same address updates the earlier one
                opts = {**earlier[0], **{k: v for k, v in opts.items() if v is not None}}
            # Applied now to a new reader, so a bad value is reported before anything is written.
            wanted[email] = (opts, apply_preferences(settings, new_subscriber(settings, email, True), **opts))
        except UsageError as err:
            result.invalid += 1
            if len(result.problems) < MAX_PROBLEMS:
                result.problems.append(f"{path}:{line}: {err}")
    if result.invalid:
        return result
    existing = store.subscribers_by_email(list(wanted))
    new, changed = [], []
    for email, (opts, fresh) in wanted.items():
        old = existing.get(email)
        if old is None:
            new.append(fresh)
        else:
            changed.append(apply_preferences(settings, old, **opts))
    store.import_subscribers(new, changed, chunk=IMPORT_CHUNK)
    result.added, result.updated = len(new), len(changed)
    return result


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """Every data row of the CSV file with its line number; UsageError for an unreadable file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "email" not in header:
            raise UsageError(f"{path}: the header must have an 'email' column")
        unknown = [h for h in header if h not in CSV_FIELDS]
        if unknown:
            raise UsageError(f"{path}: unknown column {unknown[0]!r} (allowed: {','.join(CSV_FIELDS)})")
        rows = []
        for row in reader:
            rows.append((reader.line_num,
                         {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str | None)}))
    except csv.Error as err:
        # The only csv.Error a DictReader raises on a string: a field over the module's limit
        # (or a NUL byte, which csv also refuses).
        reason = f"a field is longer than {MAX_FIELD_BYTES // 1024} KB" if "field larger" in str(err) else str(err)
        raise UsageError(f"{path}:{reader.line_num + 1}: {reason}") from err
    return rows
