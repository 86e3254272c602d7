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


def _environment_variables(nb) -> set[str]:
    """What a notebook reads from the environment: ``os.environ.get("X")`` in its cells, and the ``env`` default of
    every ``review.*``/``report.*`` function it calls."""
    import inspect
    import re

    from miner import report, review

    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    names = set(re.findall(r"os\.environ\.get\(\"(\w+)\"", code))
    for module_name, fn in re.findall(r"\b(review|report)\.(\w+)\(", code):
        param = inspect.signature(getattr({"review": review, "report": report}[module_name], fn)).parameters.get("env")
        if param is not None:
            names.add(param.default)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_environment_variable_a_notebook_reads_is_documented(path):
    """In the notebook's first cell (a table) and in the README's notebooks section."""
    nb = nbformat.read(path, as_version=4)
    names = _environment_variables(nb)
    assert "MINER_STORE" in names and "MINER_ROLE" in names
    intro = nb.cells[0].source
    readme = (REPO / "README.md").read_text(encoding="utf-8").split("### Notebooks", 1)[1]
    for name in names:
        assert f"| `{name}` |" in intro, f"{path.name}: {name} is not in the table of the first cell"
        assert f"`{name}`" in readme, f"README: {name} is not documented under Notebooks"


def test_the_temporary_sample_store_is_removed_when_the_kernel_exits(tmp_path):
    """notebook_store() without $MINER_STORE leaves nothing in the temp folder once the process ends (ingest is
    replaced by a stub: the point is the folder, not the logs)."""
    import subprocess
    import sys

    script = ("import miner.ingest, miner.review\n"
              "miner.ingest.ingest = lambda sources, target: (target.mkdir(parents=True), (target / 'x').write_text('x'))\n"
              "store = miner.review.notebook_store()\n"
              "from miner import jobs\n"
              "advice = jobs.advisor_table(store)\n"  # the sample's Access Advisor reports come with it
              "assert advice is not None and 'unused-etl' in ' '.join(advice['principal_arn']), advice\n"
              "print(store, store.is_dir())\n")
    env = {k: v for k, v in os.environ.items() if k != "MINER_STORE"}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(str(tmp_path)) and res.stdout.strip().endswith("True")
    assert list(tmp_path.iterdir()) == []


def test_usage_chart_has_distinct_colours_and_its_legend_beside_the_data():
    """12 services: the 9 busiest in distinct colours, 3 as grey "other"; the legend right of the plot area."""
    import pandas as pd

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.colors import to_hex

    from miner import report

    days = pd.date_range("2026-08-01", periods=20, freq="D")
    timeline = pd.DataFrame([{"day": d, "service": f"svc{j:02d}", "events": 100 - j * 5} for d in days for j in range(12)])
    frame = report.daily_by_service(timeline)
    assert list(frame.columns) == [f"svc{j:02d}" for j in range(9)] + ["other (3 services)"]
    assert frame["other (3 services)"].iloc[0] == 55 + 50 + 45
    ax = report.plot_daily_by_service(timeline, "t")
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the plot, never over the data
    assert legend.get_window_extent().x1 <= fig.bbox.x1 + 1  # and not cut off by the figure
    colours = {to_hex(np.atleast_2d(h.get_facecolor())[0]) for h in legend.legend_handles}
    assert len(colours) == 10 and report.OTHER_COLOUR in colours
    assert [t.get_text() for t in legend.get_texts()][0] == "other (3 services)"  # the top band first
    assert ax.get_xticklabels()[0].get_text().startswith("2026-")
    import matplotlib.pyplot as plt

    plt.close(fig)


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
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert str(sample_store) in text
    if name.startswith("02"):
        assert (tmp_path / "review.html").exists() and (tmp_path / "review.json").exists()
        assert "recommended:" in text and "IAM source: snapshot" in text
        # quarter over quarter: the two halves of the sample window, and what really changed between them
        assert "last quarter: 2026-08-01 \u2192 2026-08-22; this quarter: 2026-08-23 \u2192 2026-09-14" in text
        assert "usage stopped" in text
        assert "Changes since the review of 2026-08-01 \u2192 2026-08-22" in (tmp_path / "review.html").read_text()
