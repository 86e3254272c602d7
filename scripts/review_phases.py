"""CPU seconds per phase of `miner review`, this tree against another, each run in a fresh process.

Usage:
    python scripts/review_phases.py --store STORE --base /tmp/base-main [--rounds 5] [--iam-snapshot sample_logs/iam]
        # STORE: e.g. `miner ingest sample_logs --store /tmp/sample-store`; the window is the sample's

Each round runs the review once per tree (interleaved, ``PYTHONPATH`` set to the tree, ``-P``). The child process
wraps the library functions where they are called and adds up their CPU time (``time.process_time``: this process,
DuckDB's threads included); the table gives medians. Phases nest (``build_review`` holds ``collect_all`` ...).
"option coercion" is typer's ``process_value`` over the command's options (typer 0.29 builds a pydantic validator
per option there unless :class:`miner.cli._Coercion` stands in). Trees whose review forks workers for the principals'
entries run it with ``--processes 1`` here, so that every phase is timed in the one process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The child: times the phases of one review (argv: store, snapshot, output file).
_CHILD = r"""
import collections, functools, importlib, json, sys, time
T = collections.Counter()
t = time.process_time()
import miner.cli as cli
T["import miner.cli (typer, rich)"] = time.process_time() - t
t = time.process_time()
import pandas, duckdb
T["import pandas, duckdb"] = time.process_time() - t
def wrap(module, name):
    mod = importlib.import_module(module)
    f = getattr(mod, name, None)
    if f is None:
        return
    @functools.wraps(f)
    def timed(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            T[f"{module}.{name}"] += time.process_time() - t
    setattr(mod, name, timed)
for spec in ("miner.jobs.connect miner.review.build_review miner.usage.collect_all miner.mapping.map_frame "
             "miner.usage.principals miner.usage.timeline miner.usage.data_event_sources miner.review._principal_entry "
             "miner.diff.compare miner.diff._attached miner.synthesize.synthesize miner.report.render").split():
    wrap(*spec.rsplit(".", 1))
store, snapshot, out = sys.argv[1:4]
args = ["review", "--store", store, "--since", "2026-08-01", "--until", "2026-09-14", "--iam-snapshot", snapshot,
        "--format", "json", "--out", out, "--quiet"]
import inspect
if "processes" in inspect.signature(cli.review_cmd).parameters:  # one process: the phases are all timed here
    args += ["--processes", "1"]
import typer.core
process_value = typer.core._TyperParameter.process_value
def coerce(self, ctx, value):
    t = time.process_time()
    try:
        return process_value(self, ctx, value)
    finally:
        T["option coercion (typer)"] += time.process_time() - t
typer.core._TyperParameter.process_value = coerce
sys.argv = ["miner", *args]
try:
    cli.main()
except SystemExit as e:
    if e.code:
        raise
T["whole process"] = time.process_time()
print(json.dumps(T))
"""


def main() -> None:
    """Run the rounds and print a Markdown table of medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--base", type=Path, required=True, help="another checkout (e.g. `git worktree add /tmp/base REV`)")
    ap.add_argument("--iam-snapshot", default=str(ROOT / "sample_logs" / "iam"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    trees = {"base": args.base.resolve(), "this tree": ROOT}
    got: dict[str, list[dict]] = {k: [] for k in trees}
    out = Path(tempfile.mkdtemp(prefix="review-phases-")) / "review.json"
    for _ in range(args.rounds):
        for label, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=str(tree))
            res = subprocess.run([sys.executable, "-P", "-c", _CHILD, args.store, args.iam_snapshot, str(out)],
                                 env=env, capture_output=True, text=True, check=True)
            got[label].append(json.loads(res.stdout.strip().splitlines()[-1]))
    out.unlink(missing_ok=True)
    out.parent.rmdir()
    med = {label: {k: statistics.median(r.get(k, 0.0) for r in runs) for r in runs for k in r}
           for label, runs in got.items()}
    keys = sorted(set(med["base"]) | set(med["this tree"]), key=lambda k: -med["base"].get(k, 0.0))
    print("| phase (CPU s, median) | base | this tree |\n|---|---:|---:|")
    for k in keys:
        print(f"| {k} | {med['base'].get(k, 0.0):.2f} | {med['this tree'].get(k, 0.0):.2f} |")


if __name__ == "__main__":
    main()
