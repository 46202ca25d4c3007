"""``python -m explorer loadtest``: many concurrent users against a real app on 127.0.0.1.

Starts the app in this process on a free loopback port, then runs N clients through
``gradio_client`` at once, each with its own prompt, grid and interpretations; every other client
also applies a Supervised Control edit and interprets again. Each client's results are compared
with the same work done single-user through the Python API (no mixing between users, no leaked
edit). Bounded: a fixed number of requests per client and an overall deadline. Only loopback.
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
from dataclasses import dataclass, field

PROMPTS = [
    "The Eiffel Tower is in the city of",
    "My favourite fruit is a ripe banana",
    "The doctor examined the patient carefully",
    "She drank a cup of hot coffee this morning",
    "The children played football in the park",
    "Water boils at one hundred degrees",
    "The capital of Japan is Tokyo",
    "A violin has four strings",
    "The rocket launched into space at dawn",
    "He wrote a long letter to his grandmother",
]
EDIT_CONCEPTS = ["an elephant", "the ocean", "a violin", "snow and ice", "a computer"]


@dataclass
class ClientReport:
    name: str
    prompt: str
    edited: bool
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # phase -> list of records


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--cells", type=int, default=4, help="cells interpreted per client per phase")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--deadline", type=float, default=900, help="seconds before the test gives up")
    p.add_argument("--quick", action="store_true", help="4 clients, 2 cells")


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


def client_cells(index: int, n_tokens: int, n_cells: int) -> list[tuple[int, int]]:
    layers = [4 + (index * 3 + 5 * j) % 24 for j in range(n_cells)]
    return [(layer, (index + j) % n_tokens) for j, layer in enumerate(layers)]


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


def run_client(url: str, index: int, args, report: ClientReport, deadline: float) -> None:
    from gradio_client import Client

    def call(api: str, *a):
        if time.monotonic() > deadline:
            raise TimeoutError("deadline reached")
        t = time.perf_counter()
        try:
            return client.predict(*a, api_name=api)
        finally:
            report.latencies.append(time.perf_counter() - t)

    try:
        client = Client(url, verbose=False)
        call("/run", "default", report.prompt, False)
        cells = report.results["cells"]
        spec = ",".join(f"{a}:{b}" for a, b in cells)
        report.results["stock"] = call("/interpret", spec, "refers_to", args.max_new_tokens, 16)
        if report.edited:
            out = call("/supervised", 10, cells[0][1], EDIT_CONCEPTS[index % len(EDIT_CONCEPTS)], 10)
            report.results["edit_id"] = out["edit_id"]
            call("/run", "default", report.prompt, False)
            report.results["edited"] = call("/interpret", spec, "refers_to", args.max_new_tokens, 16)
            call("/revert")
            call("/run", "default", report.prompt, False)
            report.results["reverted"] = call("/interpret", spec, "refers_to", args.max_new_tokens, 16)
    except Exception as e:
        report.errors.append(f"{type(e).__name__}: {str(e)[:200]}")


def run(args: argparse.Namespace) -> int:
    result = loadtest(clients=4 if args.quick else args.clients, n_cells=2 if args.quick else args.cells,
                      max_new_tokens=args.max_new_tokens, deadline_s=args.deadline)
    print(json.dumps(result))
    return 0 if result["errors"] == 0 and result["all_equal"] else 1


def loadtest(*, clients: int = 8, n_cells: int = 4, max_new_tokens: int = 8, deadline_s: float = 900,
             log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    from explorer.core.grid import tokenize_prompt
    from explorer.core.models import load_model
    from explorer.methods.control import Edit, TrainSettings, concept_state, supervised_control

    lm = load_model()
    url, demo = start_app()
    log(f"app on {url}; {clients} clients")
    reports = []
    for i in range(clients):
        prompt = PROMPTS[i % len(PROMPTS)]
        n_tokens = len(tokenize_prompt(lm, prompt))
        r = ClientReport(name=f"client-{i}", prompt=prompt, edited=i % 2 == 1)
        r.results["cells"] = client_cells(i, n_tokens, n_cells)
        reports.append(r)
    deadline = time.monotonic() + deadline_s
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run_client, args=(url, i, argparse.Namespace(max_new_tokens=max_new_tokens),
                                                            reports[i], deadline)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 30))
    wall = time.perf_counter() - t0
    demo.close()
    log(f"clients done in {wall:.0f} s; checking against single-user results")
    checks = []
    for i, r in enumerate(reports):
        if r.errors:
            checks.append(False)
            continue
        ok = same(r.results["stock"], expected_results(lm, r.prompt, r.results["cells"], max_new_tokens))
        if r.edited:
            tokens = [r.results["cells"][0][1]]
            target = concept_state(lm, EDIT_CONCEPTS[i % len(EDIT_CONCEPTS)], 10)
            edit: Edit = supervised_control(lm, r.prompt, 10, tokens, target, TrainSettings(10, 2e-3, 10.0)).edit
            ok = ok and edit.edit_id == r.results["edit_id"]
            ok = ok and same(r.results["edited"], expected_results(lm, r.prompt, r.results["cells"], max_new_tokens,
                                                                   edit))
            ok = ok and same(r.results["reverted"], r.results["stock"])
        checks.append(ok)
    lat = sorted(x for r in reports for x in r.latencies)
    out = {
        "clients": clients, "requests": len(lat), "errors": sum(len(r.errors) for r in reports),
        "p50_s": statistics.median(lat) if lat else None,
        "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
        "wall_s": wall, "all_equal": all(checks), "equal_per_client": checks,
        "error_messages": [e for r in reports for e in r.errors][:5],
    }
    log(f"requests {out['requests']}, errors {out['errors']}, p50 {out['p50_s']:.2f} s, p95 {out['p95_s']:.2f} s, "
        f"every client equal to its single-user results: {out['all_equal']}")
    return out
