"""Other ways to read the grid than SelfIE (Patchscopes; see docs/methods.md).

- Logit lens: final norm + unembedding of the state (no second prompt); ``Grid.lens``.
- Token identity: patch the state at layer l into the last position of "cat -> cat\\n1135 ->
  1135\\nhello -> hello\\n?" at the same layer and read the next token; a hit when it equals the
  source model's own next-token prediction at that position.
- Attribute extraction: patch a subject's state into "<relation> x" at the "x" and generate.

The grid's colour modes built on these live in ``explorer.methods.colouring``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.grid import Grid
from explorer.core.hooks import MODEL_VARIANT, edit_input, overwrite_positions
from explorer.core.models import LoadedModel
from explorer.core.prompts import InterpretationPrompt, Template

TOKEN_IDENTITY_PROMPT = "cat -> cat\n1135 -> 1135\nhello -> hello\n?"
def _patch_module(lm: LoadedModel, layer: int):
    """The module whose input is row ``layer``: block ``layer``, or the final norm for the last row."""
    if layer < lm.n_layers:
        return lm.arch.blocks[layer]
    if lm.arch.final_norm is None:
        raise InputError("This model has no final norm to patch the last row into.")
    return lm.arch.final_norm


def patchscope_next_token(lm: LoadedModel, states: torch.Tensor, layer: int, target_ids: Sequence[int],
                          position: int = -1, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Patch each state (B, d) into ``target_ids`` at ``position`` at the input of row ``layer``;
    return the argmax next token and its probability, one per state."""
    ids = torch.tensor([list(target_ids)], device=lm.device)
    pos = position % ids.shape[1]
    module = _patch_module(lm, layer)
    tokens, probs = [], []
    with torch.inference_mode():
        for start in range(0, states.shape[0], batch_size):
            chunk = states[start:start + batch_size].to(lm.device, lm.dtype)
            batch = ids.expand(chunk.shape[0], -1)
            with edit_input(module, lambda h, c=chunk: overwrite_positions(h, [pos], c), variant=None):
                logits = lm.model(input_ids=batch, logits_to_keep=1).logits[:, -1].float()
            p = torch.softmax(logits, dim=-1)
            top = p.max(dim=-1)
            tokens.append(top.indices.cpu().numpy())
            probs.append(top.values.cpu().numpy())
    return np.concatenate(tokens), np.concatenate(probs)


def token_identity_ids(lm: LoadedModel) -> list[int]:
    return [int(i) for i in lm.tokenizer.encode(TOKEN_IDENTITY_PROMPT, add_special_tokens=True)]


@dataclass
class TokenIdentity:
    """Token-identity Patchscope over a block of cells: ``predicted``/``prob``/``hit`` are (R, C)."""

    rows: list[int]
    cols: list[int]
    predicted: np.ndarray
    prob: np.ndarray
    hit: np.ndarray


def token_identity(lm: LoadedModel, grid: Grid, rows: list[int] | None = None,
                   cols: list[int] | None = None, *, batch_size: int = 64,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> TokenIdentity | None:
    """Token identity for ``rows`` x ``cols`` (default: the whole grid), in batched passes that mix
    layers (each row of a pass is patched at its own layer).

    The whole grid is computed once per grid and model variant and kept (a redraw reads the
    cache; a request for part of the grid reads it when it is there). ``progress(done, total)``
    is called after each pass; ``should_stop`` is polled between passes, and a stopped run
    returns None (nothing is kept).
    """
    full = rows is None and cols is None
    rows = list(range(grid.n_rows)) if rows is None else [int(r) for r in rows]
    cols = list(range(grid.n_tokens)) if cols is None else [int(c) for c in cols]
    cached = lm.memo.get(_ti_key(grid))
    if cached is not None:
        return _slice(cached, rows, cols)
    cells = [(layer, col) for layer in rows for col in cols]
    target = token_identity_ids(lm)
    preds: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for start in range(0, len(cells), batch_size):
        if should_stop is not None and should_stop():
            return None
        chunk = cells[start:start + batch_size]
        t, p = _mixed_layer_pass(lm, grid, chunk, target)
        preds.append(t)
        probs.append(p)
        if progress is not None:
            progress(start + len(chunk), len(cells))
    pred = np.concatenate(preds).reshape(len(rows), len(cols)).astype(np.int64)
    prob = np.concatenate(probs).reshape(len(rows), len(cols)).astype(np.float32)
    own = grid.next_token_ids(lm)[cols]
    result = TokenIdentity(rows, cols, pred, prob, (pred == own[None, :]).astype(np.float32))
    if full:
        lm.memo.put(_ti_key(grid), result)  # kept by the model it was computed with (bounded, locked)
    return result


def token_identity_cached(lm: LoadedModel, grid: Grid) -> bool:
    """Whether the whole grid's token identity is already known (for this model variant)."""
    return _ti_key(grid) in lm.memo


def _ti_key(grid: Grid) -> tuple:
    return "token_identity", grid.fingerprint(), MODEL_VARIANT.get()


def _slice(ti: TokenIdentity, rows: list[int], cols: list[int]) -> TokenIdentity:
    ri = [ti.rows.index(r) for r in rows]
    ci = [ti.cols.index(c) for c in cols]
    sub = np.ix_(ri, ci)
    return TokenIdentity(rows, cols, ti.predicted[sub], ti.prob[sub], ti.hit[sub])


def _mixed_layer_pass(lm: LoadedModel, grid: Grid, cells: list[tuple[int, int]],
                      target_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass of ``target_ids`` per cell, each patched at its own layer's input."""
    ids = torch.tensor([list(target_ids)], device=lm.device).expand(len(cells), -1)
    pos = ids.shape[1] - 1
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _col) in enumerate(cells):
        by_layer.setdefault(layer, []).append(i)
    states = torch.stack([grid.hidden[layer, col] for layer, col in cells]).to(lm.device, lm.dtype)

    def patch(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        out[idx, pos] = states[idx].to(h.dtype)
        return out

    with torch.inference_mode(), contextlib.ExitStack() as stack:
        for layer, members in by_layer.items():
            idx = torch.tensor(members, device=lm.device)
            stack.enter_context(edit_input(_patch_module(lm, layer), lambda h, i=idx: patch(h, i), variant=None))
        logits = lm.model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
    top = torch.softmax(logits, dim=-1).max(dim=-1)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()


def attribute_prompt(lm: LoadedModel, prompt_target: str) -> InterpretationPrompt:
    """A Patchscopes target such as "The capital city of x", patched at its last token ("x")."""
    ids = tuple(int(i) for i in lm.tokenizer.encode(prompt_target, add_special_tokens=True))
    if not ids:
        raise InputError("The target prompt is empty.")
    return InterpretationPrompt(ids=ids, placeholder_positions=(len(ids) - 1,), placeholder_id=ids[-1],
                                template=Template("patchscope", "{X}", "", None, chat=False))


__all__ = ["TOKEN_IDENTITY_PROMPT", "TokenIdentity", "attribute_prompt", "patchscope_next_token", "token_identity",
           "token_identity_cached", "token_identity_ids"]
