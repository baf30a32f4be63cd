"""Fast whole-word matching of many regular expressions, guided by literals every match must contain.

Python's ``re`` is slow at an alternation of many case-insensitive patterns: it tries every branch at
every word of an abstract. ``str.find`` is fast. ``PhraseSet`` reads each pattern's parse tree for
literals that every match contains (its *gate*) and, where every match starts with one of a few
literals, for those *start* literals. Patterns with start literals share one alternation, tried only
where a start literal begins a word; the others are searched only in windows around their rarest
required literal. When nothing can be derived a pattern is simply searched everywhere: the literals
only ever save time, never change a result.

Results are the same as one alternation ``(?<!\\w)(?:p0|p1|...)(?!\\w)`` scanned left to right: where
matches overlap, the one starting first wins, and at the same start the earlier pattern wins.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Literal", "PhraseSet", "lower_same_length"]

# (text, exact): ``text`` is lower-cased and looked for in lower-cased text unless ``exact`` (it comes
# from a case-sensitive part such as "(?-i:DiT)"), when it is looked for as is in the original text.
Literal = tuple[str, bool]
# Every match contains one literal of each group; the first group is the most selective.
Gate = tuple[tuple[Literal, ...], ...]

# Numbered or named back-references, and conditionals on groups: such a pattern keeps its own regex.
_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")
# Literals shorter than this narrow nothing down.
_MIN_LENGTH = 3
# How far (in characters) a match may extend from the literal it is searched around.
REACH = 160


def lower_same_length(text: str) -> str:
    """``text.lower()``, keeping each character's position (a few characters lower to two)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


@dataclass(frozen=True, slots=True)
class _Pattern:
    index: int
    # (?:p)(?!\w) to match at a known start when ``starts`` is known, else (?<!\w)(?:p)(?!\w) to
    # search a window.
    regex: re.Pattern[str]
    gate: Gate | None
    starts: tuple[Literal, ...] | None  # every match starts with one of these
    reach: int  # the longest a match can be, at most REACH
    # Whether to check the gate before searching: anchored patterns look for their start literals
    # anyway, which is as cheap.
    check_first: bool

    def passes(self, text: str, low: str) -> bool:
        if self.gate is None:
            return True
        for group in self.gate:
            for value, exact in group:
                if value in (text if exact else low):
                    break
            else:
                return False
        return True


class PhraseSet:
    """A list of case-insensitive regular expressions matched as whole words (see module docstring).

    ``patterns`` must be valid ``re`` patterns; their order is their priority.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = tuple(_prepare(i, p) for i, p in enumerate(patterns))
        # Patterns with start literals (and no back-references, which a combined expression would
        # renumber) share one alternation, tried once at each place one of their start literals is.
        joint = [p for p in self._patterns if p.starts is not None and not _BACKREF.search(patterns[p.index])]
        self._joint: re.Pattern[str] | None = None
        if joint:
            alternation = "|".join(f"(?P<_{p.index}>{patterns[p.index]})" for p in joint)
            try:
                self._joint = re.compile(rf"(?:{alternation})(?!\w)", re.IGNORECASE)
            except re.error:  # e.g. two patterns naming a group alike: each keeps its own regex
                joint = []
        self._separate = tuple(p for p in self._patterns if p not in joint)
        starts = {lit for p in joint for lit in p.starts or ()}
        # Where a literal starts with another, the other's places include its own: look for that one.
        self._joint_lower = _no_extensions({v for v, exact in starts if not exact})
        self._joint_exact = _no_extensions({v for v, exact in starts if exact})

    def __len__(self) -> int:
        return len(self._patterns)

    def first_literals(self, indices: range) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The most selective literals of the patterns at ``indices`` as (lower, exact) tuples: text
        containing none of them cannot match any of those patterns. None if some pattern has no gate."""
        firsts: set[Literal] = set()
        for i in indices:
            gate = self._patterns[i].gate
            if gate is None:
                return None
            firsts.update(gate[0])
        return (_shortest({v for v, exact in firsts if not exact}),
                _shortest({v for v, exact in firsts if exact}))

    def may_match(self, text: str, low: str, indices: range) -> bool:
        """Whether one of the patterns at ``indices`` may match ``text`` (``low`` is it lower-cased)."""
        return any(self._patterns[i].passes(text, low) for i in indices)

    def find(self, text: str, low: str, overlapping: bool = False) -> list[tuple[int, int, int]]:
        """Whole-word matches in ``text`` (``low`` is it lower-cased) as (start, end, pattern index),
        in order; overlapping ones are resolved as in a single alternation unless ``overlapping``."""
        found: list[tuple[int, int, int]] = []
        if overlapping:
            patterns = self._patterns
        else:
            patterns = self._separate
            if self._joint is not None:
                self._find_joint(self._joint, text, low, found)
        for pattern in patterns:
            if pattern.check_first and not pattern.passes(text, low):
                continue
            if pattern.starts is not None:
                _find_anchored(pattern, text, low, found)
            else:
                for start, end in _windows(pattern.gate, pattern.reach, text, low):
                    found.extend((m.start(), m.end(), pattern.index)
                                 for m in pattern.regex.finditer(text, start, end))
        if len(found) < 2:
            return found
        found.sort(key=lambda m: (m[0], m[2]))
        if overlapping:
            return found
        kept: list[tuple[int, int, int]] = []
        last_end = -1
        for start, end, index in found:
            if start >= last_end:
                kept.append((start, end, index))
                last_end = end
        return kept


    def _find_joint(self, joint: re.Pattern[str], text: str, low: str, found: list[tuple[int, int, int]]) -> None:
        starts: set[int] = set()
        for haystack, values in ((low, self._joint_lower), (text, self._joint_exact)):
            for value in values:
                at = haystack.find(value)
                while at != -1:
                    starts.add(at)
                    at = haystack.find(value, at + 1)
        for at in sorted(starts):
            before = text[at - 1] if at else " "
            if before.isalnum() or before == "_":
                continue
            match = joint.match(text, at)
            if match is not None:
                found.append((at, match.end(), int((match.lastgroup or "_0")[1:])))


def _find_anchored(pattern: _Pattern, text: str, low: str, found: list[tuple[int, int, int]]) -> None:
    for value, exact in pattern.starts or ():
        haystack = text if exact else low
        at = haystack.find(value)
        while at != -1:
            before = text[at - 1] if at else " "
            if not (before.isalnum() or before == "_"):
                match = pattern.regex.match(text, at)
                if match is not None:
                    found.append((at, match.end(), pattern.index))
            at = haystack.find(value, at + 1)


def _windows(gate: Gate | None, reach: int, text: str, low: str) -> list[tuple[int, int]]:
    """Merged windows around the gate's group rarest in this text, cut at spaces."""
    if gate is None:
        return [(0, len(text))]
    group = gate[0] if len(gate) == 1 else min(
        gate, key=lambda g: sum((text if exact else low).count(v) for v, exact in g))
    spans: list[tuple[int, int]] = []
    for value, exact in group:
        haystack = text if exact else low
        at = haystack.find(value)
        while at != -1:
            spans.append((at - reach, at + len(value) + reach))
            at = haystack.find(value, at + 1)
    spans.sort()
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(hi, merged[-1][1])
        else:
            merged.append([lo, hi])
    windows = []
    for lo, hi in merged:
        # Cut at spaces so no word is split at a window's edge (the lookarounds would see an edge).
        start = 0 if lo <= 0 else text.rfind(" ", 0, lo) + 1
        end = text.find(" ", hi) if hi < len(text) else -1
        windows.append((start, len(text) if end == -1 else end))
    return windows


def _prepare(index: int, pattern: str) -> _Pattern:
    try:
        from re import _parser  # type: ignore[attr-defined]  # private, not in typeshed (see _requirements)

        parsed = _parser.parse(pattern, re.IGNORECASE)
        groups = _requirements(parsed.data, exact=False)
        starts = _starts(parsed.data, exact=False)
        longest = parsed.getwidth()[1]
    except Exception:  # CPython's internal parser: anything unexpected only costs speed
        groups, starts, longest = [], None, REACH
    useful = {tuple(sorted(g)) for g in groups if _shortest_length(g) >= _MIN_LENGTH}
    gate = tuple(sorted(useful, key=lambda g: (-_selectivity(g), len(g)))) if useful else None
    if starts is None or _shortest_length(starts) < _MIN_LENGTH:
        regex = re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)
        return _Pattern(index, regex, gate, None, min(REACH, longest), True)
    regex = re.compile(rf"(?:{pattern})(?!\w)", re.IGNORECASE)
    ordered = tuple(sorted(starts))
    return _Pattern(index, regex, gate, ordered, min(REACH, longest), False)


def _no_extensions(values: set[str]) -> tuple[str, ...]:
    """``values`` without those that start with another value."""
    return tuple(sorted(v for v in values if not any(w != v and v.startswith(w) for w in values)))


def _shortest(values: set[str]) -> tuple[str, ...]:
    """``values`` without those containing another value (found wherever the shorter one is)."""
    return tuple(sorted(v for v in values if not any(w != v and w in v for w in values)))


def _shortest_length(group: tuple[Literal, ...] | set[Literal]) -> int:
    return min(len(text) for text, _ in group)


# Words in nearly every abstract: a literal that is one of them rules little out, whatever its length.
_COMMON = frozenset([
    "approach", "based", "data", "embedding", "embeddings", "feature", "features", "image", "images",
    "information", "language", "large", "learning", "method", "methods", "model", "models", "network",
    "networks", "performance", "problem", "representation", "representations", "results", "search",
    "space", "system", "systems", "task", "tasks", "time", "token", "tokens", "training",
])


def _selectivity(group: Collection[Literal]) -> float:
    """How much finding one of ``group``'s literals narrows the text down (higher: rarer)."""
    length = min(len(text) - (4 if text.strip(" -") in _COMMON else 0) for text, _ in group)
    # Each doubling of the alternatives makes a hit about one character's worth likelier.
    return length - math.log2(len(group))


def _inner_exact(av: Any, exact: bool) -> bool:
    _group, add_flags, del_flags, _sub = av
    if del_flags & re.IGNORECASE:
        return True
    if add_flags & re.IGNORECASE:
        return False
    return exact


def _requirements(items: list[tuple[Any, Any]], exact: bool) -> list[set[Literal]]:
    """For a parsed sequence, sets of literals such that every match contains one of each set."""
    from re import _constants as sre  # type: ignore[attr-defined]  # private, not in typeshed

    found: list[set[Literal]] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            found.append({("".join(run), exact)})
            run.clear()

    for op, av in items:
        if op is sre.LITERAL:
            run.append(chr(av) if exact else chr(av).lower())
            continue
        close_run()
        if op is sre.SUBPATTERN:
            found.extend(_requirements(av[3].data, _inner_exact(av, exact)))
        elif op is sre.ATOMIC_GROUP:
            found.extend(_requirements(av.data, exact))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and av[0] >= 1:
            found.extend(_requirements(av[2].data, exact))
        elif op is sre.BRANCH:
            union: set[Literal] = set()
            for branch in av[1]:
                options = _requirements(branch.data, exact)
                if not options:
                    break
                union |= max(options, key=_selectivity)
            else:
                found.append(union)
    close_run()
    return found


def _starts(items: list[tuple[Any, Any]], exact: bool) -> set[Literal] | None:
    """Literals one of which every match of a parsed sequence starts with; None if unknown."""
    from re import _constants as sre  # type: ignore[attr-defined]  # private, not in typeshed

    if not items:
        return None
    op, av = items[0]
    if op is sre.LITERAL:
        run = []
        for op2, av2 in items:
            if op2 is not sre.LITERAL:
                break
            run.append(chr(av2) if exact else chr(av2).lower())
        return {("".join(run), exact)}
    if op is sre.SUBPATTERN:
        return _starts(av[3].data, _inner_exact(av, exact))
    if op is sre.ATOMIC_GROUP:
        return _starts(av.data, exact)
    if op is sre.BRANCH:
        union: set[Literal] = set()
        for branch in av[1]:
            got = _starts(branch.data, exact)
            if not got:
                return None
            union |= got
        return union
    return None
