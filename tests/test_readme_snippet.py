"""The set-up (``make install``) installs the package itself, so the README's Python snippet runs from any
folder, not only from the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The first Python block of the README's "Python API" section, as a reader would copy it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_the_readmes_python_snippet_runs_from_another_folder_after_make_install(tmp_path):
    # A copy of the checkout, so the editable install leaves nothing behind in the real one.
    src = tmp_path / "checkout"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "tests",
                                                              "assets", ".venv", ".*_cache"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # The dependencies are installed in this interpreter's environment: the new venv sees them (as in
    # tests/test_packaging.py), so ``make install`` finds them satisfied and installs the package itself.
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    here = [p for p in sys.path if p.endswith("-packages") and Path(p).is_dir()]
    (Path(new_site) / "outer_environment.pth").write_text("\n".join(here) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PYTHONPATH", None)
    made = subprocess.run(["make", "-C", str(src), "install", f"PYTHON={py}"], capture_output=True, text=True,
                          timeout=900, env=env)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import explorer; print(explorer.__file__)"], capture_output=True,
                           text=True, timeout=120, cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(src)), where.stdout + where.stderr
    out = subprocess.run([str(py), "-c", readme_snippet()], capture_output=True, text=True, timeout=600,
                         cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "No module named" not in out.stderr
    assert "relevancy_score" in out.stdout  # the printed frame (pandas may elide middle columns)
    assert (elsewhere / "out.csv").is_file() and (elsewhere / "out.json").is_file()
    header = (elsewhere / "out.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"prompt", "interpretation", "layer", "token", "relevancy_score"} <= set(header)
