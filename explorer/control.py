"""Supervised and Reinforcement Control (METHOD.md sections 3-4), and steering vectors.

An edit changes the weights of one block's MLP, but never in place: the edited parameters live in
an :class:`Edit`, and ``with applied(lm, edit):`` recomputes that MLP's output with them for the
calling context's forward passes only (a context-gated hook on the stock module). Other users and
threads keep seeing the stock model bit for bit, memory per edit is one MLP's parameters, and
reverting is simply not applying it.

Row L of the grid is the output of block L-1, so an edit "at layer L" trains block L-1's MLP.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explorer import __version__
from explorer.errors import EditError, InputError
from explorer.grid import capture
from explorer.hooks import MODEL_VARIANT, edit_input, edit_output, record
from explorer.models import LoadedModel

REFERENCE_TEXT = [
    "The weather today is mild, with a light breeze in the afternoon.",
    "She opened the book and began to read the first chapter slowly.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The train leaves the station every morning at seven o'clock.",
    "He planted tomatoes and beans in the small garden behind the house.",
]
DEFAULT_TEST_PROMPTS = [
    "What is the Eiffel Tower?",
    "Describe a cat in one sentence.",
    "What is the capital of France?",
]
RETENTION_FACTS = [
    ("The capital of France is", "Paris"),
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The largest planet in our solar system is", "Jupiter"),
    ("The opposite of hot is", "cold"),
    ("One, two, three, four,", "five"),
]
MAX_STEPS = 500


# ------------------------------------------------------------------------------------------------
# Edits
# ------------------------------------------------------------------------------------------------


@dataclass
class Edit:
    """Edited parameters of block ``layer - 1``'s MLP, with provenance and a content hash."""

    layer: int
    params: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def edit_id(self) -> str:
        h = hashlib.sha1()
        h.update(str(self.layer).encode())
        for name in sorted(self.params):
            t = self.params[name].detach().to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(t.numpy().tobytes())
        return "edit-" + h.hexdigest()[:16]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.params.values())

    def module(self, lm: LoadedModel) -> torch.nn.Module:
        """The edited MLP as a private module (built once per edit and model)."""
        cached = self.__dict__.get("_module")
        if cached is None or cached[0] is not lm:
            check_edit(lm, self)
            cached = (lm, private_mlp(lm, self.layer, self.params))
            self.__dict__["_module"] = cached
        return cached[1]

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file: the MLP's tensors plus JSON provenance (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"explorer_edit": json.dumps({**self.meta, "layer": self.layer, "edit_id": self.edit_id},
                                            default=str)}
        save_file({k: v.detach().to("cpu").contiguous() for k, v in self.params.items()}, str(path), metadata=meta)
        return path

    def to_base64(self) -> str:
        """The same bytes as :meth:`save`, as text (so a shared session's JSON can carry the edit)."""
        import base64
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            return base64.b64encode(self.save(Path(d) / "edit.safetensors").read_bytes()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, lm: LoadedModel | None = None) -> Edit:
        """Inverse of :meth:`to_base64`, with the same checks as :meth:`load`."""
        import base64
        import binascii
        import tempfile

        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError) as e:
            raise EditError("The embedded edit is not valid base64.") from e
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "edit.safetensors"
            path.write_bytes(raw)
            return cls.load(path, lm)

    @classmethod
    def load(cls, path: str | Path, lm: LoadedModel | None = None) -> Edit:
        """Load and (given ``lm``) check model, layer and shapes; EditError says what is wrong."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise EditError(f"The edit file '{path}' does not exist.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = (f.metadata() or {}).get("explorer_edit")
                params = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        except Exception as e:
            raise EditError(f"'{path.name}' is not a readable edit file (safetensors): {type(e).__name__}.") from e
        if not meta_raw:
            raise EditError(f"'{path.name}' has no SelfIE Explorer edit metadata.")
        try:
            meta = json.loads(meta_raw)
            layer = int(meta.pop("layer"))
        except (ValueError, KeyError, TypeError) as e:
            raise EditError(f"'{path.name}' has corrupt edit metadata.") from e
        meta.pop("edit_id", None)
        edit = cls(layer=layer, params=params, meta=meta)
        if lm is not None:
            check_edit(lm, edit)
        return edit


def check_edit(lm: LoadedModel, edit: Edit) -> None:
    model_id = edit.meta.get("model_id")
    if model_id and model_id != lm.model_id:
        raise EditError(f"This edit was made for '{model_id}', not '{lm.model_id}'.")
    check_layer(lm, edit.layer)
    expected = dict(lm.arch.mlps[edit.layer - 1].named_parameters())
    if set(expected) != set(edit.params):
        raise EditError("The edit's tensors do not match this model's MLP.")
    for name, t in edit.params.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise EditError(f"The edit's '{name}' has shape {tuple(t.shape)}, the model's {tuple(expected[name].shape)}.")


def check_layer(lm: LoadedModel, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= lm.n_layers:
        raise InputError(f"The layer must be a whole number from 1 to {lm.n_layers} (row L edits block L-1's MLP); "
                         f"got {layer!r}.")
    return layer


def private_mlp(lm: LoadedModel, layer: int, params: dict[str, torch.Tensor] | None = None,
                dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A private copy of block ``layer-1``'s MLP (optionally with ``params``).

    Never swap parameters on the shared module (``functional_call`` does, briefly): another
    thread's forward pass would see them. The copy carries no hooks.
    """
    mlp = copy.deepcopy(lm.arch.mlps[layer - 1])
    for m in mlp.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    if params is not None:
        mlp.load_state_dict({k: v.to(lm.device) for k, v in params.items()})
    return mlp.to(dtype or lm.dtype)


def _contribution(lm: LoadedModel, layer: int, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What block ``layer-1`` adds to the residual from its MLP input ``x`` (post-MLP norm included)."""
    out = mlp(x)
    post = lm.arch.mlp_out_norms[layer - 1] if lm.arch.mlp_out_norms else None
    return post(out.to(lm.dtype)).to(out.dtype) if post is not None else out


@contextlib.contextmanager
def applied(lm: LoadedModel, edit: Edit | None) -> Iterator[None]:
    """Run the model with ``edit`` for this context's forward passes only (None: the stock model)."""
    if edit is None:
        yield
        return
    mlp = lm.arch.mlps[edit.layer - 1]
    private = edit.module(lm)

    def recompute(_out: torch.Tensor, args: tuple) -> torch.Tensor:
        return private(*args)

    token = MODEL_VARIANT.set(edit.edit_id)
    try:
        with edit_output(mlp, recompute):
            yield
    finally:
        MODEL_VARIANT.reset(token)


# ------------------------------------------------------------------------------------------------
# Settings and validation
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings; ``beta`` weighs the locality term (keep the MLP's other outputs)."""

    steps: int = 20
    lr: float = 2e-3  # METHOD.md suggests 3e-4; on the embedded model that closes only ~half the gap in 20 steps
    beta: float = 10.0

    def validate(self) -> TrainSettings:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"Steps must be a whole number from 1 to {MAX_STEPS}; got {self.steps!r}.")
        lr = self.lr
        if not isinstance(lr, (int, float)) or math.isnan(lr) or not 1e-7 <= lr <= 0.1:
            raise InputError(f"The learning rate must be between 1e-7 and 0.1; got {lr!r}.")
        if not isinstance(self.beta, (int, float)) or math.isnan(self.beta) or not 0 <= self.beta <= 1e4:
            raise InputError(f"The locality weight must be between 0 and 10000; got {self.beta!r}.")
        return self


def _ids(lm: LoadedModel, text: str, chat: bool = False) -> list[int]:
    from explorer.grid import tokenize_prompt

    return tokenize_prompt(lm, text, chat=chat, max_tokens=512)


def mlp_io(lm: LoadedModel, ids: Sequence[int], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``layer-1``'s MLP input and the residual its contribution is added to, at every position.

    ``contribution(input) + residual`` reproduces row ``layer`` of the grid.
    """
    block, mlp = lm.arch.blocks[layer - 1], lm.arch.mlps[layer - 1]
    with torch.no_grad(), record([mlp], inputs=True) as ins, record([block]) as outs:
        lm.model(input_ids=torch.tensor([list(ids)], device=lm.device), use_cache=False, logits_to_keep=1)
        x = ins[0][-1][0].detach().clone()
        residual = outs[0][-1][0].detach() - _contribution(lm, layer, mlp, x)
    return x, residual.clone()


CONCEPT_CONTEXT = "I am thinking about "


def concept_grid(lm: LoadedModel, phrase: str):
    """The grid of a concept phrase. A one-token phrase would sit at position 0, which most models use
    as an attention sink with an outsized, meaning-poor state, so it gets a short neutral lead-in."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("The concept is empty: type a word or phrase.")
    grid = capture(lm, phrase)
    if grid.n_tokens < 2:
        grid = capture(lm, CONCEPT_CONTEXT + phrase.strip())
    return grid


def concept_state(lm: LoadedModel, phrase: str, layer: int) -> torch.Tensor:
    """The last-token state of a concept phrase at ``layer``: a target whose meaning the user can check."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("The concept is empty: type a word or phrase.")
    check_layer(lm, layer)
    return concept_grid(lm, phrase).hidden[layer, -1].clone()


def _reference_inputs(lm: LoadedModel, layer: int) -> torch.Tensor:
    return torch.cat([mlp_io(lm, _ids(lm, t), layer)[0] for t in REFERENCE_TEXT])


def _trainable(lm: LoadedModel, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(frozen original, trainable copy) of block ``layer-1``'s MLP, both private and fp32."""
    original = private_mlp(lm, layer, dtype=torch.float32).requires_grad_(False)
    trained = private_mlp(lm, layer, dtype=torch.float32).requires_grad_(True)
    return original, trained


def _edited_params(lm: LoadedModel, trained: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(lm.dtype).clone() for k, v in trained.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# Supervised Control
# ------------------------------------------------------------------------------------------------


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
    The target text never enters the loss; it only picked ``target``.
    """
    settings.validate()
    check_layer(lm, layer)
    ids = _ids(lm, prompt, chat)
    tokens = list(tokens)
    if not tokens or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(ids) for t in tokens):
        raise InputError(f"Source tokens must be positions from 0 to {len(ids) - 1}; got {tokens!r}.")
    if not isinstance(target, torch.Tensor) or target.shape != (lm.hidden_size,) or not torch.isfinite(target).all():
        raise InputError(f"The target must be a finite vector of size {lm.hidden_size}.")
    t0 = time.perf_counter()
    x_all, res_all = mlp_io(lm, ids, layer)
    x, res = x_all[tokens].float(), res_all[tokens].float()
    tgt = target.to(lm.device, torch.float32).expand_as(res)
    ref = _reference_inputs(lm, layer).float()
    original, trained = _trainable(lm, layer)
    with torch.no_grad():
        ref_out = _contribution(lm, layer, original, ref)
    opt = torch.optim.Adam(trained.parameters(), lr=settings.lr)
    losses: list[float] = []

    def distance() -> float:
        with torch.no_grad():
            return float((_contribution(lm, layer, trained, x) + res - tgt).norm(dim=-1).mean())

    distances = [distance()]
    with torch.enable_grad():
        for step in range(settings.steps):
            opt.zero_grad()
            h = _contribution(lm, layer, trained, x) + res
            loss = torch.nn.functional.mse_loss(h, tgt)
            if settings.beta:
                loss = loss + settings.beta * torch.nn.functional.mse_loss(_contribution(lm, layer, trained, ref), ref_out)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            distances.append(distance())
            if on_step is not None:
                on_step(step + 1, losses[-1], distances[-1])
    edit = Edit(layer=layer, params=_edited_params(lm, trained), meta={
        "kind": "supervised", "model_id": lm.model_id, "source_prompt": prompt, "source_tokens": tokens,
        "chat": chat, "target": target_desc, "steps": settings.steps, "lr": settings.lr, "beta": settings.beta,
        "losses": losses, "explorer_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return SupervisedResult(edit, losses, distances, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------
# Reinforcement Control
# ------------------------------------------------------------------------------------------------


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
    """
    from explorer.interpret import Interpreter, make_settings

    settings.validate()
    check_layer(lm, layer)
    interpreter = interpreter or Interpreter(lm)
    isettings = make_settings(lm, template, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    ids = _ids(lm, prompt, chat)
    x, res = mlp_io(lm, ids, layer)
    x, res = x.float(), res.float()
    ref = _reference_inputs(lm, layer).float() if settings.beta else None
    original, trained = _trainable(lm, layer)
    ref_out = None
    if ref is not None:
        with torch.no_grad():
            ref_out = _contribution(lm, layer, original, ref)
    opt = torch.optim.Adam(trained.parameters(), lr=settings.lr)

    def read(mlp: torch.nn.Module) -> list[str]:
        with torch.no_grad():
            states = (_contribution(lm, layer, mlp, x) + res).to(lm.dtype)
        gen = interpreter.generate_now(states, isettings)
        return [lm.tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen.ids]

    before = read(original)
    rewards_hist: list[float] = []
    texts = before
    for step in range(settings.steps):
        r = torch.tensor(judge.rewards(lm, texts), dtype=torch.float32, device=lm.device)
        rewards_hist.append(float(r.mean()))
        if on_step is not None:
            on_step(step, rewards_hist[-1], texts)
        with torch.enable_grad():
            opt.zero_grad()
            o = _contribution(lm, layer, trained, x) + res
            sg = o.detach()
            loss = (-r * (o * sg).sum(-1) / sg.pow(2).sum(-1).clamp_min(1e-6)).mean()
            if ref is not None:
                loss = loss + settings.beta * torch.nn.functional.mse_loss(_contribution(lm, layer, trained, ref),
                                                                           ref_out)
            loss.backward()
            opt.step()
        texts = read(trained)
    after = texts
    rewards_hist.append(float(torch.tensor(judge.rewards(lm, after), dtype=torch.float32).mean()))
    if on_step is not None:
        on_step(settings.steps, rewards_hist[-1], after)
    edit = Edit(layer=layer, params=_edited_params(lm, trained), meta={
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


# ------------------------------------------------------------------------------------------------
# Checking an edit's effect
# ------------------------------------------------------------------------------------------------


def generate_text(lm: LoadedModel, prompt: str, *, max_new_tokens: int = 24, chat: bool = True) -> str:
    """The model's greedy answer (for before/after comparisons)."""
    ids = _ids(lm, prompt, chat)
    t = torch.tensor([ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(input_ids=t, attention_mask=torch.ones_like(t), do_sample=False, num_beams=1,
                                max_new_tokens=max_new_tokens, temperature=None, top_p=None, top_k=None,
                                pad_token_id=lm.tokenizer.pad_token_id)
    return lm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def compare_answers(lm: LoadedModel, edit: Edit | None, prompts: Sequence[str] = DEFAULT_TEST_PROMPTS, *,
                    max_new_tokens: int = 24) -> list[dict]:
    """Greedy answers to test prompts without and with the edit, side by side."""
    rows = []
    for p in prompts:
        if not p or not p.strip():
            continue
        before = generate_text(lm, p, max_new_tokens=max_new_tokens)
        with applied(lm, edit):
            after = generate_text(lm, p, max_new_tokens=max_new_tokens)
        rows.append({"prompt": p, "before": before, "after": after, "changed": before != after})
    return rows


def retention(lm: LoadedModel, edit: Edit | None, facts=RETENTION_FACTS, max_new_tokens: int = 6) -> float:
    """Share of simple facts answered correctly (plain-text completion), with ``edit`` applied."""
    hits = 0
    with applied(lm, edit):
        for prompt, answer in facts:
            hits += answer.lower() in generate_text(lm, prompt, max_new_tokens=max_new_tokens, chat=False).lower()
    return hits / len(facts)


# ------------------------------------------------------------------------------------------------
# Steering vectors (beyond the paper)
# ------------------------------------------------------------------------------------------------


def steering_vector(lm: LoadedModel, concept_a: str, concept_b: str, layer: int) -> torch.Tensor:
    """unit(state(A) - state(B)) scaled to the typical norm of states at ``layer``.

    A raw difference added several times gives word salad (PLATFORM_NOTES); scaling to the
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
    before = generate_text(lm, prompt, max_new_tokens=max_new_tokens, chat=chat)
    delta = (alpha * vector).to(lm.device, lm.dtype)
    with edit_input(lm.arch.blocks[layer], lambda h: h + delta):
        after = generate_text(lm, prompt, max_new_tokens=max_new_tokens, chat=chat)
    return {"prompt": prompt, "layer": layer, "alpha": alpha, "before": before, "after": after}
