"""The topic tagger: traps, evidence, scores, user topics, and the quality bars on labelled papers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from digest.config import settings_from_dict
from digest.errors import ConfigError
from digest.matching import PhraseSet, lower_same_length
from digest.models import Paper
from digest.tagger import Tagger, clean_text
from digest.tagger_eval import evaluate, load_labelled
from digest.topics import default_topics

LABELS = Path(__file__).resolve().parent.parent / "fixtures" / "labels"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger(default_topics())


def topics_of(tagger: Tagger, title: str, abstract: str = "") -> set[str]:
    return {a.topic for a in tagger.tag(title, abstract)}


# ---- the traps named in the issue ---------------------------------------------------------------


@pytest.mark.parametrize("title", [
    "Real-Time Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network",
    "Learning a Consensus Sub-Network with One Pass Training",
    "Global Convergence of Sub-gradient Method for Robust Matrix Recovery",
    "Monarch Mixer: A Simple Sub-Quadratic GEMM-Based Architecture",
    "Textual Decomposition Then Sub-motion-space Scattering for Motion Generation",
    "Random Sub-Samples Generation for Self-Supervised Real Image Denoising",
    "QMoE: Practical Sub-1-Bit Compression of Trillion-Parameter Models",
])
def test_words_starting_with_sub_are_not_subspace(tagger: Tagger, title: str) -> None:
    assert "subspace" not in topics_of(tagger, title, title)


@pytest.mark.parametrize("title", [
    "Accelerating Data Generation for Neural Operators via Krylov Subspace Recycling",
    "Improving Accuracy and Transferability by Grassmann Class Representation",
    "Training Language Models in a Low-Rank Subspace",
])
def test_real_subspace_methods_are_subspace(tagger: Tagger, title: str) -> None:
    assert "subspace" in topics_of(tagger, title)


@pytest.mark.parametrize("abstract", [
    "We solve the linear systems with a Krylov method and recycle the basis between solves.",
    "Class vectors are generalised to points on the Grassmann manifold.",
    "Updates are confined to a low-rank subspace of the weights.",
])
def test_one_strong_subspace_term_in_an_abstract_is_enough(tagger: Tagger, abstract: str) -> None:
    assert "subspace" in topics_of(tagger, "A method", abstract)


def test_a_passing_subspace_mention_is_not_enough(tagger: Tagger) -> None:
    abstract = ("We propose a retrieval model. Most methods learn a common subspace where similarities are "
                "measured; we instead align audio and text with an adaptive temperature.")
    assert "subspace" not in topics_of(tagger, "Contrastive Audio-Text Retrieval", abstract)


@pytest.mark.parametrize("title,abstract", [
    ("Tractography with Diffusion MRI", "Diffusion MRI tractography reconstructs white-matter pathways."),
    ("Graph Diffusion for Node Classification", "We propagate labels by graph diffusion over the network."),
    ("Information Diffusion in Social Networks", "We model information diffusion between users."),
    ("Reaction-Diffusion Equations", "We study existence of solutions of reaction-diffusion systems."),
])
def test_physical_and_graph_diffusion_are_not_diffusion_models(tagger: Tagger, title: str, abstract: str) -> None:
    assert "diffusion" not in topics_of(tagger, title, abstract)


def test_diffusion_models_and_their_applications_are_diffusion(tagger: Tagger) -> None:
    assert "diffusion" in topics_of(tagger, "Crystal Diffusion Variational Autoencoder for Materials")
    abstract = ("Latent diffusion models generate images from text. We distill a text-to-image diffusion "
                "model into a one-step student.")
    assert "diffusion" in topics_of(tagger, "Fast Image Generation", abstract)
    assert "diffusion" in topics_of(tagger, "Graph Diffusion Models for Molecule Generation")


def test_one_passing_diffusion_mention_is_not_enough(tagger: Tagger) -> None:
    abstract = "Our autoregressive mesh generator reaches higher quality than diffusion baselines."
    assert "diffusion" not in topics_of(tagger, "Token-Efficient Autoregressive 3D Generation", abstract)


def test_quantization_alone_is_not_pruning(tagger: Tagger) -> None:
    abstract = ("We quantize LLM weights to 2 bits with incoherence processing. Our post-training "
                "quantization is compatible with pruning and improves over existing quantization methods.")
    assert topics_of(tagger, "QuIP: 2-Bit Quantization of Large Language Models", abstract) == set()


@pytest.mark.parametrize("title,abstract", [
    ("Dataset Pruning for Efficient Training",
     "Dataset pruning removes redundant training samples. We prune easy examples and keep hard ones; "
     "data pruning at high rates still preserves accuracy."),
    ("Faster Game-Tree Search",
     "Alpha-beta search pruning of the search tree; we prune branches early with a learned bound."),
])
def test_pruning_data_or_search_trees_is_not_pruning(tagger: Tagger, title: str, abstract: str) -> None:
    assert "pruning" not in topics_of(tagger, title, abstract)


@pytest.mark.parametrize("title,abstract", [
    ("Visual Token Pruning for Fast Vision-Language Models", "We drop redundant visual tokens."),
    ("Stabilizing the Lottery Ticket Hypothesis", "Iterative magnitude pruning finds sparse subnetworks."),
    ("Structured Pruning of LLMs", "We prune heads and channels of a pretrained model."),
])
def test_pruning_of_network_parts_is_pruning(tagger: Tagger, title: str, abstract: str) -> None:
    assert "pruning" in topics_of(tagger, title, abstract)


def test_hardware_design_space_exploration_is_not_nas(tagger: Tagger) -> None:
    abstract = ("Architects explore a combinatorial design space of memory controllers with multi-agent "
                "reinforcement learning, opening the way to learned hardware architecture search.")
    assert "nas" not in topics_of(tagger, "Multi-Agent RL for Microprocessor Design Space Exploration", abstract)


def test_hyperparameter_tuning_is_not_nas(tagger: Tagger) -> None:
    abstract = "ASHA tunes hyperparameters in parallel with aggressive early stopping over a search space."
    assert "nas" not in topics_of(tagger, "Massively Parallel Hyperparameter Tuning", abstract)


def test_architecture_search_is_nas_and_the_acronym_is_case_sensitive(tagger: Tagger) -> None:
    abstract = "We train a supernet once and run an evolutionary search for subnets under latency limits."
    assert "nas" in topics_of(tagger, "Weight-Sharing Neural Architecture Search for ViTs", abstract)
    assert "nas" in topics_of(tagger, "Fast Vision Transformers", "We use NAS. NAS finds a fast model.")
    assert "nas" not in topics_of(tagger, "Fast Vision Transformers", "Nas and nas are not the acronym.")


def test_network_attached_storage_is_not_nas(tagger: Tagger) -> None:
    abstract = "Backups go to network-attached storage (NAS); the NAS keeps three copies."
    assert "nas" not in topics_of(tagger, "Reliable Backups", abstract)


# ---- evidence, scores, output ---------------------------------------------------------------------


def test_assignments_carry_scores_and_evidence_best_first(tagger: Tagger) -> None:
    result = tagger.tag("Memorized Images in Diffusion Models share a Subspace",
                        "Diffusion models memorize; the memorized prompts activate a common subspace.")
    assert [a.topic for a in result] == sorted((a.topic for a in result),
                                               key=lambda t: -next(a.score for a in result if a.topic == t))
    by_topic = {a.topic: a for a in result}
    assert set(by_topic) == {"diffusion", "subspace"}
    assert all(a.score >= 1.0 for a in result)
    assert "diffusion models" in by_topic["diffusion"].why or "diffusion" in by_topic["diffusion"].why
    assert "subspace" in by_topic["subspace"].why


def test_title_mentions_weigh_more_than_abstract_mentions(tagger: Tagger) -> None:
    assert "subspace" in topics_of(tagger, "Subspace Attention for Compact CNNs")
    assert "subspace" not in topics_of(tagger, "Compact CNNs", "An attention map per feature subspace.")


def test_weak_evidence_never_assigns_alone(tagger: Tagger) -> None:
    abstract = "Low-rank adapters; low-rank updates; low-rank factors; an SVD and a PCA of the low-rank weights."
    assert "subspace" not in topics_of(tagger, "Low-Rank Adaptation for Weather Removal", abstract)


def test_urls_are_not_evidence(tagger: Tagger) -> None:
    abstract = "Code: https://github.com/x/subspace-rerouting and github.com/y/cycle-diffusion/tree/main"
    assert tagger.tag("A jailbreak attack", abstract) == ()


def test_no_topic_is_an_empty_tuple(tagger: Tagger) -> None:
    assert tagger.tag("Rain in Spain", "It falls mainly on the plain.") == ()
    assert tagger.tag("", "") == ()


def test_tag_paper_sets_topics_and_tag_many_keeps_order(tagger: Tagger) -> None:
    papers = [Paper(id="1", title="Structured Pruning of LLMs", abstract="We prune heads."),
              Paper(id="2", title="Weather", abstract="Rain.")]
    tagged = list(tagger.tag_many(papers))
    assert [p.id for p in tagged] == ["1", "2"]
    assert tagged[0].topic_names == ("pruning",) and tagged[1].topics == ()
    assert tagger.tag_paper(papers[0]).topics == tagged[0].topics


def test_clean_text_normalises_hyphens_spaces_and_urls() -> None:
    assert clean_text("Sub\u2010space  learning\n see https://x.org/a") == "Sub-space learning see"
    assert clean_text("  plain text ") == "plain text"
    assert lower_same_length("\u0130stanbul SUBSPACE") == "\u0130stanbul subspace"


# ---- topics are data --------------------------------------------------------------------------------


def test_a_user_topic_from_config_is_tagged() -> None:
    settings = settings_from_dict({"topics": {"quantization": {
        "label": "Quantization", "description": "Low-bit networks.",
        "phrases": ["quantiz(?:e|ed|es|ing|ation)", "low-bit"], "weak": ["bit-?widths?"]}}})
    tagger = Tagger(settings.enabled_topics)
    assert tagger.topic_names == ["pruning", "diffusion", "subspace", "nas", "quantization"]
    assert topics_of(tagger, "QuIP: 2-Bit Quantization of LLMs") == {"quantization"}


def test_disabled_topics_are_not_tagged() -> None:
    settings = settings_from_dict({"topics": {"pruning": {"enabled": False}}})
    tagger = Tagger(settings.enabled_topics)
    assert "pruning" not in tagger.topic_names
    assert topics_of(tagger, "Structured Pruning of LLMs", "We prune heads.") == set()


def test_a_bad_pattern_is_a_config_error_naming_topic_and_pattern() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"topics": {"rl": {"label": "RL", "phrases": ["reinforcement (learning"]}}})
    message = str(info.value)
    assert "topics.rl.phrases" in message and "reinforcement (learning" in message and "\n" not in message


@pytest.mark.parametrize("spec,needle", [
    ({"label": "RL"}, "needs patterns"),
    ({"phrases": ["x?"]}, "matches the empty string"),
    ({"phrases": ["  "]}, "empty pattern"),
    ({"phrases": ["rl"], "min_score": 0}, "min_score"),
    ({"phrases": ["rl"], "keywords": ["rl"]}, "keywords"),
    ({"phrases": ["rl", "(?i)policy"]}, "global flags"),
])
def test_bad_topic_specs_are_rejected(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        settings_from_dict({"topics": {"rl": spec}})


def test_default_topics_have_labels_and_descriptions() -> None:
    topics = default_topics()
    assert list(topics) == ["pruning", "diffusion", "subspace", "nas"]
    assert all(spec.label and spec.description for spec in topics.values())


# ---- the fast matcher gives what one big alternation gives -----------------------------------------


def _reference(patterns: list[str], text: str) -> list[tuple[int, int, int]]:
    alternation = "|".join(f"(?P<p{i}>{p})" for i, p in enumerate(patterns))
    regex = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
    return [(m.start(), m.end(), int((m.lastgroup or "p0")[1:])) for m in regex.finditer(text)]


def test_phrase_set_agrees_with_a_single_alternation_on_labelled_papers() -> None:
    papers = load_labelled(LABELS / "seed_topics.jsonl") + load_labelled(LABELS / "dev_topics.jsonl")
    checked = 0
    for spec in default_topics().values():
        for patterns in ([*spec.strong, *spec.phrases, *spec.weak], spec.exclude):
            if not patterns:
                continue
            phrases = PhraseSet(patterns)
            for paper in papers:
                for text in (clean_text(paper.title), clean_text(paper.abstract)):
                    found = phrases.find(text, lower_same_length(text))
                    assert found == _reference(patterns, text), (paper.id, patterns)
                    checked += len(found)
    assert checked > 1000


def test_phrase_set_without_literals_still_matches() -> None:
    phrases = PhraseSet([r"\d+x speed-?ups?", "[a-z]{3}"])
    assert phrases.find("a 10x speedup", "a 10x speedup") == [(2, 13, 0)]


def test_phrase_set_with_clashing_group_names_still_works() -> None:
    phrases = PhraseSet([r"(?P<x>sub)space", r"(?P<x>krylov)"])
    text = "a krylov subspace"
    assert phrases.find(text, text) == [(2, 8, 1), (9, 17, 0)]


def test_phrase_set_keeps_back_references_working() -> None:
    phrases = PhraseSet([r"(sub)-\1way", "subway"])
    text = "a sub-subway and a subway"
    assert phrases.find(text, text) == [(2, 12, 0), (19, 25, 1)]


def test_phrase_set_reports_overlapping_matches_on_request() -> None:
    phrases = PhraseSet(["data pruning", "pruning"])
    text = "data pruning"
    assert phrases.find(text, text) == [(0, 12, 0)]
    assert phrases.find(text, text, overlapping=True) == [(0, 12, 0), (5, 12, 1)]


# ---- quality bars --------------------------------------------------------------------------------


def test_seed_macro_f1_is_at_least_095(tagger: Tagger) -> None:
    report = evaluate(tagger, load_labelled(LABELS / "seed_topics.jsonl"))
    assert report.macro_f1 >= 0.95, report


def test_dev_set_macro_f1_is_at_least_090(tagger: Tagger) -> None:
    report = evaluate(tagger, load_labelled(LABELS / "dev_topics.jsonl"))
    assert report.macro_f1 >= 0.90, report
