"""Tagger evaluation and JSONL tagging: labelled files, scores, the report format, errors by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.errors import UsageError
from digest.models import Paper
from digest.tagger import Tagger
from digest.tagger_eval import (
    evaluate,
    format_report,
    load_labelled,
    measure_tag_rate,
    parse_labelled_lines,
    report_json,
    tag_jsonl,
)
from digest.topics import default_topics

LABELS = Path(__file__).resolve().parent.parent / "fixtures" / "labels"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(default_topics())


def line(**fields: object) -> str:
    return json.dumps(fields)


PRUNING = {"title": "Structured Pruning of LLMs", "abstract": "We prune heads and channels."}
WEATHER = {"title": "A note on weather", "abstract": "Rain."}


# ---- labelled files -----------------------------------------------------------------------------


def test_load_labelled_reads_the_seed_file() -> None:
    papers = load_labelled(LABELS / "seed_topics.jsonl")
    assert len(papers) == 77
    assert papers[0].id == "seed-00" and set(papers[0].topics) == {"nas", "pruning"}
    assert sum(1 for p in papers if not p.topics) > 10


@pytest.mark.parametrize("bad,needle", [
    ("not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object"),
    (line(title="t", abstract="a", topics=[]), "line 2: 'id' must be a non-empty string"),
    (line(id=7, title="t", abstract="a", topics=[]), "line 2: 'id' must be a non-empty string"),
    (line(id="b", abstract="a", topics=[]), "line 2: 'title' must be a non-empty string"),
    (line(id="b", title="t", abstract=3, topics=[]), "line 2: 'abstract' must be a string"),
    (line(id="b", title="t", abstract="a"), "line 2: 'topics' must be a list"),
    (line(id="b", title="t", abstract="a", topics="nas"), "line 2: 'topics' must be a list"),
    (line(id="a", title="t", abstract="a", topics=[]), "line 2: duplicate id 'a'"),
])
def test_malformed_labelled_lines_name_the_line(bad: str, needle: str) -> None:
    good = line(id="a", title="t", abstract="x", topics=["nas"])
    with pytest.raises(UsageError) as info:
        parse_labelled_lines([good, bad], origin="labels.jsonl")
    assert str(info.value) == f"labels.jsonl: {needle}" or needle in str(info.value)
    assert str(info.value).startswith("labels.jsonl: line 2:")


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text("\n" + line(id="a", title="t", abstract="", topics=[]) + "\n\n{oops\n")
    with pytest.raises(UsageError, match="line 4"):
        load_labelled(path)


def test_missing_labels_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read labels file"):
        load_labelled(tmp_path / "nope.jsonl")


# ---- scores --------------------------------------------------------------------------------------


def test_evaluate_counts_per_topic_and_macro_f1(tagger: Tagger) -> None:
    papers = parse_labelled_lines([
        line(id="1", topics=["pruning"], **PRUNING),            # tp pruning
        line(id="2", topics=["pruning"], **WEATHER),            # fn pruning
        line(id="3", topics=[], **PRUNING),                     # fp pruning
        line(id="4", topics=["diffusion"], title="Latent Diffusion Models for Video", abstract=""),
    ])
    report = evaluate(tagger, papers)
    scores = {t.topic: t for t in report.topics}
    assert (scores["pruning"].tp, scores["pruning"].fp, scores["pruning"].fn) == (1, 1, 1)
    assert scores["pruning"].precision == 0.5 and scores["pruning"].recall == 0.5
    assert scores["diffusion"].f1 == 1.0
    # Topics with nothing to measure on this file are left out of the macro average.
    assert not scores["nas"].measured and not scores["subspace"].measured
    assert report.macro_f1 == pytest.approx((0.5 + 1.0) / 2)
    assert {(m.id, m.topic, m.kind) for m in report.mistakes} == {("2", "pruning", "fn"), ("3", "pruning", "fp")}


def test_a_label_the_tagger_does_not_know_scores_zero(tagger: Tagger) -> None:
    papers = parse_labelled_lines([line(id="1", topics=["pruning", "quantisation"], **PRUNING)])
    report = evaluate(tagger, papers)
    unknown = next(t for t in report.topics if t.topic == "quantisation")
    assert not unknown.known and unknown.f1 == 0.0 and unknown.fn == 1
    assert report.macro_f1 == pytest.approx(0.5)
    assert "(not a tagger topic)" in format_report(report)


def test_report_table_ends_with_the_macro_f1_line(tagger: Tagger) -> None:
    report = evaluate(tagger, load_labelled(LABELS / "seed_topics.jsonl"))
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["topic", "support", "tp", "fp", "fn", "precision", "recall", "f1"]
    assert [row.split()[0] for row in lines[1:5]] == ["pruning", "diffusion", "subspace", "nas"]
    assert lines[-1] == f"macro_f1={report.macro_f1:.3f}"
    assert lines[-1].startswith("macro_f1=0.") or lines[-1] == "macro_f1=1.000"
    assert lines[-2] == "papers=77 topics=4"


def test_report_json_has_every_figure(tagger: Tagger) -> None:
    report = evaluate(tagger, load_labelled(LABELS / "seed_topics.jsonl"))
    data = report_json(report)
    json.dumps(data)
    assert data["papers"] == 77 and data["macro_f1"] == round(report.macro_f1, 4)
    assert set(data["topics"]) == {"pruning", "diffusion", "subspace", "nas"}
    assert set(data["topics"]["subspace"]) >= {"support", "tp", "fp", "fn", "precision", "recall", "f1"}
    assert len(data["mistakes"]) == len(report.mistakes)


# ---- digest tag --input ---------------------------------------------------------------------------


def test_tag_jsonl_writes_the_spec_format_in_input_order(tagger: Tagger) -> None:
    lines_in = [line(id="x1", extra="ignored", **PRUNING), "", line(id="x2", **WEATHER),
                line(id="x3", title="Only a title about Neural Architecture Search")]
    rows = [json.loads(out) for out in tag_jsonl(tagger, lines_in)]
    assert [r["id"] for r in rows] == ["x1", "x2", "x3"]
    assert all(set(r) == {"id", "topics", "scores", "why"} for r in rows)
    assert rows[0]["topics"] == ["pruning"] and rows[0]["scores"]["pruning"] >= 1.0
    assert rows[0]["why"]["pruning"] and all(isinstance(w, str) for w in rows[0]["why"]["pruning"])
    assert rows[1] == {"id": "x2", "topics": [], "scores": {}, "why": {}}
    assert rows[2]["topics"] == ["nas"]


def test_tag_jsonl_names_the_bad_line_after_the_good_ones(tagger: Tagger) -> None:
    produced = []
    with pytest.raises(UsageError, match=r"input: line 3: 'id' must be a non-empty string"):
        for out in tag_jsonl(tagger, [line(id="a", **PRUNING), line(id="b", **WEATHER), line(**WEATHER)]):
            produced.append(out)
    assert len(produced) == 2
    with pytest.raises(UsageError, match="line 1: not valid JSON"):
        list(tag_jsonl(tagger, ["{"]))


def test_tag_jsonl_output_matches_tagger(tagger: Tagger) -> None:
    paper = load_labelled(LABELS / "seed_topics.jsonl")[39]
    out = json.loads(next(tag_jsonl(tagger, [line(id=paper.id, title=paper.title, abstract=paper.abstract)])))
    expected = tagger.tag(paper.title, paper.abstract)
    assert out["topics"] == [a.topic for a in expected]
    assert out["scores"] == {a.topic: a.score for a in expected}
    assert out["why"] == {a.topic: list(a.why) for a in expected}


# ---- speed measurement (no figure is asserted: benchmarks print them) ----------------------------


def test_measure_tag_rate_takes_papers_or_pairs(tagger: Tagger) -> None:
    assert measure_tag_rate(tagger, [("Pruning LLMs", "We prune heads.")], seconds=0.0) > 0
    assert measure_tag_rate(tagger, [Paper(id="1", title="Pruning LLMs")], seconds=0.0) > 0
    with pytest.raises(ValueError):
        measure_tag_rate(tagger, [], seconds=0.0)
