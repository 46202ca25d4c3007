"""The batch command as a user runs it: one process vs two under torchrun, a killed run resumed,
bad rows reported and skipped; plus the relative cell grammar and the input readers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from explorer.core.data import DATA_DIR
from explorer.core.errors import InputError
from explorer.methods.batch import parse_cell_spec, read_prompts
from explorer.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = DATA_DIR / "batch_prompts.txt"
# One cell per prompt and four new tokens keep the runs short; groups of 4 give 6 shards for 24 prompts.
ARGS = ["--cells", "15:last", "--max-new-tokens", "4", "--group-size", "4", "--batch-size", "8"]
# torchrun gives each process one thread; the single-process run gets the same, so arithmetic matches.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}


def batch_cmd(out: Path, *extra: str, prompts: Path = PROMPTS) -> list[str]:
    return ["-m", "explorer", "batch", "--prompts", str(prompts), "--out", str(out), *ARGS, *extra]


def run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def rows(path: Path) -> list[dict]:
    frame = pd.read_parquet(path).sort_values(["prompt_index", "layer", "token"])
    return json.loads(frame.to_json(orient="records"))


def shard_indices(out: Path) -> dict[str, list[int]]:
    return {p.name: pq.read_table(p, columns=["prompt_index"]).column(0).to_pylist()
            for p in sorted((out / "shards").glob("g*.parquet"))}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    r = run(batch_cmd(out))
    assert r.returncode == 0, r.stderr
    assert "24 prompts interpreted" in r.stdout and "prompts/s" in r.stdout
    return out


def test_single_process_reads_every_prompt(single):
    recs = rows(single / "results.parquet")
    lines = [x for x in PROMPTS.read_text().splitlines() if x.strip()]
    assert len(lines) >= 20
    assert [r["prompt_index"] for r in recs] == list(range(len(lines)))
    assert [r["prompt"] for r in recs] == lines
    assert all(r["layer"] == 15 and r["interpretation"] for r in recs)
    assert all(r["mean_relevancy"] == pytest.approx(sum(r["relevancy_score"]) / len(r["relevancy_score"]), abs=1e-5)
               for r in recs)
    # The same provenance columns as the CSV export of a single interpretation.
    for col in ("model_id", "dtype", "template", "k", "max_new_tokens", "chat_wrapped", "explorer_version"):
        assert col in recs[0]


def test_two_processes_under_torchrun_equal_one(single, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
             *batch_cmd(tmp_path)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "by 2 processes" in r.stdout
    shards = shard_indices(tmp_path)
    assert {n.split("-")[1] for n in shards} == {"r0", "r1"}  # both processes wrote shards
    assert rows(tmp_path / "results.parquet") == rows(single / "results.parquet")


def test_killed_run_resumes_without_redoing_prompts(single, tmp_path):
    proc = subprocess.Popen([sys.executable, *batch_cmd(tmp_path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not list((tmp_path / "shards").glob("g*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "results.parquet").exists()
    before = shard_indices(tmp_path)
    done_before = sum(len(v) for v in before.values())
    assert 0 < done_before < 24
    r = run(batch_cmd(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"{24 - done_before} prompts interpreted ({done_before} already done" in r.stdout
    after = shard_indices(tmp_path)
    assert all(after[name] == idx for name, idx in before.items())  # earlier shards untouched
    seen = [i for idx in after.values() for i in idx]
    assert sorted(seen) == list(range(24))  # every prompt in exactly one shard: none done twice
    assert rows(tmp_path / "results.parquet") == rows(single / "results.parquet")


def test_bad_rows_are_reported_and_skipped(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text("\n".join([
        json.dumps({"prompt": "The capital of France is"}),
        "{not json",
        json.dumps({"other": "no prompt here"}),
        json.dumps({"prompt": "Hi"}),  # too short for token 3
        json.dumps({"text": "The Eiffel Tower is in Paris"}),
    ]) + "\n")
    out = tmp_path / "out"
    r = run(["-m", "explorer", "batch", "--prompts", str(src), "--out", str(out), "--cells", "15:3",
             "--max-new-tokens", "3", "--no-relevancy"])
    assert r.returncode == 0, r.stderr
    recs = rows(out / "results.parquet")
    assert [x["prompt_index"] for x in recs] == [0, 4]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["prompt_index"] for e in errors] == [1, 2, 3]
    assert "not valid JSON" in errors[0]["error"] and "out of range" in errors[2]["error"]
    for i in (1, 2, 3):
        assert f"skipped prompt {i}:" in r.stderr
    assert "2 prompts interpreted (0 already done, 3 skipped as bad)" in r.stdout


def test_relative_cells_follow_each_prompt():
    n_rows, n_tokens = 31, 9
    # Naive expectations written out by hand.
    assert parse_cell_spec("last").resolve(n_rows, n_tokens) == [(layer, 8) for layer in range(31)]
    assert parse_cell_spec("15:last").resolve(n_rows, n_tokens) == [(15, 8)]
    assert parse_cell_spec("0..30/10:-2").resolve(n_rows, n_tokens) == [(0, 7), (10, 7), (20, 7), (30, 7)]
    assert parse_cell_spec("row:3").resolve(4, 3) == [(3, 0), (3, 1), (3, 2)]
    assert parse_cell_spec("col:1,2:1").resolve(3, 2) == [(0, 1), (1, 1), (2, 1)]
    assert parse_cell_spec("*:*").resolve(2, 2) == parse_cell_spec("all").resolve(2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(InputError, match="out of range"):
        parse_cell_spec("15:9").resolve(n_rows, n_tokens)
    for bad in ("", "15", "a:b", "5..2:last", "1:2:3"):
        with pytest.raises(InputError):
            parse_cell_spec(bad)


def test_readers_take_csv_and_parquet_columns(tmp_path):
    frame = pd.DataFrame({"id": [1, 2], "text": ["first prompt", "second, with a comma"]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.parquet"):
        got = [(r.index, r.prompt) for r in read_prompts(tmp_path / name)]
        assert got == [(0, "first prompt"), (1, "second, with a comma")]
    with pytest.raises(InputError, match="no 'prompt' or 'text' column"):
        list(read_prompts(_no_col(tmp_path)))


def _no_col(tmp_path: Path) -> Path:
    p = tmp_path / "q.csv"
    pd.DataFrame({"question": ["x"]}).to_csv(p, index=False)
    return p


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["batch", "--prompts", str(tmp_path / "missing.txt"), "--cells", "last", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: The prompts file '{tmp_path / 'missing.txt'}' does not exist."
