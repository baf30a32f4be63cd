"""Text clean-up: the characters dropped from mail, exactly, and the result of clean_text."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest

from digest.email_view import _DROPPED, clean_text


def test_the_dropped_class_is_exactly_the_controls_and_surrogates_that_are_not_whitespace() -> None:
    for code in range(0x10000):
        ch = chr(code)
        expected = (unicodedata.category(ch) in ("Cc", "Cs") and not ch.isspace()) or ch in "\ufeff\ufffe\uffff"
        assert bool(_DROPPED.fullmatch(ch)) == expected, hex(code)


def reference(value: str) -> str:
    """The rule, one character at a time: whitespace becomes a space, dropped characters go, runs of
    whitespace collapse."""
    kept = "".join(" " if ch.isspace() else ch for ch in value
                   if ch.isspace() or not (unicodedata.category(ch) in ("Cc", "Cs") or ch in "\ufeff\ufffe\uffff"))
    return re.sub(r"\s+", " ", kept).strip()


@pytest.mark.parametrize("seed", range(5))
def test_clean_text_drops_and_collapses_like_the_rule(seed: int) -> None:
    rng = random.Random(seed)
    pool = [chr(c) for c in [*range(0x250), 0x85, 0xA0, 0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF, 0xD800, 0xDFFF,
                             0x3000, 0x200B, 0x1F600]]
    for _ in range(2000):
        value = "".join(rng.choice(pool) for _ in range(rng.randint(0, 40))).replace("&", "").replace("$", "")
        value = value.replace("\\", "")
        assert clean_text(value) == reference(value), repr(value)


def test_clean_text_examples() -> None:
    assert clean_text("  Sparse\u00a0\u00a0models\x00 \u2028 &amp; more\ufeff ") == "Sparse models & more"
    assert clean_text("tab\tand\r\nnew\x1fline") == "tab and new line"
    assert clean_text(None) == "" and clean_text("") == ""
