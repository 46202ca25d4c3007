"""Layer choice as in the GCAV paper: steer at groups of rows (single rows, groups of 3 and of 5) and
keep the group that moves judged text most without costing fluency, scored on a validation set.

Stage 1 tries every (probe, group) at one target p0. Stage 2 tries every other p0 of the grid for
the ``keep`` points with the highest success (within the budget or not: a group that moves text too
hard at one p0 may be the best at a gentler one) and the ``keep`` best within the budget. A point is
*admissible* when its mean perplexity stays within ``budget`` times the unsteered one. Stage 3
(given ``confirm`` prompts, a second validation batch) runs the best few admissible points again on
those prompts and judges them on both batches together, which tempers the winner's curse of picking
the maximum of many noisy scores. The winner is the admissible point with the highest success (the
mean of the two judges' positive shares), ties to the lower perplexity. Nothing here sees the test
split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from explorer.core.errors import InputError
from explorer.core.models import LoadedModel
from explorer.methods.concepts.concept import Concept
from explorer.methods.concepts.steer_eval import PPL_BUDGET, Condition, run_condition, success

P0_GRID = (0.3, 0.2, 0.1, 0.05)
FIRST_P0 = 0.1


def layer_groups(n_layers: int, sizes: Sequence[int] = (1, 3, 5)) -> list[tuple[int, ...]]:
    """Contiguous groups of rows: single rows and groups of 3 centred every 3 rows, groups of 5 every 4,
    from a fifth of the depth on (the first rows barely hold a sentence's sentiment) up to row N-1
    (row N only feeds the unembedding)."""
    out: list[tuple[int, ...]] = []
    start = max(2, n_layers // 5)
    for size in sizes:
        half = size // 2
        stride = 4 if size >= 5 else 3
        for centre in range(start + half, n_layers - half, stride):
            out.append(tuple(range(centre - half, centre + half + 1)))
    return out


@dataclass(frozen=True)
class SweepPoint:
    probe: str
    layers: tuple[int, ...]
    p0: float
    vader: float
    afinn: float
    ppl: float
    admissible: bool
    batches: int = 1  # 2: the stage-3 score over both validation batches

    @property
    def success(self) -> float:
        return (self.vader + self.afinn) / 2

    def record(self) -> dict:
        return {"probe": self.probe, "layers": list(self.layers), "p0": self.p0, "vader": self.vader,
                "afinn": self.afinn, "ppl": self.ppl, "admissible": self.admissible, "batches": self.batches}


@dataclass(frozen=True)
class SweepResult:
    base: Condition
    points: tuple[SweepPoint, ...]
    best: SweepPoint | None

    def records(self) -> list[dict]:
        return [p.record() for p in self.points]


def sweep(lm: LoadedModel, candidates: Mapping[str, Concept], prompts: Sequence[str], *, max_new_tokens: int = 30,
          groups: Sequence[Sequence[int]] | None = None, p0s: Sequence[float] = P0_GRID, first_p0: float = FIRST_P0,
          keep: int = 4, mode: str = "remove", budget: float = PPL_BUDGET, base: Condition | None = None,
          confirm: Sequence[str] = (), finalists: int = 4,
          report: Callable[[str], None] | None = None) -> SweepResult:
    """Score every candidate probe at every group, then more p0 values for the promising ones, then
    (with ``confirm``) the finalists on a second batch: see the module docstring."""
    if not candidates or not prompts:
        raise InputError("A sweep needs at least one concept and one prompt.")
    base = base or run_condition(lm, prompts, max_new_tokens, contextlib.nullcontext, "none")
    groups = [tuple(g) for g in (groups or layer_groups(lm.n_layers))]
    points: list[SweepPoint] = []

    def score(name: str, group: tuple[int, ...], p0: float, batch: Sequence[str], ref: Condition) -> SweepPoint:
        concept = candidates[name]
        c = run_condition(lm, batch, max_new_tokens,
                          lambda: concept.steer(lm, mode, p0=p0, layers=list(group)), f"{name} {list(group)} p0={p0}")
        point = SweepPoint(name, group, p0, c.vader, c.afinn, c.mean_ppl, c.mean_ppl <= budget * ref.mean_ppl)
        if report is not None:
            report(f"  {name:<22} rows {list(group)!s:<22} p0={p0:<5g} VADER+ {c.vader:.2f}  AFINN+ {c.afinn:.2f}  "
                   f"perplexity {c.mean_ppl:5.2f}{'' if point.admissible else '  (over budget)'}")
        return point

    first = [score(name, g, first_p0, prompts, base) for name in candidates for g in groups
             if all(r in candidates[name].probes for r in g)]  # a group where the concept has probes
    points += first
    strong = sorted(first, key=lambda p: (-p.success, p.ppl))[:keep]
    fluent = sorted([p for p in first if p.admissible], key=lambda p: (-p.success, p.ppl))[:keep]
    for p in dict.fromkeys(strong + fluent):
        points += [score(p.probe, p.layers, p0, prompts, base) for p0 in p0s if p0 != first_p0]
    ok = sorted([p for p in points if p.admissible], key=lambda p: (-p.success, p.ppl))
    if confirm and ok:
        if report is not None:
            report(f"  confirming the best {min(finalists, len(ok))} on {len(confirm)} more validation openings")
        base2 = run_condition(lm, confirm, max_new_tokens, contextlib.nullcontext, "none")
        n1, n2 = len(prompts), len(confirm)
        both_base = (n1 * base.mean_ppl + n2 * base2.mean_ppl) / (n1 + n2)
        merged = []
        for p in ok[:finalists]:
            q = score(p.probe, p.layers, p.p0, confirm, base2)
            ppl = (n1 * p.ppl + n2 * q.ppl) / (n1 + n2)
            merged.append(SweepPoint(p.probe, p.layers, p.p0, (n1 * p.vader + n2 * q.vader) / (n1 + n2),
                                     (n1 * p.afinn + n2 * q.afinn) / (n1 + n2), ppl, ppl <= budget * both_base, 2))
        points += merged
        ok = sorted([p for p in merged if p.admissible], key=lambda p: (-p.success, p.ppl))
    best = ok[0] if ok else None
    return SweepResult(base, tuple(points), best)


def chosen(result: SweepResult, candidates: Mapping[str, Concept], n_prompts: int,
           mode: str = "remove") -> Concept | None:
    """The winning concept with its layer group and p0 saved in its metadata (None if nothing was admissible)."""
    b = result.best
    if b is None:
        return None
    how = (f"sweep on {n_prompts} validation openings: VADER+ {b.vader:.2f}, AFINN+ {b.afinn:.2f}, perplexity "
           f"{b.ppl:.2f} (unsteered {result.base.mean_ppl:.2f})")
    return candidates[b.probe].with_layer_choice(b.layers, b.p0, how, mode)


__all__ = ["FIRST_P0", "P0_GRID", "SweepPoint", "SweepResult", "chosen", "layer_groups", "success", "sweep"]
