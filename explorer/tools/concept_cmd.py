"""``python -m explorer concept train|colour|steer``: concepts from the shell.

    python -m explorer concept train --set negative_sentiment --save neg.safetensors
    python -m explorer concept train --file my.csv --name politeness --save pol.safetensors
    python -m explorer concept colour --load neg.safetensors --prompt "The food was awful and cold"
    python -m explorer concept steer --load neg.safetensors --prompt "The hotel was dirty and" --k 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from explorer.core.errors import InputError
from explorer.core.grid import capture
from explorer.core.models import load_model
from explorer.methods.concepts import Concept, load_file, shipped, shipped_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["train", "colour", "steer"],
                   help="train: probes per row from examples; colour: P(concept) over a prompt's grid; "
                        "steer: greedy text before/after GCAV (and a fixed-coefficient comparison)")
    p.add_argument("--model", default="default")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--set", help=f"a shipped concept set ({', '.join(shipped_names())})")
    src.add_argument("--file", help="a CSV or JSONL file with text and label (and optionally split) columns")
    src.add_argument("--load", help="a concept saved with --save (.safetensors)")
    p.add_argument("--name", help="the concept's name (default: the set or file name)")
    p.add_argument("--pooling", choices=["last", "mean"], default="last")
    p.add_argument("--layers", default="", help="rows, comma separated (train: which to probe, default all; "
                                                 "steer: where to steer, default the 3 most accurate)")
    p.add_argument("--save", help="train: write the concept to FILE.safetensors")
    p.add_argument("--prompt", default="The hotel room was dirty and the staff were")
    p.add_argument("--mode", choices=["add", "remove"], default="remove")
    p.add_argument("--p0", type=float, help="GCAV target probability (overrides --k)")
    p.add_argument("--k", type=float, default=2.0, help="strength: p0 = 1 - 10^-k (add) or 10^-k (remove)")
    p.add_argument("--alpha", type=float, default=0.5, help="fixed-coefficient comparison, in typical state norms")
    p.add_argument("--max-new-tokens", type=int, default=30)


def _layers(text: str) -> list[int] | None:
    try:
        return [int(x) for x in text.split(",") if x.strip()] or None
    except ValueError as e:
        raise InputError(f"--layers must be whole numbers separated by commas; got {text!r}.") from e


def _concept(args: argparse.Namespace, lm) -> Concept:
    if args.load:
        return Concept.load(args.load, lm)
    if args.set:
        data = shipped(args.set)
    elif args.file:
        data = load_file(args.file, args.name)
    else:
        raise InputError("Give the examples: --set NAME, --file FILE.csv, or a saved concept with --load.")
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 2 or done == total:
            last[0] = time.perf_counter()
            print(f"\rcapturing states {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    c = Concept.train(lm, data, layers=_layers(args.layers), pooling=args.pooling, progress=progress)
    print(f"trained '{c.name}' on {len(data.texts)} prompts x {len(c.layers)} rows in "
          f"{time.perf_counter() - t0:.1f} s (states {c.meta['capture_s']:.1f} s, probes {c.meta['fit_s']:.1f} s)")
    return c


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.max_new_tokens > 200:
        raise InputError("--max-new-tokens must be from 1 to 200.")
    lm = load_model(args.model)
    if args.action == "train":
        if args.load:
            raise InputError("train needs examples (--set or --file), not --load.")
        c = _concept(args, lm)
        print(c.curve()[["layer", "accuracy", "auc", "separation"]].round(3).to_string(index=False))
        print(f"most accurate rows: {c.best_layers(3)}")
        if args.save:
            print(f"saved {c.save(args.save)}")
        return 0
    c = _concept(args, lm)
    if args.action == "colour":
        grid = capture(lm, args.prompt)
        layer = c.colour(grid)
        print("row  " + " ".join(f"{t!r:>10}"[:10] for t in grid.tokens))
        for r in range(grid.n_rows):
            print(f"{r:>3}  " + " ".join(f"{v:>10.3f}" for v in layer.values[r]))
        return 0
    from explorer.core.generation import greedy_text

    rows = _layers(args.layers) or c.best_layers(3)
    n = args.max_new_tokens
    before = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    with c.steer(lm, args.mode, p0=args.p0, k=None if args.p0 is not None else args.k, layers=rows) as log:
        after = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    with c.steer_fixed(lm, args.alpha, args.mode, rows):
        fixed_text = greedy_text(lm, args.prompt, max_new_tokens=n, chat=False)
    steps = [{"layer": r["layer"], "step": r["step"], "eps_last": round(r["eps"][0][0], 4), "moved": r["moved"],
              "positions": r["positions"]} for r in log.records()]
    print(json.dumps({"prompt": args.prompt, "rows": rows, "mode": args.mode,
                      "p0": c.target(args.mode, args.p0, args.k).p0, "before": before, "gcav": after,
                      f"fixed alpha={args.alpha}": fixed_text, "eps_per_step": steps}, ensure_ascii=False, indent=1))
    return 0
