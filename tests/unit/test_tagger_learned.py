"""The learned tagger and topics defined in words: shipped model, held-out figures, explanations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from digest.config import Settings
from digest.described import example_id
from digest.errors import UsageError
from digest.learned import load_model
from digest.tagger import Tagger
from digest.tagger_eval import evaluate, load_labelled
from digest.topics import TopicSpec, default_topics

REPO = Path(__file__).resolve().parent.parent.parent
SEED = REPO / "tests" / "fixtures" / "labels" / "seed_topics.jsonl"
LABELLED = REPO / "data" / "labels" / "topics_labelled.jsonl"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(default_topics())


def test_shipped_model_covers_the_builtin_topics_with_sane_thresholds() -> None:
    model = load_model()
    assert set(model.topics) == {"pruning", "diffusion", "subspace", "nas"}
    for topic in model.topics.values():
        assert 0.2 < topic.threshold < 0.9
        assert len(topic.weights) > 100  # words, not only the rule evidence
    assert len(model.idf) > 10_000


def test_seed_papers_never_trained_on_stay_above_095(tagger: Tagger) -> None:
    report = evaluate(tagger, load_labelled(SEED))
    assert report.macro_f1 >= 0.95, report


def test_seed_papers_are_not_in_the_training_labels() -> None:
    seed = {json.loads(line)["id"] for line in SEED.read_text().splitlines()}
    labelled = {json.loads(line)["id"] for line in LABELLED.read_text().splitlines()}
    assert not seed & labelled


def test_a_physics_use_of_a_topic_word_is_not_the_topic(tagger: Tagger) -> None:
    title = "Krylov complexity of operator growth in the early universe"
    abstract = ("We apply the Lanczos algorithm to the Hamiltonian of an inflationary cosmology and compute "
                "the Krylov complexity and Krylov entropy of the open quantum system in each phase.")
    assert "subspace" not in {a.topic for a in tagger.tag(title, abstract)}
    rules_only = Tagger(default_topics(), learned=False)
    assert "subspace" in {a.topic for a in rules_only.tag(title, abstract)}  # the rules alone say yes


def test_one_mention_of_a_diffusion_backbone_in_a_generation_paper_counts(tagger: Tagger) -> None:
    title = "Ovarian CT synthesis from clinical reports"
    abstract = ("We build text-conditioned 3D CT synthesis for oncology: structured findings condition a latent "
                "diffusion model adapted to 493 patients, and the synthetic volumes improve segmentation.")
    got = {a.topic: a for a in tagger.tag(title, abstract)}
    assert "diffusion" in got and got["diffusion"].score >= 1.0
    assert "diffusion" in got["diffusion"].why


def test_explain_names_decision_threshold_and_words(tagger: Tagger) -> None:
    verdicts = {v.topic: v for v in tagger.explain(
        "Wanda: pruning LLMs by weights and activations",
        "We prune weights of large language models without retraining; 50% unstructured sparsity.")}
    assert set(verdicts) == {"pruning", "diffusion", "subspace", "nas"}
    pruning = verdicts["pruning"]
    assert pruning.assigned and pruning.kind == "learned" and pruning.score >= pruning.threshold
    assert "pruning" in pruning.rule_terms
    assert not verdicts["nas"].assigned and "no rule evidence" in verdicts["nas"].note


QUANT = {
    "label": "Quantization",
    "description": "Low-bit quantization of neural network weights and activations (INT8, INT4, binary), "
                   "post-training quantization and quantization-aware training.",
    "examples": [
        {"title": "QuIP: 2-Bit Quantization of Large Language Models With Guarantees",
         "abstract": "Post-training parameter quantization of LLMs with incoherence processing and adaptive "
                     "rounding; the first 2-bit quantization that works at LLM scale."},
        {"title": "HAWQ: Hessian Aware Quantization of Neural Networks with Mixed-Precision",
         "abstract": "Mixed-precision quantization picks a bit width per layer from Hessian spectra, "
                     "quantizing models to ultra low precision."},
        {"title": "BitNet: Scaling 1-bit Transformers for Large Language Models",
         "abstract": "BitLinear trains 1-bit weights from scratch, cutting memory and energy compared with "
                     "8-bit quantization and FP16 baselines."},
    ],
}


def test_topic_defined_in_words_tags_by_similarity() -> None:
    topics = {"quant": TopicSpec.model_validate(QUANT)}
    tagger = Tagger(topics)
    assert tagger.topic_names == ["quant"]
    hit = tagger.tag("KVQuant: 3-bit KV cache quantization for long contexts",
                     "We quantize cached key and value activations to 3 bits with per-channel key "
                     "quantization and non-uniform quantization of the KV cache.")
    assert [a.topic for a in hit] == ["quant"] and hit[0].score >= 1.0
    assert "quantization" in hit[0].why
    assert tagger.tag("A survey of coral reefs", "Reef fish counts over ten years.") == ()
    verdict = tagger.explain("A survey of coral reefs", "Reef fish counts.")[0]
    assert verdict.kind == "described" and not verdict.assigned


def test_example_ids_are_looked_up_and_unknown_ones_left_out_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    spec = TopicSpec.model_validate({**QUANT, "examples": ["arXiv:2307.13304v2", *QUANT["examples"][:2]]})
    texts = {"2307.13304": ("QuIP: 2-bit quantization", "Quantization of LLM weights to 2 bits.")}
    asked: list[str] = []

    def lookup(paper_id: str) -> tuple[str, str] | None:
        asked.append(paper_id)
        return texts.get(paper_id)

    tagger = Tagger({"quant": spec}, examples=lookup)
    assert tagger.topic_names == ["quant"] and asked == ["arXiv:2307.13304v2", "2307.13304"]
    assert not caplog.records
    # Not fetched yet: the topic still works from its description and other examples, and says so.
    without = Tagger({"quant": spec}, examples=lambda _id: None)
    assert "example arXiv:2307.13304v2 is not in the store" in caplog.text
    assert [a.topic for a in without.tag("4-bit quantization of LLM weights",
                                         "We quantize large language model weights to 4 bits.")] == ["quant"]


def test_a_topic_with_only_unknown_examples_and_no_words_is_refused() -> None:
    spec = TopicSpec.model_validate({"label": "X", "description": "", "examples": ["2307.13304"]})
    with pytest.raises(UsageError, match=r"none of its examples is in the store"):
        Tagger({"x": spec}, examples=lambda _id: None)


@pytest.mark.parametrize(("written", "bare"), [
    ("2401.01234", "2401.01234"), ("arXiv:2401.01234v3", "2401.01234"),
    ("https://arxiv.org/abs/2401.01234v2", "2401.01234"), ("https://arxiv.org/pdf/2401.0123", "2401.0123"),
    ("hep-th/9901001v1", "hep-th/9901001"), ("not an id", "not an id")])
def test_example_ids_are_read_as_arxiv_ids(written: str, bare: str) -> None:
    assert example_id(written) == bare


def test_described_topic_from_config_merges_with_builtins() -> None:
    settings = Settings.model_validate({"topics": {"quant": QUANT}})
    assert set(settings.enabled_topics) == {"pruning", "diffusion", "subspace", "nas", "quant"}
    with pytest.raises(ValidationError, match="at most 5"):
        Settings.model_validate({"topics": {"q": {**QUANT, "examples": ["x"] * 6}}})
