"""The load test's clients: what each simulated user does, and the single-user reference it must match.

Client ``i`` has a role (``ROLES[i % 6]``): every client runs its prompt and clicks cells (the
click-to-text latency is the time of one ``interpret`` call of one cell); then it also interprets
a row, applies a Supervised Control edit and reverts it, steers, exports its session and imports
it in a second connection, or starts a row job and disconnects in the middle of it.
"""

from __future__ import annotations

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
ROLES = ["click", "row", "edit", "steer", "import", "disconnect"]
EDIT_LAYER, EDIT_STEPS, ROW_LAYER, STEER = 10, 8, 12, ("love", "hate", 10, 0.5)
HTTPX = {"timeout": 600}  # a loaded server answers slowly; a client gives up only at the test's deadline
RAMP_S = 0.5  # client i arrives i x RAMP_S seconds after the first (users do not all click in one instant)


@dataclass
class ClientReport:
    name: str
    role: str
    prompt: str
    cells: list[tuple[int, int]]
    concept: str = ""
    click_latencies: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # phase -> what the server answered


def client_cells(index: int, n_tokens: int, n_cells: int) -> list[tuple[int, int]]:
    layers = [4 + (index * 3 + 5 * j) % 24 for j in range(n_cells)]
    return [(layer, (index + j) % n_tokens) for j, layer in enumerate(layers)]


def run_client(url: str, report: ClientReport, max_new_tokens: int, deadline: float, delay_s: float = 0.0) -> None:
    """One user's session through ``gradio_client``; failures are recorded, never raised."""
    from gradio_client import Client

    time.sleep(delay_s)
    client = None

    def call(api: str, *a, click: bool = False):
        if time.monotonic() > deadline:
            raise TimeoutError("deadline reached")
        t = time.perf_counter()
        try:
            return client.predict(*a, api_name=api)
        finally:
            (report.click_latencies if click else report.latencies).append(time.perf_counter() - t)

    def interpret(spec: str):
        return call("/interpret", spec, "refers_to", max_new_tokens, 16)

    try:
        client = Client(url, verbose=False, httpx_kwargs=HTTPX)
        call("/run", "default", report.prompt, False)
        report.results["stock"] = []
        for layer, token in report.cells:
            report.results["stock"] += call("/interpret", f"{layer}:{token}", "refers_to", max_new_tokens, 16,
                                            click=True)
        _role(report, call, interpret, client, url, max_new_tokens)
    except Exception as e:
        report.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
    finally:
        if client is not None:
            client.close()


def _role(report: ClientReport, call, interpret, client, url: str, max_new_tokens: int) -> None:
    spec = ",".join(f"{a}:{b}" for a, b in report.cells)
    if report.role == "row":
        report.results["row"] = call("/row", ROW_LAYER, "refers_to", max_new_tokens, 16)
    elif report.role == "edit":
        out = call("/supervised", EDIT_LAYER, report.cells[0][1], report.concept, EDIT_STEPS)
        report.results["edit_id"] = out["edit_id"]
        call("/run", "default", report.prompt, False)
        report.results["edited"] = interpret(spec)
        call("/revert")
        call("/run", "default", report.prompt, False)
        report.results["reverted"] = interpret(spec)
    elif report.role == "steer":
        report.results["steer"] = call("/steer", report.prompt, *STEER)
    elif report.role == "import":
        text = call("/export_session")
        from gradio_client import Client

        other = Client(url, verbose=False, httpx_kwargs=HTTPX)
        try:
            t = time.perf_counter()
            report.results["imported"] = other.predict(text, api_name="/import_session")
            report.results["imported_records"] = other.predict(spec, "refers_to", max_new_tokens, 16,
                                                               api_name="/interpret")
            report.latencies.append(time.perf_counter() - t)
        finally:
            other.close()
    elif report.role == "disconnect":
        job = client.submit(ROW_LAYER, "refers_to", max_new_tokens, 16, api_name="/row")
        time.sleep(1.5)
        job.cancel()
        report.results["disconnected"] = True


class MemorySampler:
    """Peak resident memory of this process (the server runs in it), sampled every ``every_s``."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.peak_mb = 0.0
        self.start_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
