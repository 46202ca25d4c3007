"""``python -m explorer evaluate``: how far each reading of the grid can be trusted, layer by layer.

1. Token identity (Patchscopes): precision@1 by layer of the token-identity Patchscope and of the
   logit lens, i.e. how often each reading of the state at (layer, position) names the token the
   model itself predicts next there, on positions of a small shipped English corpus.
2. Attribute extraction: on task files with the columns of ../shared/data/patchscopes, patch the
   subject's last-token state at source layer l into "<relation> x" at the "x" (target layer l*)
   and generate; a hit when the expected object occurs. Only samples whose written-out baseline
   the model under test answers correctly count (recomputed here, not taken from the file).
"""

from __future__ import annotations

import argparse
import ast
import codecs
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from explorer.grid import capture_ids
from explorer.interpret import Interpreter, InterpretSettings
from explorer.lenses import attribute_prompt, patchscope_next_token, token_identity_ids
from explorer.models import LoadedModel, load_model

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
DEFAULT_TASK_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "patchscopes"


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
    lm = load_model(args.model)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = list(range(lm.n_layers + 1)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
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
        tasks = resolve_tasks(args.task, Path(args.task_dir))
        target = None if args.target_layer == "same" else int(args.target_layer)
        att = evaluate_attributes(lm, tasks, layers=[lay for lay in layers if lay < lm.n_layers],
                                  target_layer=target, samples=args.samples, candidates=args.candidates,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)
        att.to_csv(out / "eval_attributes.csv", index=False)
        print_table("Attribute extraction accuracy by source layer", att)
        summary["attributes"] = att.to_dict(orient="list")
    html_path = write_figure(summary, out / "eval.html")
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"wrote {out}/eval_*.csv, {html_path}", file=sys.stderr)
    return 0


def print_table(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


# ------------------------------------------------------------------------------- token identity


def corpus_positions(lm: LoadedModel, n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """(sentence ids, position) pairs: positions 1..T-2 of each sentence, sampled reproducibly."""
    sentences = [s.strip() for s in CORPUS.read_text(encoding="utf-8").splitlines() if s.strip()]
    pairs = []
    for s in sentences:
        ids = [int(i) for i in lm.tokenizer.encode(s, add_special_tokens=True)]
        pairs += [(ids, p) for p in range(1, len(ids) - 1)]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def evaluate_token_identity(lm: LoadedModel, *, n_positions: int = 200, layers: list[int] | None = None,
                            seed: int = 0) -> pd.DataFrame:
    """precision@1 per layer of the token-identity Patchscope and of the logit lens."""
    layers = layers if layers is not None else list(range(lm.n_layers + 1))
    pairs = corpus_positions(lm, n_positions, seed)
    by_sentence: dict[tuple, list[int]] = {}
    for ids, p in pairs:
        by_sentence.setdefault(tuple(ids), []).append(p)
    states = {layer: [] for layer in layers}
    own: list[int] = []
    for ids, positions in by_sentence.items():
        grid = capture_ids(lm, list(ids))
        nxt = grid.next_token_ids(lm)
        for layer in layers:
            states[layer].append(grid.hidden[layer, positions])
        own += [int(nxt[p]) for p in positions]
    own_arr = np.array(own)
    target = token_identity_ids(lm)
    rows = []
    for layer in layers:
        s = torch.cat(states[layer])
        pred, _ = patchscope_next_token(lm, s, layer, target)
        with torch.inference_mode():
            lens = lm.arch.logit_lens(s.to(lm.device, lm.dtype)).argmax(-1).cpu().numpy()
        rows.append({"layer": layer, "positions": len(own_arr), "patchscope": float((pred == own_arr).mean()),
                     "logit_lens": float((lens == own_arr).mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- attributes


def resolve_tasks(task: str, task_dir: Path) -> list[Path]:
    if task == "all":
        files = sorted(task_dir.glob("*.tsv"))
        if not files:
            raise SystemExit(f"error: no .tsv task files in {task_dir}")
        return files
    return [Path(t) if Path(t).exists() else task_dir / t for t in task.split(",")]


def _decode_escapes(text: str) -> str:
    if "\\u" in text or "\\x" in text:
        try:
            return codecs.decode(text, "unicode_escape")
        except UnicodeDecodeError:
            return text
    return text


def source_text(row: pd.Series) -> str:
    """The source prompt cut just after the subject's first occurrence (see the data README)."""
    subject = str(row["subject"])
    src = row.get("prompt_source")
    if isinstance(src, str) and src.strip():
        i = src.find(subject)
        if i >= 0:
            return src[: i + len(subject)]
        toks = row.get("source_cropped_toks")
        if isinstance(toks, str) and toks.startswith("["):
            try:
                return "".join(ast.literal_eval(toks))
            except (ValueError, SyntaxError):
                pass
    return subject


def _greedy(lm: LoadedModel, text: str, max_new_tokens: int) -> str:
    ids = torch.tensor([lm.tokenizer.encode(text, add_special_tokens=True)], device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                max_new_tokens=max_new_tokens, temperature=None, top_p=None, top_k=None,
                                pad_token_id=lm.tokenizer.pad_token_id)
    return lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def evaluate_attributes(lm: LoadedModel, tasks: list[Path], *, layers: list[int], target_layer: int | None = None,
                        samples: int = 20, candidates: int = 60, max_new_tokens: int = 10,
                        seed: int = 0, log=lambda m: print(m, file=sys.stderr, flush=True)) -> pd.DataFrame:
    """Accuracy by source layer per task, over baseline-correct samples (counts reported)."""
    interp = Interpreter(lm, cache_bytes=0)
    rows = []
    for path in tasks:
        t0 = time.perf_counter()
        frame = pd.read_csv(path, sep="\t")
        frame = frame.drop_duplicates(subset=["subject", "prompt_source"]).sample(frac=1.0, random_state=seed)
        kept = []
        baseline_cache: dict[str, bool] = {}
        for _, row in frame.head(candidates).iterrows():
            obj = _decode_escapes(str(row["object"])).strip()
            base = str(row["target_baseline"])
            if base not in baseline_cache:
                baseline_cache[base] = obj.lower() in _greedy(lm, base, max_new_tokens).lower()
            if baseline_cache[base]:
                kept.append((row, obj))
            if len(kept) >= samples:
                break
        hits = {layer: 0 for layer in layers}
        by_target: dict[str, list[tuple[torch.Tensor, str]]] = {}
        for row, obj in kept:
            grid = capture_ids(lm, [int(i) for i in lm.tokenizer.encode(source_text(row), add_special_tokens=True)])
            by_target.setdefault(str(row["prompt_target"]), []).append((grid.hidden[layers, -1], obj))
        for prompt_target, items in by_target.items():
            prompt = attribute_prompt(lm, prompt_target)
            states = torch.stack([s for s, _ in items])  # (samples, layers, d)
            for j, layer in enumerate(layers):
                # every sample of a task shares the target prompt: one batch per source layer
                k = min(target_layer if target_layer is not None else layer, lm.n_layers - 1)
                settings = InterpretSettings(prompt.template, 1, k, max_new_tokens, 1.0, prompt)
                gen = interp.generate_now(states[:, j], settings)
                for ids, (_s, obj) in zip(gen.ids, items):
                    hits[layer] += obj.lower() in lm.tokenizer.decode(ids, skip_special_tokens=True).lower()
        for layer in layers:
            rows.append({"task": path.stem, "layer": layer, "baseline_correct": len(kept),
                         "accuracy": hits[layer] / len(kept) if kept else float("nan")})
        log(f"{path.stem}: {len(kept)} baseline-correct samples, {time.perf_counter() - t0:.0f} s")
    return pd.DataFrame(rows)


def write_figure(summary: dict, path: Path) -> Path:
    """Both curves in one standalone HTML file (plotly.js inline: no CDN)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Token identity precision@1", "Attribute extraction accuracy"))
    ti = summary.get("token_identity")
    if ti:
        fig.add_trace(go.Scatter(x=ti["layer"], y=ti["patchscope"], name="token-identity Patchscope"), 1, 1)
        fig.add_trace(go.Scatter(x=ti["layer"], y=ti["logit_lens"], name="logit lens"), 1, 1)
    att = summary.get("attributes")
    if att:
        frame = pd.DataFrame(att)
        for task, part in frame.groupby("task"):
            n = int(part["baseline_correct"].iloc[0])
            fig.add_trace(go.Scatter(x=part["layer"], y=part["accuracy"], name=f"{task} (n={n})"), 1, 2)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(height=420, title=f"SelfIE Explorer evaluation: {summary.get('model')}")
    fig.write_html(str(path), include_plotlyjs=True)
    return path
