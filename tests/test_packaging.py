"""``pip install .`` into a fresh virtual environment gives a working CLI with its data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_install_gives_a_working_cli(tmp_path):
    # A copy of the source tree, so the build leaves nothing behind in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "tests"))
    env_dir = tmp_path / "venv"
    # The runtime dependencies are already installed here: the venv sees them and installs the package alone
    # (its build backend comes from the package index, as for any user).
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # Run from inside a virtual environment, "system" site-packages are the base interpreter's, not this
    # environment's: point the new venv at the packages this interpreter sees (works in a venv and without).
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    here = [p for p in sys.path if p.endswith("-packages") and Path(p).is_dir()]
    (Path(new_site) / "outer_environment.pth").write_text("\n".join(here) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    cli = env_dir / "bin" / "selfie-explorer"
    assert cli.is_file()
    out = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "interpret" in out.stdout and "serve" in out.stdout
    # The installed package (not the checkout) is imported, and its data files came with it.
    probe = ("import explorer, explorer.core.data as d; print(explorer.__file__); "
             "print(d.CORPUS.is_file(), (d.DATA_DIR / 'patchscopes' / 'country_currency.tsv').is_file())")
    got = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = got.stdout.split()
    assert str(env_dir) in lines[0], got.stdout + got.stderr
    assert lines[1:] == ["True", "True"]
    # The app module imports from the installed package too.
    app = subprocess.run([str(py), "-c", "import explorer.ui.app as a; print(callable(a.build_app))"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert app.stdout.strip() == "True", app.stderr[-2000:]
    assert sys.executable != str(py)


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from explorer.tools import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout + out.stderr
    from explorer.tools.cli import COMMANDS

    assert all(name in out.stdout for name in COMMANDS)
