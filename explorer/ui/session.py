"""Per-user state and the process-wide model registry behind the web app.

One model is loaded once per process and shared by every user (through one batching scheduler);
everything a user makes (grid, interpretations, selection, control edit) lives in that user's
``Session``, held in ``gr.State`` and freed when their tab closes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from explorer.api import Explorer
from explorer.core.errors import InputError, ModelLoadError
from explorer.core.grid import Grid
from explorer.core.models import DEFAULT_MODEL
from explorer.core.results import InterpretationSet
from explorer.interpret.cache import ByteLRU, cache_owner
from explorer.methods.crossmodel import CrossReader
from explorer.ui import zerogpu

MODEL_PRESETS = [
    DEFAULT_MODEL,
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "google/gemma-2-2b-it",
]


def _env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p]


@dataclass
class AppConfig:
    """Operator settings, from environment variables (documented in the README)."""

    default_model: str = field(default_factory=lambda: os.environ.get("SELFIE_MODEL", DEFAULT_MODEL))
    allow_any_model: bool = field(default_factory=lambda: os.environ.get("SELFIE_ALLOW_ANY_MODEL", "1") == "1")
    allowed_model_dirs: list[str] = field(default_factory=lambda: _env_list("SELFIE_MODEL_DIRS"))
    trust_remote_code: bool = field(default_factory=lambda: os.environ.get("SELFIE_TRUST_REMOTE_CODE") == "1")
    max_prompt_tokens: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_PROMPT_TOKENS", "512")))
    max_cells_per_job: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_CELLS", "4096")))
    job_time_limit_s: float = field(default_factory=lambda: float(os.environ.get("SELFIE_JOB_TIME_LIMIT", "900")))
    max_batch: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_BATCH", "16")))
    public: bool = field(default_factory=lambda: os.environ.get("SELFIE_PUBLIC", "0") == "1")
    session_memory_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_SESSION_MEMORY_MB", "2048")))
    cache_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_CACHE_MB", "256")))
    session_cache_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_SESSION_CACHE_MB", "32")))


class ModelRegistry:
    """Loads each model once per process; loading is serialised, use is shared."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._explorers: dict[str, Explorer] = {}
        self._lock = threading.Lock()
        self.budget = SessionBudget(config.session_memory_mb * 2**20)
        self._cross: dict[tuple[str, str], CrossReader] = {}
        self._by_connection: dict[str, Session] = {}

    def check_allowed(self, spec: str) -> str:
        spec = (spec or "").strip() or self.config.default_model
        if spec == self.config.default_model or spec in MODEL_PRESETS:
            return spec
        path = Path(spec).expanduser()
        looks_local = spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or path.exists()
        if looks_local:
            allowed = [Path(d).expanduser().resolve() for d in self.config.allowed_model_dirs]
            resolved = path.resolve()
            if not any(resolved == d or d in resolved.parents for d in allowed):
                raise InputError("Local model paths are limited to the folders the operator allows "
                                 "(SELFIE_MODEL_DIRS); this one is not among them.")
            return spec
        if not self.config.allow_any_model:
            raise InputError("This server only offers its preset models.")
        return spec

    def get(self, spec: str | None) -> Explorer:
        spec = self.check_allowed(spec or "")
        with self._lock:
            ex = self._explorers.get(spec)
            if ex is None:
                try:
                    ex = Explorer.load(spec, trust_remote_code=self.config.trust_remote_code,
                                       max_prompt_tokens=self.config.max_prompt_tokens)
                except ModelLoadError:
                    raise
                except Exception as e:
                    raise ModelLoadError(f"Could not load '{spec}': {type(e).__name__}.") from e
                ex.interpreter.max_batch = self.config.max_batch
                ex.interpreter.results = ByteLRU(self.config.cache_mb * 2**20, lambda c: c.nbytes(),
                                                 self.config.session_cache_mb * 2**20)
                zerogpu.register(spec, ex.lm)
                if zerogpu.enabled():  # only pure computations cross into the GPU worker
                    zerogpu.route_through_gpu(ex, spec)
                ex.interpreter.enable_batching()
                self._explorers[spec] = ex
            return ex

    def bind(self, session_hash: str | None, session: Session) -> None:
        """Remember which browser connection a session belongs to, so closing the tab can free it."""
        if session_hash:
            with self._lock:
                self._by_connection[session_hash] = session

    def release(self, session_hash: str | None) -> Session | None:
        """The tab behind ``session_hash`` closed: stop its jobs and free its grid, readings, edit and
        cache share now. Returns the freed session, if there was one."""
        with self._lock:
            session = self._by_connection.pop(session_hash or "", None)
        if session is not None:
            self.forget_session(session)
            session.close()
        return session

    def cross_reader(self, source: str, reader: str) -> CrossReader:
        """The (cached) reader of ``source`` model states by ``reader``; the last two pairs are kept
        (each holds every layer's states of the shared text: ~100 MB per model for SmolLM2)."""
        key = (self.check_allowed(source), self.check_allowed(reader))
        a, b = self.get(key[0]), self.get(key[1])
        with self._lock:
            cr = self._cross.pop(key, None)
        if cr is None:
            cr = CrossReader(a.lm, b.lm)
        with self._lock:
            self._cross[key] = cr
            while len(self._cross) > 2:
                self._cross.pop(next(iter(self._cross)))
        return cr

    def forget_session(self, session: Session) -> None:
        """Release what a closed tab held: its share of the memory budget and of every result cache."""
        self.budget.forget(session)
        with self._lock:
            explorers = list(self._explorers.values())
        for ex in explorers:
            ex.interpreter.results.drop_owner(session.session_id)


@dataclass
class Session:
    """One user's work: the model they chose, their grid and readings, and their control edit."""

    model: str = DEFAULT_MODEL
    grid: Grid | None = None
    results: InterpretationSet | None = None
    selected: tuple[int, int] | None = None
    column_start: int = 0
    colour_mode: str = "logit_lens"
    settings: dict = field(default_factory=dict)  # the last interpretation settings, for sharing
    edit_since: float | None = None  # when the current edit was applied (set whenever ``edit`` changes)
    edit: object | None = None  # explorer.methods.control.Edit
    active_jobs: int = 0  # interpretation jobs running now (clicks may overlap a row job)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __setattr__(self, name: str, value) -> None:
        # Every tab assigns ``session.edit`` directly: stamp the time here so the banner can say since when.
        if name == "edit" and value is not getattr(self, "edit", None):
            object.__setattr__(self, "edit_since", None if value is None else time.time())
            zerogpu.remember_edit(value)
        object.__setattr__(self, name, value)

    def __deepcopy__(self, memo) -> Session:
        """Gradio deep-copies a state's initial value per user: give each a fresh session (new id,
        its own lock and stop flag); grids are shared read-only, results copied."""
        import copy

        return Session(model=self.model, grid=self.grid, results=copy.deepcopy(self.results, memo),
                       selected=self.selected, column_start=self.column_start, colour_mode=self.colour_mode,
                       settings=dict(self.settings), edit=self.edit)

    def new_grid(self, grid: Grid) -> None:
        with self.lock:
            self.grid = grid
            self.results = InterpretationSet(prompt=grid.prompt, provenance=dict(grid.provenance))
            self.selected = None
            self.column_start = 0

    def require_grid(self) -> Grid:
        if self.grid is None:
            raise InputError("Run a prompt first: the grid is empty.")
        return self.grid

    @contextlib.contextmanager
    def job_context(self, lm) -> Iterator[None]:
        """Where this session's jobs run: its own control edit applied, cache entries charged to it."""
        from explorer.methods.control import applied

        with applied(lm, self.edit), cache_owner(self.session_id):
            yield

    def workdir(self) -> Path:
        d = Path(tempfile.gettempdir()) / "selfie-explorer" / self.session_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def nbytes(self) -> int:
        return (self.grid.nbytes() if self.grid is not None else 0) + sum(
            c.nbytes() for c in (self.results.cells if self.results else []))

    def close(self) -> None:
        """Free what the session holds (called when the user's tab closes)."""
        import shutil

        self.stop_event.set()
        self.grid = None
        self.results = None
        self.edit = None
        shutil.rmtree(Path(tempfile.gettempdir()) / "selfie-explorer" / self.session_id, ignore_errors=True)


class SessionBudget:
    """A global bound on the memory held by all sessions' grids and results.

    When a new grid would push the total over ``max_bytes``, the grids of the sessions idle the
    longest are dropped (their users are asked to run their prompt again); the newest is kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._lock = threading.Lock()
        self.evicted = 0

    def touch(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.session_id] = (session, time.monotonic())
            total = sum(s.nbytes() for s, _ in self._sessions.values())
            for _sid, (s, _t) in sorted(self._sessions.items(), key=lambda kv: kv[1][1]):
                if total <= self.max_bytes:
                    break
                if s is session or s.grid is None:
                    continue
                total -= s.nbytes()
                s.grid = None
                s.results = None
                self.evicted += 1

    def forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s, _ in self._sessions.values())
