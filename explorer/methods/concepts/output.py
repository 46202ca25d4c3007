"""GCAV-Output: probes trained on the model's own continuations, labelled by a judge.

GCAV-Input fits a probe on states of example sentences (someone else's text). GCAV-Output (the GCAV
paper's better sentiment variant) lets the model continue neutral prompts, labels each
continuation with a judge, and fits the probe on the model's state at the last token of prompt +
continuation: the states the steering will meet while the model writes. Here the judge is VADER
(compound >= 0.05 positive, <= -0.05 negative, anything between is dropped) and the concept is
"negative sentiment" (label 1 = a negative continuation), so it can replace the input probe as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from explorer.core.errors import InputError
from explorer.core.models import LoadedModel
from explorer.methods.concepts.concept import Concept
from explorer.methods.concepts.dataset import ConceptData, from_records
from explorer.methods.concepts.judges import vader_scores
from explorer.methods.concepts.steer_eval import generate

THRESHOLD = 0.05


def output_examples(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 30, seed: int = 0,
                    threshold: float = THRESHOLD, name: str = "negative_output") -> ConceptData:
    """Sampled (seeded) continuations of ``prompts``, judged by VADER; the prompt + continuation texts
    with label 1 for a negative and 0 for a positive continuation (neutral ones dropped); every 4th of
    each side held out to score the probes."""
    prompts = [p for p in dict.fromkeys(str(p).strip() for p in prompts) if p]
    if not prompts:
        raise InputError("GCAV-Output needs some prompts to continue.")
    conts = generate(lm, prompts, max_new_tokens, sample=True, seed=seed)
    texts = [lm.tokenizer.decode(c, skip_special_tokens=True) for c in conts]
    scores = vader_scores(texts)
    records, seen = [], set()
    for prompt, text, score in zip(prompts, texts, scores):
        full = (prompt + text).strip()
        if abs(score) < threshold or not text.strip() or full in seen:
            continue
        seen.add(full)
        records.append({"text": full, "label": int(score <= -threshold)})
    if len({r["label"] for r in records}) < 2:
        raise InputError("The model's continuations were judged all of one sentiment; give more varied prompts.")
    data = from_records(name, records, source=f"model outputs of {len(prompts)} prompts, judged by VADER")
    return ConceptData(data.name, data.texts, data.labels, data.splits, data.source)


def train_output(lm: LoadedModel, prompts: Sequence[str], *, probe: str = "mean-difference",
                 layers: Sequence[int] | None = None, max_new_tokens: int = 30, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> Concept:
    """A GCAV-Output concept: :func:`output_examples`, then one probe per row on their last-token states."""
    data = output_examples(lm, prompts, max_new_tokens=max_new_tokens, seed=seed)
    concept = Concept.train(lm, data, layers=layers, probe=probe, progress=progress)
    concept.meta["training"] = {"mode": "output", "judge": "VADER compound, |score| >= 0.05",
                                "prompts": len(prompts), "kept": len(data.texts), "max_new_tokens": max_new_tokens,
                                "seed": seed}
    return concept
