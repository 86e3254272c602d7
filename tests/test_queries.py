"""Tests for the SQL loader: every query is documented, and the files load from an editable install and a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from miner import queries

REPO = Path(__file__).resolve().parent.parent


def test_editable_install_reads_top_level_queries():
    assert queries.queries_dir() == REPO / "queries"


@pytest.mark.parametrize("name", queries.available())
def test_every_query_has_a_header_and_named_parameters(name):
    assert queries.header(name), f"queries/{name}.sql has no header comment"
    sql = queries.load(name)
    assert "?" not in sql.replace("'?'", ""), "use named $parameters, not positional ones"


def test_unknown_query_names_the_available_ones():
    with pytest.raises(KeyError) as e:
        queries.load("no_such_query")
    assert "available" in str(e.value)


def test_run_requires_every_parameter(tmp_path):
    import duckdb

    (tmp_path / "q").mkdir()
    con = duckdb.connect()
    name = queries.available()[0] if queries.available() else None
    if name is None or not queries.parameters(name):
        pytest.skip("no parameterised query yet")
    with pytest.raises(TypeError):
        queries.run(con, name)


def test_queries_ship_in_the_wheel(tmp_path):
    """Build the wheel, import miner from it alone, and load every query from inside it."""
    pytest.importorskip("hatchling")
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(out.glob("miner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("miner/_queries/") and n.endswith(".sql") for n in names) or not queries.available()
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from miner import queries; "
            "d = queries.queries_dir(); assert str(d).startswith(sys.argv[1]), d; "
            "print(len([queries.load(n) for n in queries.available()]))")
    res = subprocess.run([sys.executable, "-I", "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) == len(queries.available())
