"""Benchmark what evaluating SCPs and RCPs costs `miner review` and `miner suggest --diff` on the sample logs.

Usage:
    python scripts/bench_organizations.py [--rounds 5] [--store DIR]

Two IAM snapshot folders, identical but for ``organizations.json``: ``sample_logs/iam`` as it is (with the sample
organization) and a copy without it (the baseline: no SCPs or RCPs evaluated). Each run is ``miner review --format
json --quiet`` (every principal of the sample) or ``miner suggest --role orders-api-task --diff --format json
--quiet``, in a fresh process, measured by the wrapper of ``scripts/bench_suggest.py`` (wall, user+system CPU, peak
RSS). The two configurations are interleaved round by round so that other load on the shared machine affects them
alike; the table gives medians and the ratio of each wall time to the baseline's in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_suggest import _median, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WINDOW = ["--since", "2026-08-01", "--until", "2026-09-14"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", help="an ingested sample store (default: ingest sample_logs into a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        store = Path(args.store) if args.store else tmp_path / "store"
        if not args.store:
            from miner.ingest import ingest

            ingest([str(ROOT / "sample_logs")], store)
        plain = tmp_path / "iam-without-org"
        shutil.copytree(ROOT / "sample_logs" / "iam", plain)
        os.remove(plain / "organizations.json")
        configs = {"without SCPs (baseline)": plain, "with SCPs and RCPs": ROOT / "sample_logs" / "iam"}
        jobs = {
            "review": ["review", "--store", str(store), *WINDOW, "--format", "json", "--quiet"],
            "suggest --diff": ["suggest", "--role", "orders-api-task", "--store", str(store), *WINDOW, "--diff",
                               "--format", "json", "--quiet"],
        }
        got: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for job, cmd in jobs.items():
                for label, snap in configs.items():
                    r = timed([sys.executable, "-P", "-m", "miner.cli", *cmd, "--iam-snapshot", str(snap),
                               *(["--out", str(tmp_path / "r.json")] if job == "review" else [])],
                              pythonpath=str(ROOT))
                    if r["rc"] != 0:
                        raise RuntimeError(f"{job} ({label}) failed: {r['err']}")
                    got.setdefault((job, label), []).append(r)
    print(f"| job | IAM snapshot | wall s | CPU s | peak RSS MB | wall / baseline |  (medians of {args.rounds})")
    print("|---|---|---:|---:|---:|---:|")
    for job in jobs:
        base = _median([r["wall"] for r in got[(job, "without SCPs (baseline)")]])
        for label in configs:
            runs = got[(job, label)]
            wall = _median([r["wall"] for r in runs])
            print(f"| {job} | {label} | {wall:.2f} | {_median([r['cpu'] for r in runs]):.2f} | "
                  f"{_median([r['rss'] for r in runs]):.0f} | {wall / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
