"""LaTeX in titles and abstracts -> readable Unicode (``$\\ell_p$`` -> ``ℓₚ``), or left exactly as written.

The rule is "readable or untouched, never broken": a math span (``$...$``, ``$$...$$``, ``\\(...\\)``) is
converted only when every piece of it is understood; otherwise the span stays as the author wrote it.
Symbol names come from pylatexenc's table (hundreds of macros); sub- and superscripts use the Unicode
forms where every character has one. Outside math only a few text macros (``\\textbf{x}``, ``\\%``) are
rewritten; unknown macros such as a paper's ``\\ours`` stay as written.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pylatexenc import latex2text

__all__ = ["to_unicode"]

_SUPER = dict(zip("0123456789+-=()nio" + "abcdefghjklmoprstuvwxyz" + "ABDEGHIJKLMNOPRTUVW",
                  "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱᵒ" + "ᵃᵇᶜᵈᵉᶠᵍʰʲᵏˡᵐᵒᵖʳˢᵗᵘᵛʷˣʸᶻ" + "ᴬᴮᴰᴱᴳᴴᴵᴶᴷᴸᴹᴺᴼᴾᴿᵀᵁⱽᵂ", strict=True))
_SUPER["′"] = "′"
_SUB = dict(zip("0123456789+-=()aeoxhklmnpstij" + "βγρφχ",
                "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₒₓₕₖₗₘₙₚₛₜᵢⱼ" + "ᵦᵧᵨᵩᵪ", strict=True))

# Font and text commands whose argument is shown as plain text.
_PLAIN_FONTS = {"mathrm", "mathit", "mathsf", "mathtt", "mathbf", "boldsymbol", "bm", "mathnormal",
                "text", "textrm", "textit", "textbf", "textsf", "texttt", "emph", "mathcal", "mathscr",
                "mathfrak", "operatorname", "textsc", "textnormal", "mbox", "hbox", "underline",
                "overline"}
_DOUBLE_STRUCK = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ", "P": "ℙ", "H": "ℍ", "E": "𝔼", "1": "𝟙"}
_ACCENTS = {"hat": "\u0302", "widehat": "\u0302", "tilde": "\u0303", "widetilde": "\u0303",
            "bar": "\u0304", "vec": "\u20d7", "dot": "\u0307", "ddot": "\u0308"}
_SPACES = {",": " ", ";": " ", ":": " ", "!": "", " ": " ", "quad": " ", "qquad": " ", "enspace": " ",
           "thinspace": " "}
_ESCAPED = {"%": "%", "&": "&", "_": "_", "$": "$", "#": "#", "{": "{", "}": "}"}
# Delimiter sizing commands carry no meaning in plain text.
_IGNORED = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "displaystyle",
            "textstyle", "scriptstyle", "limits", "nolimits"}
_TEXT_MACROS = re.compile(r"\\(textbf|textit|emph|textsc|texttt|textrm|textsf|underline)\{([^{}\\$]*)\}")
_TEXT_ESCAPES = re.compile(r"\\([%&#_$])")
_MATH = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)", re.DOTALL)


class _Unconvertible(Exception):
    """Raised inside the converter when a span holds something it does not understand."""


@lru_cache(maxsize=1)
def _symbols() -> dict[str, str]:
    """Argument-less macros with a plain-string replacement, from pylatexenc's latex2text table."""
    db = latex2text.get_default_latex_context_db()
    table: dict[str, str] = {}
    for spec in db.iter_macro_specs():
        repl = getattr(spec, "simplify_repl", None)
        if isinstance(repl, str) and "%" not in repl and spec.macroname not in _PLAIN_FONTS:
            table.setdefault(spec.macroname, repl)
    return table


class _MathConverter:
    """A small recursive reader of one math span; raises _Unconvertible on anything unknown."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0

    def convert(self) -> str:
        out = self._sequence(until=None)
        if self.pos != len(self.src):
            raise _Unconvertible(self.src)
        return re.sub(r" {2,}", " ", out).strip()

    def _sequence(self, until: str | None) -> str:
        parts: list[str] = []
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if until is not None and ch == until:
                return "".join(parts)
            parts.append(self._atom_or_script())
        if until is not None:
            raise _Unconvertible("unbalanced braces")
        return "".join(parts)

    def _atom_or_script(self) -> str:
        ch = self.src[self.pos]
        if ch in "^_":
            self.pos += 1
            arg = self._argument()
            return _script(arg, superscript=ch == "^")
        return self._atom()

    def _atom(self) -> str:
        ch = self.src[self.pos]
        if ch == "{":
            self.pos += 1
            inner = self._sequence(until="}")
            self.pos += 1
            return inner
        if ch == "}":
            raise _Unconvertible("unbalanced braces")
        if ch == "\\":
            return self._command()
        if ch in "&#%":
            raise _Unconvertible(ch)
        self.pos += 1
        if ch == "~":
            return " "
        if ch == "'":
            return "′"
        return " " if ch.isspace() else ch

    def _argument(self) -> str:
        """The argument of ^, _ or a command: one group or one token (spaces before it skipped)."""
        while self.pos < len(self.src) and self.src[self.pos] == " ":
            self.pos += 1
        if self.pos >= len(self.src):
            raise _Unconvertible("missing argument")
        return self._atom()

    def _command(self) -> str:
        match = re.compile(r"\\([A-Za-z]+|.)").match(self.src, self.pos)
        if not match:
            raise _Unconvertible("lone backslash")
        name = match.group(1)
        self.pos = match.end()
        if name in _ESCAPED:
            return _ESCAPED[name]
        if name in _SPACES:
            return _SPACES[name]
        if name in _IGNORED:
            return ""
        if name == "mathbb":
            arg = self._argument()
            return "".join(_DOUBLE_STRUCK.get(c, c) for c in arg)
        if name in _PLAIN_FONTS:
            return self._argument()
        if name in _ACCENTS:
            arg = self._argument()
            if len(arg) != 1:
                raise _Unconvertible(name)
            return unicodedata.normalize("NFC", arg + _ACCENTS[name])
        if name in ("frac", "dfrac", "tfrac"):
            num, den = self._argument(), self._argument()
            return f"{_group(num)}/{_group(den)}"
        if name == "sqrt":
            return "√" + _group(self._argument())
        symbol = _symbols().get(name) if name.isalpha() else None
        if symbol is None:
            raise _Unconvertible(name)
        return symbol


def _group(text: str) -> str:
    """Parenthesise a multi-character operand so ``a+b/c`` stays unambiguous."""
    return text if len(text) <= 1 or text.isalnum() else f"({text})"


def _script(arg: str, superscript: bool) -> str:
    table = _SUPER if superscript else _SUB
    if arg and all(c in table for c in arg):
        return "".join(table[c] for c in arg)
    mark = "^" if superscript else "_"
    return mark + _group(arg)


def _convert_math(span: str) -> str | None:
    try:
        return _MathConverter(span).convert()
    except (_Unconvertible, IndexError):
        return None


@lru_cache(maxsize=65536)
def to_unicode(text: str) -> str:
    """Rewrite the LaTeX in ``text`` as readable Unicode; anything not understood stays as written.

    ``"$\\ell_p$ norms"`` -> ``"ℓₚ norms"``, ``"\\textbf{Fast} $O(n^2)$"`` -> ``"Fast O(n²)"``,
    ``"$\\ourmacro{x}$"`` -> unchanged. Pure and cached: the same title is converted once per process.
    """
    if "$" not in text and "\\" not in text:
        return text

    parts: list[str] = []
    last = 0
    for match in _MATH.finditer(text):
        parts.append(_convert_text(text[last:match.start()]))
        body = next(g for g in match.groups() if g is not None)
        parts.append(_convert_math(body) or match.group(0))
        last = match.end()
    parts.append(_convert_text(text[last:]))
    return "".join(parts)


def _convert_text(segment: str) -> str:
    """Outside math: unwrap simple text-style macros and unescape \\% and friends."""
    if "\\" not in segment:
        return segment
    segment = _TEXT_MACROS.sub(lambda m: m.group(2), segment)
    return _TEXT_ESCAPES.sub(lambda m: m.group(1), segment)
