"""An ASGI guard in front of Gradio's API: malformed request bodies get a 422, not a 500.

Gradio expects ``{"data": [...]}`` on its call and queue endpoints and answers a server error to
anything else (a bare list, broken JSON). A fuzzer, a confused script or a hostile client should
get a clear client error instead, and never a traceback.
"""

from __future__ import annotations

import json

_GUARDED = ("/call/", "/queue/join", "/run/")
MAX_BODY = 4 * 2**20


class RequestGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not any(
                g in scope.get("path", "") for g in _GUARDED):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > MAX_BODY:
                await _reject(send, 413, "request body too large")
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        problem = _check(raw)
        if problem:
            await _reject(send, 422, problem)
            return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _check(raw: bytes) -> str | None:
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the request body is not valid JSON"
    if not isinstance(payload, dict):
        return "the request body must be a JSON object with a 'data' list"
    if "data" in payload and not isinstance(payload["data"], list):
        return "'data' must be a list"
    return None


async def _reject(send, status: int, detail: str) -> None:
    body = json.dumps({"error": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app_kwargs() -> dict:
    """Keyword arguments for ``launch(app_kwargs=...)`` installing the guard."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(RequestGuard)]}
