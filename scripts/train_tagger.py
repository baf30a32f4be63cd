"""Train the learned part of the tagger from the labelled papers; optionally measure it honestly.

    .venv/bin/python scripts/train_tagger.py            # writes digest/defaults/tagger_model.json.gz
    .venv/bin/python scripts/train_tagger.py --evaluate  # also prints CV / held-out-month / seed figures

Needs scikit-learn and numpy (``pip install -e .[train]``); the package itself never imports them.
Deterministic: same inputs, same model file (liblinear with a fixed seed, sorted vocabularies).

What is learned (see digest/learned.py for how it is used):
- ``idf`` over every recorded listing paper (data/corpus) and labelled paper: unigrams, bigrams and
  title words (digest.textfeatures), terms seen in at least three papers.
- ``ml``: a logistic regression telling machine-learning papers (cs.*, stat.ML, eess.*) from the rest
  (physics, mathematics) by their words, trained on the arXiv categories of the recorded listings.
  Physics and mathematics use "subspace", "Krylov", "diffusion" and "pruning" in other senses.
- per built-in topic, a logistic regression over the topic's rule evidence (points, decisive,
  verdict, distinct terms), the ML-ness and the paper's tf-idf words -- the words only count where
  the rules found some evidence, so the words learn when a mention is the paper's subject.
- a per-topic threshold: the best F1 threshold of 5-fold cross-validated probabilities, halfway back
  to 0.5 so that a lucky fold does not set it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digest.described import DescribedTopic  # noqa: E402
from digest.learned import ML_CATEGORY_PREFIXES, evidence_features, topic_features  # noqa: E402
from digest.tagger import Tagger  # noqa: E402
from digest.textfeatures import term_counts, weighted  # noqa: E402
from digest.topics import TopicSpec, default_topics  # noqa: E402

TOPICS = ("pruning", "diffusion", "subspace", "nas")
LABELS = REPO / "data" / "labels" / "topics_labelled.jsonl"
SEED = REPO / "tests" / "fixtures" / "labels" / "seed_topics.jsonl"
CORPUS = REPO / "data" / "corpus" / "recorded_listings.jsonl.gz"
OUT = REPO / "digest" / "defaults" / "tagger_model.json.gz"
C_TOPIC = 32.0
C_ML = 4.0

Paper = dict[str, Any]


def read_jsonl(path: Path) -> list[Paper]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def build_idf(papers: Sequence[Paper], min_df: int = 3) -> dict[str, float]:
    df: dict[str, int] = {}
    for p in papers:
        for term in p["_counts"]:
            df[term] = df.get(term, 0) + 1
    n = len(papers)
    return {t: round(math.log((1 + n) / (1 + c)) + 1.0, 4) for t, c in sorted(df.items()) if c >= min_df}


def to_matrix(rows: Sequence[dict[str, float]], index: dict[str, int]) -> sp.csr_matrix:
    r: list[int] = []
    c: list[int] = []
    v: list[float] = []
    for i, row in enumerate(rows):
        for key, value in row.items():
            j = index.get(key)
            if j is not None:
                r.append(i)
                c.append(j)
                v.append(value)
    matrix = sp.csr_matrix((v, (r, c)), shape=(len(rows), len(index)), dtype=np.float64)
    matrix.indices = matrix.indices.astype(np.int32)  # liblinear wants 32-bit indices
    matrix.indptr = matrix.indptr.astype(np.int32)
    return matrix


def logistic(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=5000, random_state=0)


def sparse_weights(model: LogisticRegression, index: dict[str, int], keep: float = 1e-3) -> dict[str, float]:
    coef = model.coef_[0]
    return {k: round(float(coef[j]), 5) for k, j in sorted(index.items()) if abs(coef[j]) >= keep}


def prepare(papers: list[Paper], tagger: Tagger) -> None:
    for p in papers:
        p["_counts"] = term_counts(p["title"], p.get("abstract", ""))
        p["_evidence"] = evidence_features(tagger, p["title"], p.get("abstract", ""))


def train_ml(corpus: list[Paper], idf: dict[str, float]) -> dict[str, Any]:
    known = [p for p in corpus if p.get("categories")]
    y = np.array([any(c.startswith(ML_CATEGORY_PREFIXES) for c in p["categories"]) for p in known])
    index = {t: i for i, t in enumerate(idf)}
    x = to_matrix([weighted(p["_counts"], idf) for p in known], index)
    model = LogisticRegression(C=C_ML, solver="liblinear", max_iter=5000, random_state=0).fit(x, y)
    # Small weights change no decision but cost load time: keep the ones that matter.
    return {"bias": round(float(model.intercept_[0]), 5), "w": sparse_weights(model, index, keep=0.02)}


def ml_probability(ml: dict[str, Any], vector: dict[str, float]) -> float:
    z = ml["bias"] + sum(v * ml["w"].get(k, 0.0) for k, v in vector.items())
    return 1.0 / (1.0 + math.exp(-z))


def rows_for(papers: Sequence[Paper], topic: str, idf: dict[str, float], ml: dict[str, Any]) -> list[dict[str, float]]:
    rows = []
    for p in papers:
        if p.get("_for") != (id(idf), id(ml)):  # the same vectors serve every fold and topic
            p["_vector"] = weighted(p["_counts"], idf)
            p["_ml"] = ml_probability(ml, p["_vector"])
            p["_for"] = (id(idf), id(ml))
        rows.append(topic_features(p["_evidence"].get(topic), p["_vector"], p["_ml"]))
    return rows


# A topic with fewer positives than this in a training part keeps its rules (evaluation splits only:
# almost every NAS paper is from before 2024, so holding those months out leaves none to learn from).
MIN_POSITIVES = 5


def fit_topics(train: Sequence[Paper], idf: dict[str, float], ml: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for topic in TOPICS:
        if sum(topic in p["topics"] for p in train) < MIN_POSITIVES:
            out[topic] = {"rules": True}
            continue
        rows = rows_for(train, topic, idf, ml)
        index = {k: i for i, k in enumerate(sorted({k for r in rows for k in r}))}
        y = np.array([topic in p["topics"] for p in train])
        model = logistic(C_TOPIC).fit(to_matrix(rows, index), y)
        out[topic] = {"bias": round(float(model.intercept_[0]), 5), "w": sparse_weights(model, index)}
    return out


def probability(weights: dict[str, Any], row: dict[str, float]) -> float:
    z = weights["bias"] + sum(v * weights["w"].get(k, 0.0) for k, v in row.items())
    return 1.0 / (1.0 + math.exp(-z))


def predict(models: dict[str, dict[str, Any]], papers: Sequence[Paper], idf: dict[str, float],
            ml: dict[str, Any]) -> dict[str, list[float]]:
    out = {}
    for t in TOPICS:
        if models[t].get("rules"):  # 1.0 or 0.0: any threshold in (0, 1) keeps the rules' verdict
            out[t] = [1.0 if t in p["_evidence"] and p["_evidence"][t]["verdict"] else 0.0 for p in papers]
        else:  # as the tagger: no rule evidence, no topic
            out[t] = [probability(models[t], r) if "ev:none" not in r else 0.0 for r in rows_for(papers, t, idf, ml)]
    return out


def strata(papers: Sequence[Paper]) -> list[int]:
    return [min([TOPICS.index(t) for t in p["topics"] if t in TOPICS] or [len(TOPICS)]) for p in papers]


def cross_validated(papers: list[Paper], idf: dict[str, float], ml: dict[str, Any], seed: int = 0,
                    folds: int = 5) -> dict[str, list[float]]:
    probs = {t: [0.0] * len(papers) for t in TOPICS}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(np.zeros(len(papers)), strata(papers)):
        models = fit_topics([papers[i] for i in train_idx], idf, ml)
        got = predict(models, [papers[i] for i in test_idx], idf, ml)
        for t in TOPICS:
            for i, value in zip(test_idx, got[t], strict=True):
                probs[t][i] = value
    return probs


def counts(gold: Sequence[bool], pred: Sequence[bool]) -> tuple[int, int, int]:
    tp = sum(1 for g, p in zip(gold, pred, strict=True) if g and p)
    fp = sum(1 for g, p in zip(gold, pred, strict=True) if p and not g)
    fn = sum(1 for g, p in zip(gold, pred, strict=True) if g and not p)
    return tp, fp, fn


def f1(gold: Sequence[bool], pred: Sequence[bool]) -> float:
    tp, fp, fn = counts(gold, pred)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def best_threshold(gold: Sequence[bool], probs: Sequence[float]) -> float:
    grid = [round(0.2 + 0.025 * i, 3) for i in range(29)]
    best = max(grid, key=lambda h: (f1(gold, [p >= h for p in probs]), -abs(h - 0.5)))
    return round((best + 0.5) / 2, 3)


def train(papers: list[Paper], corpus: list[Paper]) -> dict[str, Any]:
    idf = build_idf(corpus)
    ml = train_ml(corpus, idf)
    models = fit_topics(papers, idf, ml)
    probs = cross_validated(papers, idf, ml)
    for t in TOPICS:
        models[t]["threshold"] = best_threshold([t in p["topics"] for p in papers], probs[t])
    return {"version": 1, "idf": idf, "ml": ml, "topics": models,
            "trained_on": {"labelled": len(papers), "corpus": len(corpus),
                           "positives": {t: sum(t in p["topics"] for p in papers) for t in TOPICS}}}


def table(name: str, gold: dict[str, list[bool]], pred: dict[str, list[bool]]) -> str:
    lines = [f"{name}", "topic       support   tp   fp   fn  precision  recall     f1"]
    scores = []
    for t in pred:
        tp, fp, fn = counts(gold[t], pred[t])
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        score = f1(gold[t], pred[t])
        scores.append(score)
        lines.append(f"{t:<10} {tp + fn:>8} {tp:>4} {fp:>4} {fn:>4} {p:>10.3f} {r:>7.3f} {score:>6.3f}")
    lines.append(f"macro_f1={statistics.mean(scores):.3f}")
    return "\n".join(lines)


class _Out(list[str]):
    """Collects the report and prints each part as soon as it is known (the whole takes minutes)."""

    def append(self, text: str) -> None:
        print(text + "\n", flush=True)
        super().append(text)


def evaluate(papers: list[Paper], corpus: list[Paper], seed_papers: list[Paper], tagger: Tagger) -> str:
    out = _Out()
    idf = build_idf(corpus)
    ml = train_ml(corpus, idf)
    gold = {t: [t in p["topics"] for p in papers] for t in TOPICS}
    rules = {t: [t in p["_evidence"] and p["_evidence"][t]["verdict"] for p in papers] for t in TOPICS}
    out.append(table("rules alone, all labelled papers (the rules were written before these labels)", gold, rules))
    # Cross-validation: thresholds chosen inside each training part (nested), three shuffles.
    per_seed = []
    for seed in (0, 1):
        splitter = StratifiedKFold(5, shuffle=True, random_state=seed)
        pred = {t: [False] * len(papers) for t in TOPICS}
        for train_idx, test_idx in splitter.split(np.zeros(len(papers)), strata(papers)):
            train_part = [papers[i] for i in train_idx]
            inner = cross_validated(train_part, idf, ml, seed=seed + 10)
            models = fit_topics(train_part, idf, ml)
            got = predict(models, [papers[i] for i in test_idx], idf, ml)
            for t in TOPICS:
                h = best_threshold([t in p["topics"] for p in train_part], inner[t])
                for i, value in zip(test_idx, got[t], strict=True):
                    pred[t][i] = value >= h
        per_seed.append(pred)
        out.append(table(f"5-fold cross-validation, shuffle {seed} (thresholds chosen inside each fold)", gold, pred))
    months: dict[str, Callable[[Paper], bool]] = {
        "2026-06": lambda p: p["month"] == "2026-06",
        "2024-11": lambda p: p["month"] == "2024-11",
        "2026-07 to 2026-08": lambda p: p["month"] in ("2026-07", "2026-08"),
        "2025-01 to 2026-05": lambda p: "2025-01" <= p["month"] <= "2026-05",
        "2024 except 2024-11": lambda p: p["month"].startswith("2024") and p["month"] != "2024-11",
        "2023 and before": lambda p: p["month"] < "2024-01" or p["month"] == "old",
    }
    held_gold: dict[str, list[bool]] = {t: [] for t in TOPICS}
    held_pred: dict[str, list[bool]] = {t: [] for t in TOPICS}
    for name, test_of in months.items():
        test = [p for p in papers if test_of(p)]
        train_part = [p for p in papers if not test_of(p)]
        inner = cross_validated(train_part, idf, ml)
        models = fit_topics(train_part, idf, ml)
        got = predict(models, test, idf, ml)
        g = {t: [t in p["topics"] for p in test] for t in TOPICS}
        pr = {}
        for t in TOPICS:
            h = best_threshold([t in p["topics"] for p in train_part], inner[t])
            pr[t] = [v >= h for v in got[t]]
            held_gold[t] += g[t]
            held_pred[t] += pr[t]
        out.append(table(f"held-out month {name}: {len(test)} papers, trained on the other {len(train_part)}", g, pr))
    out.append(table("all held-out months pooled", held_gold, held_pred))
    model = train(papers, corpus)
    seed_gold = {t: [t in p["topics"] for p in seed_papers] for t in TOPICS}
    seed_pred = {t: [v >= model["topics"][t]["threshold"] for v in
                     predict(model["topics"], seed_papers, model["idf"], model["ml"])[t]] for t in TOPICS}
    out.append(table("seed papers (never trained on)", seed_gold, seed_pred))
    out.append(describe_quantization(papers, model))
    return "\n\n".join(out)


QUANTIZATION = ("Quantization of neural networks: representing weights, activations, KV caches or gradients with "
                "fewer bits (low-bit, INT8/INT4, binary or ternary, mixed precision), post-training quantization "
                "and quantization-aware training, to make models smaller or faster.")


def describe_quantization(papers: list[Paper], model: dict[str, Any]) -> str:
    """A topic given only as a description and five examples: F1 on the other labelled papers."""
    labelled = [p for p in papers if not p.get("quantization_unlabelled")]
    positives = [p for p in labelled if "quantization" in p["topics"]]
    lines = ["described topic 'quantization' (description + 5 random labelled examples; 10 draws)"]
    scores = []
    for draw in range(10):
        examples = random.Random(draw).sample(positives, 5)
        spec = TopicSpec(label="Quantization", description=QUANTIZATION,
                         examples=[{"title": p["title"], "abstract": p["abstract"]} for p in examples])
        topic = DescribedTopic.build("quantization", spec, model["idf"])
        taken = {p["id"] for p in examples}
        test = [p for p in labelled if p["id"] not in taken]
        gold = ["quantization" in p["topics"] for p in test]
        pred = [topic.similarity(weighted(p["_counts"], model["idf"])) >= topic.threshold for p in test]
        tp, fp, fn = counts(gold, pred)
        scores.append(f1(gold, pred))
        lines.append(f"draw {draw}: tp={tp} fp={fp} fn={fn} f1={scores[-1]:.3f} threshold={topic.threshold:.3f}")
    lines.append(f"mean_f1={statistics.mean(scores):.3f} min={min(scores):.3f} max={max(scores):.3f}")
    return "\n".join(lines)


GENERIC = REPO / "digest" / "defaults" / "generic_papers.jsonl.gz"
GENERIC_SIZE = 1500


def write_generic(corpus: list[Paper]) -> None:
    """A fixed random sample of listing papers: the "ordinary paper" side of described topics."""
    sample = sorted(random.Random(0).sample(corpus, min(GENERIC_SIZE, len(corpus))), key=lambda p: p["id"])
    rows = "\n".join(json.dumps({"id": p["id"], "title": p["title"], "abstract": p["abstract"]},
                                ensure_ascii=False, sort_keys=True) for p in sample) + "\n"
    GENERIC.write_bytes(gzip.compress(rows.encode("utf-8"), compresslevel=9, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", action="store_true", help="print honest figures too")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    tagger = Tagger({k: v for k, v in default_topics().items() if k in TOPICS}, learned=False)
    papers = read_jsonl(LABELS)
    corpus_only = read_jsonl(CORPUS)
    seen = {p["id"] for p in corpus_only}
    corpus = corpus_only + [p for p in papers if p["id"] not in seen]
    seed_papers = read_jsonl(SEED)
    write_generic(corpus_only)
    prepare(papers, tagger)
    prepare(corpus, tagger)
    prepare(seed_papers, tagger)
    model = train(papers, corpus)
    payload = json.dumps(model, sort_keys=True, separators=(",", ":")).encode()
    args.out.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes; {len(model['idf'])} terms)")
    print("thresholds:", {t: model["topics"][t]["threshold"] for t in TOPICS})
    if args.evaluate:
        evaluate(papers, corpus, seed_papers, tagger)


if __name__ == "__main__":
    main()
