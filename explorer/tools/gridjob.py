"""``python -m explorer gridjob``: a whole-grid job through the app's own path vs the engine's best batch.

The app path is what the Explore tab runs for "Interpret whole grid": the session, the shared
batching scheduler, the job's reading order, figure and table rebuilds and the progress bar, all
without a browser. The reference is ``bench``'s measurement of the bare engine (decode plus
relevancy, no scheduler, no views) at each batch size; the best of them is the target. It also
times a click's first words while the grid job runs. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from explorer.interpret.cache import ByteLRU
from explorer.interpret.engine import make_settings
from explorer.tools.bench import bench_grid, measure_batch
from explorer.ui import explore
from explorer.ui.session import AppConfig, ModelRegistry, Session


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--quick", action="store_true", help="64 cells instead of the whole 16-token grid")
    p.add_argument("--batch-sizes", default="8,16,32,64", help="engine batch sizes to find the best one")
    p.add_argument("--max-new-tokens", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    result = measure(args.model, quick=args.quick, max_new_tokens=args.max_new_tokens,
                     batch_sizes=[int(b) for b in args.batch_sizes.split(",") if b.strip()],
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"whole-grid job, {result['cells']} cells of a {result['prompt_tokens']}-token grid "
          f"({result['device']}, {result['max_new_tokens']} new tokens)")
    for b, r in result["engine"].items():
        print(f"  engine batch {b:>3}: {r:7.2f} cells/s")
    print(f"  app path (batch {result['best_batch']}): {result['app_cells_per_s']:7.2f} cells/s = "
          f"{result['app_ratio']:.2f} x the engine's best batch")
    print(f"  a click during the job: first words after {result['click_first_words_ms']:.0f} ms")
    print(json.dumps(result))
    return 0


def measure(model: str, *, quick: bool, max_new_tokens: int, batch_sizes: list[int], log=lambda m: None) -> dict:
    config = AppConfig()
    config.max_batch = max(config.max_batch, *batch_sizes)
    registry = ModelRegistry(config)
    ex = registry.get(model)
    lm = ex.lm
    grid = bench_grid(lm)
    settings = make_settings(lm, "refers_to", max_new_tokens=max_new_tokens)
    ex.interpreter.prompt_state(settings)  # the app warms this on the first click
    n = 64 if quick else grid.n_rows * grid.n_tokens
    engine = {}
    for b in batch_sizes:
        log(f"engine, batch {b}: {n} cells ...")
        engine[str(b)] = measure_batch(lm, grid, settings, b, n)["cells_per_s"]
    best = max(engine, key=lambda b: engine[b])
    ex.interpreter.results = ByteLRU(0, lambda c: c.nbytes())  # nothing cached: every cell is computed
    session = Session(model=model)
    session.new_grid(grid)
    cells = explore.scope_cells(grid, "grid", None, 10**6)[:n]
    log(f"app path, batch {best}: {n} cells ...")
    t0 = time.perf_counter()
    for _view in explore.interpret_cells(registry, session, cells, settings, batch_size=int(best), scope="grid"):
        pass
    app = n / (time.perf_counter() - t0)
    log("a click during a grid job ...")
    click_ms = _click_during_job(registry, grid, settings, cells, int(best), model)
    return {"model": lm.model_id, "device": str(lm.device), "prompt_tokens": grid.n_tokens, "cells": n,
            "max_new_tokens": max_new_tokens, "engine": engine, "best_batch": int(best),
            "engine_best_cells_per_s": engine[best], "app_cells_per_s": app, "app_ratio": app / engine[best],
            "click_first_words_ms": click_ms}


def _click_during_job(registry: ModelRegistry, grid, settings, cells, batch: int, model: str) -> float:
    """Start a grid job in one session, then time a click's first streamed words in another."""
    job_session, click_session = Session(model=model), Session(model=model)
    job_session.new_grid(grid)
    click_session.new_grid(grid)

    def job() -> None:
        for _ in explore.interpret_cells(registry, job_session, cells, settings, batch_size=batch, scope="grid"):
            pass

    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    time.sleep(2.0)  # the job's batches are queued and decoding
    cell = (grid.n_layers // 2 + 3, grid.n_tokens - 1)
    t0 = time.perf_counter()
    first = None
    for _view in explore.interpret_cells(registry, click_session, [cell], settings, batch_size=1, focus=cell):
        if first is None:
            first = time.perf_counter() - t0
            break
    job_session.stop_jobs()
    worker.join()
    return 1000 * (first or 0.0)
