"""Judging a steering on real text: batched greedy continuations, two lexicon judges, perplexity,
bootstrap intervals, the comparison at matched perplexity, and the layer-group sweep.

A *condition* is a context manager factory (no steering, GCAV, a fixed coefficient, ActAdd, several
concepts); :func:`run_condition` continues every prompt under it and scores each continuation:
positive by VADER and by AFINN, its perplexity under the *unsteered* model (the steered model would
grade its own text), and its distinct-bigram share (1 = no repeated bigram; degenerate loops such as
"the example of the example of" score low).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.models import LoadedModel
from explorer.methods.concepts.judges import Verdicts, agreement, bootstrap_ci, judge

Context = Callable[[], contextlib.AbstractContextManager]
PPL_BUDGET = 1.2  # a steering must keep the mean perplexity within this factor of the unsteered one


def _left_padded(lm: LoadedModel, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(list(s))
        mask[i, width - len(s):] = 1
    return ids.to(lm.device), mask.to(lm.device)


def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, *, sample: bool = False,
             seed: int = 0, batch_size: int = 64) -> list[list[int]]:
    """Continuations of plain-text prompts in left-padded batches, cut at EOS: greedy, or sampled
    (temperature 1, top-k 50, seeded) when ``sample``."""
    result: list[list[int]] = []
    eos = lm.eos_token_ids
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        seqs = [lm.tokenizer.encode(p, add_special_tokens=False) for p in prompts[start:start + batch_size]]
        ids, mask = _left_padded(lm, seqs)
        opts = dict(do_sample=True, temperature=1.0, top_k=50, top_p=None) if sample else dict(
            do_sample=False, temperature=None, top_p=None, top_k=None)
        if sample:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=mask, num_beams=1, max_new_tokens=max_new_tokens,
                                    min_new_tokens=None, pad_token_id=lm.tokenizer.pad_token_id, **opts)
        for row in out[:, ids.shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in eos), len(row))
            result.append(row[:cut])
    return result


def perplexity(lm: LoadedModel, prompts: Sequence[str], continuations: Sequence[Sequence[int]]) -> list[float]:
    """exp(mean NLL) of each continuation given its prompt, under the model of the calling context."""
    out = []
    for prompt, cont in zip(prompts, continuations):
        if not cont:
            out.append(float("nan"))
            continue
        head = lm.tokenizer.encode(prompt, add_special_tokens=False)
        ids = torch.tensor([head + list(cont)], device=lm.device)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, use_cache=False).logits[0, len(head) - 1:-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, len(head):])
        out.append(float(torch.exp(nll)))
    return out


def distinct_bigrams(text: str) -> float:
    """Share of distinct word bigrams among all bigrams (NaN below 2 words)."""
    words = text.split()
    grams = list(itertools.pairwise(words))
    return len(set(grams)) / len(grams) if grams else float("nan")


@dataclass(frozen=True)
class Condition:
    """Per-prompt results of one condition: continuations, the judges' verdicts, perplexities, distinct-2."""

    name: str
    texts: tuple[str, ...]
    verdicts: Verdicts
    ppl: np.ndarray
    distinct: np.ndarray
    largest_step: float = float("nan")

    @property
    def vader(self) -> float:
        return float(self.verdicts.vader_positive.mean())

    @property
    def afinn(self) -> float:
        return float(self.verdicts.afinn_positive.mean())

    @property
    def mean_ppl(self) -> float:
        return float(np.nanmean(self.ppl)) if np.isfinite(self.ppl).any() else float("nan")

    def summary(self, base: Condition | None = None) -> dict:
        """Shares with 95% intervals, perplexity with its interval, judge agreement, and (given the
        unsteered ``base`` on the same prompts) the paired lifts with their intervals."""
        vp = self.verdicts.vader_positive.astype(float)
        ap = self.verdicts.afinn_positive.astype(float)
        out = {"condition": self.name, "vader_positive": self.vader, "vader_ci": bootstrap_ci(vp),
               "afinn_positive": self.afinn, "afinn_ci": bootstrap_ci(ap), "ppl": self.mean_ppl,
               "ppl_ci": bootstrap_ci(self.ppl), "distinct2": float(np.nanmean(self.distinct)),
               **{f"judges_{k}": v for k, v in self.verdicts.agreement().items()}}
        if math.isfinite(self.largest_step):
            out["largest_step_ratio"] = self.largest_step
        if base is not None:
            bv = base.verdicts.vader_positive.astype(float)
            ba = base.verdicts.afinn_positive.astype(float)
            out["vader_lift"] = float(vp.mean() - bv.mean())
            out["vader_lift_ci"] = bootstrap_ci(np.stack([vp, bv], 1), lambda x: float(x[:, 0].mean() - x[:, 1].mean()))
            out["afinn_lift"] = float(ap.mean() - ba.mean())
            out["afinn_lift_ci"] = bootstrap_ci(np.stack([ap, ba], 1), lambda x: float(x[:, 0].mean() - x[:, 1].mean()))
            out["ppl_ratio"] = self.mean_ppl / base.mean_ppl
            out["ppl_ratio_ci"] = bootstrap_ci(np.stack([self.ppl, base.ppl], 1),
                                               lambda x: float(x[:, 0].mean() / x[:, 1].mean()))
        return out


def run_condition(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, ctx: Context, name: str) -> Condition:
    """Greedy continuations of ``prompts`` under ``ctx()``, judged and scored (see the module docstring).
    When ``ctx()`` yields a GCAV step log, the largest step relative to the typical norm is kept."""
    with ctx() as log:
        conts = generate(lm, prompts, max_new_tokens)
    largest = log.largest_ratio() if hasattr(log, "largest_ratio") else float("nan")
    texts = tuple(lm.tokenizer.decode(c, skip_special_tokens=True) for c in conts)
    ppl = np.array(perplexity(lm, prompts, conts))
    return Condition(name, texts, judge(texts), ppl, np.array([distinct_bigrams(t) for t in texts]), largest)


def success(c: Condition) -> float:
    """The score a steering is chosen by: the mean of the two judges' positive shares."""
    return (c.vader + c.afinn) / 2


def matched(base: Condition, steered: Condition, others: Sequence[Condition]) -> dict:
    """The honest comparison: ``steered`` against every condition of ``others`` whose mean perplexity is
    at most ``steered``'s (matched or more fluent). ``beats_all``: it has a higher share than each of them
    by both judges; ``interpolated``: the others' shares linearly interpolated at ``steered``'s perplexity."""
    fair = [o for o in others if o.mean_ppl <= steered.mean_ppl]
    beats = all(steered.vader > o.vader and steered.afinn > o.afinn for o in fair)
    pts = sorted([(base.mean_ppl, base.vader, base.afinn)] + [(o.mean_ppl, o.vader, o.afinn) for o in others])
    xs = np.array([p[0] for p in pts])
    interp = {judge_name: float(np.interp(steered.mean_ppl, xs, np.array([p[i] for p in pts])))
              for i, judge_name in ((1, "vader"), (2, "afinn"))}
    return {"matched": [o.name for o in fair], "beats_all": bool(beats), "interpolated": interp}


def agreement_overall(conditions: Sequence[Condition]) -> dict[str, float]:
    """Agreement of the two judges over every continuation of every condition."""
    v = np.concatenate([c.verdicts.vader_positive for c in conditions])
    a = np.concatenate([c.verdicts.afinn_positive for c in conditions])
    return agreement(v, a)


def prompt_pair_probes(lm: LoadedModel, concept, toward: str = "Love", away: str = "Hate",
                       layers: Sequence[int] | None = None) -> dict:
    """ActAdd-style steering directions (Turner et al. 2023): per row, the unit difference of the
    last-token states of two prompts (``toward`` minus ``away``), as probe-shaped directions with the
    concept's typical state norm, for :func:`gcav.fixed` in mode ``add``. (ActAdd adds the raw
    difference at the first positions; here, like the fixed coefficient, it is added at every
    position with ``alpha`` typical norms, so both baselines share one scale.)"""
    from explorer.methods.concepts.probe import Probe, collect_states

    rows = list(layers) if layers else concept.default_layers()
    states = collect_states(lm, [toward, away])
    out = {}
    for r in rows:
        diff = (states[0, r] - states[1, r]).double().numpy()
        out[r] = Probe(r, diff / max(float(np.linalg.norm(diff)), 1e-12), 0.0, float("nan"), float("nan"),
                       float("nan"), concept.probe(r).typical_norm)
    return out
