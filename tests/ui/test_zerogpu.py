"""The ZeroGPU functions run in a real forked worker with pickled arguments, as ``spaces.GPU`` runs them."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import pytest
import torch

from explorer.core.grid import tokenize_prompt
from explorer.interpret.engine import make_settings
from explorer.methods.concepts import Concept, Probe, Steering
from explorer.methods.control import Edit, applied
from explorer.methods.model_state import ModelState
from explorer.ui import zerogpu

PROMPT = "The Eiffel Tower is in the city of"


def _worker(conn, fn_name: str, payload: bytes) -> None:
    args = pickle.loads(payload)
    try:
        conn.send_bytes(pickle.dumps(("ok", getattr(zerogpu, fn_name)(*args))))
    except BaseException as e:  # report, so a failure is not a hang
        conn.send_bytes(pickle.dumps(("error", repr(e))))
    conn.close()


def in_forked_worker(fn_name: str, *args):
    """Call ``zerogpu.<fn_name>(*args)`` in a process made by fork, arguments and result pickled both ways."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(child, fn_name, pickle.dumps(args)))
    proc.start()
    child.close()
    if not parent.poll(240):
        proc.kill()
        pytest.fail(f"the forked worker running {fn_name} gave no answer in 240 s")
    status, value = pickle.loads(parent.recv_bytes())
    proc.join(30)
    assert status == "ok", value
    return value


@pytest.fixture(scope="module")
def spec(lm):
    zerogpu.register("zerogpu-test", lm)
    return "zerogpu-test"


def _edit(lm) -> Edit:
    """A deterministic (untrained) edit of block 7's MLP: its weights scaled, enough to change readings."""
    mlp = lm.arch.mlps[7]
    params = {k: (v.detach().clone() * (3.0 if v.dim() == 2 else 1.0)) for k, v in mlp.named_parameters()}
    return Edit(layer=8, params=params, meta={"kind": "test"})


def test_capture_states_in_a_forked_worker_match_the_direct_call_and_the_model_outputs(lm, spec):
    ids = tokenize_prompt(lm, PROMPT)
    direct = zerogpu.capture_states(spec, ids)
    forked = in_forked_worker("capture_states", spec, ids)
    assert isinstance(forked, torch.Tensor) and forked.shape == (lm.n_layers + 1, len(ids), lm.hidden_size)
    # One thread in the worker (see zerogpu._fork_safe) sums in another order: equal up to float rounding.
    assert torch.allclose(forked, direct, rtol=1e-5, atol=1e-4)
    # Independent reference: transformers' own hidden states (its last one is after the final norm).
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    ref = torch.stack([h[0] for h in out.hidden_states[:-1]]).float()
    assert torch.allclose(forked[:-1], ref, atol=1e-4)


def test_generate_and_relevancy_in_a_forked_worker_match_the_direct_call(lm, spec):
    ids = tokenize_prompt(lm, PROMPT)
    states = zerogpu.capture_states(spec, ids)
    vectors = states[[10, 15], [3, 7]].clone()
    settings = make_settings(lm, "refers_to", max_new_tokens=8)
    d_ids, d_p, d_steps = zerogpu.generate_ids(spec, vectors, settings)
    f_ids, f_p, f_steps = in_forked_worker("generate_ids", spec, vectors, settings)
    assert f_ids == d_ids and f_steps == d_steps and all(len(r) > 0 for r in f_ids)
    assert torch.allclose(torch.tensor(f_p[0]), torch.tensor(d_p[0]), atol=1e-4)
    f_wo = in_forked_worker("score_without", spec, f_ids, settings)
    d_wo = zerogpu.score_without(spec, d_ids, settings)
    assert all(a == pytest.approx(b, abs=1e-4) for a, b in zip(f_wo, d_wo, strict=True))
    assert [len(r) for r in f_wo] == [len(r) for r in f_ids]


def test_an_edit_travels_as_a_payload_and_acts_in_the_worker(lm, spec):
    edit = _edit(lm)
    payload = zerogpu.state_payload(ModelState(edit=edit))
    pickle.loads(pickle.dumps(payload))  # plain tensors, lists and dicts only
    ids = tokenize_prompt(lm, PROMPT)
    forked = in_forked_worker("capture_states", spec, ids, payload)
    with applied(lm, edit):
        direct = zerogpu.capture_states(spec, ids)
    plain = zerogpu.capture_states(spec, ids)
    assert torch.allclose(forked, direct, rtol=1e-4, atol=1e-3)
    assert torch.allclose(forked[:8], plain[:8], rtol=1e-5, atol=1e-4) and not torch.allclose(forked[9], plain[9])


def test_the_app_routes_through_the_pure_functions_when_zerogpu_is_set(lm, monkeypatch):
    """With SPACES_ZERO_GPU set (and no ``spaces`` package here) the registry's explorer calls them."""
    from explorer.ui import explore
    from explorer.ui.session import AppConfig, ModelRegistry, Session

    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    calls: list[str] = []
    for name in ("_capture_gpu", "_generate_gpu", "_score_gpu"):
        real = getattr(zerogpu, name)
        monkeypatch.setattr(zerogpu, name, lambda *a, _r=real, _n=name: (calls.append(_n), _r(*a))[1])
    registry = ModelRegistry(AppConfig())
    sess = Session()
    explore.run_prompt(registry, sess, "default", PROMPT, False)
    settings = registry.get("default").settings("refers_to", max_new_tokens=6)
    for _view in explore.interpret_cells(registry, sess, [(15, 7)], settings, batch_size=1):
        pass
    assert calls[0] == "_capture_gpu" and "_generate_gpu" in calls and "_score_gpu" in calls
    cell = sess.results.get(15, 7)
    direct = zerogpu.generate_ids("default", sess.grid.hidden[15, 7][None], settings)[0][0]
    assert cell.generated_ids == direct


def _steering(lm) -> Steering:
    """A GCAV steering along a real direction of row 6 (a state minus the prompt's mean), strong enough
    to move every state of the prompt and so to change readings."""
    from explorer.core.grid import capture

    g = capture(lm, PROMPT)
    states = g.hidden[6, 1:].double()
    w = ((states[2] - states.mean(0)) / (states[2] - states.mean(0)).norm() * 0.05).numpy()
    probe = Probe(layer=6, w=w, b=float(-(states.numpy() @ w).max() - 3.0), accuracy=1.0, auc=1.0,
                  train_accuracy=1.0, typical_norm=float(states.norm(dim=-1).mean()), separation=1.0)
    return Steering((Concept("synthetic", lm.model_id, "last", {6: probe}),), ("add",), (0.9,), (6,))


def test_concept_steering_travels_to_the_worker_with_its_variant(lm, monkeypatch):
    """A session that only steers (no edit) reads through the GPU functions steered, as it reads directly."""
    from explorer.ui import explore
    from explorer.ui.session import AppConfig, ModelRegistry, Session

    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    seen: list[object] = []
    real = zerogpu._generate_gpu
    monkeypatch.setattr(zerogpu, "_generate_gpu", lambda *a: (seen.append(a[-1]), real(*a))[1])
    registry = ModelRegistry(AppConfig())
    steered, stock = Session(), Session()
    steered.concept_steer = _steering(lm)
    settings = registry.get("default").settings("refers_to", max_new_tokens=6)
    for s in (steered, stock):
        explore.run_prompt(registry, s, "default", PROMPT, False)
        for _view in explore.interpret_cells(registry, s, [(15, 7)], settings, batch_size=1):
            pass
    assert seen[0] is not None and seen[0]["steering"] is not None and seen[0]["edit"] is None
    assert seen[1] is None  # the stock session sends no state
    # The reading equals the same state read directly under the same steering, and differs from stock.
    with ModelState(steering=steered.concept_steer).applied(lm):
        direct = zerogpu.generate_ids("default", steered.grid.hidden[15, 7][None], settings)[0][0]
    assert steered.results.get(15, 7).generated_ids == direct
    assert steered.results.get(15, 7).generated_ids != stock.results.get(15, 7).generated_ids
    assert steered.results.get(15, 7).variant is not None and stock.results.get(15, 7).variant is None
