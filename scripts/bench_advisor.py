"""Benchmark IAM Access Advisor as a second witness: `miner advisor --snapshot` and what the evidence adds to a review.

Usage:
    python scripts/bench_advisor.py [--rounds 5]

The sample logs are ingested once into a temporary store and copied; `miner advisor --snapshot sample_logs/advisor`
runs on the copy. Then `miner review` (with the IAM snapshot, --format json) runs on both stores, interleaved round
by round, each in a fresh process measured by a wrapper (wall, user+system CPU, peak RSS): the store without an
advisor table is the baseline measured in the same run. The advisor command itself is timed on fresh copies. Medians
of ``--rounds`` runs; a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_suggest import _median, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MINER = [sys.executable, "-P", "-m", "miner.cli"]


def run(rounds: int) -> str:
    """The benchmark; returns the Markdown table."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    got: dict[str, list[dict]] = {"advisor": [], "review": [], "review + advisor": []}
    with tempfile.TemporaryDirectory() as tmp:
        plain, advised = Path(tmp) / "plain", Path(tmp) / "advised"
        subprocess.run([*MINER, "ingest", str(ROOT / "sample_logs"), "--store", str(plain), "--quiet"], check=True,
                       env=env)
        shutil.copytree(plain, advised)
        subprocess.run([*MINER, "advisor", "--snapshot", str(ROOT / "sample_logs" / "advisor"), "--store",
                        str(advised), "--quiet"], check=True, env=env)
        review = ["review", "--since", "2026-08-01", "--until", "2026-09-14", "--iam-snapshot",
                  str(ROOT / "sample_logs" / "iam"), "--format", "json", "--quiet"]
        for i in range(rounds):
            fresh = Path(tmp) / f"fresh-{i}"
            shutil.copytree(plain, fresh)
            got["advisor"].append(timed([*MINER, "advisor", "--snapshot", str(ROOT / "sample_logs" / "advisor"),
                                         "--store", str(fresh), "--quiet"], pythonpath=str(ROOT)))
            shutil.rmtree(fresh)
            for label, store in (("review", plain), ("review + advisor", advised)):
                got[label].append(timed([*MINER, *review, "--store", str(store), "--out", str(Path(tmp) / "r.json")],
                                        pythonpath=str(ROOT)))
    for label, runs in got.items():
        bad = [r for r in runs if r["rc"] != 0]
        if bad:
            raise RuntimeError(f"{label} failed: {bad[0]['err']}")
    base = {k: _median([r[k] for r in got["review"]]) for k in ("wall", "cpu")}
    rows = ["| command (sample logs) | wall (s) | CPU (s) | peak RSS (MB) | wall / review | CPU / review |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, runs in got.items():
        wall, cpu = _median([r["wall"] for r in runs]), _median([r["cpu"] for r in runs])
        rows.append(f"| {label} | {wall:.2f} | {cpu:.2f} | {_median([r['rss'] for r in runs]):.0f} | "
                    f"{wall / base['wall']:.2f} | {cpu / base['cpu']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print(run(args.rounds))


if __name__ == "__main__":
    main()
