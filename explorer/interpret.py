"""SelfIE: describe a hidden state in words by patching it into an interpretation prompt.

How a batch of B cells is read (METHOD.md section 1):

1. Every row shares the interpretation prompt, so no padding is needed. The prefix before the
   first placeholder is identical in every row: its KV cache is computed once per template and
   reused (copied and repeated B times).
2. The rest of the prompt is prefilled with the B states written over the placeholders at the
   input of block k (prefill only: decode steps see the states through the KV cache).
3. A short greedy loop over the model's own forward and cache decodes; rows that reach EOS leave
   the batch, and the loop ends when every row has ended. p(y_j | with state) is read from this
   loop's own logits.
4. Relevancy needs p(y_j | without state): the distinct generated sequences are teacher-forced
   after the unpatched prompt's cache (computed once per template), as one prefix tree in one
   pass, so shared first tokens are computed once and nothing is padded. This runs after the
   text is out, so text streams first.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.cache import ByteLRU
from explorer.errors import InputError
from explorer.grid import Grid
from explorer.hooks import MODEL_VARIANT, inject
from explorer.models import LoadedModel
from explorer.prefix_tree import PrefixTree, pack
from explorer.prompts import InterpretationPrompt, Template, build_interpretation_prompt, get_template
from explorer.results import CellInterpretation
from explorer.scheduler import BatchScheduler

MAX_NEW_TOKENS_LIMIT = 256
MAX_BATCH_SIZE = 256


@dataclass(frozen=True)
class InterpretSettings:
    """Everything that determines an interpretation besides the state itself.

    ``k``: the block whose input receives the state (0 = the embedding output). ``strength`` s
    writes ``s*h + (1-s)*old`` (1 = full replacement, the paper's setting).
    """

    template: Template
    n_placeholders: int = 5
    k: int = 1
    max_new_tokens: int = 20
    strength: float = 1.0
    # A ready-made target prompt (Patchscopes: any prompt and positions); overrides the template's.
    prompt: InterpretationPrompt | None = None

    def validate(self, n_layers: int) -> InterpretSettings:
        self.template.validate()
        _check_int("number of placeholders", self.n_placeholders, 1, 64)
        _check_int("injection layer k", self.k, 0, n_layers - 1)
        _check_int("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        if not isinstance(self.strength, (int, float)) or not 0.0 < float(self.strength) <= 4.0:
            raise InputError("The injection strength must be a number above 0 and at most 4.")
        return self

    def key(self) -> tuple:
        t = self.template
        custom = (self.prompt.ids, self.prompt.placeholder_positions) if self.prompt is not None else None
        return (t.user, t.lead_in, t.system, t.chat, self.n_placeholders, self.k, self.max_new_tokens,
                float(self.strength), custom)

    def to_dict(self) -> dict:
        return {"template": self.template.name, "template_user": self.template.user,
                "template_lead_in": self.template.lead_in, "n_placeholders": self.n_placeholders,
                "k": self.k, "max_new_tokens": self.max_new_tokens, "strength": self.strength}


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"The {name} must be a whole number from {lo} to {hi}; got {value!r}.")
    if not lo <= int(value) <= hi:
        raise InputError(f"The {name} must be from {lo} to {hi}; got {value}.")


def make_settings(lm: LoadedModel, template: str | Template | None = None, *, n_placeholders: int = 5,
                  k: int = 1, max_new_tokens: int = 20, strength: float = 1.0) -> InterpretSettings:
    """Settings with the template resolved for this model (chat or plain text) and validated."""
    tpl = get_template(template, has_chat_template=lm.has_chat_template)
    return InterpretSettings(tpl, n_placeholders, k, max_new_tokens, strength).validate(lm.n_layers)


@dataclass
class _PromptState:
    """Per (template, K, weights) precomputation shared by every batch."""

    prompt: InterpretationPrompt
    prefix_cache: object | None  # KV of ids[:first placeholder], batch 1
    unpatched_cache: object  # KV of the whole prompt with placeholders left as they are, batch 1
    unpatched_last_logprobs: torch.Tensor  # (V,) next-token log-probs after the unpatched prompt


@dataclass
class GeneratedBatch:
    """Greedy generations for B states: ``ids[b]`` and ``p_with[b]`` stop before EOS."""

    ids: list[list[int]]
    p_with: list[list[float]]
    steps: int = 0
    prompt_len: int = 0


@dataclass
class Interpreter:
    """Batched SelfIE over one loaded model; thread-safe, with a byte-bounded result cache."""

    lm: LoadedModel
    cache_bytes: int = 64 * 2**20
    cache_bytes_per_owner: int | None = None  # per-session quota inside the shared cache (the app sets it)
    batching: bool = False  # route generations through one shared BatchScheduler (the app does)
    max_batch: int = 16
    _states: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    results: ByteLRU = field(init=False, repr=False)
    scheduler: BatchScheduler | None = field(init=False, repr=False, default=None)
    _tree_ok: bool | None = field(default=None, repr=False)  # prefix-tree relevancy pass checked on this model

    def __post_init__(self) -> None:
        self.results = ByteLRU(self.cache_bytes, lambda c: c.nbytes(), self.cache_bytes_per_owner)
        if self.batching:
            self.enable_batching()

    def enable_batching(self) -> None:
        """Route every generation through one shared scheduler (concurrent clicks share batches)."""
        if self.scheduler is None:
            self.scheduler = BatchScheduler(self, max_batch=self.max_batch)
        self.batching = True

    # ------------------------------------------------------------------ shared prompt state
    def prompt_state(self, settings: InterpretSettings) -> _PromptState:
        if settings.prompt is not None:
            key: tuple = ("ids", settings.prompt.ids, settings.prompt.placeholder_positions, MODEL_VARIANT.get())
        else:
            key = (settings.template.user, settings.template.lead_in, settings.template.system,
                   settings.template.chat, settings.n_placeholders, MODEL_VARIANT.get())
        with self._lock:
            state = self._states.get(key)
        if state is not None:
            return state
        prompt = settings.prompt or build_interpretation_prompt(self.lm.tokenizer, settings.template,
                                                                settings.n_placeholders)
        ids = torch.tensor([prompt.ids], device=self.lm.device)
        p0 = prompt.first_placeholder
        with torch.inference_mode():
            prefix_cache = None
            if p0 > 0:
                prefix_cache = self.lm.model(input_ids=ids[:, :p0], use_cache=True, logits_to_keep=1).past_key_values
            cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
            out = self.lm.model(input_ids=ids[:, p0:], past_key_values=cache, use_cache=True, logits_to_keep=1)
            last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        state = _PromptState(prompt, prefix_cache, out.past_key_values, last)
        with self._lock:
            if len(self._states) > 32:
                self._states.pop(next(iter(self._states)))
            self._states[key] = state
        return state

    # ------------------------------------------------------------------ generation
    def generate(self, vectors: torch.Tensor, settings: InterpretSettings,
                 on_step: Callable[[int, list[list[int]]], None] | None = None) -> GeneratedBatch:
        """Greedy SelfIE generations for ``vectors`` (B, d), through the shared batcher when enabled."""
        if self.scheduler is not None:
            return self.scheduler.generate(vectors, settings, on_step)
        return self.generate_now(vectors, settings, on_step)

    def generate_now(self, vectors: torch.Tensor, settings: InterpretSettings,
                     on_step: Callable[[int, list[list[int]]], None] | None = None) -> GeneratedBatch:
        """Greedy SelfIE generations for ``vectors`` (B, d); always greedy, whatever generation_config says."""
        lm = self.lm
        state = self.prompt_state(settings)
        prompt = state.prompt
        p0 = prompt.first_placeholder
        B = int(vectors.shape[0])
        eos = torch.tensor(sorted(lm.eos_token_ids) or [-1], device=lm.device)
        rel_positions = [p - p0 for p in prompt.placeholder_positions]
        suffix = torch.tensor([prompt.ids[p0:]], device=lm.device).expand(B, -1)
        vecs = vectors.to(lm.device, lm.dtype)
        ids: list[list[int]] = [[] for _ in range(B)]
        p_with: list[list[float]] = [[] for _ in range(B)]
        with torch.inference_mode():
            cache = _repeat_cache(state.prefix_cache, B)
            with inject(lm.arch.blocks[settings.k], rel_positions, vecs, settings.strength):
                out = lm.model(input_ids=suffix, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1]
            active = torch.arange(B, device=lm.device)  # original row of each batch row
            steps = 0
            for step in range(settings.max_new_tokens):
                logp = torch.log_softmax(logits.float(), dim=-1)
                tok = logp.argmax(-1)
                p = logp.gather(1, tok[:, None])[:, 0].exp()
                ended = torch.isin(tok, eos)
                tok_l, p_l, ended_l, rows = tok.tolist(), p.tolist(), ended.tolist(), active.tolist()
                for j, row in enumerate(rows):
                    if not ended_l[j]:
                        ids[row].append(tok_l[j])
                        p_with[row].append(p_l[j])
                steps = step + 1
                if on_step is not None:
                    on_step(steps, ids)
                if step == settings.max_new_tokens - 1:
                    break
                keep = ~ended
                if not bool(keep.any()):
                    break
                if not bool(keep.all()):
                    keep_idx = keep.nonzero()[:, 0]
                    cache.batch_select_indices(keep_idx)
                    active, tok = active[keep_idx], tok[keep_idx]
                out = lm.model(input_ids=tok[:, None], past_key_values=cache, use_cache=True)
                cache, logits = out.past_key_values, out.logits[:, -1]
        return GeneratedBatch(ids=ids, p_with=p_with, steps=steps, prompt_len=len(prompt.ids))

    # ------------------------------------------------------------------ relevancy
    def p_without(self, generated: Sequence[Sequence[int]], settings: InterpretSettings,
                  max_nodes: int = 512) -> list[list[float]]:
        """p(y_j | prefix, placeholders unpatched) for each generated sequence, teacher-forced.

        Identical sequences and shared prefixes are computed once (a prefix tree in one pass per
        ``max_nodes`` nodes, see ``explorer.prefix_tree``); the unpatched prompt's cache is shared.
        The first time, the tree pass is checked against a plain padded batch on three short
        sequences: a model whose attention ignores custom masks keeps the padded batch.
        """
        state = self.prompt_state(settings)
        first = state.unpatched_last_logprobs
        unique: dict[tuple[int, ...], int] = {}
        for seq in generated:
            unique.setdefault(tuple(int(t) for t in seq), len(unique))
        seqs = list(unique)
        values: list[list[float]] = [[float(first[s[0]].exp())] if s else [] for s in seqs]
        long_rows = [i for i, s in enumerate(seqs) if len(s) > 1]
        with torch.inference_mode():
            for group in pack([seqs[i] for i in long_rows], max_nodes):
                rows = [long_rows[g] for g in group]
                group_seqs = [seqs[r] for r in rows]
                if self._tree_ok is None:
                    self._tree_ok = self._tree_agrees(state)
                got = self._p_tree(state, group_seqs) if self._tree_ok else self._p_padded(state, group_seqs)
                for r, probs in zip(rows, got):
                    values[r].extend(probs)
        return [values[unique[tuple(int(t) for t in seq)]] for seq in generated]

    def _tree_agrees(self, state: _PromptState) -> bool:
        """Once per model: do a few short branching sequences get the same numbers from the tree pass
        as from the padded batch? (A model whose attention ignores custom masks would not.)"""
        ids = ([int(t) for t in state.prompt.ids] * 6)[-6:]  # any tokens do; short prompts repeat
        seqs = [tuple(ids[:4]), (*ids[:2], ids[4], ids[5]), tuple(ids[3:6])]
        tree, padded = self._p_tree(state, seqs), self._p_padded(state, seqs)
        return all(len(a) == len(b) and all(abs(x - y) < 1e-3 for x, y in zip(a, b)) for a, b in zip(tree, padded))

    def _p_tree(self, state: _PromptState, seqs: list[tuple[int, ...]]) -> list[list[float]]:
        """p(seq[j+1] | seq[:j+1]) for j >= 0, all sequences as one prefix tree in one forward pass."""
        lm = self.lm
        tree = PrefixTree.build(seqs)
        prompt_len = len(state.prompt.ids)
        out = lm.model(input_ids=torch.tensor([tree.tokens], device=lm.device),
                       attention_mask=tree.attention_mask(prompt_len, lm.dtype, lm.device),
                       position_ids=tree.position_ids(prompt_len, lm.device),
                       past_key_values=_repeat_cache(state.unpatched_cache, 1), use_cache=True)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        result = []
        for seq, path in zip(seqs, tree.paths):
            targets = torch.tensor(seq[1:], device=lm.device)
            result.append(logp[torch.tensor(path, device=lm.device), targets].exp().cpu().tolist())
        return result

    def _p_padded(self, state: _PromptState, seqs: list[tuple[int, ...]]) -> list[list[float]]:
        """The same as :meth:`_p_tree` as a right-padded batch (one row per sequence)."""
        lm = self.lm
        pad = next(iter(sorted(lm.eos_token_ids)), 0)
        width = max(len(s) for s in seqs)
        inp = torch.full((len(seqs), width - 1), pad, dtype=torch.long)
        tgt = torch.full((len(seqs), width - 1), pad, dtype=torch.long)
        for j, seq in enumerate(seqs):
            t = torch.tensor(seq)
            inp[j, : len(t) - 1] = t[:-1]
            tgt[j, : len(t) - 1] = t[1:]
        out = lm.model(input_ids=inp.to(lm.device), past_key_values=_repeat_cache(state.unpatched_cache, len(seqs)),
                       use_cache=True)
        p = torch.log_softmax(out.logits.float(), dim=-1).gather(2, tgt.to(lm.device)[..., None])[..., 0].exp().cpu()
        return [p[j, : len(seq) - 1].tolist() for j, seq in enumerate(seqs)]

    # ------------------------------------------------------------------ cells
    def _cell_key(self, grid: Grid, layer: int, token: int, settings: InterpretSettings) -> tuple:
        return (grid.fingerprint(), layer, token, settings.key(), MODEL_VARIANT.get())

    def iter_cells(
        self,
        grid: Grid,
        cells: Iterable[tuple[int, int]],
        settings: InterpretSettings,
        *,
        batch_size: int = 16,
        relevancy: bool = True,
        stream_tokens: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[CellInterpretation]:
        """Interpret cells in batches, yielding each cell's text as soon as its batch has decoded
        and again (complete) once its relevancy is known. Cached cells are yielded first.

        With ``stream_tokens`` the partial text of a batch is also yielded after every step.
        ``should_stop`` is polled between batches (a Stop button).
        """
        _check_int("batch size", batch_size, 1, MAX_BATCH_SIZE)
        settings.validate(self.lm.n_layers)
        todo: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for cell in cells:
            layer, token = int(cell[0]), int(cell[1])
            grid.check_cell(layer, token)
            if (layer, token) in seen:
                continue
            seen.add((layer, token))
            hit = self.results.get(self._cell_key(grid, layer, token, settings))
            if hit is not None and (hit.complete or not relevancy):
                yield dataclasses.replace(hit, cached=True)
            else:
                todo.append((layer, token))
        for start in range(0, len(todo), batch_size):
            if should_stop is not None and should_stop():
                return
            batch = todo[start:start + batch_size]
            yield from self._interpret_batch(grid, batch, settings, relevancy, stream_tokens)

    def _interpret_batch(self, grid: Grid, batch: list[tuple[int, int]], settings: InterpretSettings,
                         relevancy: bool, stream_tokens: bool) -> Iterator[CellInterpretation]:
        vectors = torch.stack([grid.hidden[layer, token] for layer, token in batch])
        if stream_tokens:
            gen = yield from self._generate_streaming(grid, batch, vectors, settings)
        else:
            gen = self.generate(vectors, settings)
        cells = [self._make_cell(grid, layer, token, gen.ids[i], gen.p_with[i])
                 for i, (layer, token) in enumerate(batch)]
        for cell in cells:
            if not relevancy:
                self.results.put(self._cell_key(grid, cell.layer, cell.token, settings), cell)
            yield cell
        if relevancy:
            p_wo = self.p_without(gen.ids, settings)
            for cell, pw in zip(cells, p_wo):
                done = self._with_relevancy(cell, pw)
                self.results.put(self._cell_key(grid, cell.layer, cell.token, settings), done)
                yield done

    def _generate_streaming(self, grid: Grid, batch: list[tuple[int, int]], vectors: torch.Tensor,
                            settings: InterpretSettings):
        """Run ``generate`` in a worker (same context: same edit) and yield partial cells per step."""
        events: queue.Queue = queue.Queue()
        ctx = contextvars.copy_context()

        def work() -> None:
            try:
                result = ctx.run(self.generate, vectors, settings,
                                 lambda _s, ids: events.put(("step", [list(x) for x in ids])))
                events.put(("done", result))
            except BaseException as e:
                events.put(("error", e))

        threading.Thread(target=work, daemon=True).start()
        while True:
            kind, payload = events.get()
            if kind == "error":
                raise payload
            if kind == "done":
                return payload
            # Only the newest snapshot matters when the consumer is slower than decoding.
            while not events.empty():
                nxt = events.queue[0]
                if nxt[0] != "step":
                    break
                kind, payload = events.get()
            for i, (layer, token) in enumerate(batch):
                yield dataclasses.replace(self._make_cell(grid, layer, token, payload[i], []), partial=True)

    def _make_cell(self, grid: Grid, layer: int, token: int, ids: list[int], p_with: list[float]) -> CellInterpretation:
        tok = self.lm.tokenizer
        texts = [tok.decode([i], skip_special_tokens=False) for i in ids]
        text = tok.decode(ids, skip_special_tokens=True).strip()
        return CellInterpretation(layer=layer, token=token, token_decoded=grid.tokens[token], interpretation=text,
                                  generated_ids=list(ids), token_texts=texts, p_with=list(p_with))

    @staticmethod
    def _with_relevancy(cell: CellInterpretation, p_without: list[float]) -> CellInterpretation:
        rel = [abs(a - b) for a, b in zip(cell.p_with, p_without)]
        return CellInterpretation(layer=cell.layer, token=cell.token, token_decoded=cell.token_decoded,
                                  interpretation=cell.interpretation, generated_ids=cell.generated_ids,
                                  token_texts=cell.token_texts, p_with=cell.p_with, p_without=list(p_without),
                                  relevancy_score=rel)

    def interpret_text_without_state(self, settings: InterpretSettings) -> str:
        """What the template alone produces (placeholders left as they are): the baseline reading."""
        state = self.prompt_state(settings)
        with torch.inference_mode():
            ids = torch.tensor([state.prompt.ids], device=self.lm.device)
            out = self.lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=settings.max_new_tokens, num_beams=1,
                                         temperature=None, top_p=None, top_k=None)
        return self.lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _repeat_cache(cache, n: int):
    """A private copy of a batch-1 cache repeated ``n`` times (the original is never mutated)."""
    if cache is None:
        return None
    out = copy.deepcopy(cache)
    if n != 1:
        out.batch_repeat_interleave(n)
    return out


def collect(iterator: Iterator[CellInterpretation]) -> dict[tuple[int, int], CellInterpretation]:
    """The last (most complete) result per cell of an ``iter_cells`` stream."""
    out: dict[tuple[int, int], CellInterpretation] = {}
    for cell in iterator:
        out[(cell.layer, cell.token)] = cell
    return out


def auto_batch_size(lm: LoadedModel, settings: InterpretSettings, prompt_len: int = 64, cap: int = 128) -> int:
    """The largest batch that fits in free GPU memory (half of it, to leave room); 16 on a CPU,
    where larger batches gain little on two cores and delay the first results."""
    if lm.device.type != "cuda":
        return 16
    free, _total = torch.cuda.mem_get_info(lm.device)
    cfg = lm.model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = torch.finfo(lm.dtype).bits // 8
    tokens = prompt_len + settings.max_new_tokens
    kv = 2 * lm.n_layers * heads * head_dim * tokens * itemsize
    logits = cfg.vocab_size * 4 * 3  # fp32 logits, log-softmax and a copy
    acts = 8 * cfg.hidden_size * tokens * itemsize + 4 * getattr(cfg, "intermediate_size", 4 * cfg.hidden_size) * tokens
    per_row = kv + logits + acts
    return int(max(1, min(cap, (free // 2) // per_row)))
