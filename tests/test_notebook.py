"""``examples/quickstart.ipynb`` runs top to bottom in a fresh working folder and shows what it says.

The kernel is this interpreter (a kernelspec written to a temporary JUPYTER_PATH, so neither a
registered ``python3`` kernel of another environment nor the user's Jupyter folders are used), with
the repository on PYTHONPATH: it works on a fresh clone where ``make install`` created .venv.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
KERNEL = "basketcast-tests"


def _kernel(folder: Path) -> None:
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))


def _shown(cell: Any) -> str:
    """Everything a cell displayed: streams, plain text and HTML of its results."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts += [str(out.data.get("text/plain", "")), str(out.data.get("text/html", ""))]
    return "\n".join(parts)


def test_the_notebook_is_what_its_generator_writes() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_quickstart", ROOT / "examples" / "make_quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(nbformat.writes(module.build())) == json.loads(NOTEBOOK.read_text()), (
        "examples/quickstart.ipynb is stale: run examples/make_quickstart.py"
    )


@pytest.mark.slow
@pytest.mark.integration
def test_quickstart_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jupyter = tmp_path / "jupyter"
    _kernel(jupyter)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.delenv("BASKETCAST_TRACKING", raising=False)  # the notebook's config says: no tracking
    # Tests stay on this machine: the sample comes from the copy `make sample` wrote before `make test`.
    sample = ROOT / "data" / "instacart_sample_csv"
    assert (sample / "orders.csv").is_file(), f"{sample}: missing; `make test` writes it (make sample) first"
    monkeypatch.setenv("BASKETCAST_SAMPLE_CSV", str(sample))
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(work)}}).execute()

    shown = {tag: _shown(cell) for cell in nb.cells for tag in cell.metadata.get("tags", [])}
    assert "basketcast" in shown["version"]
    assert "592 shoppers" in shown["ingest"]
    for method in ("lightgbm", "popularity", "tifu_knn", "ndcg@10"):
        assert method in shown["report"]
    recommendations = shown["recommendations"]
    for column in ("product_name", "aisle", "department", "score", "strategy"):
        assert column in recommendations
    assert "product " in recommendations and "ranker" in recommendations  # names joined: "product <id>"
    assert "popular" in shown["cold-start"]
    assert "product_name" in shown["cart"]
    assert "probability" in shown["basket"] and "expected_f1" in shown["basket"]
    assert "pmi" in shown["related"]
    assert "timestamp" in shown["log"]
    assert "from the log: 592 shoppers" in shown["transactions"]
    assert (work / "quickstart" / "run" / "manifest.json").is_file()
    assert not any(out.output_type == "error" for cell in nb.cells for out in cell.get("outputs", []))
