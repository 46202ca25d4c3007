"""Run SelfIE over a file of prompts: groups of prompts -> batched readings -> Parquet shards.

Prompts are taken in fixed groups by index (``index // group_size``); group g belongs to process
``g % world``. A group's cells are interpreted together in batches of ``batch_size``, so the batch a
cell is read in depends only on the file and the settings, never on how many processes run: the
merged result of N processes is the single-process result, row for row. Each group becomes one
shard, so a killed run loses at most the group in flight, and re-running skips every prompt whose
(index, hash of text and settings) is already in a shard or in the errors file.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.api import Explorer
from explorer.core.errors import ExplorerError, InputError
from explorer.core.files import shorten
from explorer.core.grid import DEFAULT_MAX_PROMPT_TOKENS, capture
from explorer.core.results import CellInterpretation
from explorer.interpret.engine import Interpreter, InterpretSettings
from explorer.methods.batch import shards
from explorer.methods.batch.cellspec import CellSpec, parse_cell_spec
from explorer.methods.batch.inputs import PromptRow, read_prompts, require_prompts


@dataclass(frozen=True)
class BatchConfig:
    """What a batch run reads and how it interprets; everything but ``out`` and ``batch_size``
    goes into each prompt's hash, so a changed setting never resumes an old run."""

    prompts: str
    cells: str
    out: str
    column: str | None = None
    chat: bool = False
    template: str | None = None
    n_placeholders: int = 5
    k: int = 1
    max_new_tokens: int = 20
    strength: float = 1.0
    relevancy: bool = True
    batch_size: int | str = "auto"
    group_size: int = 16
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS


@dataclass(frozen=True)
class BatchSummary:
    """Counts over all processes: ``done`` prompts interpreted now, ``skipped`` done before,
    ``errors`` bad rows reported now; ``seconds`` of interpretation (model load excluded)."""

    done: int
    skipped: int
    errors: int
    rows: int
    seconds: float
    merged: str | None
    first_error: str | None = None  # the first bad row's reason, when no row was read at all

    @property
    def prompts_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Item:
    row: PromptRow
    key: str
    cells: list[tuple[int, int]]
    vectors: torch.Tensor  # (len(cells), d)
    token_texts: list[str]
    provenance: dict


def run_signature(ex: Explorer, cfg: BatchConfig, settings: InterpretSettings) -> dict:
    """What the results depend on (besides each prompt's text)."""
    prov = {k: v for k, v in ex.lm.provenance().items() if k != "device"}
    return {**prov, **settings.to_dict(), "template_system": settings.template.system, "cells": cfg.cells,
            "chat": cfg.chat, "relevancy": cfg.relevancy, "column": cfg.column,
            "group_size": cfg.group_size, "max_prompt_tokens": cfg.max_prompt_tokens}


def prompt_key(signature: str, text: str) -> str:
    return hashlib.sha1(f"{signature}\0{text}".encode()).hexdigest()[:16]


def _check_run_file(out: Path, signature: dict) -> None:
    """The output folder belongs to one set of settings; resuming with others is refused."""
    path = out / "run.json"
    text = json.dumps(signature, sort_keys=True, indent=1, default=str)
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):
            raise InputError(f"'{shorten(str(out), 200)}' holds a damaged run.json; use a new --out folder.") from None
        if recorded != json.loads(text):
            raise InputError(f"'{shorten(str(out), 200)}' holds a run with other settings; use a new --out folder to "
                             "start another.")
        return
    tmp = out / f".run.json.{time.time_ns()}"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _prepare(ex: Explorer, row: PromptRow, key: str, spec: CellSpec, cfg: BatchConfig,
             settings: InterpretSettings) -> _Item:
    """One prompt's grid -> just the states of its cells (the grid itself is dropped)."""
    assert row.prompt is not None
    grid = capture(ex.lm, row.prompt, chat=cfg.chat, max_tokens=cfg.max_prompt_tokens)
    cells = spec.resolve(grid.n_rows, grid.n_tokens)
    idx_l = torch.tensor([c[0] for c in cells])
    idx_t = torch.tensor([c[1] for c in cells])
    prov = {k: "" if v is None else str(v) for k, v in ex.provenance(grid, settings).items()}
    return _Item(row, key, cells, grid.hidden[idx_l, idx_t].clone(), [grid.tokens[t] for _, t in cells], prov)


def _read_group(ex: Explorer, items: list[_Item], settings: InterpretSettings, batch_size: int,
                relevancy: bool) -> list[dict]:
    """Interpret every cell of a group in batches of ``batch_size``; one record per cell."""
    flat = [(it, j) for it in items for j in range(len(it.cells))]
    tok = ex.lm.tokenizer
    records: list[dict] = []
    for start in range(0, len(flat), batch_size):
        part = flat[start:start + batch_size]
        gen = ex.interpreter.generate(torch.stack([it.vectors[j] for it, j in part]), settings)
        p_wo = ex.interpreter.p_without(gen.ids, settings) if relevancy else [None] * len(part)
        for (it, j), ids, pw, p_with in zip(part, gen.ids, p_wo, gen.p_with):
            cell = CellInterpretation(
                layer=it.cells[j][0], token=it.cells[j][1], token_decoded=it.token_texts[j],
                interpretation=tok.decode(ids, skip_special_tokens=True).strip(), generated_ids=list(ids),
                token_texts=[tok.decode([i], skip_special_tokens=False) for i in ids], p_with=list(p_with))
            if pw is not None:
                cell = Interpreter._with_relevancy(cell, pw)
            records.append({"prompt_index": it.row.index, "prompt_hash": it.key,
                            **cell.to_record(it.row.prompt or ""), **it.provenance})
    return records


def _groups(rows: Iterator[PromptRow], cfg: BatchConfig, rank: int, world: int, sig: str,
            done: set[tuple[int, str]]) -> Iterator[tuple[int, list[tuple[PromptRow, str]]]]:
    """This process's groups of prompts not done yet, in file order."""
    current, pending = -1, []
    for row in rows:
        group = row.index // cfg.group_size
        if group % world != rank:
            continue
        key = prompt_key(sig, row.prompt if row.prompt is not None else f"<unreadable:{row.error}>")
        if (row.index, key) in done:
            continue
        if group != current and pending:
            yield current, pending
            pending = []
        current = group
        pending.append((row, key))
    if pending:
        yield current, pending


def _process_group(ex: Explorer, cfg: BatchConfig, spec: CellSpec, settings: InterpretSettings, batch: int,
                   out: Path, rank: int, group: int, members: list[tuple[PromptRow, str]]) -> tuple[int, int]:
    """Read one group, write its shard and its errors; returns (prompts read, bad rows)."""
    items: list[_Item] = []
    errors: list[dict] = []
    for row, key in members:
        try:
            if row.error is not None:
                raise InputError(row.error)
            items.append(_prepare(ex, row, key, spec, cfg, settings))
        except ExplorerError as e:
            print(f"skipped prompt {row.index}: {e}", file=sys.stderr, flush=True)
            errors.append({"prompt_index": row.index, "prompt_hash": key, "error": str(e),
                           "prompt": (row.prompt or "")[:200]})
    records = _read_group(ex, items, settings, batch, cfg.relevancy) if items else []
    keys = list(items[0].provenance) if items else []
    tag = f"r{rank}-" + hashlib.sha1("".join(k for _, k in members).encode()).hexdigest()[:8]
    shards.write_shard(out, group, tag, records, keys, rank)
    shards.append_errors(out, rank, errors)
    return len(items), len(errors)


def run_batch(ex: Explorer, cfg: BatchConfig, *, rank: int = 0, world: int = 1,
              barrier: Callable[[], None] | None = None, total_counts: Callable[[list[int]], list[int]] | None = None,
              show_progress: bool = True) -> BatchSummary:
    """Interpret this process's share of ``cfg.prompts``; after ``barrier`` process 0 merges the shards.

    ``total_counts`` sums a list of counts over processes (None for one process).
    """
    from tqdm import tqdm

    spec = parse_cell_spec(cfg.cells)
    if isinstance(cfg.group_size, bool) or not isinstance(cfg.group_size, int) or not 1 <= cfg.group_size <= 4096:
        raise InputError(f"The group size must be a whole number from 1 to 4096; got {shorten(repr(cfg.group_size))}.")
    settings = ex.settings(cfg.template, n_placeholders=cfg.n_placeholders, k=cfg.k,
                           max_new_tokens=cfg.max_new_tokens, strength=cfg.strength)
    batch = ex.batch_size(settings, cfg.batch_size)
    n_rows = require_prompts(cfg.prompts, cfg.column)  # reads the whole file once: a broken file fails here
    out = output_folder(cfg.out)
    signature = run_signature(ex, cfg, settings)
    sig = json.dumps(signature, sort_keys=True, default=str)
    _check_run_file(out, signature)
    shards.remove_partial(out, rank)
    done = shards.done_keys(out)
    todo = sum(len(m) for _, m in _groups(read_prompts(cfg.prompts, cfg.column), cfg, rank, world, sig, done))
    counts = [0, 0]
    t0 = time.perf_counter()
    with tqdm(total=todo, unit="prompt", desc=f"batch r{rank}" if world > 1 else "batch", file=sys.stderr,
              disable=not show_progress or None, position=rank, leave=True) as bar:
        for group, members in _groups(read_prompts(cfg.prompts, cfg.column), cfg, rank, world, sig, done):
            n_ok, n_bad = _process_group(ex, cfg, spec, settings, batch, out, rank, group, members)
            counts[0] += n_ok
            counts[1] += n_bad
            bar.update(len(members))
    seconds = time.perf_counter() - t0
    if total_counts is not None:
        counts = total_counts(counts)
    if barrier is not None:
        barrier()
    seconds = time.perf_counter() - t0  # the slowest process sets the pace
    merged, rows = (shards.merge(out) if rank == 0 else (None, 0))
    skipped = n_rows - counts[0] - counts[1]
    first_error = None
    if merged is not None and rows == 0:
        first_error = next((str(e.get("error")) for e in shards.error_records(out)), None)
    return BatchSummary(done=counts[0], skipped=max(0, skipped), errors=counts[1], rows=rows, seconds=seconds,
                        merged=None if merged is None else str(merged), first_error=first_error)


def output_folder(path: str) -> Path:
    """The output folder, created if missing; InputError if ``path`` is a file or cannot be a folder."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"The output must be a folder, and '{shorten(path, 200)}' is an existing file: "
                         "give a new folder name.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"The output folder '{shorten(path, 200)}' cannot be created "
                         f"({e.strerror or 'not allowed'}).") from None
    return out


def nothing_done(s: BatchSummary, out: str) -> str | None:
    """The sentence for a run that produced no reading at all (None when something was read)."""
    if s.merged is None or s.rows > 0:
        return None
    where = f"{shorten(out, 200)}/errors.jsonl"
    if s.errors:
        reason = shorten((s.first_error or "").rstrip("."), 120)
        total = s.errors + s.skipped  # with no rows written, the prompts skipped as done were bad before
        if total == 1:
            why = f" ({reason})" if reason else ""
            return f"Nothing was interpreted: the only prompt was skipped as bad{why}; see {where}."
        first = f" (the first: {reason})" if reason else ""
        return f"Nothing was interpreted: all {total} prompts were skipped as bad{first}; every reason is in {where}."
    return (f"Nothing was interpreted: every prompt was skipped as bad in an earlier run into this folder; the "
            f"reasons are in {where}.")


def summary_line(s: BatchSummary, world: int) -> str:
    return (f"{s.done} prompts interpreted ({s.skipped} already done, {s.errors} skipped as bad) by {world} "
            f"process{'es' if world > 1 else ''} in {s.seconds:.1f} s: {s.prompts_per_second:.2f} prompts/s; "
            f"{s.rows} rows in {s.merged}")


__all__ = ["BatchConfig", "BatchSummary", "nothing_done", "output_folder", "run_batch", "summary_line"]
