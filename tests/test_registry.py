"""The model registry: one copy per model however it is spelt, loads outside the lock, a memory-bounded
LRU, content-keyed GGUF conversions, and a public mode limited to the configured models."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch

from explorer.core.errors import InputError, ModelLoadError
from explorer.core.gguf import file_sha256
from explorer.core.models import embedded_gguf_path, model_nbytes, normalise_spec, resolve_source
from explorer.ui import session as session_mod
from explorer.ui.session import AppConfig, ModelRegistry, Session
from tests.conftest import tiny_config


def tiny_folder(lm, root: Path, name: str, seed: int) -> Path:
    """A real transformers folder holding a tiny random Llama with the embedded model's tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(lm.tokenizer)))
    out = root / name
    model.save_pretrained(str(out))
    lm.tokenizer.save_pretrained(str(out))
    return out


def test_every_spelling_of_the_default_shares_one_copy(lm):
    registry = ModelRegistry(AppConfig())
    spellings = ["default", "Default", " DEFAULT ", "embedded", "SmolLM2-135M-Instruct-Q4_1",
                 "smollm2-135m-instruct-q4_1"]
    explorers = [registry.get(s) for s in spellings]
    assert all(ex is explorers[0] for ex in explorers) and explorers[0].lm is lm
    assert registry.loaded() == ["default"]


def test_the_hub_id_is_not_the_embedded_quantised_model(lm, monkeypatch):
    """The published model's hub id names other weights than the embedded Q4_1 file: it is never mapped to
    it; with no hub it fails with one sentence that says so."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = ModelRegistry(AppConfig())
    with pytest.raises(ModelLoadError, match="hub is unreachable") as err:
        registry.get("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in str(err.value)
    assert registry.loaded() == []
    ex = registry.get("default")
    assert ex.lm.model_id == "SmolLM2-135M-Instruct-Q4_1"
    assert "Q4_1" in ex.lm.provenance()["weights"] and "dequantised" in ex.lm.provenance()["weights"]


def test_concurrent_loads_of_one_model_load_once_outside_the_lock(lm, tmp_path, monkeypatch):
    folder = tiny_folder(lm, tmp_path, "tiny-a", 1)
    registry = ModelRegistry(AppConfig(allowed_model_dirs=[str(tmp_path)]))
    registry.get("default")
    real = session_mod.load_model
    calls: list[bool] = []

    def observed(*args, **kwargs):  # the real loader; notes whether the registry lock was held
        calls.append(registry._lock.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(session_mod, "load_model", observed)
    got = []
    threads = [threading.Thread(target=lambda i=i: got.append(registry.get(str(folder) + ("/" * i))))
               for i in range(4)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert len(got) == 4 and all(ex is got[0] for ex in got)
    assert calls == [False]


def test_lru_eviction_keeps_the_default_and_models_in_use(lm, tmp_path):
    a, b = tiny_folder(lm, tmp_path, "a", 1), tiny_folder(lm, tmp_path, "b", 2)
    registry = ModelRegistry(AppConfig(allowed_model_dirs=[str(tmp_path)], model_memory_mb=1))
    registry.get("default")
    ex_a = registry.get(str(a))
    assert model_nbytes(ex_a.lm) > 2**20
    registry.get(str(b))  # over budget: a is the least recently used and idle
    assert registry.loaded() == ["default", normalise_spec(str(b))]
    user = Session(model=str(b))
    registry.budget.touch(user)
    user.new_grid(registry.get(str(b)).run("hello there"))
    registry.get(str(a))  # b is in use by a session with a grid: kept
    assert set(registry.loaded()) == {"default", normalise_spec(str(a)), normalise_spec(str(b))}
    assert registry.get(str(a)) is not ex_a  # a was really dropped and loaded again


def test_public_mode_loads_only_configured_models_and_says_nothing_of_the_server(lm, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    registry = ModelRegistry(AppConfig(public=True, allowed_model_dirs=[str(tmp_path)]))
    for spec in ("gpt2", "someone/any-model", "/etc", str(tmp_path.parent / "elsewhere.gguf")):
        with pytest.raises(InputError) as e:
            registry.get(spec)
        assert "/" not in str(e.value).replace("HuggingFaceTB/", "").replace("Qwen/", "").replace(
            "meta-llama/", "").replace("google/", "")
    with pytest.raises(ModelLoadError) as e:
        registry.get(str(broken))
    msg = str(e.value)
    assert msg == "Could not load the model 'broken'."
    assert str(tmp_path) not in msg and "Error" not in msg
    assert registry.get(" Default ") is registry.get("default")


def test_gguf_conversions_are_keyed_by_content(tmp_path):
    one, two = tmp_path / "one" / "m.gguf", tmp_path / "two" / "m.gguf"
    for path, byte in ((one, b"a"), (two, b"b")):
        path.parent.mkdir()
        path.write_bytes(byte * 4096)  # same name, same size, different content
    memo = tmp_path / "memo.json"
    h1, h2 = file_sha256(one, memo), file_sha256(two, memo)
    assert h1 == hashlib.sha256(b"a" * 4096).hexdigest() and h2 == hashlib.sha256(b"b" * 4096).hexdigest()
    assert len(__import__("json").loads(memo.read_text())) == 2  # remembered by (path, size, mtime)
    gguf = embedded_gguf_path()
    if gguf is not None:
        _, folder = resolve_source("default")
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
        assert Path(folder).name == f"{gguf.stem}-sha256-{digest[:20]}"
