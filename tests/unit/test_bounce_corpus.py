"""The bounce reader over real-world formats: flufl.bounce's samples and our own MTA shapes.

Prints the recognition figures; asserts floors that a regression would break.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from digest.bounces.parse import FailureKind, ReportKind, parse_report

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
FILL = {"{RETURN_PATH}": "bounces+7-abcdefghijklmnop@example.org", "{RECIPIENT}": "ada@example.net",
        "{MESSAGE_ID}": "<digest.7.0123456789abcdef@example.org>"}


def _filled(path: Path) -> bytes:
    text = path.read_text(encoding="utf-8")
    for key, value in FILL.items():
        text = text.replace(key, value)
    return text.encode("utf-8")


def test_flufl_samples_recognised() -> None:
    expected = json.loads((CORPUS / "flufl" / "expected.json").read_text())
    samples = sorted((CORPUS / "flufl").glob("*.txt"))
    assert len(samples) > 100
    counts: Counter[str] = Counter()
    misses = []
    for path in samples:
        report = parse_report(path.read_bytes())
        counts[report.kind.value] += 1
        want = expected.get(path.name)
        if want is None or not want["addresses"]:
            continue
        counts["labelled"] += 1
        got = {a for f in report.failures for a in (f.recipient, f.original_recipient) if a}
        if set(want["addresses"]) <= got:
            counts["addresses_right"] += 1
            # flufl calls a final 4.x.x failure permanent (our soft bounce); only warnings are temporary.
            temporary = all(f.kind is FailureKind.DELAYED for f in report.failures)
            counts["permanence_right"] += temporary == want["temporary"]
        else:
            misses.append(path.name)
    print(f"\nflufl samples={len(samples)} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
          + f" missed={','.join(misses) or '-'}")
    assert counts["addresses_right"] >= 0.95 * counts["labelled"], misses
    assert counts["permanence_right"] >= 0.95 * counts["addresses_right"]


@pytest.mark.parametrize("name", sorted(json.loads((CORPUS / "shapes" / "expected.json").read_text())))
def test_mta_shapes(name: str) -> None:
    want = json.loads((CORPUS / "shapes" / "expected.json").read_text())[name]
    report = parse_report(_filled(CORPUS / "shapes" / name))
    assert report.kind.value == want["kind"]
    assert report.format == want["format"]
    if report.kind is ReportKind.BOUNCE:
        assert [f.recipient for f in report.failures] == ["ada@example.net"]
        assert report.failures[0].kind.value == want["failure"]
        assert report.failures[0].status == want["status"]
        assert FILL["{RETURN_PATH}"] in report.addressed_to
    if report.kind is ReportKind.COMPLAINT:
        assert report.original_message_id == FILL["{MESSAGE_ID}"]
        assert report.feedback_type == "abuse"


def test_every_shape_counted() -> None:
    shapes = json.loads((CORPUS / "shapes" / "expected.json").read_text())
    right = sum(parse_report(_filled(CORPUS / "shapes" / n)).kind.value == w["kind"] for n, w in shapes.items())
    print(f"\nmta shapes={len(shapes)} recognised={right}")
    assert right == len(shapes)
