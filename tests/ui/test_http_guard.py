"""Raw HTTP against the running app on 127.0.0.1: an address too long for Gradio, and function indices or
endpoint names the app does not have, each get a prompt 4xx reply with one sentence (no bare 500, no
request left without an answer)."""

from __future__ import annotations

import http.client
import json
import urllib.parse

import httpx
import pytest

from tests.ui.test_validate import assert_clear

pytestmark = pytest.mark.browser

LONG_QUERY = "?x=" + "a" * 70_000  # httpx, which Gradio uses to rebuild the URL, refuses URLs over 64 KiB
TIMEOUT = httpx.Timeout(20.0)


def _raw(url: str, method: str, target: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one request; http.client, since httpx refuses to send a URL this long."""
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=20)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("content-type", ""), r.read().decode()
    finally:
        conn.close()


def _post(url: str, body: dict | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(url, content=content.encode(), headers={"content-type": "application/json"}, timeout=TIMEOUT)


def _run_body(fn_index) -> dict:
    return {"data": ["default", "hello", False], "fn_index": fn_index, "session_hash": "guardtest01"}


def test_an_address_too_long_gets_a_prompt_414_with_one_sentence(app_url, app_demo):
    """Before: queue/join accepted the job and never answered it (the server logged httpx.InvalidURL);
    ``GET /`` gave a bare 500."""
    fn = next(i for i, f in app_demo.fns.items() if f.api_name == "run")
    status, kind, text = _raw(app_url, "POST", "/gradio_api/queue/join" + LONG_QUERY,
                              json.dumps(_run_body(fn)).encode(), {"content-type": "application/json"})
    assert status == 414, (status, text[:200])
    sentence = json.loads(text)["error"]
    assert_clear(sentence)
    assert "too long" in sentence
    status, kind, text = _raw(app_url, "GET", "/" + LONG_QUERY, headers={"accept": "text/html"})
    assert status == 414 and kind.startswith("text/plain"), (status, kind, text[:200])
    assert text.strip() == sentence
    status, kind, text = _raw(app_url, "GET", "/gradio_api/info" + LONG_QUERY)
    assert status == 414 and json.loads(text)["error"] == sentence
    # a short query string still gets the page
    assert httpx.get(f"{app_url}/?session=nothing-here", timeout=TIMEOUT).status_code == 200


def test_unknown_function_indices_and_endpoint_names_get_a_4xx_sentence(app_url, app_demo):
    """Before: fn_index 99999 or -1 gave a bare 500 (KeyError) on queue/join and /run; so did an unknown
    endpoint name on /run and /call."""
    known = max(app_demo.fns)
    cases = [
        ("queue/join", {**_run_body(99999)}, 404, "'fn_index' 99999 names no function of this app"),
        ("queue/join", {**_run_body(-1)}, 404, "'fn_index' -1 names no function of this app"),
        ("queue/join", {**_run_body(known + 1)}, 404, f"'fn_index' {known + 1} names no function"),
        ("run/run", {**_run_body(99999)}, 404, "'fn_index' 99999 names no function of this app"),
        ("run/run", {**_run_body(-1)}, 404, "'fn_index' -1 names no function of this app"),
        ("queue/join", {**_run_body(True)}, 422, "'fn_index' must be a whole number"),
        ("run/no_such_endpoint", {"data": []}, 404, "no API endpoint named 'no_such_endpoint'"),
        ("call/no_such_endpoint", {"data": []}, 404, "no API endpoint named 'no_such_endpoint'"),
        ("call/v2/no_such_endpoint", {}, 404, "no API endpoint named 'no_such_endpoint'"),
    ]
    for path, body, status, words in cases:
        r = _post(f"{app_url}/gradio_api/{path}", body)
        assert r.status_code == status, (path, body.get("fn_index"), r.status_code, r.text[:200])
        message = r.json()["error"]
        assert_clear(message)
        assert words in message, (path, message)
    # a known index is still served: queue/join hands out an event id
    run = next(i for i, f in app_demo.fns.items() if f.api_name == "run")
    ok = _post(f"{app_url}/gradio_api/queue/join", _run_body(run))
    assert ok.status_code == 200 and ok.json()["event_id"]


def test_uploads_are_counted_per_client_and_in_bytes_per_minute():
    from explorer.ui.guard import UploadLedger

    ledger = UploadLedger(per_client=3, window_mb=1.0, window_s=60)
    assert [ledger.admit("10.0.0.1", 10) for _ in range(3)] == [None, None, None]
    refused = ledger.admit("10.0.0.1", 10)
    assert refused is not None and "3 a minute" in refused
    assert ledger.admit("10.0.0.2", 10) is None  # another address has its own count
    assert "too many uploads right now" in (ledger.admit("10.0.0.3", 2**20) or "")  # the minute's bytes are spent
    ledger.window_s = 0.0  # the minute passes
    assert ledger.admit("10.0.0.1", 10) is None


def test_an_exported_session_with_an_edit_uploads_back_through_the_page(app_demo, app_url):
    """A session file with a control edit carries one MLP's weights (about 14 MB for the embedded model):
    more than the 8 MB default, and the server still takes it back, since it exported it."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "explorer" / "data" / "gallery" / "08_control_edit.json"
    assert path.stat().st_size > 8 * 2**20
    with path.open("rb") as f:
        r = httpx.post(f"{app_url}/gradio_api/upload", files={"files": ("s.json", f)}, timeout=60)
    assert r.status_code == 200, r.text
    stored = Path(r.json()[0])
    assert stored.stat().st_size == path.stat().st_size
    stored.unlink()
