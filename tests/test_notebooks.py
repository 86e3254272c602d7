"""The notebooks run top to bottom on the sample logs, import miner for all their logic, and are stored without outputs."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = {"01_explore_usage.ipynb", "02_right_sizing_review.ipynb"}

nbformat = pytest.importorskip("nbformat")


def _kernel_or_skip() -> str:
    """The python3 kernel name, or skip with the reason (nbclient and ipykernel come with the test extra)."""
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel: run `python -m ipykernel install --sys-prefix`")
    return "python3"


def test_both_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: run scripts/strip_notebooks.py"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_holds_no_logic_of_its_own(path):
    """Only calls and display: no function or class definitions, no branches, no loops beyond printing notes."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source.replace("\\\n", " "))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda, ast.While, ast.If))]
        assert not defs, f"{path.name} cell {i} defines logic; move it into the miner package"
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "miner"]
        for imp in imports:
            assert all(not a.name.startswith("_") for a in imp.names)


def test_strip_script_strips(tmp_path):
    import runpy

    strip = runpy.run_path(str(REPO / "scripts" / "strip_notebooks.py"))
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "P", "language": "python"},
                                            "widgets": {}})
    nb.cells = [nbformat.v4.new_code_cell("1 + 1", execution_count=3,
                                          outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"},
                                                                          execution_count=3)])]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert strip["main"]([str(path), "--check"]) == 1
    assert strip["main"]([str(path)]) == 0
    clean = nbformat.read(path, as_version=4)
    assert strip["is_stripped"](clean) and "widgets" not in clean.metadata
    assert strip["main"]([str(path), "--check"]) == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_top_to_bottom_on_the_sample_logs(name, sample_store, sample_logs, tmp_path, monkeypatch):
    kernel = _kernel_or_skip()
    from nbclient import NotebookClient

    monkeypatch.setenv("MINER_STORE", str(sample_store))
    monkeypatch.setenv("MINER_IAM_SNAPSHOT", str(sample_logs / "iam"))
    monkeypatch.setenv("MINER_REVIEW_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel, timeout=180, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert str(sample_store) in text
    if name.startswith("02"):
        assert (tmp_path / "review.html").exists() and (tmp_path / "review.json").exists()
        assert "recommended:" in text and "IAM source: snapshot" in text
