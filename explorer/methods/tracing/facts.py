"""Where facts are recalled: factual prompts from the shipped Patchscopes attribute sets, kept when the
model answers them, and the mean indirect effect over three regions of each trace.

A fact is "<target_baseline> is" with answer " <object>" and its subject, e.g. "The capital city of
Canada is" / " Ottawa" / "Canada". It is kept when the answer's first token is the model's own top
prediction after the prompt (the argmax, as ROME keeps only facts the model knows).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from explorer.core.data import DATA_DIR
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.methods.tracing.result import CausalTrace

FACT_DIR = DATA_DIR / "patchscopes"


@dataclass(frozen=True)
class Fact:
    task: str
    prompt: str
    answer: str
    subject: str


def _decode(text: str) -> str:
    if "\\u" in text or "\\x" in text:
        try:
            return codecs.decode(text, "unicode_escape")
        except UnicodeDecodeError:
            return text
    return text


def candidate_facts(task_dir: Path = FACT_DIR) -> list[Fact]:
    """Every distinct (prompt, answer, subject) of the attribute sets, in file order."""
    facts: list[Fact] = []
    seen: set[str] = set()
    for path in sorted(task_dir.glob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        for _, row in frame.drop_duplicates(subset=["target_baseline"]).iterrows():
            prompt = f"{str(row['target_baseline']).strip()} is"
            subject = str(row["subject"]).strip()
            answer = " " + _decode(str(row["object"])).strip()
            if prompt in seen or subject not in prompt or not answer.strip():
                continue
            seen.add(prompt)
            facts.append(Fact(path.stem, prompt, answer, subject))
    return facts


def known_facts(lm: LoadedModel, facts: list[Fact], limit: int | None = None) -> list[Fact]:
    """The facts whose answer's first token is the model's top prediction after the prompt, in their
    order, at most ``limit`` (prompts of equal length share one pass)."""
    ids = [lm.tokenizer.encode(f.prompt, add_special_tokens=True) for f in facts]
    first = [(lm.tokenizer.encode(f.answer, add_special_tokens=False) or [-1])[0] for f in facts]
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(i)
    hit = np.zeros(len(facts), dtype=bool)
    with torch.inference_mode():
        for members in by_length.values():
            checkpoint()
            batch = torch.tensor([ids[i] for i in members], device=lm.device)
            top = lm.model(input_ids=batch, use_cache=False, logits_to_keep=1).logits[:, -1].argmax(-1).cpu()
            for i, t in zip(members, top.tolist()):
                hit[i] = t == first[i]
    kept = [f for f, h in zip(facts, hit) if h]
    return kept if limit is None else kept[:limit]


def region_mask(trace: CausalTrace) -> dict[str, np.ndarray]:
    """Boolean (rows, tokens) masks: (a) ``subject_last_lower``, the subject's last token in the lower half of
    the rows (0..N//2); (b) ``last_token_upper``, the prompt's last token in the upper half (N//2+1..N);
    (c) ``other``, every other cell (NaN cells left out of all three)."""
    n_rows, n_tokens = trace.effect.shape
    finite = np.isfinite(trace.effect)
    lower = np.arange(n_rows) <= (n_rows - 1) // 2
    a = np.zeros(trace.effect.shape, dtype=bool)
    b = np.zeros(trace.effect.shape, dtype=bool)
    a[lower, max(trace.subject_positions)] = True
    b[~lower, n_tokens - 1] = True
    b &= ~a
    return {"subject_last_lower": a & finite, "last_token_upper": b & finite, "other": ~a & ~b & finite}


def region_means(trace: CausalTrace) -> dict[str, float]:
    """The mean effect over each region of :func:`region_mask` (NaN for an empty region)."""
    return {k: float(trace.effect[m].mean()) if m.any() else float("nan") for k, m in region_mask(trace).items()}


def summarise(traces: list[CausalTrace]) -> pd.DataFrame:
    """One row per traced fact: its task, prompt, answer, p_clean, p_corrupted and the three region means."""
    return pd.DataFrame([{"prompt": t.prompt, "answer": t.answer, "subject": t.subject, "p_clean": t.p_clean,
                          "p_corrupted": t.p_corrupted, **region_means(t)} for t in traces])
