"""Supervised Control: train one MLP so that a source state becomes a chosen target state."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from explorer.core.errors import InputError
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.core.version import __version__
from explorer.methods.control.edit import (
    Edit,
    TrainSettings,
    check_layer,
    contribution,
    edited_params,
    mlp_io,
    prompt_ids,
    reference_inputs,
    trainable,
)


@dataclass
class SupervisedResult:
    """The edit, its loss curve, and the distance of the source state(s) to the target before/after."""

    edit: Edit
    losses: list[float]
    distances: list[float]  # mean L2 distance to the target after each step (index 0 = before)
    seconds: float

    @property
    def reduction(self) -> float:
        return 1.0 - self.distances[-1] / self.distances[0] if self.distances[0] > 0 else 0.0


def supervised_control(
    lm: LoadedModel,
    prompt: str,
    layer: int,
    tokens: Sequence[int],
    target: torch.Tensor,
    settings: TrainSettings = TrainSettings(),
    *,
    chat: bool = False,
    target_desc: str = "",
    on_step: Callable[[int, float, float], None] | None = None,
) -> SupervisedResult:
    """Train block ``layer-1``'s MLP so that row ``layer`` at ``tokens`` becomes ``target``.

    Loss = MSE(mlp'(x) + residual, target) + beta * MSE(mlp'(ref), mlp(ref)) over reference text.
    The target text never enters the loss; it only picked ``target``. Long because the training loop
    reads as the method itself (frozen inputs, loss, steps, edit with provenance) in one place.
    """
    settings.validate()
    check_layer(lm, layer)
    ids = prompt_ids(lm, prompt, chat)
    tokens = list(tokens)
    if not tokens or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(ids) for t in tokens):
        raise InputError(f"Source tokens must be positions from 0 to {len(ids) - 1}; got {tokens!r}.")
    if not isinstance(target, torch.Tensor) or target.shape != (lm.hidden_size,) or not torch.isfinite(target).all():
        raise InputError(f"The target must be a finite vector of size {lm.hidden_size}.")
    t0 = time.perf_counter()
    x_all, res_all = mlp_io(lm, ids, layer)
    x, res = x_all[tokens].float(), res_all[tokens].float()
    tgt = target.to(res.device, torch.float32).expand_as(res)
    ref = reference_inputs(lm, layer).float()
    original, trained = trainable(lm, layer)
    with torch.no_grad():
        ref_out = contribution(lm, layer, original, ref)
    opt = torch.optim.Adam(trained.parameters(), lr=settings.lr)
    losses: list[float] = []

    def distance() -> float:
        with torch.no_grad():
            return float((contribution(lm, layer, trained, x) + res - tgt).norm(dim=-1).mean())

    distances = [distance()]
    with torch.enable_grad():
        for step in range(settings.steps):
            checkpoint()
            opt.zero_grad()
            h = contribution(lm, layer, trained, x) + res
            loss = torch.nn.functional.mse_loss(h, tgt)
            if settings.beta:
                loss = loss + settings.beta * torch.nn.functional.mse_loss(contribution(lm, layer, trained, ref), ref_out)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            distances.append(distance())
            if on_step is not None:
                on_step(step + 1, losses[-1], distances[-1])
    edit = Edit(layer=layer, params=edited_params(lm, trained), meta={
        "kind": "supervised", "model_id": lm.model_id, "source_prompt": prompt, "source_tokens": tokens,
        "chat": chat, "target": target_desc, "steps": settings.steps, "lr": settings.lr, "beta": settings.beta,
        "losses": losses, "explorer_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return SupervisedResult(edit, losses, distances, time.perf_counter() - t0)
