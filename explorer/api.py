"""The Python API: load a model, capture a prompt's grid, interpret cells.

    >>> ex = Explorer.load()                      # the embedded SmolLM2-135M-Instruct
    >>> grid = ex.run("The Eiffel Tower is in the city of")
    >>> res = ex.interpret(grid, [(15, 7)], template="refers_to", k=1, max_new_tokens=20)
    >>> res.to_frame(compat=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from explorer.core.grid import DEFAULT_MAX_PROMPT_TOKENS, Grid, capture, parse_cells
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel, load_model
from explorer.core.prompts import Template
from explorer.core.results import CellInterpretation, InterpretationSet
from explorer.core.stop import checkpoint
from explorer.interpret.engine import Interpreter, InterpretSettings, auto_batch_size, make_settings


class Explorer:
    """One model, its interpreter and caches; safe to share between threads and users."""

    def __init__(self, lm: LoadedModel, *, max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS):
        self.lm = lm
        self.interpreter = Interpreter(lm)
        self.max_prompt_tokens = max_prompt_tokens

    @classmethod
    def load(cls, model: str | None = None, **kwargs) -> Explorer:
        """``model``: ``"default"`` (embedded), a hub id, a local folder or a ``.gguf`` file."""
        max_prompt_tokens = kwargs.pop("max_prompt_tokens", DEFAULT_MAX_PROMPT_TOKENS)
        return cls(load_model(model, **kwargs), max_prompt_tokens=max_prompt_tokens)

    def run(self, prompt: str, *, chat: bool = False) -> Grid:
        """Tokenise and run the prompt once; the grid holds every hidden state."""
        return capture(self.lm, prompt, chat=chat, max_tokens=self.max_prompt_tokens, edit_id=MODEL_VARIANT.get())

    def settings(self, template: str | Template | None = None, *, n_placeholders: int = 5, k: int = 1,
                 max_new_tokens: int = 20, strength: float = 1.0) -> InterpretSettings:
        return make_settings(self.lm, template, n_placeholders=n_placeholders, k=k,
                             max_new_tokens=max_new_tokens, strength=strength)

    def batch_size(self, settings: InterpretSettings, batch_size: int | str = "auto") -> int:
        """``"auto"``: the largest batch that fits in free GPU memory, 16 on a CPU."""
        if batch_size == "auto":
            return auto_batch_size(self.lm, settings)
        return batch_size  # type: ignore[return-value]

    def iter_interpret(self, grid: Grid, cells="all", *, settings: InterpretSettings | None = None,
                       batch_size: int | str = "auto", relevancy: bool = True, stream_tokens: bool = False,
                       should_stop: Callable[[], bool] | None = None, priority: int = 0,
                       **setting_kwargs) -> Iterator[CellInterpretation]:
        """Stream cell results: text first, then the same cell again with its relevancy
        (``priority``: a click's 1 goes ahead of a grid job's 0 in the shared scheduler)."""
        settings = settings or self.settings(**setting_kwargs)
        return self.interpreter.iter_cells(grid, parse_cells(cells, grid), settings,
                                           batch_size=self.batch_size(settings, batch_size),
                                           relevancy=relevancy, stream_tokens=stream_tokens,
                                           should_stop=should_stop, priority=priority)

    def interpret(self, grid: Grid, cells="all", *, settings: InterpretSettings | None = None,
                  batch_size: int | str = "auto", relevancy: bool = True,
                  progress: Callable[[int, int], None] | None = None, **setting_kwargs) -> InterpretationSet:
        """Interpret ``cells`` (``"all"``, ``"row:L"``, ``"col:T"``, ``"L:T,..."`` or pairs) of ``grid``."""
        settings = settings or self.settings(**setting_kwargs)
        cell_list = parse_cells(cells, grid)
        out = InterpretationSet(prompt=grid.prompt, provenance=self.provenance(grid, settings))
        total = len(set(cell_list))
        done: set[tuple[int, int]] = set()
        for cell in self.interpreter.iter_cells(grid, cell_list, settings,
                                                batch_size=self.batch_size(settings, batch_size), relevancy=relevancy):
            checkpoint()
            out.add(cell)
            if cell.complete or not relevancy:
                done.add((cell.layer, cell.token))
                if progress is not None:
                    progress(len(done), total)
        return out

    def provenance(self, grid: Grid, settings: InterpretSettings) -> dict:
        return {**grid.provenance, **settings.to_dict(), "decoding": "greedy", "seed": None}
