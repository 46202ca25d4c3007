"""Concept examples: positive and negative prompts, split into train and held-out parts.

A concept is taught by examples. They come typed (two lists), from a CSV or JSONL file with
``text`` and ``label`` columns (``split`` optional), or from a set shipped with the project
(``explorer/data/concepts``). Every way ends in the same validation, so a bad set is refused
with one sentence saying what to fix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from explorer.core.data import DATA_DIR
from explorer.core.errors import InputError

CONCEPT_DIR = DATA_DIR / "concepts"
MIN_PER_SIDE = 8
MAX_PROMPTS = 2000
MAX_CHARS = 2000
_TRUE = {"1", "true", "yes", "y", "pos", "+", "concept"}
_FALSE = {"0", "false", "no", "n", "neg", "-", "other"}


@dataclass(frozen=True)
class ConceptData:
    """Labelled prompts. ``texts``/``labels`` (1 = carries the concept)/``splits`` ("train"/"test") are
    parallel tuples; ``source`` says where they came from (provenance)."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    splits: tuple[str, ...]
    source: str = "typed"

    def part(self, split: str) -> tuple[list[str], list[int]]:
        """The texts and labels of one split."""
        idx = [i for i, s in enumerate(self.splits) if s == split]
        return [self.texts[i] for i in idx], [self.labels[i] for i in idx]

    def counts(self) -> dict[str, int]:
        """How many prompts per split and side, e.g. ``{"train_pos": 60, ...}``."""
        out = {}
        for split in ("train", "test"):
            _, labels = self.part(split)
            out[f"{split}_pos"] = sum(labels)
            out[f"{split}_neg"] = len(labels) - sum(labels)
        return out

    def take(self, train_per_side: int | None, test_per_side: int | None) -> ConceptData:
        """The first prompts of each side and split (None: all of that split), in order."""
        keep, seen = [], {}
        for i, key in enumerate(zip(self.labels, self.splits)):
            cap = train_per_side if key[1] == "train" else test_per_side
            if cap is None or seen.get(key, 0) < cap:
                seen[key] = seen.get(key, 0) + 1
                keep.append(i)
        return ConceptData(self.name, tuple(self.texts[i] for i in keep), tuple(self.labels[i] for i in keep),
                           tuple(self.splits[i] for i in keep), self.source)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"text": self.texts, "label": self.labels, "split": self.splits})

    def provenance(self) -> dict:
        return {"name": self.name, "source": self.source, **self.counts()}


def _label(value, where: str) -> int:
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise InputError(f"The label {value!r} in {where} is not understood: use 1 for the concept and 0 for not.")


def _auto_split(labels: Sequence[int], held_out: float) -> list[str]:
    """Every k-th prompt of each side goes to the held-out part (deterministic, order-preserving)."""
    if not 0.0 < held_out < 0.9:
        raise InputError(f"The held-out share must be between 0 and 0.9; got {held_out!r}.")
    every = max(2, round(1 / held_out))
    seen = {0: 0, 1: 0}
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append("test" if seen[lab] % every == 0 else "train")
    return out


def validate(data: ConceptData) -> ConceptData:
    """Refuse sets a probe cannot be trained or scored on; one sentence per problem."""
    if not data.name or not str(data.name).strip():
        raise InputError("The concept needs a name.")
    if len(data.texts) > MAX_PROMPTS:
        raise InputError(f"A concept set is limited to {MAX_PROMPTS} prompts; this one has {len(data.texts)}.")
    seen: set[str] = set()
    for i, text in enumerate(data.texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"Prompt {i + 1} is empty: every example needs some text.")
        if len(text) > MAX_CHARS:
            raise InputError(f"Prompt {i + 1} is longer than {MAX_CHARS} characters; shorten it.")
        key = text.strip()
        if key in seen:
            raise InputError(f"The prompt {key[:60]!r} appears twice; remove the duplicate.")
        seen.add(key)
    if set(data.labels) != {0, 1}:
        raise InputError("The examples have one class only: give prompts with the concept (1) and without it (0).")
    c = data.counts()
    if min(c["train_pos"], c["train_neg"]) < MIN_PER_SIDE or min(c["test_pos"], c["test_neg"]) < 2:
        pos, neg = c["train_pos"] + c["test_pos"], c["train_neg"] + c["test_neg"]
        raise InputError(f"Each side needs at least {MIN_PER_SIDE} prompts to train on and 2 held out to score the "
                         f"probes ({MIN_PER_SIDE + 2} per side when every 4th is held out); got {pos} with the "
                         f"concept ({c['train_pos']} to train, {c['test_pos']} held out) and {neg} without "
                         f"({c['train_neg']} to train, {c['test_neg']} held out).")
    return data


def from_lists(name: str, positive: Sequence[str], negative: Sequence[str], *, held_out: float = 0.25,
               source: str = "typed") -> ConceptData:
    """A concept from two lists of prompts; every ``1/held_out``-th prompt of each side is held out."""
    pos = [str(t).strip() for t in positive]
    neg = [str(t).strip() for t in negative]
    if not pos or not neg:
        raise InputError("The examples have one class only: give prompts with the concept and without it.")
    labels = [1] * len(pos) + [0] * len(neg)
    return validate(ConceptData(name.strip() if name else "", tuple(pos + neg), tuple(labels),
                                tuple(_auto_split(labels, held_out)), source))


def from_records(name: str, records: Sequence[dict], *, held_out: float = 0.25, source: str = "file") -> ConceptData:
    """A concept from rows with ``text`` and ``label`` (and optionally ``split``: train/test)."""
    if not records:
        raise InputError(f"{source} has no rows.")
    keys = {k.strip().lower() for k in records[0]}
    if "text" not in keys:
        raise InputError(f"{source} has no 'text' column; it needs text and label columns.")
    if "label" not in keys:
        raise InputError(f"{source} has no 'label' column; it needs text and label columns.")
    rows = [{str(k).strip().lower(): v for k, v in r.items()} for r in records]
    texts = tuple("" if r.get("text") is None else str(r["text"]).strip() for r in rows)
    labels = tuple(_label(r.get("label"), f"row {i + 2} of {source}") for i, r in enumerate(rows))
    if "split" in keys and any(str(r.get("split") or "").strip() for r in rows):
        splits = []
        for i, r in enumerate(rows):
            s = str(r.get("split") or "").strip().lower()
            s = {"held-out": "test", "heldout": "test", "valid": "test", "validation": "test"}.get(s, s)
            if s not in ("train", "test"):
                raise InputError(f"Row {i + 2} of {source} has split {r.get('split')!r}; use train or test.")
            splits.append(s)
    else:
        splits = _auto_split(labels, held_out) if set(labels) == {0, 1} else ["train"] * len(labels)
    return validate(ConceptData(name, texts, labels, tuple(splits), source))


def load_file(path: str | Path, name: str | None = None, *, held_out: float = 0.25) -> ConceptData:
    """A concept from a ``.csv`` or ``.jsonl`` file (columns/keys ``text``, ``label``, optional ``split``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The file '{path}' does not exist.")
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"'{path.name}' is not UTF-8 text.") from e
    if suffix == ".csv":
        records = list(csv.DictReader(raw.splitlines()))
        if not records and raw.strip():
            raise InputError(f"'{path.name}' has a header but no rows.")
    elif suffix in (".jsonl", ".json"):
        records = []
        for i, line in enumerate(raw.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"Line {i + 1} of '{path.name}' is not valid JSON.") from e
            except RecursionError as e:  # e.g. [[[[...]]]] 100,000 levels deep
                raise InputError(f"Line {i + 1} of '{path.name}' nests too deeply to be an example; each line "
                                 "must be an object with text and label.") from e
            if not isinstance(rec, dict):
                raise InputError(f"Line {i + 1} of '{path.name}' is not an object with text and label.")
            records.append(rec)
    else:
        raise InputError(f"'{path.name}' must be a .csv or .jsonl file.")
    return from_records(name or path.stem, records, held_out=held_out, source=f"'{path.name}'")


def shipped_names() -> list[str]:
    """The concept sets that come with the project."""
    return sorted(p.stem for p in CONCEPT_DIR.glob("*.csv"))


def shipped(name: str) -> ConceptData:
    """A shipped concept set by name (see ``explorer/data/concepts/README.md``)."""
    if name not in shipped_names():
        raise InputError(f"There is no shipped concept set '{name}'; choose one of {', '.join(shipped_names())}.")
    data = load_file(CONCEPT_DIR / f"{name}.csv", name)
    return ConceptData(data.name, data.texts, data.labels, data.splits, f"shipped:{name}")


def negative_openings() -> list[str]:
    """Held-out unfinished negative review openings (no probe is trained on them)."""
    return [ln.strip() for ln in (CONCEPT_DIR / "negative_openings.txt").read_text(encoding="utf-8").splitlines()
            if ln.strip()]
