"""SelfIE: describe a hidden state in words by patching it into an interpretation prompt.

How a batch of B cells is read (docs/methods.md):

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
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import torch

from explorer.core.generation import greedy_ids
from explorer.core.grid import Grid
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.core.results import CellInterpretation
from explorer.core.stop import JobStopped, current_test
from explorer.core.stop import install as install_stop
from explorer.core.stop import uninstall as uninstall_stop
from explorer.interpret.cache import ByteLRU
from explorer.interpret.decode import GeneratedBatch, decode_greedy
from explorer.interpret.prompt_state import PromptState, PromptStates
from explorer.interpret.relevancy import RelevancyScorer
from explorer.interpret.scheduler import POLL_S, BatchScheduler, EngineError
from explorer.interpret.settings import (
    MAX_BATCH_SIZE,
    MAX_NEW_TOKENS_LIMIT,
    InterpretSettings,
    check_int,
    make_settings,
)

__all__ = ["MAX_BATCH_SIZE", "MAX_NEW_TOKENS_LIMIT", "GeneratedBatch", "InterpretSettings", "Interpreter",
           "auto_batch_size", "collect", "make_settings"]


@dataclass
class Interpreter:
    """Batched SelfIE over one loaded model; thread-safe, with a byte-bounded result cache."""

    lm: LoadedModel
    cache_bytes: int = 64 * 2**20
    cache_bytes_per_owner: int | None = None  # per-session quota inside the shared cache (the app sets it)
    batching: bool = False  # route generations through one shared BatchScheduler (the app does)
    max_batch: int = 16
    results: ByteLRU = field(init=False, repr=False)
    scheduler: BatchScheduler | None = field(init=False, repr=False, default=None)
    prompt_states: PromptStates = field(init=False, repr=False)
    relevancy: RelevancyScorer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.prompt_states = PromptStates(self.lm)
        self.relevancy = RelevancyScorer(self.lm)
        self.results = ByteLRU(self.cache_bytes, lambda c: c.nbytes(), self.cache_bytes_per_owner)
        if self.batching:
            self.enable_batching()

    def enable_batching(self) -> None:
        """Route every generation through one shared scheduler (concurrent clicks share batches)."""
        if self.scheduler is None:
            self.scheduler = BatchScheduler(self, max_batch=self.max_batch)
        self.batching = True

    def prompt_state(self, settings: InterpretSettings) -> PromptState:
        return self.prompt_states.get(settings)

    # ------------------------------------------------------------------ generation
    def generate(self, vectors: torch.Tensor, settings: InterpretSettings,
                 on_step: Callable[[int, list[list[int]]], None] | None = None, priority: int = 0) -> GeneratedBatch:
        """Greedy SelfIE generations for ``vectors`` (B, d), through the shared batcher when enabled
        (``priority``: see ``BatchScheduler.submit``)."""
        if self.scheduler is not None:
            return self.scheduler.generate(vectors, settings, on_step, priority)
        return self.generate_now(vectors, settings, on_step)

    def generate_now(self, vectors: torch.Tensor, settings: InterpretSettings,
                     on_step: Callable[[int, list[list[int]]], None] | None = None,
                     keep: Callable[[list[int]], list[bool]] | None = None) -> GeneratedBatch:
        """Greedy SelfIE generations for ``vectors`` (B, d); always greedy, whatever generation_config says
        (``keep``: which rows are still wanted, asked once per step; see ``decode_greedy``)."""
        return decode_greedy(self.lm, self.prompt_state(settings), vectors, settings, on_step, keep)

    def p_without(self, generated: Sequence[Sequence[int]], settings: InterpretSettings,
                  max_nodes: int = 512) -> list[list[float]]:
        """p(y_j | prefix, placeholders unpatched) for each generated sequence (see ``relevancy``)."""
        return self.relevancy.p_without(self.prompt_state(settings), generated, max_nodes)

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
        priority: int = 0,
    ) -> Iterator[CellInterpretation]:
        """Interpret cells in batches, yielding each cell's text as soon as its batch has decoded
        and again (complete) once its relevancy is known. Cached cells are yielded first, the
        rest in the order given.

        With ``stream_tokens`` the partial text of a batch is also yielded after every step.
        ``should_stop`` is polled between batches (a Stop button). Without streaming, the next
        batch decodes while this one's relevancy pass runs (the two overlap on a GPU).
        ``priority`` orders this job's batches in the shared scheduler (a click: 1).
        """
        check_int("batch size", batch_size, 1, MAX_BATCH_SIZE)
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
        batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
        test = _job_test(should_stop)
        ahead: _Ahead | None = None
        try:
            for i, batch in enumerate(batches):
                if should_stop is not None and should_stop():
                    return
                if stream_tokens:
                    vectors = torch.stack([grid.hidden[layer, token] for layer, token in batch])
                    gen = yield from self._generate_streaming(grid, batch, vectors, settings, priority, test)
                else:
                    gen = (ahead or self._generate_ahead(grid, batch, settings, priority, test)).result()
                    ahead = None
                    if i + 1 < len(batches) and not (should_stop is not None and should_stop()):
                        ahead = self._generate_ahead(grid, batches[i + 1], settings, priority, test)
                yield from self._finish_batch(grid, batch, gen, settings, relevancy)
        except JobStopped:
            if should_stop is not None and should_stop():
                return  # Stop was pressed: the rows of this job left their batch; what was read stays
            raise
        finally:
            if ahead is not None:
                ahead.abandon()

    def _generate_ahead(self, grid: Grid, batch: list[tuple[int, int]], settings: InterpretSettings,
                        priority: int, test: Callable[[], str | None] | None) -> _Ahead:
        """Start decoding ``batch`` in a worker thread (same context: same edit, under the job's stop test)."""
        ahead = _Ahead()
        ctx = contextvars.copy_context()
        vectors = torch.stack([grid.hidden[layer, token] for layer, token in batch])

        def work() -> None:
            if not ahead.future.set_running_or_notify_cancel():
                return
            try:
                ahead.future.set_result(ctx.run(_under, test, ahead.stopped, self.generate, vectors, settings,
                                                None, priority))
            except BaseException as e:
                ahead.future.set_exception(e)

        ahead.thread = threading.Thread(target=work, name="selfie-decode", daemon=True)
        ahead.thread.start()
        return ahead

    def _finish_batch(self, grid: Grid, batch: list[tuple[int, int]], gen: GeneratedBatch,
                      settings: InterpretSettings, relevancy: bool) -> Iterator[CellInterpretation]:
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
                            settings: InterpretSettings, priority: int = 0,
                            test: Callable[[], str | None] | None = None):
        """Run ``generate`` in a worker (same context: same edit) and yield partial cells per step."""
        events: queue.Queue = queue.Queue()
        ctx = contextvars.copy_context()
        gone = threading.Event()  # set when the consumer stops listening (its generator was closed)

        def work() -> None:
            try:
                result = ctx.run(_under, test, gone, self.generate, vectors, settings,
                                 lambda _s, ids: events.put(("step", [list(x) for x in ids])), priority)
                events.put(("done", result))
            except BaseException as e:
                events.put(("error", e))

        thread = threading.Thread(target=work, name="selfie-stream", daemon=True)
        thread.start()
        try:
            while True:
                kind, payload = _next_event(events, thread)
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
        finally:
            gone.set()

    def _make_cell(self, grid: Grid, layer: int, token: int, ids: list[int], p_with: list[float]) -> CellInterpretation:
        tok = self.lm.tokenizer
        texts = [tok.decode([i], skip_special_tokens=False) for i in ids]
        text = tok.decode(ids, skip_special_tokens=True).strip()
        return CellInterpretation(layer=layer, token=token, token_decoded=grid.tokens[token], interpretation=text,
                                  generated_ids=list(ids), token_texts=texts, p_with=list(p_with),
                                  variant=MODEL_VARIANT.get())

    @staticmethod
    def _with_relevancy(cell: CellInterpretation, p_without: list[float]) -> CellInterpretation:
        rel = [abs(a - b) for a, b in zip(cell.p_with, p_without)]
        return dataclasses.replace(cell, p_without=list(p_without), relevancy_score=rel, cached=False, partial=False)

    def interpret_text_without_state(self, settings: InterpretSettings) -> str:
        """What the template alone produces (placeholders left as they are): the baseline reading."""
        state = self.prompt_state(settings)
        new = greedy_ids(self.lm, state.prompt.ids, settings.max_new_tokens)
        return self.lm.tokenizer.decode(new, skip_special_tokens=True).strip()


class _Ahead:
    """A batch decoding in a worker thread: its future, its thread, and a flag to let it go."""

    def __init__(self) -> None:
        self.future: Future = Future()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def result(self) -> GeneratedBatch:
        """Wait in short polls: a thread that died without an answer fails the wait, never hangs it."""
        while True:
            try:
                return self.future.result(timeout=POLL_S)
            except FutureTimeout:
                if self.thread is not None and not self.thread.is_alive() and not self.future.done():
                    raise EngineError("The decoding thread stopped unexpectedly; please try again.") from None

    def abandon(self) -> None:
        self.stopped.set()
        self.future.cancel()


def _job_test(should_stop: Callable[[], bool] | None) -> Callable[[], str | None] | None:
    """The calling job's stop test, joined with its Stop button (``should_stop``)."""
    outer = current_test()
    if should_stop is None:
        return outer

    def test() -> str | None:
        if should_stop():
            return "Stopped."
        return outer() if outer is not None else None

    return test


def _under(test: Callable[[], str | None] | None, gone: threading.Event, fn: Callable, *args):
    """``fn(*args)`` with ``test`` (or its consumer having gone) as this thread's stop test."""
    def joined() -> str | None:
        if gone.is_set():
            return "The request was abandoned."
        return test() if test is not None else None

    token = install_stop(joined)
    try:
        return fn(*args)
    finally:
        uninstall_stop(token)


def _next_event(events: queue.Queue, thread: threading.Thread):
    """The next item a worker thread puts, in short polls; a worker that died silently fails the wait."""
    while True:
        try:
            return events.get(timeout=POLL_S)
        except queue.Empty:
            if not thread.is_alive() and events.empty():
                raise EngineError("The decoding thread stopped unexpectedly; please try again.") from None


def collect(iterator: Iterator[CellInterpretation]) -> dict[tuple[int, int], CellInterpretation]:
    """The last (most complete) result per cell of an ``iter_cells`` stream."""
    out: dict[tuple[int, int], CellInterpretation] = {}
    for cell in iterator:
        out[(cell.layer, cell.token)] = cell
    return out


def auto_batch_size(lm: LoadedModel, settings: InterpretSettings, prompt_len: int = 64, cap: int = 128,
                    free_bytes: int | None = None) -> int:
    """The largest batch that fits in free GPU memory (half of it, to leave room); 16 on a CPU,
    where larger batches gain little on two cores and delay the first results.

    ``free_bytes`` replaces the measured free memory (a simulated budget, or a share of a GPU)."""
    if free_bytes is None:
        if lm.device.type != "cuda":
            return 16
        free_bytes, _total = torch.cuda.mem_get_info(lm.device)
    free = int(free_bytes)
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
