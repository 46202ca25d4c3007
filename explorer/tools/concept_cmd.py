"""``python -m explorer concept train|colour|steer|sweep``: concepts from the shell.

    python -m explorer concept train --set negative_sentiment --save neg.safetensors
    python -m explorer concept train --set reviews --probe mean-difference --save rev.safetensors
    python -m explorer concept train --output-prompts openings.txt --save out.safetensors   # GCAV-Output
    python -m explorer concept colour --load neg.safetensors --prompt "The food was awful and cold"
    python -m explorer concept steer --load neg.safetensors --prompt "The hotel was dirty and" --k 2
    python -m explorer concept steer --load neg.safetensors form.safetensors --mode remove,remove --p0 0.05,0.5
    python -m explorer concept sweep --load rev.safetensors --save rev.safetensors   # layer choice, saved
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.core.models import load_model
from explorer.methods.concepts import Concept, Steering, StepLog, load_file
from explorer.methods.concepts.probe import PROBE_KINDS
from explorer.methods.concepts.reviews import named_set, openings, set_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["train", "colour", "steer", "sweep"],
                   help="train: probes per row from examples; colour: P(concept) over a prompt's grid; "
                        "steer: greedy text before/after GCAV (one or several concepts) and a fixed-coefficient "
                        "comparison; sweep: choose the steering layers on validation prompts and save them")
    p.add_argument("--model", default="default")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--set", help=f"a shipped example set ({', '.join(set_names())}; 'reviews' = real reviews)")
    src.add_argument("--file", help="a CSV or JSONL file with text and label (and optionally split) columns")
    src.add_argument("--output-prompts", help="GCAV-Output: a .txt file of prompts (one per line) that the model "
                     "continues; VADER labels each continuation negative (1) or positive (0)")
    src.add_argument("--load", nargs="+", metavar="FILE", help="concept(s) saved with --save (.safetensors); "
                     "steer takes several")
    p.add_argument("--name", help="the concept's name (default: the set or file name)")
    p.add_argument("--pooling", choices=["last", "mean"], default="last")
    p.add_argument("--probe", choices=list(PROBE_KINDS), default="logistic",
                   help="logistic: C chosen by cross-validated log-loss, temperature-scaled (default); "
                        "mean-difference: the class-mean difference with a fitted slope (steers text more)")
    p.add_argument("--layers", default="", help="rows, comma separated (train: which to probe, default all; "
                                                 "steer: where to steer, default the saved choice or the 3 most "
                                                 "accurate)")
    p.add_argument("--save", help="train/sweep: write the concept to FILE.safetensors")
    p.add_argument("--prompt", default="The hotel room was dirty and the staff were")
    p.add_argument("--prompts", help="sweep: a .txt file of prompts (default: openings of the real reviews' "
                                     "validation split)")
    p.add_argument("--mode", default="remove", help="add or remove; for several concepts one per concept, "
                                                    "comma separated")
    p.add_argument("--p0", help="GCAV target probability (overrides --k); several concepts: one per concept")
    p.add_argument("--k", type=float, default=None, help="strength: p0 = 1 - 10^-k (add) or 10^-k (remove); "
                   "without --p0 and --k: the p0 saved with the concept's layer choice, else k = 2")
    p.add_argument("--alpha", type=float, default=0.5, help="fixed-coefficient comparison, in typical state norms")
    p.add_argument("--max-new-tokens", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="sweep: 6 prompts, 8 tokens, 5 groups (a check)")
    p.add_argument("--budget", type=float, default=1.2,
                   help="sweep: keep the mean perplexity within this factor of the unsteered one (default 1.2)")


def _layers(text: str) -> list[int] | None:
    try:
        return [int(x) for x in text.split(",") if x.strip()] or None
    except ValueError as e:
        raise InputError(f"--layers must be whole numbers separated by commas; got {text!r}.") from e


def _each(text: str | None, n: int, what: str) -> list[str | None]:
    """One value per concept from a comma-separated option (a single value applies to all)."""
    if text is None:
        return [None] * n
    parts = [x.strip() for x in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * n
    if len(parts) != n:
        raise InputError(f"--{what} has {len(parts)} values for {n} concepts; give one, or one per concept.")
    return parts


def _p0s(args: argparse.Namespace, concepts: list[Concept], modes: list[str]) -> list[float]:
    out = []
    for concept, mode, raw in zip(concepts, modes, _each(args.p0, len(modes), "p0")):
        if raw is None:
            out.append(concept.target(mode, None, args.k).p0)
            continue
        try:
            out.append(float(raw))
        except ValueError as e:
            raise InputError(f"--p0 must be numbers strictly between 0 and 1; got {raw!r}.") from e
    return out


def _concept(args: argparse.Namespace, lm) -> Concept:
    if args.load:
        if len(args.load) > 1:
            raise InputError(f"{args.action} takes one concept file; only steer takes several.")
        return Concept.load(args.load[0], lm)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 2 or done == total:
            last[0] = time.perf_counter()
            print(f"\rcapturing states {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    if args.output_prompts:
        from explorer.methods.concepts.output import train_output

        c = train_output(lm, _read_prompts(args.output_prompts), probe=args.probe, layers=_layers(args.layers),
                         progress=progress)
        print(f"GCAV-Output: {c.meta['training']['kept']} of {c.meta['training']['prompts']} continuations judged "
              f"non-neutral ({sum(c.meta['labels'])} negative)")
        return c
    if args.set:
        data = named_set(args.set) if args.set in set_names() else None
        if data is None:
            raise InputError(f"There is no shipped set '{args.set}'; choose one of {', '.join(set_names())}.")
    elif args.file:
        data = load_file(args.file, args.name)
    else:
        raise InputError("Give the examples: --set NAME, --file FILE.csv, --output-prompts FILE, or a saved concept "
                         "with --load.")
    c = Concept.train(lm, data, layers=_layers(args.layers), pooling=args.pooling, progress=progress, probe=args.probe)
    print(f"trained '{c.name}' on {len(data.texts)} prompts x {len(c.layers)} rows in "
          f"{time.perf_counter() - t0:.1f} s (states {c.meta['capture_s']:.1f} s, probes {c.meta['fit_s']:.1f} s)")
    return c


def _read_prompts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"The prompts file '{path}' does not exist.")
    try:
        prompts = [ln.strip() for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"'{file.name}' is not UTF-8 text.") from e
    if not prompts:
        raise InputError(f"'{file.name}' has no prompts.")
    return prompts


def _colour(c: Concept, lm, prompt: str) -> int:
    grid = capture(lm, prompt)
    layer = c.colour(grid)
    rows = [r for r in c.layers if r < grid.n_rows]
    if not all(math.isfinite(v) for r in rows for v in layer.values[r]):
        raise InputError("The concept gives no probability (NaN) for some states of this prompt; retrain it.")
    print("row  " + " ".join(f"{t!r:>10}"[:10] for t in grid.tokens))
    for r in rows:
        print(f"{r:>3}  " + " ".join(f"{v:>10.3f}" for v in layer.values[r]))
    return 0


def _steer(args: argparse.Namespace, lm) -> int:
    from explorer.core.generation import greedy_text

    concepts = [Concept.load(path, lm) for path in args.load] if args.load else [_concept(args, lm)]
    modes = [str(m) for m in _each(args.mode, len(concepts), "mode")]
    p0s = _p0s(args, concepts, modes)
    rows = _layers(args.layers) or concepts[0].default_layers()
    steering = Steering(tuple(concepts), tuple(modes), tuple(p0s), tuple(rows))
    for c, m, p0 in zip(concepts, modes, p0s):
        c.target(m, p0)  # one sentence for a bad mode or p0, before any text is generated
    n = args.max_new_tokens
    before = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    log = StepLog()
    with steering.context(lm, log):
        after = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    with concepts[0].steer_fixed(lm, args.alpha, modes[0], rows):
        fixed_text = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    steps = [{"layer": r["layer"], "step": r["step"], "eps_last": [round(e[0], 4) for e in r["eps"]],
              "moved": r["moved"], "positions": r["positions"], "max_step_ratio": round(r["max_ratio"], 4)}
             for r in log.records()]
    report = {"prompt": args.prompt, "rows": rows, "concepts": [c.name for c in concepts], "mode": modes[0],
              "modes": modes, "p0": p0s[0], "p0s": p0s, "before": before, "gcav": after,
              f"fixed alpha={args.alpha}": fixed_text, "largest_step_ratio": round(log.largest_ratio(), 4),
              "eps_per_step": steps}
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


def _sweep(args: argparse.Namespace, lm) -> int:
    from explorer.methods.concepts.sweep import chosen, layer_groups, sweep

    c = _concept(args, lm)
    prompts = _read_prompts(args.prompts) if args.prompts else openings("validation", False, 40)
    n = min(args.max_new_tokens, 20)
    groups = layer_groups(lm.n_layers)
    if args.quick:
        prompts, n, groups = prompts[:6], min(n, 8), [tuple(c.best_layers(3)), *groups[1:8:2]]
    mode = str(_each(args.mode, 1, "mode")[0])
    if not math.isfinite(args.budget) or args.budget <= 0:
        raise InputError(f"--budget must be a positive number; got {args.budget!r}.")
    res = sweep(lm, {c.name: c}, prompts, max_new_tokens=n, groups=groups, mode=mode, keep=2 if args.quick else 4,
                budget=args.budget, report=print)
    win = chosen(res, {c.name: c}, len(prompts), mode)
    if win is None:
        raise InputError(f"No layer group kept the perplexity within {args.budget:g} x the unsteered one; nothing "
                         "was chosen.")
    print(f"chosen rows {win.meta['layer_choice']['layers']} p0={win.meta['layer_choice']['p0']:g} "
          f"({win.meta['layer_choice']['how']})")
    if args.save:
        print(f"saved {win.save(args.save)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.max_new_tokens > 200:
        raise InputError("--max-new-tokens must be from 1 to 200.")
    lm = load_model(args.model)
    if args.action == "train":
        if args.load:
            raise InputError("train needs examples (--set, --file or --output-prompts), not --load.")
        c = _concept(args, lm)
        cols = ["layer", "accuracy", "auc", "ece", "separation", "c", "temperature"]
        print(c.curve()[cols].round(3).to_string(index=False))
        print(f"most accurate rows: {c.best_layers(3)}")
        if args.save:
            print(f"saved {c.save(args.save)}")
        return 0
    if args.action == "steer":
        return _steer(args, lm)
    if args.action == "sweep":
        return _sweep(args, lm)
    return _colour(_concept(args, lm), lm, args.prompt)
