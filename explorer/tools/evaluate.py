"""``python -m explorer evaluate``: the token-identity and attribute-extraction curves by layer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from explorer.core.errors import InputError
from explorer.core.models import load_model
from explorer.methods.evaluation import DEFAULT_TASK_DIR, evaluate_attributes, evaluate_token_identity, resolve_tasks
from explorer.tools.paths import writable_dir
from explorer.viz.figure import evaluation_figure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--what", choices=["all", "token_identity", "attributes"], default="all")
    p.add_argument("--positions", type=int, default=200, help="corpus positions for token identity")
    p.add_argument("--task", default="all", help="task .tsv files (comma separated) or 'all' in --task-dir")
    p.add_argument("--task-dir", default=str(DEFAULT_TASK_DIR))
    p.add_argument("--samples", type=int, default=20, help="baseline-correct samples per task at most")
    p.add_argument("--candidates", type=int, default=60, help="rows per task tried for a correct baseline")
    p.add_argument("--layers", default="all", help="source layers: 'all' or e.g. 0,5,10")
    p.add_argument("--target-layer", default="same", help="'same' as the source layer, or a fixed layer")
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--out-dir", default="eval_out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small sample (under a minute)")


def run(args: argparse.Namespace) -> int:
    out = writable_dir(args.out_dir)
    tasks = resolve_tasks(args.task, Path(args.task_dir)) if args.what in ("all", "attributes") else []
    lm = load_model(args.model)
    layers = list(range(lm.n_layers + 1)) if args.layers == "all" else _ints("--layers", args.layers)
    if args.quick:
        args.positions, args.samples, args.candidates = 40, 3, 15
        layers = layers[::5] if args.layers == "all" else layers
    summary: dict = {"model": lm.model_id}
    if args.what in ("all", "token_identity"):
        ti = evaluate_token_identity(lm, n_positions=args.positions, layers=layers, seed=args.seed)
        ti.to_csv(out / "eval_token_identity.csv", index=False)
        print_table("Token identity precision@1 by layer", ti)
        summary["token_identity_best_layer"] = int(ti.loc[ti["patchscope"].idxmax(), "layer"])
        summary["token_identity"] = ti.to_dict(orient="list")
    if args.what in ("all", "attributes"):
        target = None if args.target_layer == "same" else _ints("--target-layer", args.target_layer)[0]
        att = evaluate_attributes(lm, tasks, layers=[lay for lay in layers if lay < lm.n_layers],
                                  target_layer=target, samples=args.samples, candidates=args.candidates,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)
        att.to_csv(out / "eval_attributes.csv", index=False)
        print_table("Attribute extraction accuracy by source layer", att)
        summary["attributes"] = att.to_dict(orient="list")
    html_path = evaluation_figure(summary, out / "eval.html")
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"wrote {out}/eval_*.csv, {html_path}", file=sys.stderr)
    return 0


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()] or [int(text)]
    except ValueError:
        raise InputError(f"{flag} takes whole numbers separated by commas, e.g. 0,5,10.") from None


def print_table(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
