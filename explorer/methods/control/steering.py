"""Steering vectors (beyond the paper): add a scaled concept difference at one block's input."""

from __future__ import annotations

import hashlib
import math

import torch

from explorer.core.errors import InputError
from explorer.core.generation import greedy_text
from explorer.core.grid import capture
from explorer.core.hooks import edit_input
from explorer.core.models import LoadedModel
from explorer.methods.control.edit import CONCEPT_CONTEXT


def steering_vector(lm: LoadedModel, concept_a: str, concept_b: str, layer: int) -> torch.Tensor:
    """unit(state(A) - state(B)) scaled to the typical norm of states at ``layer``.

    A raw difference added several times gives word salad; scaling to the
    layer's norm makes alpha mean "fractions of a typical state".
    """
    if not 1 <= layer < lm.n_layers:
        raise InputError(f"The steering layer must be from 1 to {lm.n_layers - 1}; got {layer!r}.")
    if not concept_a or not concept_a.strip():
        raise InputError("Concept A is empty.")
    # Both in the same neutral context, so the difference is about the concepts alone.
    a = capture(lm, CONCEPT_CONTEXT + concept_a.strip())
    b = capture(lm, CONCEPT_CONTEXT + concept_b.strip()) if concept_b and concept_b.strip() else None
    diff = a.hidden[layer, -1] - (b.hidden[layer, -1] if b is not None else 0)
    typical = a.hidden[layer, 1:].norm(dim=-1).mean()  # position 0 (the attention sink) left out
    return diff / diff.norm().clamp_min(1e-6) * typical


def steer(lm: LoadedModel, prompt: str, vector: torch.Tensor, layer: int, alpha: float, *,
          max_new_tokens: int = 24, chat: bool = True) -> dict:
    """Greedy output without and with ``alpha * vector`` added at the input of block ``layer``."""
    if not isinstance(alpha, (int, float)) or math.isnan(alpha) or abs(alpha) > 20:
        raise InputError("Alpha must be a number between -20 and 20.")
    before = greedy_text(lm, prompt, max_new_tokens=max_new_tokens, chat=chat)
    delta = (alpha * vector).to(lm.device, lm.dtype)
    tag = f"steer-L{layer}-{hashlib.sha1(delta.float().cpu().numpy().tobytes()).hexdigest()[:12]}"
    with edit_input(lm.arch.blocks[layer], lambda h: h + delta.to(h.device), variant=tag):
        after = greedy_text(lm, prompt, max_new_tokens=max_new_tokens, chat=chat)
    return {"prompt": prompt, "layer": layer, "alpha": alpha, "before": before, "after": after}
