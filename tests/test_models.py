"""Architecture lookup on every tested layout, loading errors, device/dtype choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core.errors import ModelLoadError
from explorer.core.models import Architecture, load_model, pick_device_and_dtype, resolve_source
from tests.conftest import TINY_ARCHS


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_architecture_found_on_tiny_models(tiny, arch):
    lm = tiny(arch)
    a = lm.arch
    assert a.n_layers == 3
    assert len(a.mlps) == len(a.mlp_norms) == 3
    for block, mlp in zip(a.blocks, a.mlps):
        assert any(m is mlp for m in block.modules())
    assert a.final_norm is not None
    assert a.unembed is lm.model.get_output_embeddings()
    # The logit lens of the last row equals the model's own logits.
    ids = torch.tensor([[1, 200, 300, 400]])
    with torch.inference_mode():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    # HF's last hidden state is already normed; undo nothing, just unembed (and soft-cap) it.
    logits = a.unembed(out.hidden_states[-1])
    if a.logit_softcap:
        logits = torch.tanh(logits / a.logit_softcap) * a.logit_softcap
    assert torch.allclose(logits, out.logits, atol=1e-5)


def test_real_model_parts(lm):
    a = lm.arch
    assert lm.n_layers == 30 and lm.hidden_size == 576
    assert type(a.mlps[0]).__name__ == "LlamaMLP"
    assert a.mlp_norms[0] is a.blocks[0].post_attention_layernorm
    assert a.final_norm is lm.model.model.norm
    assert lm.has_chat_template and 2 in lm.eos_token_ids


def test_overrides_and_unknown_layouts(tiny):
    lm = tiny("llama")
    a = Architecture.find(lm.model, {"blocks": "model.layers", "final_norm": "model.norm", "mlp": "mlp"})
    assert a.blocks[1] is lm.model.model.layers[1]

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])

        def get_input_embeddings(self):
            return nn.Embedding(3, 4)

        def get_output_embeddings(self):
            return nn.Linear(4, 3)

    with pytest.raises(ModelLoadError, match="MLP of block 0"):
        Architecture.find(Odd())
    with pytest.raises(ModelLoadError, match="not a module"):
        Architecture.find(lm.model, {"blocks": "model.nothing_here"})


def test_unknown_model_gives_one_clear_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-org/no-such-model-xyz", cache=False)
    msg = str(e.value)
    assert "no-such-org/no-such-model-xyz" in msg and "default" in msg and "\n" not in msg
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_source(str(tmp_path))
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF not really")
    monkeypatch.setenv("SELFIE_EXPLORER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match="GGUF"):
        resolve_source(str(bad))


def test_default_loads_from_the_converted_folder(lm):
    model_id, source = resolve_source("default")
    assert model_id == "SmolLM2-135M-Instruct-Q4_1"  # the quantisation is part of the name
    assert (__import__("pathlib").Path(source) / "config.json").is_file()
    assert load_model("default") is lm  # one copy per process


def test_device_and_dtype_choice():
    device, dtype = pick_device_and_dtype()
    if not torch.cuda.is_available():
        assert (device, dtype) == ("cpu", torch.float32)
    assert pick_device_and_dtype("cpu", "bf16") == ("cpu", torch.bfloat16)
    with pytest.raises(ModelLoadError):
        pick_device_and_dtype("cpu", "float7")
