"""``python -m explorer trace``: causal tracing of one prompt and answer, printed as a grid of effects."""

from __future__ import annotations

import argparse
import sys

from explorer.core.errors import InputError
from explorer.tools.paths import writable_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="the factual prompt, e.g. 'The Eiffel Tower is in the city of'")
    p.add_argument("--answer", required=True, help="the word the model should say next, e.g. ' Paris' "
                   "(its first token is measured)")
    p.add_argument("--subject", default=None, help="the words whose embeddings are corrupted "
                   "(default: the first capitalised name in the prompt)")
    p.add_argument("--samples", type=int, default=10, help="noise samples averaged (ROME: 10)")
    p.add_argument("--noise", type=float, default=3.0, help="noise standard deviation, in multiples of the "
                   "embeddings' (ROME: 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=["state", "mlp"], default="state", help="restore residual states, or the "
                   "MLP outputs of a window of blocks")
    p.add_argument("--window", type=int, default=10, help="blocks in an MLP window (--kind mlp)")
    p.add_argument("--model", default="default")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--every", type=int, default=1, help="print every n-th layer (the last is always printed)")
    p.add_argument("--out", help="write the trace to FILE.csv (one row per cell) or FILE.json (the grid)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from explorer.api import Explorer
    from explorer.methods.tracing import TraceSettings, trace

    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise InputError(f"--out must end in .csv or .json; got '{args.out}'.")
    writable_file(args.out)
    if args.every < 1:
        raise InputError(f"--every must be at least 1; got {args.every}.")
    settings = TraceSettings(samples=args.samples, noise=args.noise, seed=args.seed, kind=args.kind,
                             window=args.window)
    ex = Explorer.load(args.model)
    with tqdm(total=0, desc="tracing", unit="row", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        tr = trace(ex, args.prompt, args.answer, args.subject, chat=args.chat, settings=settings, progress=progress)
    print(f"prompt {tr.prompt!r}   answer {tr.answer!r} (measured: first token {tr.answer_token!r})")
    print(f"subject {tr.subject!r} = tokens {list(tr.subject_positions)} (marked *), noise {settings.noise} x "
          f"std {tr.noise_std:.4f}, {settings.samples} samples, seed {settings.seed}, restoring: {settings.kind}")
    print(f"p_clean {tr.p_clean:.4f}   p_corrupted {tr.p_corrupted:.4f}   total effect {tr.total_effect:+.4f}")
    print("indirect effect p_restored - p_corrupted per cell (row 0 = embeddings):")
    print(tr.text_table(every=args.every))
    if args.out:
        if args.out.lower().endswith(".json"):
            tr.to_json(args.out)
        else:
            tr.to_csv(args.out)
        print(f"wrote the trace ({tr.n_rows} x {tr.n_tokens} cells) to {args.out}", file=sys.stderr)
    return 0
