"""Other ways to read the grid than SelfIE (Patchscopes; see docs/methods.md).

- Logit lens: final norm + unembedding of the state (no second prompt); ``Grid.lens``.
- Token identity: patch the state at layer l into the last position of "cat -> cat\\n1135 ->
  1135\\nhello -> hello\\n?" at the same layer and read the next token; a hit when it equals the
  source model's own next-token prediction at that position.
- Attribute extraction: patch a subject's state into "<relation> x" at the "x" and generate.

The grid's colour modes built on these live in ``explorer.methods.colouring``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.grid import Grid
from explorer.core.hooks import edit_input, overwrite_positions
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
                   cols: list[int] | None = None) -> TokenIdentity:
    rows = list(range(grid.n_rows)) if rows is None else rows
    cols = list(range(grid.n_tokens)) if cols is None else cols
    target = token_identity_ids(lm)
    own = grid.next_token_ids(lm)[cols]
    pred = np.zeros((len(rows), len(cols)), dtype=np.int64)
    prob = np.zeros((len(rows), len(cols)), dtype=np.float32)
    for i, layer in enumerate(rows):
        t, p = patchscope_next_token(lm, grid.hidden[layer, cols], layer, target)
        pred[i], prob[i] = t, p
    return TokenIdentity(rows, cols, pred, prob, (pred == own[None, :]).astype(np.float32))


def attribute_prompt(lm: LoadedModel, prompt_target: str) -> InterpretationPrompt:
    """A Patchscopes target such as "The capital city of x", patched at its last token ("x")."""
    ids = tuple(int(i) for i in lm.tokenizer.encode(prompt_target, add_special_tokens=True))
    if not ids:
        raise InputError("The target prompt is empty.")
    return InterpretationPrompt(ids=ids, placeholder_positions=(len(ids) - 1,), placeholder_id=ids[-1],
                                template=Template("patchscope", "{X}", "", None, chat=False))


__all__ = ["TOKEN_IDENTITY_PROMPT", "TokenIdentity", "attribute_prompt", "patchscope_next_token", "token_identity",
           "token_identity_ids"]
