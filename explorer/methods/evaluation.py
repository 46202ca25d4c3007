"""How far each reading of the grid can be trusted, layer by layer.

1. Token identity (Patchscopes): precision@1 by layer of the token-identity Patchscope and of the
   logit lens, i.e. how often each reading of the state at (layer, position) names the token the
   model itself predicts next there, on positions of a small shipped English corpus.
2. Attribute extraction: on the bundled Patchscopes attribute files (explorer/data/patchscopes), patch the
   subject's last-token state at source layer l into "<relation> x" at the "x" (target layer l*)
   and generate; a hit when the expected object occurs. Only samples whose written-out baseline
   the model under test answers correctly count (recomputed here, not taken from the file).
"""

from __future__ import annotations

import ast
import codecs
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from explorer.core.data import CORPUS, DATA_DIR
from explorer.core.errors import InputError
from explorer.core.files import not_text, readable_file, shorten
from explorer.core.generation import greedy_ids
from explorer.core.grid import capture_ids
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.interpret.engine import Interpreter, InterpretSettings
from explorer.methods.lenses import attribute_prompt, patchscope_next_token, token_identity_ids

DEFAULT_TASK_DIR = DATA_DIR / "patchscopes"


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
        checkpoint()
        grid = capture_ids(lm, list(ids))
        nxt = grid.next_token_ids(lm)
        for layer in layers:
            states[layer].append(grid.hidden[layer, positions])
        own += [int(nxt[p]) for p in positions]
    own_arr = np.array(own)
    target = token_identity_ids(lm)
    rows = []
    for layer in layers:
        checkpoint()
        s = torch.cat(states[layer])
        pred, _ = patchscope_next_token(lm, s, layer, target)
        with torch.inference_mode():
            lens = lm.arch.logit_lens(s.to(lm.device, lm.dtype)).argmax(-1).cpu().numpy()
        rows.append({"layer": layer, "positions": len(own_arr), "patchscope": float((pred == own_arr).mean()),
                     "logit_lens": float((lens == own_arr).mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- attributes


TASK_COLUMNS = ("subject", "object", "prompt_target", "target_baseline")


def resolve_tasks(task: str, task_dir: Path) -> list[Path]:
    """The task files named by ``task`` (or every .tsv of ``task_dir``), each read and checked once."""
    if task == "all":
        files = sorted(task_dir.glob("*.tsv"))
        if not files:
            raise InputError(f"There are no .tsv task files in {shorten(str(task_dir), 200)}.")
    else:
        files = [Path(t) if Path(t).exists() else task_dir / t for t in task.split(",")]
    for path in files:
        load_task(path)
    return files


def load_task(path: Path) -> pd.DataFrame:
    """A task table (tab-separated, UTF-8, with the columns the evaluation reads); InputError otherwise."""
    readable_file(path, "task file")
    try:
        frame = pd.read_csv(path, sep="\t", encoding="utf-8")
    except UnicodeDecodeError as e:
        raise not_text(path, "task file", e) from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise InputError(f"The task file '{shorten(path.name)}' is not a readable tab-separated table.") from None
    missing = [c for c in TASK_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"The task file '{shorten(path.name)}' lacks the columns {', '.join(missing)}.")
    return frame


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


def _answer(lm: LoadedModel, text: str, max_new_tokens: int) -> str:
    new = greedy_ids(lm, lm.tokenizer.encode(text, add_special_tokens=True), max_new_tokens)
    return lm.tokenizer.decode(new, skip_special_tokens=True)


def evaluate_attributes(lm: LoadedModel, tasks: list[Path], *, layers: list[int], target_layer: int | None = None,
                        samples: int = 20, candidates: int = 60, max_new_tokens: int = 10,
                        seed: int = 0, log=lambda m: print(m, file=sys.stderr, flush=True)) -> pd.DataFrame:
    """Accuracy by source layer per task, over baseline-correct samples (counts reported)."""
    interp = Interpreter(lm, cache_bytes=0)
    rows = []
    for path in tasks:
        t0 = time.perf_counter()
        frame = load_task(path)
        frame = frame.drop_duplicates(subset=["subject", "prompt_source"]).sample(frac=1.0, random_state=seed)
        kept = []
        baseline_cache: dict[str, bool] = {}
        for _, row in frame.head(candidates).iterrows():
            obj = _decode_escapes(str(row["object"])).strip()
            base = str(row["target_baseline"])
            if base not in baseline_cache:
                baseline_cache[base] = obj.lower() in _answer(lm, base, max_new_tokens).lower()
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
                checkpoint()
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
