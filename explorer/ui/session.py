"""Per-user state and the process-wide model registry behind the web app.

One model is loaded once per process and shared by every user (through one batching scheduler);
everything a user makes (grid, interpretations, selection, control edit) lives in that user's
``Session``, held in ``gr.State`` and freed when their tab closes.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from explorer.api import Explorer
from explorer.core.errors import InputError, ModelLoadError
from explorer.core.grid import Grid
from explorer.core.memo import Memo
from explorer.core.models import DEFAULT_MODEL, forget_loaded, load_model, model_nbytes, normalise_spec
from explorer.core.results import InterpretationSet
from explorer.interpret.cache import ByteLRU, cache_owner
from explorer.methods.crossmodel import CrossReader
from explorer.methods.model_state import ModelState
from explorer.ui import validate, zerogpu
from explorer.ui.background import JobSlots
from explorer.ui.budget import SessionBudget
from explorer.ui.config import MODEL_PRESETS, AppConfig

__all__ = ["MODEL_PRESETS", "AppConfig", "ModelRegistry", "Session"]

def _shown(key: str) -> str:
    """A spec as it may appear in a public message: a local path by its last part only."""
    return Path(key).name if Path(key).is_absolute() else key


class ModelRegistry:
    """The models this process serves, loaded once per spelling-normalised spec and shared by every user.

    Loading runs outside the registry lock: one ``Future`` per spec, so concurrent requests for the
    same model wait for one load while every other user carries on. Loaded models form an LRU bounded
    by ``model_memory_mb``: when a load pushes the total over it, the least recently used models are
    dropped, except the default model and any model a live session uses (holds a grid or runs a job).
    """

    def __init__(self, config: AppConfig):
        self.config = config
        self._explorers: OrderedDict[str, Explorer] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.budget = SessionBudget(config.session_memory_mb * 2**20)
        self._cross: dict[tuple[str, str], CrossReader] = {}
        self._by_connection: dict[str, Session] = {}
        self.evicted_models: list[str] = []
        # Control training and steering, across all sessions (held by the worker thread, see JobSlots)
        self.control = JobSlots(config.max_control_jobs, "control jobs")
        self.memo = Memo(32)  # what every user shares beyond the models (gallery entries as first opened)
        self.gallery_lock = threading.Lock()

    def check_allowed(self, spec: str) -> str:
        """The normalised spec if this server may load it, else InputError (one sentence, no paths)."""
        key = normalise_spec(spec or self.config.default_model)
        default = normalise_spec(self.config.default_model)
        if key in (default, DEFAULT_MODEL) or key in MODEL_PRESETS:
            return key
        path = Path(key)
        if path.is_absolute():
            allowed = [Path(d).expanduser().resolve() for d in self.config.allowed_model_dirs]
            if not any(path == d or d in path.parents for d in allowed):
                raise InputError("Local model paths are limited to the folders the operator allows "
                                 "(SELFIE_MODEL_DIRS); this one is not among them.")
            return key
        if self.config.public or not self.config.allow_any_model:
            raise InputError("This server only offers its configured models: "
                             f"{', '.join(dict.fromkeys([DEFAULT_MODEL, *MODEL_PRESETS[1:]]))}.")
        return key

    def get(self, spec: str | None) -> Explorer:
        key = self.check_allowed(spec or "")
        with self._lock:
            ex = self._explorers.get(key)
            if ex is not None:
                self._explorers.move_to_end(key)
                return ex
            fut = self._loading.get(key)
            owner = fut is None
            if fut is None:
                fut = self._loading[key] = Future()
        if owner:
            try:
                ex = self._load(key)
            except BaseException as e:
                with self._lock:
                    self._loading.pop(key, None)
                fut.set_exception(e)
                raise
            with self._lock:
                self._explorers[key] = ex
                self._loading.pop(key, None)
            fut.set_result(ex)
            self._evict(keep=key)
        return fut.result()

    def held_sessions(self) -> int:
        """How many sessions are bound to an open connection (freed when their tab or client leaves)."""
        with self._lock:
            return len(self._by_connection)

    def _load(self, key: str) -> Explorer:
        try:
            lm = load_model(key, trust_remote_code=self.config.trust_remote_code)
        except ModelLoadError as e:
            if self.config.public:
                raise ModelLoadError(f"Could not load the model '{_shown(key)}'.") from e
            raise
        except Exception as e:
            shown = f"'{_shown(key)}'" if self.config.public else f"'{key}': {type(e).__name__}"
            raise ModelLoadError(f"Could not load {shown}.") from e
        ex = Explorer(lm, max_prompt_tokens=self.config.max_prompt_tokens)
        ex.interpreter.max_batch = self.config.max_batch
        ex.interpreter.results = ByteLRU(self.config.cache_mb * 2**20, lambda c: c.nbytes(),
                                         self.config.session_cache_mb * 2**20)
        zerogpu.register(key, ex.lm)
        if zerogpu.enabled():  # only pure computations cross into the GPU worker
            zerogpu.route_through_gpu(ex, key)
        ex.interpreter.enable_batching()
        ex.interpreter.scheduler.request_timeout_s = self.config.job_time_limit_s  # type: ignore[union-attr]
        # A session file with a control edit carries one MLP's weights as base64: accept it back.
        mlp = sum(t.numel() * 4 for t in ex.lm.arch.mlps[0].parameters())
        validate.allow_exports_of(mlp * 4 // 3 + 4 * 2**20)
        return ex

    def in_use(self) -> set[str]:
        """Specs a live session uses: it holds a grid of that model or runs a job on it."""
        with self._lock:
            sessions = list(self._by_connection.values())
        sessions += [s for s, _ in self.budget.snapshot()]
        return {normalise_spec(s.model) for s in sessions if s.grid is not None or s.active_jobs > 0}

    def _evict(self, keep: str) -> None:
        """Drop least recently used models until the total fits ``model_memory_mb`` (never the default,
        ``keep`` or a model in use)."""
        budget = self.config.model_memory_mb * 2**20
        protected = {keep, normalise_spec(self.config.default_model), *self.in_use()}
        with self._lock:
            sizes = {k: model_nbytes(ex.lm) for k, ex in self._explorers.items()}
            total = sum(sizes.values())
            for k in list(self._explorers):
                if total <= budget:
                    break
                if k in protected:
                    continue
                total -= sizes[k]
                forget_loaded(self._explorers.pop(k).lm)
                self._cross = {pair: cr for pair, cr in self._cross.items() if k not in pair}
                self.evicted_models.append(k)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._explorers)

    def bind(self, session_hash: str | None, session: Session) -> bool:
        """Remember which browser connection a session belongs to, so closing the tab can free it.

        A session bound to one connection is never rebound to another. A connection's session is
        replaced only while the bound one is still untouched: Gradio may build two sessions for one tab
        when two of its first events arrive together, and only the one its later events carry must
        stay bound (else closing the tab would free the unused one and keep the real one). Returns
        whether ``session`` is (now) the one bound to ``session_hash``.
        """
        if not session_hash or session.connection not in (None, session_hash):
            return False
        with self._lock:
            owner = self._by_connection.get(session_hash)
            if owner is session:
                return True
            if owner is None or owner.untouched():
                self._by_connection[session_hash] = session
                session.connection = session_hash
                return True
            return False

    def release(self, session_hash: str | None, session: Session | None) -> Session | None:
        """The tab behind ``session_hash`` closed: stop its jobs and free its grid, readings, edit and
        cache share now. Returns the freed session, if there was one.

        Only the session bound to ``session_hash`` and presented with it (the state of the closing
        tab) is freed: a request carrying another session's hash, or a session with a hash not its
        own, is refused (None).
        """
        if not session_hash or session is None:
            return None
        with self._lock:
            owner = self._by_connection.get(session_hash)
            if session.connection not in (None, session_hash) or owner is None:
                return None
            if owner is not session:  # the bound one is a twin built in the first events' race: drop it
                if not owner.untouched():
                    return None
                self._by_connection[session_hash] = session
                session.connection = session_hash
        # Freed first, unbound last: once a session no longer counts as held, it holds nothing.
        self.forget_session(session)
        session.close()
        with self._lock:
            if self._by_connection.get(session_hash) is session:
                del self._by_connection[session_hash]
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
    concepts: dict = field(default_factory=dict)  # name -> explorer.methods.concepts.Concept
    concept_steer: object | None = None  # explorer.methods.concepts.Steering, applied with the edit
    steer_since: float | None = None  # when the current concept steering was applied
    reading_list: tuple[str, list] | None = None  # (scope, cells) the side panel lists after a row/column job
    trace_query: tuple[str, str | None] | None = None  # (answer, subject) of the "causal effect" colour mode
    trace: object | None = None  # its explorer.methods.tracing.CausalTrace for the current grid, once computed
    hide_system: bool = True  # start the grid at the user's first token of a chat-wrapped prompt
    variant_tag: str | None = None  # the model variant of this session's last job (edit and steering ids)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    connection: str | None = None  # the browser connection (session hash) this session is bound to
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _jobs: set[threading.Event] = field(default_factory=set, repr=False)

    @property
    def active_jobs(self) -> int:
        """Jobs running now (a click may overlap a row job)."""
        with self.lock:
            return len(self._jobs)

    @contextlib.contextmanager
    def job(self) -> Iterator[threading.Event]:
        """One job's own stop event, registered while it runs: Stop (``stop_jobs``) sets the events of
        the jobs running at that moment; a new job never clears another's pending stop, and an
        abandoned job sets only its own."""
        stop = threading.Event()
        with self.lock:
            self._jobs.add(stop)
        try:
            yield stop
        finally:
            with self.lock:
                self._jobs.discard(stop)

    def stop_jobs(self) -> int:
        """Ask every job running now to stop after its current step; returns how many were asked."""
        with self.lock:
            jobs = list(self._jobs)
        for stop in jobs:
            stop.set()
        return len(jobs)
    closed: bool = False  # its tab closed: a job finishing late must not give it memory again

    def __setattr__(self, name: str, value) -> None:
        # The edit and the steering may be assigned directly (tests, tools): stamp the time here so the
        # banner can say since when.
        if name in ("edit", "concept_steer") and value is not getattr(self, name, None):
            since = "edit_since" if name == "edit" else "steer_since"
            object.__setattr__(self, since, None if value is None else time.time())
        object.__setattr__(self, name, value)

    def set_model_state(self, state: ModelState, lm=None) -> None:
        """Replace the session's changes to the model (its edit and its concept steering) in one step;
        with ``lm`` the variant tag its readings will carry is worked out at once (``current_variant``)."""
        with self.lock:
            self.edit = state.edit
            self.concept_steer = state.steering
        if lm is not None:
            self.state_variant(lm)

    def state_variant(self, lm) -> str | None:
        """The variant tag of the session's current model state on ``lm`` (None: the stock model)."""
        state = self.model_state
        cached = self._known_variant(state)
        if cached is not None:
            return cached[0]
        variant = state.variant(lm)
        object.__setattr__(self, "_variant", (state.edit, state.steering, variant))
        return variant

    def _known_variant(self, state: ModelState) -> tuple[str | None] | None:
        """The variant worked out for exactly this state's edit and steering objects, if it was."""
        cached = getattr(self, "_variant", None)
        if cached is not None and cached[0] is state.edit and cached[1] is state.steering:
            return (cached[2],)
        return None

    def current_variant(self) -> str | None:
        """The variant new readings of this session are made under, without a model at hand: the one
        worked out for the current state, else the edit's id (no steering), else the last job's tag."""
        state = self.model_state
        cached = self._known_variant(state)
        if cached is not None:
            return cached[0]
        if state.steering is None:
            return None if state.edit is None else state.edit.edit_id
        return self.variant_tag

    def __deepcopy__(self, memo) -> Session:
        """Gradio deep-copies a state's initial value per user: give each a fresh session (new id,
        its own lock and stop flag); grids are shared read-only, results copied."""
        import copy

        return Session(model=self.model, grid=self.grid, results=copy.deepcopy(self.results, memo),
                       selected=self.selected, column_start=self.column_start, colour_mode=self.colour_mode,
                       settings=dict(self.settings), edit=self.edit, concept_steer=self.concept_steer)

    def new_grid(self, grid: Grid) -> None:
        with self.lock:
            self.grid = grid
            self.results = InterpretationSet(prompt=grid.prompt, provenance=dict(grid.provenance))
            self.selected = None
            self.column_start = 0
            self.reading_list = None

    def require_grid(self) -> Grid:
        if self.grid is None:
            raise InputError("Run a prompt first: the grid is empty.")
        return self.grid

    @property
    def model_state(self) -> ModelState:
        """The session's changes to the model as one value (its edit and its concept steering)."""
        return ModelState(self.edit, self.concept_steer)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def job_context(self, lm) -> Iterator[None]:
        """Where this session's jobs run: its own control edit and concept steering applied, cache
        entries charged to it."""
        state = self.model_state
        with state.applied(lm) as variant, cache_owner(self.session_id):
            self.variant_tag = variant  # what this session's readings are now made under
            object.__setattr__(self, "_variant", (state.edit, state.steering, variant))
            zerogpu.remember_state(variant, state)
            yield

    def workdir(self) -> Path:
        d = Path(tempfile.gettempdir()) / "selfie-explorer" / self.session_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def nbytes(self) -> int:
        edit = self.edit.nbytes() if self.edit is not None and hasattr(self.edit, "nbytes") else 0
        return edit + (self.grid.nbytes() if self.grid is not None else 0) + sum(
            c.nbytes() for c in (self.results.cells if self.results else []))

    def untouched(self) -> bool:
        """Nothing was ever done with this session: no grid, readings, edit, steering, concept or job."""
        with self.lock:
            return (self.grid is None and self.results is None and self.edit is None and self.concept_steer is None
                    and not self.concepts and not self._jobs)

    def close(self) -> None:
        """Free what the session holds (called when the user's tab closes)."""
        import shutil

        self.stop_jobs()
        self.closed = True
        self.grid = None
        self.results = None
        self.edit = None
        self.concepts = {}
        self.concept_steer = None
        self.trace = None
        object.__setattr__(self, "_variant", None)
        shutil.rmtree(Path(tempfile.gettempdir()) / "selfie-explorer" / self.session_id, ignore_errors=True)
