"""Every endpoint of the running app under malformed values: one clear sentence each, never Gradio's
or Python's own text; uploads limited; jobs stop when their client leaves; abandoned sessions are freed."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.ui.test_validate import assert_clear

pytestmark = pytest.mark.browser

NUMBER_BAD = ["abc", [1, 2], {"a": 1}, True]
TEXT_BAD = [12, [1, 2], {"a": 1}, 2.5]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]  # raw JSON tokens


def _endpoints(demo) -> list[tuple[str, list]]:
    """(api name, input components) of every named endpoint of the app."""
    out = []
    for dep in demo.config["dependencies"]:
        name = dep.get("api_name")
        if name and dep.get("api_visibility", "public") != "private" and dep["inputs"]:
            out.append((name, [demo.blocks[i] for i in dep["inputs"]]))
    return out


def _default(block):
    import gradio as gr

    if isinstance(block, gr.State):
        return None
    if isinstance(block, (gr.Number, gr.Slider)):
        return block.value if isinstance(block.value, (int, float)) else 0
    if isinstance(block, gr.Checkbox):
        return False
    if isinstance(block, (gr.Dropdown, gr.Radio)):
        return block.value
    if isinstance(block, (gr.UploadButton, gr.File)):
        return None
    return block.value if isinstance(block.value, str) else ""


def _bad_values(block) -> list:
    import gradio as gr

    if isinstance(block, (gr.Number, gr.Slider)):
        return NUMBER_BAD
    if isinstance(block, (gr.Textbox, gr.Dropdown, gr.Radio)):
        extra = ["no such choice"] if isinstance(block, gr.Radio) else []
        return TEXT_BAD + extra
    if isinstance(block, gr.Checkbox):
        return ["abc", 1]
    if isinstance(block, (gr.UploadButton, gr.File)):
        return ["/etc/passwd", {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
                {"path": "/etc/hosts.json"}]
    return []


def _call(url: str, api: str, body: str) -> str:
    """POST a raw body to the call API and return the error sentence streamed back (or the status)."""
    r = httpx.post(f"{url}/gradio_api/call/{api}", content=body.encode(), timeout=30,
                   headers={"content-type": "application/json"})
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.json().get('error')}"
    event = r.json()["event_id"]
    text = httpx.get(f"{url}/gradio_api/call/{api}/{event}", timeout=60).text
    assert "event: error" in text, (api, body[:200], text[:300])
    data = text.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
    return json.loads(data)["error"]


def _cases(demo) -> list[tuple[str, int, str]]:
    """(api, input index, raw JSON body): every input of every endpoint gets a bad value of its kind (taken
    in turn from the kind's list, so every bad value is sent somewhere), and every number input also gets a
    non-finite one."""
    cases = []
    turn = 0
    for api, blocks in _endpoints(demo):
        base = [json.dumps(_default(b)) for b in blocks]
        for i, block in enumerate(blocks):
            kinds = _bad_values(block)
            values = [json.dumps(kinds[turn % len(kinds)])] if kinds else []
            if kinds is NUMBER_BAD:
                values.append(NON_FINITE[turn % len(NON_FINITE)])
            turn += 1
            for value in values:
                data = list(base)
                data[i] = value
                cases.append((api, i, '{"data": [' + ", ".join(data) + "]}"))
    return cases


def test_every_endpoint_refuses_values_of_the_wrong_type_with_one_sentence(app_demo, app_url):
    """Wrong types, non-finite numbers, unlisted choices and server paths, at every input of every endpoint:
    each is refused before the handler runs, with a sentence naming the input."""
    from concurrent.futures import ThreadPoolExecutor

    cases = _cases(app_demo)
    assert len(cases) > 100
    with ThreadPoolExecutor(8) as pool:
        messages = list(pool.map(lambda c: _call(app_url, c[0], c[2]), cases))
    for (api, i, body), message in zip(cases, messages):
        assert_clear(message)
        assert message.startswith("The value for") or "uploaded" in message, (api, i, body[:100], message)
        if any(tok in body for tok in NON_FINITE) and "must be a number" not in message:
            assert "finite number" in message, (api, i, message)


def _client(app_url):
    from gradio_client import Client

    return Client(app_url + "/", verbose=False)


PROMPT = "The Eiffel Tower is in the city of"
# endpoint -> valid arguments; every position gets each bad value of its kind in turn
VALID = {
    "/run": ["default", PROMPT, False],
    "/interpret": ["5:1", "refers_to", 6, 4],
    "/row": [5, "refers_to", 6, 4],
    "/supervised": [10, 3, "an elephant", 2],
    "/reinforcement": [PROMPT, 10, "Paris", 2],
    "/steer": [PROMPT, "love", "hate", 10, 0.5],
    "/import_session": ["{}"],
    "/on_compare": ["The cat", "The dog", "5,10", 6],
    "/on_cross": ["default", 10, "", "2", 6],
    "/on_eval": [10, 1, 10],
    "/on_preview": ["concept phrase", "an elephant", "", 0, 10],
}
RANGE_BAD = {  # values of the right type that no handler may accept
    "number": [-1, 1e30, -1e30, 10**20],
    "text": ["x" * 200_000],
}
SKIP = {("/steer", 4, -1)}  # alpha -1 is a valid steering strength


@pytest.mark.parametrize("api", list(VALID))
def test_every_endpoint_refuses_out_of_range_values_with_one_sentence(app_url, api):
    from gradio_client.exceptions import AppError

    client = _client(app_url)
    client.predict("default", PROMPT, False, api_name="/run")
    valid = VALID[api]
    for i, value in enumerate(valid):
        kind = "text" if isinstance(value, str) else "number" if not isinstance(value, bool) else None
        for bad in RANGE_BAD.get(kind, []):
            if (api, i, bad) in SKIP:
                continue
            args = list(valid)
            args[i] = bad
            with pytest.raises(AppError) as e:
                client.predict(*args, api_name=api)
            assert_clear(str(e.value))
    client.close()


def test_uploads_over_the_limit_are_refused_before_they_are_stored(app_url, monkeypatch):
    monkeypatch.setenv("SELFIE_MAX_UPLOAD_MB", "0.05")  # 50 KiB, read by the server on each request
    big = httpx.post(f"{app_url}/gradio_api/upload", files={"files": ("s.json", b"x" * 200_000)}, timeout=30)
    assert big.status_code == 413
    assert_clear(big.json()["error"])
    small = httpx.post(f"{app_url}/gradio_api/upload", files={"files": ("s.json", b"{}")}, timeout=30)
    assert small.status_code == 200


def test_a_reinforcement_job_stops_within_seconds_of_its_client_leaving(app_demo, app_url, monkeypatch):
    """Before, the server trained on at full CPU for minutes after the client left."""
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "1")
    registry = app_demo.sx_registry
    client = _client(app_url)
    job = client.submit("The Eiffel Tower is a famous landmark in Paris, France", 10, "Paris", 50,
                        api_name="/reinforcement")
    t0 = time.monotonic()
    while registry.control.running == 0 and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    assert registry.control.running == 1
    time.sleep(2)  # training is under way
    job.cancel()
    client.close()
    t_left = time.monotonic()
    while registry.control.running and time.monotonic() - t_left < 60:  # the CI machine may be loaded
        time.sleep(0.1)
    stopped_after = time.monotonic() - t_left
    assert registry.control.running == 0
    assert stopped_after < 45, f"the training ran on for {stopped_after:.1f} s"


def test_abandoned_api_sessions_return_their_memory(app_demo, app_url, monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "1")
    registry = app_demo.sx_registry
    clients = [_client(app_url) for _ in range(3)]
    prompts = [f"{PROMPT} number {i}" for i in range(3)]
    for c, prompt in zip(clients, prompts):
        c.predict("default", prompt, False, api_name="/run")
        c.predict("5:1", "refers_to", 4, 4, api_name="/interpret")
        c.predict(10, 3, "an elephant", 2, api_name="/supervised")
    # Other tests' pages may come and go meanwhile: follow these three clients' own sessions.
    held = [s for s in list(registry._by_connection.values())
            if s.grid is not None and s.grid.prompt in prompts and s.edit is not None]
    assert len(held) == 3 and all(s.nbytes() > 0 for s in held)
    for c in clients:
        c.close()
    t0 = time.monotonic()
    while any(s in registry._by_connection.values() for s in held) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert not any(s in registry._by_connection.values() for s in held)
    assert all(s.closed and s.grid is None and s.edit is None and s.nbytes() == 0 for s in held)
    ids = {s.session_id for s in held}
    assert not ids & set(registry.budget._sessions)


def test_an_imported_hostile_session_shows_as_text_in_the_page(page, tmp_path):
    """The prompt and model of an imported session are shown as text, never inserted as HTML."""
    session = {"format": "selfie-explorer-session/1", "model": "default", "chat": False, "settings": {},
               "provenance": {}, "edit": None, "results": [],
               "prompt": "<img src=http://127.0.0.2/x.png onerror=window.sxHacked=1> tower"}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(session))
    with page.expect_file_chooser() as fc:
        page.get_by_text("Share this session").click()
        page.get_by_role("button", name="Import session").click()
    fc.value.set_files(str(path))
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('Imported')",
                           timeout=60_000)
    status = page.inner_text("#sx-status")
    assert "<img src=http://127.0.0.2/x.png" in status  # shown as the text it is
    assert page.evaluate("() => document.querySelectorAll('#sx-status img').length") == 0
    assert page.evaluate("() => window.sxHacked === undefined")
    assert not [u for u in page.requests.urls if "127.0.0.2" in u]

