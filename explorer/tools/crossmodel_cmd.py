"""``python -m explorer crossmodel``: fit affine maps between layers or models and print their held-out R²."""

from __future__ import annotations

import argparse
import json
import time

from explorer.core.errors import InputError
from explorer.core.models import load_model
from explorer.methods.crossmodel import CrossReader


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="the source model")
    p.add_argument("--reader", default=None, help="the reading model (default: the source model itself)")
    p.add_argument("--layers", default="10:10,20:20,8:16,5:20,2:25",
                   help="source:reader layer pairs, comma-separated")


def run(args: argparse.Namespace) -> int:
    """``python -m explorer crossmodel``: the README's cross-model R² figures."""
    try:
        pairs = [tuple(int(x) for x in pair.split(":")) for pair in args.layers.split(",") if pair.strip()]
    except ValueError as e:
        raise InputError("--layers takes source:reader pairs such as 10:10,8:16.") from e
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise InputError("--layers takes source:reader pairs such as 10:10,8:16.")
    lm_a = load_model(args.model)
    lm_b = lm_a if args.reader in (None, args.model) else load_model(args.reader)
    t0 = time.perf_counter()
    reader = CrossReader(lm_a, lm_b)
    print(f"{lm_a.model_id} -> {lm_b.model_id}, shared text of {reader.n_tokens} tokens, "
          f"captured in {time.perf_counter() - t0:.1f} s")
    print(f"{'source':>7} {'reader':>7} {'R2 fit':>7} {'R2 held-out':>12}")
    rows = []
    for la, lb in pairs:
        m = reader.map(la, lb)
        print(f"{la:>7} {lb:>7} {m.r2_train:>7.3f} {m.r2_heldout:>12.3f}")
        rows.append({"source_layer": la, "reader_layer": lb, "r2_train": m.r2_train, "r2_heldout": m.r2_heldout})
    print(json.dumps({"source": lm_a.model_id, "reader": lm_b.model_id, "tokens": reader.n_tokens, "maps": rows}))
    return 0
