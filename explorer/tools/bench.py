"""``python -m explorer bench``: interpretation speed against its natural bound.

Interpreting a cell is a greedy generation of max_new_tokens from a fixed prompt, so the bound is
plain batched ``model.generate`` of identical shapes: the same batch, the same prompt length and,
per batch, the same number of new tokens as the interpretation decoded (no hooks). Both run in the
same process, interleaved, so machine noise hits both. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import replace

import torch

from explorer.core.errors import InputError
from explorer.core.files import shorten
from explorer.core.grid import Grid, capture_ids
from explorer.core.models import LoadedModel, load_model
from explorer.interpret.engine import Interpreter, InterpretSettings, make_settings

BENCH_TEXT = (
    "In 1969, Neil Armstrong became the first person to walk on the Moon during the Apollo 11 mission, "
    "while Michael Collins orbited above and millions of people around the world watched on television. "
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris, and it remained the tallest "
    "structure in the world for four decades. Photosynthesis lets plants turn sunlight, water and carbon "
    "dioxide into sugar and oxygen, which feeds almost every living thing on Earth. "
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--quick", action="store_true", help="a short run (< 3 minutes on 2 CPU cores)")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--lengths", default="16,256,1024", help="prompt lengths for the grid-capture timing")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on a GPU, fp32 on CPU)")


def check_device(device: str | None) -> None:
    """A CUDA device asked for on a machine without one is a clear error, not a silent CPU run."""
    if device is None or device == "cpu":
        return
    if not device.startswith("cuda"):
        raise InputError(f"--device must be cpu, cuda or cuda:N; got {shorten(repr(device))}.")
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: no GPU is present on this machine (PyTorch sees no CUDA device); "
                         "leave --device out to measure on the CPU.")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s).")


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    lengths = [int(n) for n in args.lengths.split(",") if n.strip()]
    result = bench(lm, quick=args.quick, batch_sizes=batch_sizes, max_new_tokens=args.max_new_tokens,
                   lengths=lengths, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_table(result)
    print(json.dumps(result))
    return 0


def text_ids(lm: LoadedModel, n: int) -> list[int]:
    """Exactly ``n`` token ids of ordinary English text (repeated as needed)."""
    ids: list[int] = []
    while len(ids) < n:
        ids += lm.tokenizer.encode(BENCH_TEXT, add_special_tokens=False)
    return ids[:n]


def bench_grid(lm: LoadedModel) -> Grid:
    return capture_ids(lm, text_ids(lm, 16))


def _sync() -> None:
    """GPU work is asynchronous: wait for it so a timing covers the work, not its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn) -> float:
    _sync()
    t = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t


def _bound(lm: LoadedModel, prompt_ids: tuple[int, ...], batch: int, new_tokens: int) -> None:
    ids = torch.tensor([list(prompt_ids)] * batch, device=lm.device)
    with torch.inference_mode():
        lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                          max_new_tokens=new_tokens, min_new_tokens=new_tokens, temperature=None, top_p=None,
                          top_k=None, pad_token_id=lm.tokenizer.pad_token_id)


def measure_batch(lm: LoadedModel, grid: Grid, settings: InterpretSettings, batch: int, n_cells: int) -> dict:
    """Throughput at one batch size: with relevancy, text only, and the generate bound."""
    cells = [(layer, token) for layer in range(grid.n_rows) for token in range(grid.n_tokens)][:n_cells]
    interp = Interpreter(lm, cache_bytes=0)  # no result cache: every cell is computed
    prompt_ids = interp.prompt_state(settings).prompt.ids
    t_full = t_text = t_bound = 0.0
    for start in range(0, len(cells), batch):
        chunk = cells[start:start + batch]
        vectors = torch.stack([grid.hidden[layer, token] for layer, token in chunk])
        gen = None

        def text_only(vectors=vectors):
            nonlocal gen
            gen = interp.generate(vectors, settings)

        t_text += _timed(text_only)
        t_bound += _timed(lambda n=len(chunk), g=gen: _bound(lm, prompt_ids, n, g.steps))
        t_full += _timed(lambda v=vectors: interp.p_without(interp.generate(v, settings).ids, settings))
    n = len(cells)
    out = {"cells": n, "cells_per_s": n / t_full, "text_cells_per_s": n / t_text, "bound_cells_per_s": n / t_bound}
    out["ratio"] = out["cells_per_s"] / out["bound_cells_per_s"]
    out["text_ratio"] = out["text_cells_per_s"] / out["bound_cells_per_s"]
    return out


def measure_relevancy_pass(lm: LoadedModel, grid: Grid, settings: InterpretSettings, batch: int,
                           batches: int) -> dict:
    """The relevancy pass over real generations, as one prefix tree and as a padded batch (interleaved)."""
    cells = [(layer, token) for layer in range(grid.n_rows) for token in range(grid.n_tokens)]
    interp = Interpreter(lm, cache_bytes=0)
    state = interp.prompt_state(settings)
    tree_s = padded_s = 0.0
    max_diff = 0.0
    for start in range(0, batch * batches, batch):
        chunk = cells[start:start + batch]
        ids = interp.generate(torch.stack([grid.hidden[layer, token] for layer, token in chunk]), settings).ids
        seqs = list(dict.fromkeys(tuple(s) for s in ids if len(s) > 1))
        out: dict[str, list[list[float]]] = {}
        with torch.inference_mode():
            tree_s += _timed(lambda seqs=seqs, out=out: out.__setitem__("tree", interp.relevancy.p_tree(state, seqs)))
            padded_s += _timed(lambda seqs=seqs, out=out: out.__setitem__("padded", interp.relevancy.p_padded(state, seqs)))
        tree, padded = out["tree"], out["padded"]
        max_diff = max([max_diff, *(abs(x - y) for a, b in zip(tree, padded) for x, y in zip(a, b))])
    return {"relevancy_tree_ms": 1000 * tree_s / batches, "relevancy_padded_ms": 1000 * padded_s / batches,
            "relevancy_max_diff": max_diff}


def measure_latency(lm: LoadedModel, grid: Grid, settings: InterpretSettings) -> dict:
    """A click as the app sees it: first streamed text, the full cell, and the same cell again."""
    interp = Interpreter(lm)
    interp.prompt_state(settings)  # the app warms this at start-up
    cell = [(grid.n_layers // 2, grid.n_tokens - 1)]
    t0 = time.perf_counter()
    first = None
    for _ in interp.iter_cells(grid, cell, settings, batch_size=1, stream_tokens=True):
        if first is None:
            first = time.perf_counter() - t0
    # (drained to the end: a decode still running in the background would slow the next measurement)
    other = [(grid.n_layers // 2 + 1, grid.n_tokens - 1)]
    cell_s = _timed(lambda: list(interp.iter_cells(grid, other, settings, batch_size=1)))
    repeat_s = _timed(lambda: list(interp.iter_cells(grid, other, settings, batch_size=1)))
    return {"first_text_ms": 1000 * (first or 0.0), "cell_ms": 1000 * cell_s, "repeat_ms": 1000 * repeat_s}


def measure_forward(lm: LoadedModel, lengths: list[int], repeats: int) -> tuple[dict, dict]:
    """Grid capture vs a plain forward pass with hidden states, per prompt length (median ms)."""
    grid_ms, plain_ms = {}, {}
    for n in lengths:
        ids = text_ids(lm, n)
        tensor = torch.tensor([ids], device=lm.device)

        def plain(tensor=tensor):
            with torch.inference_mode():
                lm.model(input_ids=tensor, output_hidden_states=True, use_cache=False)

        g, p = [], []
        plain()
        for _ in range(repeats):
            g.append(_timed(lambda ids=ids: capture_ids(lm, ids)))
            p.append(_timed(plain))
        grid_ms[str(n)] = 1000 * statistics.median(g)
        plain_ms[str(n)] = 1000 * statistics.median(p)
    return grid_ms, plain_ms


def bench(lm: LoadedModel, *, quick: bool = False, batch_sizes: list[int] | None = None, max_new_tokens: int = 20,
          lengths: list[int] | None = None, log=lambda m: None) -> dict:
    batch_sizes = batch_sizes or [1, 8, 32, 64]
    lengths = lengths or [16, 256, 1024]
    grid = bench_grid(lm)
    settings = make_settings(lm, "refers_to", max_new_tokens=max_new_tokens)
    total = grid.n_rows * grid.n_tokens
    by_batch = {}
    for b in batch_sizes:
        # Full: the whole grid (batch 1 on a sample). Quick: a couple of batches.
        n = (2 * b if b > 1 else 4) if quick else (total if b > 1 else 32)
        log(f"batch {b}: {n} cells ...")
        by_batch[str(b)] = measure_batch(lm, grid, settings, b, min(n, total))
        log(f"  {by_batch[str(b)]}")
    best = max(by_batch, key=lambda b: by_batch[b]["cells_per_s"])
    log("relevancy pass: prefix tree vs padded batch ...")
    relevancy = measure_relevancy_pass(lm, grid, settings, batch=32, batches=1 if quick else 4)
    log("latency ...")
    latency = measure_latency(lm, grid, replace(settings))
    log("forward passes ...")
    grid_ms, plain_ms = measure_forward(lm, lengths, repeats=2 if quick else 5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": lm.model_id, "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "quick": quick, "prompt_tokens": grid.n_tokens,
        "max_new_tokens": max_new_tokens, "best_batch": int(best),
        "cells_per_s": by_batch[best]["cells_per_s"], "text_cells_per_s": by_batch[best]["text_cells_per_s"],
        "bound_cells_per_s": by_batch[best]["bound_cells_per_s"], "ratio": by_batch[best]["ratio"],
        "text_ratio": by_batch[best]["text_ratio"], "by_batch": by_batch, **relevancy, **latency,
        "grid_forward_ms": grid_ms, "plain_forward_ms": plain_ms, "peak_rss_mb": peak,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if lm.device.type == "cuda" else None,
    }


def print_table(r: dict) -> None:
    print(f"SelfIE Explorer benchmark: {r['model']} on {r['device']} ({r['dtype']}, {r['threads']} threads), "
          f"{r['prompt_tokens']}-token prompt, {r['max_new_tokens']} new tokens")
    print(f"{'batch':>6} {'cells':>6} {'cells/s':>9} {'text/s':>9} {'bound/s':>9} {'ratio':>6} {'text_ratio':>10}")
    for b, m in r["by_batch"].items():
        print(f"{b:>6} {m['cells']:>6} {m['cells_per_s']:>9.2f} {m['text_cells_per_s']:>9.2f} "
              f"{m['bound_cells_per_s']:>9.2f} {m['ratio']:>6.2f} {m['text_ratio']:>10.2f}")
    print(f"relevancy pass per batch of 32: prefix tree {r['relevancy_tree_ms']:.0f} ms, padded batch "
          f"{r['relevancy_padded_ms']:.0f} ms (max difference {r['relevancy_max_diff']:.1e})")
    print(f"first text {r['first_text_ms']:.0f} ms, full cell {r['cell_ms']:.0f} ms, repeat {r['repeat_ms']:.1f} ms")
    print(f"{'tokens':>7} {'grid capture ms':>16} {'plain forward ms':>17} {'ratio':>6}")
    for n in r["grid_forward_ms"]:
        g, p = r["grid_forward_ms"][n], r["plain_forward_ms"][n]
        print(f"{n:>7} {g:>16.1f} {p:>17.1f} {g / p:>6.2f}")
    gpu = r.get("peak_gpu_mb")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB" + (f", peak GPU memory {gpu:.0f} MB" if gpu is not None else ""))
