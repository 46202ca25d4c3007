"""Real labelled review sentences (restaurant and product reviews that no one here wrote) and the
openings of those reviews used as steering prompts.

The data is ``explorer/data/reviews/reviews.csv`` (source and licence in its README): 1,983 sentences
with the source's label (1 positive, 0 negative), the site they come from and a fixed split:
``train`` (60%), ``validation`` (20%) and ``test`` (20%), stratified by site and label. Probes are
fitted on ``train``; every choice (regularisation, layers, p0, which probe) is made on
``validation``; ``test`` is read only to report the final figures.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from explorer.core.data import DATA_DIR
from explorer.core.errors import InputError
from explorer.methods.concepts.dataset import ConceptData, shipped, shipped_names, validate

REVIEWS = DATA_DIR / "reviews" / "reviews.csv"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Review:
    text: str
    positive: bool
    source: str
    split: str


@lru_cache(maxsize=1)
def reviews() -> tuple[Review, ...]:
    """Every shipped review sentence, in file order."""
    with REVIEWS.open(encoding="utf-8", newline="") as f:
        return tuple(Review(r["text"], r["label"] == "1", r["source"], r["split"]) for r in csv.DictReader(f))


def _split(split: str) -> list[Review]:
    if split not in SPLITS:
        raise InputError(f"The review split must be one of {', '.join(SPLITS)}; got {split!r}.")
    return [r for r in reviews() if r.split == split]


def review_concept(per_side: int | None = None, held_out: str = "validation") -> ConceptData:
    """The concept "negative review" (label 1 = a negative sentence) from the real reviews: the first
    ``per_side`` training sentences of each label (all by default) to fit on, and the ``held_out``
    split (default ``validation``; never ``test`` for a choice) to score the probes on."""
    rows: list[tuple[str, int, str]] = []
    for split, part in (("train", "train"), (held_out, "test")):
        seen = {0: 0, 1: 0}
        for r in _split(split):
            label = 0 if r.positive else 1
            if part == "train" and per_side is not None and seen[label] >= per_side:
                continue
            seen[label] += 1
            rows.append((r.text, label, part))
    return validate(ConceptData("negative_review", tuple(t for t, _, _ in rows), tuple(lab for _, lab, _ in rows),
                                tuple(s for _, _, s in rows), f"reviews:train/{held_out}"))


def opening(text: str, max_words: int = 6) -> str | None:
    """The first words of a review: half its words, at least 3 and at most ``max_words``; None when the
    sentence has fewer than 5 words (its opening would be most of it)."""
    words = text.split()
    if len(words) < 5:
        return None
    return " ".join(words[:min(max_words, max(3, len(words) // 2))])


def openings(split: str, positive: bool | None = False, limit: int | None = None) -> list[str]:
    """Distinct openings of the reviews of ``split`` (negative ones by default; None: both), file order."""
    out: list[str] = []
    seen: set[str] = set()
    for r in _split(split):
        if positive is not None and r.positive != positive:
            continue
        o = opening(r.text)
        if o is None or o.lower() in seen:
            continue
        seen.add(o.lower())
        out.append(o)
    return out[:limit] if limit is not None else out


REVIEW_SET = "reviews"


def set_names() -> list[str]:
    """Every example set that comes with the project: the hand-written sets and the real reviews."""
    return [*shipped_names(), REVIEW_SET]


def named_set(name: str) -> ConceptData:
    """A shipped example set by name; ``reviews`` is the real reviews' negative-review concept."""
    return review_concept() if name == REVIEW_SET else shipped(name)
