"""Validators, the session-file schema, escaping, upload limits and stoppable jobs, without a server."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from explorer.core.errors import InputError
from explorer.methods.session_io import FORMAT, import_session
from explorer.ui import validate
from explorer.ui.background import JobSlots, iterate_in_thread, stream_callbacks

BAD_NUMBERS = [None, "", "abc", float("nan"), float("inf"), -float("inf"), "NaN", "1e999", True, [1], {"a": 1},
               10**400, 2.5]


def assert_clear(message: str) -> None:
    """One sentence for a user: no traceback, no exception class, no server path, no raw Gradio text."""
    assert message and "Traceback" not in message, message
    assert not re.search(r"\b\w*(Error|Exception)\b", message), message
    assert not re.search(r"(/tmp|/etc|/root|/home|site-packages|\.py\b)", message), message
    assert "preprocess" not in message and "gradio" not in message.lower(), message
    assert message.strip().endswith("."), message
    body = message.replace("e.g.", "eg").rstrip(".")
    assert not re.search(r"[.!?]\s+[A-Z]", body), f"more than one sentence: {message}"


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_as_int_refuses_every_malformed_value_with_one_sentence(value):
    with pytest.raises(InputError) as e:
        validate.as_int("layer", value, 0, 30)
    assert_clear(str(e.value))
    assert "layer" in str(e.value)


@pytest.mark.parametrize("value,expected", [(3, 3), ("7", 7), (7.0, 7), ("0", 0), (30, 30)])
def test_as_int_accepts_whole_numbers_in_range(value, expected):
    assert validate.as_int("layer", value, 0, 30) == expected


@pytest.mark.parametrize("value", [-1, 31, 1e30, -1e30])
def test_as_int_refuses_out_of_range(value):
    with pytest.raises(InputError, match="from 0 to 30"):
        validate.as_int("layer", value, 0, 30)


@pytest.mark.parametrize("value", [None, "", "abc", float("nan"), float("inf"), 1e30, -21, True, [0.5]])
def test_as_float_refuses_non_finite_and_out_of_range(value):
    with pytest.raises(InputError) as e:
        validate.as_float("alpha", value, -20, 20)
    assert_clear(str(e.value))


def test_as_float_accepts_finite_numbers():
    assert validate.as_float("alpha", "-2.5", -20, 20) == -2.5 and validate.as_float("alpha", 0, -20, 20) == 0.0


def test_prompt_length_is_refused_in_characters_before_tokenising(monkeypatch):
    import explorer.core.grid as grid_module

    calls = []
    monkeypatch.setattr(grid_module, "tokenize_prompt", lambda *a, **k: calls.append(1))
    with pytest.raises(InputError, match="at most 10240 characters"):
        validate.as_prompt("word " * 2_000_000, 512)
    assert calls == []
    with pytest.raises(InputError, match="must be text"):
        validate.as_prompt(["a list"], 512)
    assert validate.as_prompt("x" * 10240, 512) == "x" * 10240


def _session(**over) -> str:
    base = {"format": FORMAT, "model": "default", "prompt": "The Eiffel Tower", "chat": False, "settings": {},
            "provenance": {}, "edit": None,
            "results": [{"layer": 3, "token": 1, "token_decoded": " E", "interpretation": "a tower",
                         "generated_ids": [1, 2], "token_texts": ["a", " tower"], "relevancy_score": [0.1, 0.2]}]}
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not KeyError})


def _result(**over) -> list[dict]:
    r = {"layer": 3, "token": 1, "token_decoded": " E", "interpretation": "a tower", "generated_ids": [1],
         "token_texts": ["a"], "relevancy_score": [0.5]}
    r.update(over)
    return [{k: v for k, v in r.items() if v is not KeyError}]


CRAFTED = [
    ("not json", "{nope"), ("a list", "[1, 2]"), ("deep nesting", "[" * 100_000 + "]" * 100_000),
    ("wrong format", _session(format="something/9")), ("no model", _session(model=KeyError)),
    ("no prompt", _session(prompt=KeyError)), ("model is a number", _session(model=12)),
    ("prompt is a dict", _session(prompt={"a": 1})), ("empty prompt", _session(prompt="  ")),
    ("chat is text", _session(chat="yes")), ("settings is a list", _session(settings=[1])),
    ("settings nested", _session(settings={"a": {"b": 1}})), ("edit is text", _session(edit="x")),
    ("edit id is a dict", _session(edit={"edit_id": {"a": 1}})), ("results is a dict", _session(results={})),
    ("result is a number", _session(results=[5])), ("result without layer", _session(results=_result(layer=KeyError))),
    ("layer is text", _session(results=_result(layer="3"))), ("negative token", _session(results=_result(token=-1))),
    ("layer is a float", _session(results=_result(layer=2.5))),
    ("no interpretation", _session(results=_result(interpretation=KeyError))),
    ("ids not ints", _session(results=_result(generated_ids=["a"]))),
    ("relevancy NaN", _session(results=_result(relevancy_score=[float("nan")]))),
    ("relevancy text", _session(results=_result(relevancy_score="high"))),
    ("token_texts numbers", _session(results=_result(token_texts=[1, 2]))),
]


@pytest.mark.parametrize("name,text", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_session_file_is_answered_with_one_sentence(name, text):
    with pytest.raises(InputError) as e:
        import_session(text)
    assert_clear(str(e.value))


def test_a_valid_session_file_still_imports():
    snap = import_session(_session())
    assert snap.prompt == "The Eiffel Tower" and snap.results.get(3, 1).interpretation == "a tower"


def test_imported_prompt_and_model_are_escaped_in_the_status_line():
    from explorer.ui.session import AppConfig, ModelRegistry, Session
    from explorer.ui.sharing import restore

    registry = ModelRegistry(AppConfig())
    hostile = "<img src=x onerror=alert(1)> tower"
    view = restore(registry, Session(), _session(prompt=hostile, results=[]))
    assert "<img" not in view.status and "&lt;img src=x onerror=alert(1)&gt;" in view.status


def test_error_toasts_escape_what_the_user_typed():
    from explorer.ui.errors import user_error

    err = user_error(InputError("Could not load '<img src=x onerror=alert(1)>'."))
    assert "<img" not in err.message and "&lt;img src=x onerror=alert(1)&gt;" in err.message


def test_uploads_are_checked_by_size_on_disk_before_reading_and_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFIE_MAX_UPLOAD_MB", "0.01")  # 10 KiB
    big = tmp_path / "big.json"
    big.write_text("x" * 20_000)
    with pytest.raises(InputError, match="too large") as e:
        validate.read_upload_text(str(big), (".json",))
    assert_clear(str(e.value))
    assert not big.exists()  # refused uploads do not linger in the temp folder
    small = tmp_path / "small.json"
    small.write_text('{"a": 1}')
    assert validate.read_upload_text({"path": str(small)}, (".json",)) == '{"a": 1}'
    assert not small.exists()  # read, then deleted
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(InputError, match="json"):
        validate.read_upload_text(str(other), (".json",))


def test_an_edit_counts_against_the_session_memory_budget(lm):
    from explorer.methods.control import TrainSettings, concept_state, supervised_control
    from explorer.ui.session import Session

    s = Session()
    assert s.nbytes() == 0
    edit = supervised_control(lm, "The Eiffel Tower", 10, [2], concept_state(lm, "an elephant", 10),
                              TrainSettings(steps=1)).edit
    s.edit = edit
    params = sum(t.numel() * t.element_size() for t in edit.params.values())
    assert s.nbytes() == params and params > 1_000_000


def test_job_slots_are_a_real_limit_across_sessions():
    slots = JobSlots(2, "control jobs", wait_s=0.2)
    release = threading.Event()
    entered = []

    def hold():
        with slots.hold():
            entered.append(1)
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    while len(entered) < 2:
        time.sleep(0.01)
    assert slots.running == 2
    with pytest.raises(InputError, match="already running 2 control jobs") as e, slots.hold():
        pass
    assert_clear(str(e.value))
    release.set()
    for t in threads:
        t.join()
    assert slots.running == 0


def test_an_abandoned_training_job_stops_within_a_step_and_frees_its_slot(lm):
    """Closing the stream (what Gradio does when the client leaves) stops supervised training at its next
    step; before, the worker trained on to the end."""
    from explorer.methods.control import TrainSettings, concept_state, supervised_control

    target = concept_state(lm, "an elephant", 10)
    steps_done: list[int] = []
    slots = JobSlots(1)

    def train(cb):
        def on_step(step, loss, dist):
            steps_done.append(step)
            cb(step, loss, dist)
        return supervised_control(lm, "The Eiffel Tower is in Paris", 10, [3], target, TrainSettings(steps=100),
                                  on_step=on_step)

    stream = stream_callbacks(train, slots=slots, heartbeat_s=0.5)
    for kind, _value in stream:
        if kind == "step":
            break
    assert slots.running == 1
    stream.close()
    t0 = time.monotonic()
    while slots.running and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert slots.running == 0, "the training thread kept its slot"
    stopped_at = len(steps_done)
    time.sleep(1.0)
    assert len(steps_done) == stopped_at < 100  # no step after the stop


def test_a_job_past_its_time_limit_is_stopped_with_one_sentence():
    from explorer.core.stop import checkpoint

    def slow():
        for i in range(1000):
            time.sleep(0.01)
            checkpoint()
            yield i

    with pytest.raises(InputError.__mro__[1]) as e:  # ExplorerError
        for _ in iterate_in_thread(slow, time_limit_s=0.2):
            pass
    assert "time limit" in str(e.value)
    assert_clear(str(e.value))
