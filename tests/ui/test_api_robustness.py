"""The app's HTTP API under bad input, random payloads and concurrent users: clear errors, no crash,
no mixing of sessions."""

from __future__ import annotations

import json
import random
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.ui.explore import settings_from_ui

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url + "/", verbose=False)


def test_bad_input_gets_clear_messages_and_the_server_stays_up(client):
    from gradio_client.exceptions import AppError

    cases = [
        ("/run", ("default", "", False), "empty"),
        ("/run", ("default", "word " * 600, False), "limit"),
        ("/run", ("no-such-org/no-such-model", "hello", False), "no-such-org/no-such-model"),
        ("/run", ("/etc/passwd.gguf", "hello", False), "operator"),
    ]
    for api, args, needle in cases:
        with pytest.raises(AppError) as e:
            client.predict(*args, api_name=api)
        assert needle in str(e.value), (api, args, str(e.value))
    with pytest.raises(AppError, match="Run a prompt first"):
        client.predict("1:1", "refers_to", 8, 4, api_name="/interpret")
    client.predict("default", "The Eiffel Tower is in the city of", False, api_name="/run")
    for cells, needle in [("99:0", "out of range"), ("x", "not a cell"), ("", "No cells")]:
        with pytest.raises(AppError, match=needle):
            client.predict(cells, "refers_to", 8, 4, api_name="/interpret")
    for template, mx, bs, needle in [("nope", 8, 4, "Unknown template"), ("refers_to", 0, 4, "max new tokens"),
                                     ("refers_to", 10**9, 4, "max new tokens"), ("refers_to", 8, -1, "batch size")]:
        with pytest.raises(AppError, match=needle):
            client.predict("1:1", template, mx, bs, api_name="/interpret")
    recs = client.predict("15:7", "refers_to", 6, 4, api_name="/interpret")
    assert recs[0]["layer"] == 15 and recs[0]["interpretation"]


def test_sessions_do_not_mix(app_url):
    from gradio_client import Client

    a, b = Client(app_url + "/", verbose=False), Client(app_url + "/", verbose=False)
    a.predict("default", "The Eiffel Tower is in the city of", False, api_name="/run")
    b.predict("default", "My favourite fruit is a ripe banana", False, api_name="/run")
    ra = a.predict("5:1", "refers_to", 6, 4, api_name="/interpret")
    rb = b.predict("5:1", "refers_to", 6, 4, api_name="/interpret")
    assert ra[0]["prompt"] != rb[0]["prompt"]
    assert ra[0]["token_decoded"] == " E" and rb[0]["token_decoded"] == " favourite"
    out = a.predict(10, 3, "an elephant", 6, api_name="/supervised")
    assert out["edit_id"].startswith("edit-")
    rb2 = b.predict("12:1", "refers_to", 6, 4, api_name="/interpret")  # b sees the stock model
    from explorer.api import Explorer
    from explorer.core.models import load_model

    ex = Explorer(load_model())
    ref = ex.interpret(ex.run("My favourite fruit is a ripe banana"), "12:1", max_new_tokens=6).records()[0]
    assert rb2[0]["interpretation"] == ref["interpretation"]
    a.predict(api_name="/revert")


def _post(url: str, payload: bytes) -> int:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_random_http_payloads_never_cause_a_server_error(app_url):
    rng = random.Random(0)
    atoms = [None, True, -1, 0, 10**12, 3.5, float("inf"), "", "x" * 5000, "15:7", "\x00\u202e🚀", [], {}, [1, 2]]
    endpoints = ["run", "interpret", "supervised", "revert"]
    for i in range(60):
        data = [rng.choice(atoms) for _ in range(rng.randint(0, 6))]
        body = rng.choice([json.dumps({"data": data}), json.dumps(data), "{not json", json.dumps({"data": "x"}), ""])
        status = _post(f"{app_url}/gradio_api/call/{rng.choice(endpoints)}", body.encode("utf-8", "surrogatepass"))
        assert status < 500, (i, body[:200], status)
    with urllib.request.urlopen(app_url, timeout=30) as r:
        assert r.status == 200


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                                 st.text(max_size=30)), min_size=4, max_size=4))
def test_settings_validator_accepts_or_rejects_clearly(lm, values):
    """Property: widget values either make valid settings or raise InputError, never anything else."""
    from explorer.api import Explorer
    from explorer.core.errors import InputError

    ex = Explorer(lm)
    try:
        s = settings_from_ui(ex, "refers_to", "", "", *values)
    except InputError as e:
        assert str(e)
    else:
        assert 1 <= s.max_new_tokens <= 256 and 0 <= s.k < lm.n_layers and 1 <= s.n_placeholders <= 64
