"""Bad input on the command line, run as a user would: one ``error:`` sentence, exit 2, no traceback,
and nothing computed before a check that could have been made first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
DEPTH = 100_000  # far past Python's recursion limit


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def error_line(r: subprocess.CompletedProcess, *, alone: bool = True) -> str:
    """The single ``error:`` line of a refused run; ``alone``: stderr holds nothing else."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    if alone:
        assert lines == errors, r.stderr[-2000:]
    sentence = errors[0][len("error: "):]
    assert sentence.endswith("."), sentence
    return sentence


def run_all(cases: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda a: run_cli(*a), cases))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    rng = __import__("random").Random(0)
    noise = bytes([0xC3, 0x28]) + bytes(rng.randrange(256) for _ in range(4000))  # 0xC3 0x28: never UTF-8
    out = {"deep": d / "deep.jsonl", "noise_txt": d / "noise.txt", "noise_csv": d / "noise.csv",
           "noise_tsv": d / "noise.tsv", "empty": d / "empty.txt", "blank": d / "blank.txt",
           "prompts": d / "prompts.txt", "existing": d / "existing.txt"}
    out["deep"].write_text("[" * DEPTH + "]" * DEPTH + "\n")
    for key in ("noise_txt", "noise_csv", "noise_tsv"):
        out[key].write_bytes(noise)
    out["empty"].write_text("")
    out["blank"].write_text("\n   \n\n")
    out["prompts"].write_text("The Eiffel Tower is in the city of\nMy favourite fruit is a ripe banana\n")
    out["existing"].write_text("keep me\n")
    out["dir"] = d
    return out


def test_files_that_are_not_what_they_should_be_get_one_sentence_before_any_work(files, tmp_path):
    """Random bytes, folders, empty files, an existing file as an output folder, a deep --device-map, an
    output under /proc: each refused before the model loads (so stderr holds the error line alone)."""
    d, out = files["dir"], str(tmp_path / "out")
    cases = {
        # (argv, words the sentence must hold); before -> after
        "geometry noise txt": (("geometry", "--prompts", str(files["noise_txt"]), "--out", str(tmp_path / "g1.csv")),
                               ["not UTF-8 text", "noise.txt"]),  # UnicodeDecodeError traceback
        "geometry noise csv": (("geometry", "--prompts", str(files["noise_csv"]), "--out", str(tmp_path / "g2.csv")),
                               ["not UTF-8 text", "noise.csv"]),  # UnicodeDecodeError traceback
        "evaluate noise task": (("evaluate", "--what", "attributes", "--task", str(files["noise_tsv"]),
                                 "--out-dir", str(tmp_path / "ev")), ["task file", "not UTF-8 text"]),
        "batch noise txt": (("batch", "--prompts", str(files["noise_txt"]), "--cells", "last", "--out", out),
                            ["not UTF-8 text", "line 1"]),  # garbage prompts were interpreted
        "batch empty": (("batch", "--prompts", str(files["empty"]), "--cells", "last", "--out", out),
                        ["holds no prompts", "nothing to interpret"]),  # exit 0, "0 prompts interpreted"
        "batch blank": (("batch", "--prompts", str(files["blank"]), "--cells", "last", "--out", out),
                        ["holds no prompts"]),
        "batch folder": (("batch", "--prompts", str(d), "--cells", "last", "--out", out),
                         ["is a folder, not a file"]),  # "does not exist"
        "geometry folder": (("geometry", "--prompts", str(d), "--out", str(tmp_path / "g3.csv")),
                            ["is a folder, not a file"]),  # "does not exist"
        "control folder": (("control", "apply", "--load", str(d)), ["edit file", "is a folder, not a file"]),
        "batch out is a file": (("batch", "--prompts", str(files["prompts"]), "--cells", "last",
                                 "--out", str(files["existing"])),
                                ["--out must be a folder", "is an existing file"]),  # "File exists (...)"
        "geometry out in /proc": (("geometry", "--prompt", "hello", "--out", "/proc/x.csv"),
                                  ["/proc/x.csv", "cannot be written"]),  # computed everything first
        "batch deep device map": (("batch", "--prompts", str(files["prompts"]), "--cells", "last", "--out", out,
                                   "--device-map", "[" * 60_000), ["--device-map must be"]),  # RecursionError
    }
    results = run_all([argv for argv, _ in cases.values()])
    for (name, (_argv, words)), r in zip(cases.items(), results):
        sentence = error_line(r)
        for w in words:
            assert w in sentence, (name, sentence)
    assert files["existing"].read_text() == "keep me\n"
    assert not list(tmp_path.glob("g*.csv"))  # the trial files made to check --out are gone


def test_runs_that_interpret_nothing_exit_2_saying_why(files, tmp_path):
    """A 100,000-deep JSONL line (before: RecursionError traceback, exit 1) and a cell spec out of range for
    every prompt (before: exit 0 with '0 prompts interpreted'); then the same run resumed."""
    deep = ("batch", "--prompts", str(files["deep"]), "--cells", "last", "--out", str(tmp_path / "deep"),
            "--max-new-tokens", "2", "--no-relevancy")
    skipped = ("batch", "--prompts", str(files["prompts"]), "--cells", "99:last", "--out", str(tmp_path / "o"),
               "--max-new-tokens", "2", "--no-relevancy")
    r_deep, r_skipped = run_all([deep, skipped])
    sentence = error_line(r_deep, alone=False)  # "skipped prompt 0: ..." is printed as the run goes
    assert sentence.startswith("Nothing was interpreted: the only prompt was skipped as bad"), sentence
    assert "nested too deeply" in sentence
    assert "skipped prompt 0: line 1 is JSON nested too deeply to read" in r_deep.stderr
    errors = [json.loads(x) for x in (tmp_path / "deep" / "errors.jsonl").read_text().splitlines()]
    assert [e["prompt_index"] for e in errors] == [0]
    sentence = error_line(r_skipped, alone=False)
    assert sentence.startswith("Nothing was interpreted: all 2 prompts were skipped as bad"), sentence
    assert "Layer 99 is out of range" in sentence and "errors.jsonl" in sentence
    again = run_cli(*skipped)  # resuming the same folder reads nothing either
    sentence = error_line(again, alone=False)
    assert "Nothing was interpreted" in sentence and "earlier run" in sentence, sentence


def test_cell_messages_say_out_of_range_and_never_echo_a_long_input(files, tmp_path):
    listed = ",".join(["1:1"] * 1200) + ",x:y"  # about 4,800 characters, one bad term at the end
    spaced = "1:1 " * 1250  # 5,000 characters that form one bad term
    r_row, r_listed, r_spaced, r_interp = run_all([
        ("interpret", "--prompt", "hello", "--cells", "row:31", "--no-relevancy"),  # was "is not a cell"
        ("batch", "--prompts", str(files["prompts"]), "--cells", listed, "--out", str(tmp_path / "o")),
        ("batch", "--prompts", str(files["prompts"]), "--cells", spaced, "--out", str(tmp_path / "o")),
        ("interpret", "--prompt", "hello", "--cells", spaced, "--no-relevancy"),
    ])
    assert error_line(r_row) == "Layer 31 is out of range: this model's grid has layers 0 to 30."
    sentence = error_line(r_listed)  # the whole list was echoed
    assert sentence.startswith("'x' in the cell spec is not a layer or token") and len(sentence) < 150, sentence
    for r in (r_spaced, r_interp):  # the term itself was echoed in full
        sentence = error_line(r)
        assert sentence.startswith("'1:1 1:1 ") and "…' is not a cell" in sentence, sentence
        assert len(sentence) < 200, sentence
