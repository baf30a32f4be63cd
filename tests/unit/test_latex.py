"""LaTeX in titles and abstracts: readable Unicode where understood, exactly as written where not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digest.latex import to_unicode

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "render" / "papers.jsonl"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"robust $\ell_p$ attacks", "robust ℓₚ attacks"),
        (r"$\alpha$-entmax", "α-entmax"),
        (r"$O(n^2)$ time", "O(n²) time"),
        (r"CO$_2$ emissions", "CO₂ emissions"),
        (r"$\mathbb{R}^3$", "ℝ³"),
        (r"$\tilde{O}(n^3)$", "Õ(n³)"),
        (r"$10^{-3}$", "10⁻³"),
        (r"$\mathcal{H}$ spaces", "H spaces"),
        (r"$\operatorname{ord}_n(q)$", "ordₙ(q)"),
        (r"$O(\log n)$", "O(log n)"),
        (r"$\frac{1}{2}$", "1/2"),
        (r"$\sqrt{n}$", "√n"),
        (r"$x \le \epsilon$", "x ≤ ϵ"),
        (r"$\mathrm{RM}_{\text{IGM}}$", "RM_IGM"),
        (r"$x_{0.5}$", "x_(0.5)"),
        (r"\(x^2\)", "x²"),
        (r"$$E=mc^2$$", "E=mc²"),
        (r"50\% fewer \textbf{FLOPs}", "50% fewer FLOPs"),
        (r"costs \$5", "costs $5"),
    ],
)
def test_common_latex_becomes_unicode(source: str, expected: str) -> None:
    assert to_unicode(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        r"\ourmethod beats baselines",            # a paper's own macro
        r"$\ours{x}$ and more",                   # unknown macro inside math
        r"$\begin{pmatrix}a\end{pmatrix}$",        # environments are not attempted
        r"a lone $ sign",                          # unmatched dollar
        r"$x^{\unknown}$",
        r"$a \\ b$",                               # a line break is not a symbol
        r"$\hat{xy}$",                             # accent over several letters
        r"$a & b$",
        r"$ {unbalanced $",
    ],
)
def test_what_is_not_understood_stays_exactly_as_written(source: str) -> None:
    assert to_unicode(source) == source


def test_text_without_latex_is_untouched() -> None:
    text = "Plain & simple: 3 < 4, “quotes”, émigré, 数据, and ~50% gains."
    assert to_unicode(text) == text


def test_an_unconvertible_span_does_not_stop_the_others() -> None:
    assert to_unicode(r"$\alpha$ with $\ours$ and $\beta$") == r"α with $\ours$ and β"


def test_real_abstracts_never_lose_text_or_gain_broken_markup() -> None:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    with_math = [r for r in rows if "$" in r["title"] + r["abstract"]]
    assert len(with_math) > 50
    converted = 0
    for row in with_math:
        for text in (row["title"], row["abstract"]):
            out = to_unicode(text)
            # Every converted span shrinks or keeps length; nothing outside math is dropped.
            assert len(out) <= len(text)
            assert out.count("$") <= text.count("$")
            # Words outside formulas survive.
            words = [w for w in text.split() if "$" not in w and "\\" not in w and w.isalpha()]
            assert all(w in out for w in words[:20])
            converted += out != text
    assert converted > 30
