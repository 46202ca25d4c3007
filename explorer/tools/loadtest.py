"""``python -m explorer loadtest``: many concurrent users against a real app on 127.0.0.1.

Starts the app in this process on a free loopback port, then runs N clients through
``gradio_client`` at once (roles in :mod:`explorer.tools.loadtest_clients`: clicks, rows, edit and
revert, steering, session export/import, disconnecting mid-job). Each client's results are compared
with the same work done single-user through the Python API (no mixing between users, no leaked
edit). Reports errors, click-to-text p50/p95, peak memory of the process serving the app, and
what the server still holds once every client has left. Only loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

from explorer.tools.loadtest_clients import (
    EDIT_CONCEPTS,
    EDIT_LAYER,
    EDIT_STEPS,
    PROMPTS,
    RAMP_S,
    ROLES,
    ROW_LAYER,
    STEER,
    ClientReport,
    MemorySampler,
    client_cells,
    run_client,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cells", type=int, default=2, help="cells each client clicks")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--deadline", type=float, default=900, help="seconds before the test gives up")
    p.add_argument("--quick", action="store_true", help="6 clients (one per role), 1 cell")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app():
    """The real app on 127.0.0.1 (in this process); returns (url, demo)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from explorer.ui.app import CSS, build_app
    from explorer.ui.guard import app_kwargs

    demo = build_app()
    demo.sx_registry.get(demo.sx_config.default_model)
    demo.queue(default_concurrency_limit=4, max_size=128)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, quiet=True,
                app_kwargs=app_kwargs())
    return f"http://127.0.0.1:{port}/", demo


def expected_results(lm, prompt: str, cells, max_new_tokens: int, edit=None) -> list[dict]:
    """The same work single-user through the Python API (the reference)."""
    from explorer.api import Explorer
    from explorer.methods.control import applied

    ex = Explorer(lm)
    with applied(lm, edit):
        grid = ex.run(prompt)
        res = ex.interpret(grid, cells, template="refers_to", max_new_tokens=max_new_tokens, batch_size=len(cells))
    return res.records()


def same(a: list[dict], b: list[dict], atol: float = 1e-3) -> bool:
    ka = {(r["layer"], r["token"]): r for r in a}
    kb = {(r["layer"], r["token"]): r for r in b}
    if ka.keys() != kb.keys():
        return False
    for key, r in ka.items():
        o = kb[key]
        if r["interpretation"] != o["interpretation"] or r["generated_ids"] != o["generated_ids"]:
            return False
        if any(abs(x - y) > atol for x, y in zip(r["relevancy_score"], o["relevancy_score"])):
            return False
    return True


def run(args: argparse.Namespace) -> int:
    result = loadtest(clients=6 if args.quick else args.clients, n_cells=1 if args.quick else args.cells,
                      max_new_tokens=args.max_new_tokens, deadline_s=args.deadline)
    print(json.dumps(result))
    return 0 if result["errors"] == 0 and result["all_equal"] else 1


def loadtest(*, clients: int = 8, n_cells: int = 2, max_new_tokens: int = 8, deadline_s: float = 900,
             log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Run the clients, then check each against its single-user reference; returns the JSON report."""
    from explorer.core.grid import tokenize_prompt
    from explorer.core.models import load_model

    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "1")  # notice departed clients within seconds
    lm = load_model()
    url, demo = start_app()
    registry = demo.sx_registry
    log(f"app on {url}; {clients} clients")
    reports = []
    for i in range(clients):
        prompt = PROMPTS[i % len(PROMPTS)]
        cells = client_cells(i, len(tokenize_prompt(lm, prompt)), n_cells)
        reports.append(ClientReport(f"client-{i}", ROLES[i % len(ROLES)], prompt, cells,
                                    EDIT_CONCEPTS[i % len(EDIT_CONCEPTS)]))
    deadline = time.monotonic() + deadline_s
    t0 = time.perf_counter()
    with MemorySampler() as memory:
        threads = [threading.Thread(target=run_client, args=(url, r, max_new_tokens, deadline, i * RAMP_S))
                   for i, r in enumerate(reports)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic() + 30))
        wall = time.perf_counter() - t0
        held = _wait_released(registry, 30)
    demo.close()
    log(f"clients done in {wall:.0f} s; checking against single-user results")
    checks = [False if r.errors else check_client(lm, r, max_new_tokens) for r in reports]
    clicks = sorted(x for r in reports for x in r.click_latencies)
    everything = sorted(clicks + [x for r in reports for x in r.latencies])
    out = {
        "clients": clients, "requests": len(everything), "clicks": len(clicks),
        "errors": sum(len(r.errors) for r in reports),
        "p50_s": _quantile(clicks, 0.5), "p95_s": _quantile(clicks, 0.95),
        "all_requests_p50_s": _quantile(everything, 0.5), "all_requests_p95_s": _quantile(everything, 0.95),
        "wall_s": round(wall, 1), "server_rss_start_mb": round(memory.start_mb), "server_rss_peak_mb": round(memory.peak_mb),
        "sessions_held_after": held, "control_jobs_running_after": registry.control.running,
        "all_equal": all(checks), "equal_per_client": checks, "roles": [r.role for r in reports],
        "error_messages": [f"{r.name} ({r.role}): {e}" for r in reports for e in r.errors][:5],
    }
    log(f"requests {out['requests']}, errors {out['errors']}, click p50 {out['p50_s']} s, p95 {out['p95_s']} s, "
        f"peak RSS {out['server_rss_peak_mb']} MB, every client equal to its single-user results: {out['all_equal']}")
    return out


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(statistics.median(values) if q == 0.5 else values[min(len(values) - 1, int(q * len(values)))], 2)


def _wait_released(registry, timeout_s: float) -> int:
    """Sessions the server still binds to a connection, once the clients left (waits up to ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and (registry.held_sessions() or registry.control.running):
        time.sleep(0.5)
    return registry.held_sessions()


def check_client(lm, r: ClientReport, max_new_tokens: int) -> bool:
    """Whether everything the server answered this client equals the single-user reference."""
    from explorer.core.grid import tokenize_prompt
    from explorer.methods.control import Edit, TrainSettings, concept_state, steer, steering_vector, supervised_control

    ok = same(r.results["stock"], expected_results(lm, r.prompt, r.cells, max_new_tokens))
    if r.role == "row":
        row = [(ROW_LAYER, t) for t in range(len(tokenize_prompt(lm, r.prompt)))]
        ok = ok and same(r.results["row"], expected_results(lm, r.prompt, row, max_new_tokens))
    elif r.role == "edit":
        target = concept_state(lm, r.concept, EDIT_LAYER)
        edit: Edit = supervised_control(lm, r.prompt, EDIT_LAYER, [r.cells[0][1]], target,
                                        TrainSettings(EDIT_STEPS, 2e-3, 10.0)).edit
        ok = ok and edit.edit_id == r.results["edit_id"]
        ok = ok and same(r.results["edited"], expected_results(lm, r.prompt, r.cells, max_new_tokens, edit))
        ok = ok and same(r.results["reverted"], r.results["stock"])
    elif r.role == "steer":
        a, b, layer, alpha = STEER
        ref = steer(lm, r.prompt, steering_vector(lm, a, b, layer), layer, alpha)
        ok = ok and r.results["steer"] == {"before": ref["before"], "after": ref["after"]}
    elif r.role == "import":
        ok = ok and r.results["imported"]["results"] == len(r.results["stock"])
        ok = ok and same(r.results["imported_records"], r.results["stock"])
    return ok
