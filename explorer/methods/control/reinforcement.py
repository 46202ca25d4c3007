"""Reinforcement Control: shrink the states whose readings mention a concept, judged per step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from explorer.core.errors import InputError
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.core.version import __version__
from explorer.interpret.engine import Interpreter
from explorer.interpret.settings import make_settings
from explorer.methods.control.checks import retention
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
class Judge:
    """Scores interpretations: +1 free of the concept, -1 has it, 0 undecided.

    ``mode="keywords"``: any keyword (case-insensitive) means -1, else +1. ``mode="model"``: the
    model itself answers "Does this text mention <concept>?" and the Yes/No logits decide (with a
    margin for 0); keywords, when given, still count as -1.
    """

    concept: str
    keywords: list[str] = field(default_factory=list)
    mode: str = "keywords"
    margin: float = 0.5

    def __post_init__(self) -> None:
        if not self.concept or not self.concept.strip():
            raise InputError("The concept is empty: name what should disappear.")
        if self.mode not in ("keywords", "model"):
            raise InputError("The judge is 'keywords' or 'model'.")
        self.keywords = [k.strip().lower() for k in self.keywords if k and k.strip()] or [self.concept.strip().lower()]

    def mentions(self, text: str) -> bool:
        low = text.lower()
        return any(k in low for k in self.keywords)

    def rewards(self, lm: LoadedModel, texts: list[str]) -> list[int]:
        kw = [-1 if self.mentions(t) else 1 for t in texts]
        if self.mode == "keywords":
            return kw
        scores = self._yes_minus_no(lm, texts)
        out = []
        for k, s in zip(kw, scores):
            if k == -1 or s > self.margin:
                out.append(-1)
            elif s < -self.margin:
                out.append(1)
            else:
                out.append(0)
        return out

    def _yes_minus_no(self, lm: LoadedModel, texts: list[str]) -> list[float]:
        tok = lm.tokenizer
        yes = tok.encode("Yes", add_special_tokens=False)[0]
        no = tok.encode("No", add_special_tokens=False)[0]
        out = []
        with torch.inference_mode():  # the judge is the stock model, whatever edit is being trained
            for t in texts:
                q = f'Does the following text mention {self.concept}? Answer Yes or No.\nText: "{t}"'
                ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False) if lm.has_chat_template else \
                    tok.encode(q + "\nAnswer:")
                if isinstance(ids, dict):
                    ids = ids["input_ids"]
                logits = lm.model(input_ids=torch.tensor([list(ids)], device=lm.device), logits_to_keep=1).logits[0, -1]
                out.append(float(logits[yes] - logits[no]))
        return out


@dataclass
class ReinforcementResult:
    edit: Edit
    rewards: list[float]  # mean reward per step (index 0 = before any update)
    before: list[str]
    after: list[str]
    share_before: float
    share_after: float
    retention_before: float
    retention_after: float
    seconds: float


def reinforcement_control(
    lm: LoadedModel,
    prompt: str,
    layer: int,
    judge: Judge,
    settings: TrainSettings = TrainSettings(steps=10, lr=2e-3, beta=0.0),
    *,
    interpreter=None,
    template: str = "mentions",
    max_new_tokens: int = 12,
    chat: bool = False,
    on_step: Callable[[int, float, list[str]], None] | None = None,
) -> ReinforcementResult:
    """Shrink the states of ``prompt`` at ``layer`` whose interpretation mentions the concept.

    Each step interprets every token's state (block ``layer-1``'s MLP edited so far), scores each
    reading with ``judge``, and takes an Adam step on mean(-r_i <o_i, sg(o_i)> / ||sg(o_i)||^2).
    Long because the loop reads as the method's own steps (read, judge, update) in one place.
    """
    settings.validate()
    check_layer(lm, layer)
    interpreter = interpreter or Interpreter(lm)
    isettings = make_settings(lm, template, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    ids = prompt_ids(lm, prompt, chat)
    x, res = mlp_io(lm, ids, layer)
    x, res = x.float(), res.float()
    ref = reference_inputs(lm, layer).float() if settings.beta else None
    original, trained = trainable(lm, layer)
    ref_out = None
    if ref is not None:
        with torch.no_grad():
            ref_out = contribution(lm, layer, original, ref)
    opt = torch.optim.Adam(trained.parameters(), lr=settings.lr)

    def read(mlp: torch.nn.Module) -> list[str]:
        with torch.no_grad():
            states = (contribution(lm, layer, mlp, x) + res).to(lm.dtype)
        gen = interpreter.generate_now(states, isettings)
        return [lm.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen.ids]

    before = read(original)
    rewards_hist: list[float] = []
    texts = before
    for step in range(settings.steps):
        checkpoint()
        r = torch.tensor(judge.rewards(lm, texts), dtype=torch.float32, device=lm.device)
        rewards_hist.append(float(r.mean()))
        if on_step is not None:
            on_step(step, rewards_hist[-1], texts)
        with torch.enable_grad():
            opt.zero_grad()
            o = contribution(lm, layer, trained, x) + res
            sg = o.detach()
            loss = (-r * (o * sg).sum(-1) / sg.pow(2).sum(-1).clamp_min(1e-6)).mean()
            if ref is not None:
                loss = loss + settings.beta * torch.nn.functional.mse_loss(contribution(lm, layer, trained, ref),
                                                                           ref_out)
            loss.backward()
            opt.step()
        texts = read(trained)
    after = texts
    rewards_hist.append(float(torch.tensor(judge.rewards(lm, after), dtype=torch.float32).mean()))
    if on_step is not None:
        on_step(settings.steps, rewards_hist[-1], after)
    edit = Edit(layer=layer, params=edited_params(lm, trained), meta={
        "kind": "reinforcement", "model_id": lm.model_id, "source_prompt": prompt, "concept": judge.concept,
        "keywords": judge.keywords, "judge": judge.mode, "steps": settings.steps, "lr": settings.lr,
        "beta": settings.beta, "rewards": rewards_hist, "explorer_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    share = lambda ts: sum(judge.mentions(t) for t in ts) / max(1, len(ts))  # noqa: E731
    ret_before = retention(lm, None)
    ret_after = retention(lm, edit)
    return ReinforcementResult(edit, rewards_hist, before, after, share(before), share(after), ret_before, ret_after,
                               time.perf_counter() - t0)
