"""Evidence for the defaults: `miner backtest --all` on the sample store, its table, and its wall and CPU time.

Usage:
    python scripts/bench_backtest.py                                  # train 30d, test 15d, 3 timed runs
    python scripts/bench_backtest.py --train 20d --test 10d --repeat 5
    python scripts/bench_backtest.py --store ./miner-store --min-days 60d --train 60d --test 30d
    python scripts/bench_backtest.py --iam-snapshot sample_logs/iam     # also score the policies attached today

Ingests ``sample_logs/`` into a temporary store unless ``--store`` is given, then runs
``python -m miner.cli backtest --all ... -q`` in a fresh subprocess ``--repeat`` times (a cold process each time, as
a user runs it) and reports, for each run, the wall time and the CPU time (user + system) of the subprocess. Prints
the machine (CPUs, memory, Python, load average), the exact command, the timings (best and median), then the
table of the last run (paste both into BENCHMARKS.md "Backtest").
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _machine() -> str:
    """CPUs, memory, Python and load average, on one line."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = float("nan")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, {mem:.1f} GiB RAM, Python {platform.python_version()}, load average {load}"


def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``cmd``; returns (wall s, CPU s of the child, stdout). Fails loudly on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def main(argv: list[str] | None = None) -> None:
    """Parse the options, build the store if needed, time the runs, print the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--store", type=Path, help="an existing store [default: sample_logs ingested into a temp dir]")
    ap.add_argument("--train", default="30d")
    ap.add_argument("--test", default="15d")
    ap.add_argument("--min-days", default="30d")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iam-snapshot", help="score the attached policies too (a baseline row, never recommended)")
    ap.add_argument("--format", default="table", choices=["table", "json", "csv"], help="what to print of the last run")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        store = args.store
        if store is None:
            sys.path.insert(0, str(REPO))
            from miner.ingest import ingest

            store = Path(tmp) / "store"
            ingest([str(REPO / "sample_logs")], store)
        cmd = [sys.executable, "-m", "miner.cli", "backtest", "--all", "--train", args.train, "--test", args.test,
               "--min-days", args.min_days, "--format", args.format, "-q", "--store", str(store)]
        cmd += ["--iam-snapshot", args.iam_snapshot] if args.iam_snapshot else []
        runs = [_timed(cmd, env) for _ in range(max(1, args.repeat))]
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    shown = " ".join(cmd[1:]).replace(str(store), "STORE" if args.store is None else str(store))
    print(f"machine: {_machine()}")
    print(f"command: python {shown}" + ("   (STORE = sample_logs ingested)" if args.store is None else ""))
    print(f"runs:    {len(runs)}; wall best {min(walls):.2f} s, median {statistics.median(walls):.2f} s; "
          f"CPU best {min(cpus):.2f} s, median {statistics.median(cpus):.2f} s")
    print()
    print(runs[-1][2], end="")


if __name__ == "__main__":
    main()
