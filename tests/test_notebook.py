"""The quickstart notebook: stored without outputs, and executed top to bottom on the embedded model."""

from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 7
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "widgets" not in nb.metadata


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Executed as Jupyter would, from examples/, in a kernel of this very interpreter (its own kernelspec,
    so a fresh virtual environment or the system Python both work)."""
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient

    write_kernel_spec(tmp_path / "kernels" / "selfie-explorer-test")  # argv: this sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="selfie-explorer-test", timeout=300,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "p_clean" in text and "before:" in text and "steered:" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 3  # the grid, the probe curve and the causal trace, drawn inline
    trace_fig = figures[-1]["data"]["application/vnd.plotly.v1+json"]
    assert trace_fig["data"][0]["name"] == "causal effect on the answer"
