"""A real app on 127.0.0.1 and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make install-browser).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def app_demo():
    """The running app's Blocks (``.sx_registry`` is its model registry) with ``.sx_url``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from explorer.ui.app import CSS, build_app
    from explorer.ui.guard import app_kwargs

    demo = build_app()
    demo.sx_registry.get("default")
    demo.queue(default_concurrency_limit=4, max_size=64)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, quiet=True,
                app_kwargs=app_kwargs())
    demo.sx_url = f"http://127.0.0.1:{port}"
    yield demo
    demo.close()


@pytest.fixture(scope="session")
def app_url(app_demo):
    return app_demo.sx_url


class RequestLog:
    """Every URL the page asked for; ``foreign()`` lists those not on this machine."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def foreign(self) -> list[str]:
        out = []
        for u in self.urls:
            parsed = urllib.parse.urlparse(u)
            if parsed.scheme in ("data", "blob", "about"):
                continue
            if parsed.hostname not in LOCAL_HOSTS:
                out.append(u)
        return out


def open_page(browser, url: str, width: int = 1400, height: int = 1600):
    """A fresh browser context and page on ``url``, once the app has finished its page-load event."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    pg = context.new_page()
    log = RequestLog()
    pg.on("request", lambda r: log.urls.append(r.url))
    pg.requests = log  # type: ignore[attr-defined]
    pg.goto(url)
    pg.wait_for_selector("#sx-page-loaded [data-loaded='1']", state="attached", timeout=60_000)
    return context, pg


@pytest.fixture
def page(browser, app_url):
    """The page opened empty (``?gallery=none``): a test's own Run is the only thing that draws the grid."""
    context, pg = open_page(browser, f"{app_url}/?gallery=none")
    yield pg
    context.close()


@pytest.fixture
def gallery_page(browser, app_url):
    """The page as a visitor first sees it: opened on the first gallery entry, drawn."""
    context, pg = open_page(browser, app_url)
    grid_ready(pg)
    yield pg
    context.close()


def grid_ready(page, revision: int = 0) -> None:
    page.wait_for_function(
        "r => { const gd = document.querySelector('#sx-grid .sx-plot');"
        " return gd && gd.dataset.ready === '1' && Number(gd.dataset.revision) > r; }", arg=revision,
        timeout=60_000)


def revision(page) -> int:
    return int(page.evaluate("() => { const gd = document.querySelector('#sx-grid .sx-plot');"
                             " return gd ? Number(gd.dataset.revision || 0) : 0; }"))


def run_prompt(page, text: str) -> None:
    """Type ``text``, press Run, and wait for the redraw this Run makes (not any earlier one)."""
    before = revision(page)
    page.fill("#sx-prompt textarea", text)
    page.click("#sx-run")
    grid_ready(page, before)


def cell_point(page, layer: int, token: int) -> tuple[float, float]:
    """The viewport pixel of a heatmap cell, from the figure's own axes, after scrolling it into view
    (as a person would scroll to the cell before clicking it)."""
    return tuple(page.evaluate(
        """([l, t]) => { const gd = document.querySelector('#sx-grid .sx-plot'); const L = gd._fullLayout;
        let r = gd.getBoundingClientRect();
        const y0 = r.top + L._size.t + L.yaxis.d2p(l), x0 = r.left + L._size.l + L.xaxis.d2p(t);
        if (y0 < 0 || y0 > window.innerHeight) { window.scrollBy(0, y0 - window.innerHeight / 2); }
        const box = gd.closest('.sx-scroll');
        if (box && (x0 < box.getBoundingClientRect().left || x0 > box.getBoundingClientRect().right)) {
          box.scrollLeft += x0 - (box.getBoundingClientRect().left + box.clientWidth / 2); }
        r = gd.getBoundingClientRect();
        return [r.left + L._size.l + L.xaxis.d2p(t), r.top + L._size.t + L.yaxis.d2p(l)]; }""", [layer, token]))


def click_cell(page, layer: int, token: int) -> None:
    """Click a heatmap cell at the pixel its own axes give for (token, layer)."""
    x, y = cell_point(page, layer, token)
    page.mouse.click(x, y)


def overlay_value(page, layer: int, token: int):
    """The relevancy overlay's z and hover text at a cell (None if not interpreted)."""
    return page.evaluate(
        """([l, t]) => { const gd = document.querySelector('#sx-grid .sx-plot');
        const tr = gd.data.find(d => d.name === 'relevancy'); if (!tr) return null;
        const j = tr.x.indexOf(t); const z = tr.z[l][j]; return z === null ? null : [z, tr.text[l][j]]; }""",
        [layer, token])
