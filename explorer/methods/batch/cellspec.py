"""Cells relative to each prompt's own grid, so one spec fits prompts of any length.

Grammar (terms separated by commas; duplicates are dropped, order kept)::

    term     := "all" | "last" | "row:" sel | "col:" sel | sel ":" sel      (LAYER:TOKEN)
    sel      := "*" | "last" | INT | "-" INT | INT ".." INT ["/" STEP]

``*`` is every layer (or token); ``last`` the last one; ``-n`` counts from the end (``-1`` is the
last); ``a..b/s`` is a, a+s, ... up to b inclusive. ``last`` alone means ``*:last`` (the last token at
every layer). Everything ``interpret`` accepts (``all``, ``row:L``, ``col:T``, ``L:T``) means the
same here. Examples: ``15:last``, ``0..30/5:last``, ``*:-2``, ``row:15``, ``10:3,20:last``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from explorer.core.errors import InputError
from explorer.core.files import shorten

_RANGE = re.compile(r"^(\d+)\.\.(\d+)(?:/(\d+))?$")


@dataclass(frozen=True)
class Selector:
    """One axis of a term: ``kind`` is 'all', 'index' (``value`` may be negative) or 'range'."""

    kind: str
    value: int = 0
    stop: int = 0
    step: int = 1

    def resolve(self, n: int, axis: str) -> list[int]:
        if self.kind == "all":
            return list(range(n))
        if self.kind == "range":
            if self.stop >= n:
                raise InputError(f"The {axis} range {shorten(self.value)}..{shorten(self.stop)} goes past {n - 1}, "
                                 f"the last {axis}.")
            return list(range(self.value, self.stop + 1, self.step))
        i = self.value + n if self.value < 0 else self.value
        if not 0 <= i < n:
            raise InputError(f"{axis.capitalize()} {shorten(self.value)} is out of range: this prompt has {axis}s 0 "
                             f"to {n - 1}.")
        return [i]


@dataclass(frozen=True)
class CellSpec:
    """A parsed spec; ``resolve(n_rows, n_tokens)`` gives the (layer, token) cells of one grid."""

    text: str
    terms: tuple[tuple[Selector, Selector], ...]

    def resolve(self, n_rows: int, n_tokens: int) -> list[tuple[int, int]]:
        out: dict[tuple[int, int], None] = {}
        for layers, tokens in self.terms:
            for layer in layers.resolve(n_rows, "layer"):
                for token in tokens.resolve(n_tokens, "token"):
                    out[(layer, token)] = None
        return list(out)


def _selector(text: str) -> Selector:
    t = text.strip()
    if t == "*":
        return Selector("all")
    if t == "last":
        return Selector("index", -1)
    m = _RANGE.match(t)
    if m:
        a, b, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if b < a or s < 1:
            raise InputError(f"'{shorten(t)}' in the cell spec is not a range: write A..B or A..B/STEP with A <= B.")
        return Selector("range", a, b, s)
    try:
        return Selector("index", int(t))
    except ValueError:
        raise InputError(f"'{shorten(t)}' in the cell spec is not a layer or token: use a number, -N, last, * "
                         "or A..B/STEP.") from None


def parse_cell_spec(spec: str) -> CellSpec:
    """Parse ``spec`` (see the module docstring); raises InputError with one sentence."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("No cells given: use a spec such as 'last', '15:last' or '0..30/5:last'.")
    terms: list[tuple[Selector, Selector]] = []
    for part in spec.strip().lower().split(","):
        part = part.strip()
        if part == "all":
            terms.append((Selector("all"), Selector("all")))
        elif part == "last":
            terms.append((Selector("all"), Selector("index", -1)))
        elif part.startswith("row:"):
            terms.append((_selector(part[4:]), Selector("all")))
        elif part.startswith("col:"):
            terms.append((Selector("all"), _selector(part[4:])))
        elif part.count(":") == 1:
            a, b = part.split(":")
            terms.append((_selector(a), _selector(b)))
        else:
            raise InputError(f"'{shorten(part)}' is not a cell term: write LAYER:TOKEN (e.g. 15:last), row:L, col:T, "
                             "last or all.")
    return CellSpec(spec.strip(), tuple(terms))
