"""The CLI contract, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_interpret_writes_json_records(tmp_path):
    out = tmp_path / "x.json"
    r = run_cli("interpret", "--prompt", "The Eiffel Tower is in the city of", "--cells", "15:7", "--out", str(out),
                "--max-new-tokens", "10")
    assert r.returncode == 0, r.stderr
    recs = json.loads(out.read_text())
    assert len(recs) == 1
    rec = recs[0]
    assert (rec["layer"], rec["token"], rec["token_decoded"]) == (15, 7, " city")
    assert rec["interpretation"].strip()
    assert isinstance(rec["relevancy_score"], list) and rec["relevancy_score"]
    assert abs(rec["mean_relevancy"] - sum(rec["relevancy_score"]) / len(rec["relevancy_score"])) < 1e-5


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    r = run_cli("interpret", "--prompt", "hello", "--cells", "99:0")
    assert r.returncode == 2
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "out of range" in lines[0]
    r = run_cli("interpret", "--prompt", "  ", "--all")
    assert r.returncode == 2 and "empty" in r.stderr
    r = run_cli("interpret", "--prompt", "hi", "--all", "--out", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and ".csv or .json" in r.stderr


def test_crossmodel_prints_the_r2_of_each_map(capsys):
    from explorer.tools.cli import main

    assert main(["crossmodel", "--layers", "10:10,2:25"]) == 0
    out = capsys.readouterr().out
    maps = json.loads(out.strip().splitlines()[-1])["maps"]
    assert [(m["source_layer"], m["reader_layer"]) for m in maps] == [(10, 10), (2, 25)]
    assert maps[0]["r2_heldout"] > 0.95 > maps[1]["r2_heldout"]
    assert main(["crossmodel", "--layers", "ten"]) == 2
    assert main(["crossmodel", "--layers", "10:99"]) == 2


def test_an_unwritable_output_path_is_one_error_line_before_any_work(tmp_path):
    (tmp_path / "dir.json").mkdir()
    for out, needle in [(tmp_path / "missing" / "x.json", "does not exist"), (tmp_path / "dir.json", "folder")]:
        r = run_cli("interpret", "--prompt", "hello", "--cells", "1:1", "--out", str(out))
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], r.stderr
    r = run_cli("evaluate", "--quick", "--out-dir", "/proc/no/such/dir")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error: --out-dir" in r.stderr
    r = run_cli("evaluate", "--quick", "--layers", "five", "--out-dir", str(tmp_path / "e"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--layers" in r.stderr
