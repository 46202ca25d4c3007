"""``python -m explorer page-time``: how fast the page holds up in a real browser, as a class sees it.

Starts the app on a free loopback port (in this process, the model loaded first, as a server that is
already up), then opens the page in Debian's Chromium at 1366 x 768 several times, each in a fresh
browser context (no cache), and measures from the request for the page to: the gallery entry's grid
drawn; the colour menu's switch redrawn; a typed prompt's grid after Run. Prints one line per
opening, the medians, and last one JSON line. Needs Playwright (``make install-dev``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from explorer.core.errors import InputError

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
READY = ("r => { const gd = document.querySelector('#sx-grid .sx-plot');"
         " return gd && gd.dataset.ready === '1' && Number(gd.dataset.revision) > r; }")
REVISION = ("() => { const gd = document.querySelector('#sx-grid .sx-plot');"
            " return gd ? Number(gd.dataset.revision || 0) : 0; }")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--openings", type=int, default=5, help="fresh page openings to time")
    p.add_argument("--quick", action="store_true", help="2 openings")


def _one_opening(browser, url: str, prompt: str) -> dict:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(READY, arg=0, timeout=120_000)
        drawn = time.perf_counter() - t0
        before = page.evaluate(REVISION)
        t1 = time.perf_counter()
        page.click("#sx-colour input")
        page.locator("ul[role=listbox] li", has_text="rank of the final prediction").first.click()
        page.wait_for_function(READY, arg=before, timeout=120_000)
        switched = time.perf_counter() - t1
        before = page.evaluate(REVISION)
        page.fill("#sx-prompt textarea", prompt)
        t2 = time.perf_counter()
        page.click("#sx-run")
        page.wait_for_function(READY, arg=before, timeout=120_000)
        ran = time.perf_counter() - t2
        return {"grid_drawn_s": drawn, "colour_switch_s": switched, "run_s": ran}
    finally:
        context.close()


def run(args: argparse.Namespace) -> int:
    n = 2 if args.quick else args.openings
    if n < 1:
        raise InputError("--openings must be at least 1.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise InputError("page-time drives a browser through Playwright: run `make install-dev` first.") from e
    if not Path(CHROMIUM).exists():
        raise InputError(f"page-time needs Debian's Chromium at {CHROMIUM} (make install-browser).")
    from explorer.tools.loadtest import start_app

    url, demo = start_app()
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                for i in range(n):
                    row = _one_opening(browser, url, f"Opening number {i + 1} of the page timing")
                    rows.append(row)
                    print(f"opening {i + 1}: gallery grid drawn {row['grid_drawn_s']:.2f} s after the page was "
                          f"asked for; colour switch {row['colour_switch_s']:.2f} s; a new prompt's grid "
                          f"{row['run_s']:.2f} s after Run")
            finally:
                browser.close()
    finally:
        demo.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median of {n}: grid drawn {med['grid_drawn_s']:.2f} s (target < 3 s), colour switch "
          f"{med['colour_switch_s']:.2f} s, new prompt {med['run_s']:.2f} s")
    print(json.dumps({"openings": n, "viewport": "1366x768", **{f"median_{k}": round(v, 3) for k, v in med.items()},
                      "max_grid_drawn_s": round(max(r["grid_drawn_s"] for r in rows), 3)}))
    return 0
