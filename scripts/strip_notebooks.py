#!/usr/bin/env python3
"""Strips outputs, execution counts and volatile metadata from notebooks so that git holds only their source."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")


def strip(nb) -> bool:
    """Remove outputs and execution counts in place.

    Args:
        nb: an ``nbformat`` notebook node.

    Returns:
        True when anything changed.
    """
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.get("outputs"):
                cell["outputs"] = []
                changed = True
            if cell.get("execution_count") is not None:
                cell["execution_count"] = None
                changed = True
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            if key in cell.get("metadata", {}):
                del cell["metadata"][key]
                changed = True
    for key in list(nb.metadata):
        if key not in KEEP_NOTEBOOK_METADATA:
            del nb.metadata[key]
            changed = True
    lang = nb.metadata.get("language_info")
    if lang and set(lang) - {"name"}:
        nb.metadata["language_info"] = {"name": lang.get("name", "python")}
        changed = True
    return changed


def is_stripped(nb) -> bool:
    """True when no code cell has outputs or an execution count.

    Args:
        nb: an ``nbformat`` notebook node.

    Returns:
        Whether the notebook is clean.
    """
    return all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def main(argv: list[str] | None = None) -> int:
    """Strip the given notebooks (default: ``notebooks/*.ipynb``); ``--check`` only reports.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 1 when ``--check`` finds a notebook with outputs, else 0.
    """
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 when a notebook has outputs")
    args = ap.parse_args(argv)
    paths = args.paths or sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    dirty = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.check:
            if not is_stripped(nb):
                print(f"{path}: has outputs", file=sys.stderr)
                dirty += 1
            continue
        if strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
