"""Benchmark `miner review`: the set-based review against the per-principal one, and how it grows with principals.

Usage:
    python scripts/bench_review.py sample [--rounds 5] [--base /tmp/perf2-base]
        # the sample logs (ingested into a temporary store), with the IAM snapshot: set-based vs per-principal;
        # with --base, also the set-based review of another checkout (e.g. `git worktree add /tmp/perf2-base REV`)
    python scripts/bench_review.py stores --store /tmp/miner-bench/store-5M-500p --store /tmp/miner-bench/store-10M-1000p
        [--rounds 3] [--baseline]
        # synthetic stores from `scripts/bench_suggest.py build --events N --principals P --out DIR`

Every run is `miner review --format json --out FILE --quiet` in a fresh process, measured by a wrapper process
(wall time, user+system CPU, peak RSS), after one uncounted warm-up run of each configuration, with bytecode
written and read as after `pip install` (``PYTHONDONTWRITEBYTECODE`` is dropped for the runs). The configurations
are interleaved round by round so that other load on
the (shared) machine affects them alike; the tables give medians.

"per-principal" is the same tree with ``miner.usage.collect_all`` replaced by one ``miner.usage.collect`` per
principal (one usage query, one mapping pass and one aggregation per principal: how the review gathered usage
before it became set-based); it is the baseline measured in the same run. Both produce the same review JSON
(``tests/test_review.py::test_set_based_review_equals_the_per_principal_one``), which this script checks too.

"one process" is this tree's set-based review with ``--processes 1``: the principals' entries built in the review's
own process rather than in forked workers (the default, one per CPU).

"base" (``--base PATH``) is the set-based review of another tree, run through ``PYTHONPATH=PATH`` and interleaved
with this tree's in every round: the before/after comparison of a change, measured under the same load. Its
review JSON must equal this tree's too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_suggest import _median, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: Runs the CLI with usage gathered one principal at a time (the baseline).
_PER_PRINCIPAL = (
    "import sys; from miner import usage, cli; "
    "usage.collect_all = lambda con, ps, win, **kw: {p.arn: usage.collect(con, p, win) for p in ps}; "
    "sys.argv = ['miner'] + sys.argv[1:]; cli.main()"
)


#: Tree of the ``base`` mode (``--base``).
BASE: Path | None = None


def _review(mode: str, args: list[str], out: Path) -> dict:
    """One review in a fresh process; ``mode`` is ``set-based``, ``per-principal`` or ``base`` (the set-based review
    of the :data:`BASE` tree)."""
    # -P: the working directory does not go first on sys.path, so PYTHONPATH alone picks the tree that runs (run from
    # a checkout, ``-m miner.cli`` would otherwise import that checkout's miner whatever PYTHONPATH says)
    head = [sys.executable, "-P", "-c", _PER_PRINCIPAL] if mode == "per-principal" \
        else [sys.executable, "-P", "-m", "miner.cli"]
    tree = BASE if mode == "base" else ROOT
    one = ["--processes", "1"] if mode == "one process" else []
    got = timed([*head, "review", *args, *one, "--format", "json", "--out", str(out), "--quiet"], pythonpath=str(tree))
    if got["rc"] != 0:
        raise RuntimeError(f"review ({mode}) failed: {got['err']}")
    doc = json.loads(out.read_text())
    doc.pop("generated_at", None)
    got["doc"] = doc
    return got


def compare(label: str, args: list[str], rounds: int, modes: tuple[str, ...]) -> list[str]:
    """Interleave the modes for ``rounds`` rounds; Markdown rows of medians, the last column wall / set-based wall."""
    got: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for m in modes:  # a warm-up run each, not counted: bytecode written, files in the page cache
            _review(m, args, Path(tmp) / f"{m}.json")
        for _ in range(rounds):
            for m in modes:
                got[m].append(_review(m, args, Path(tmp) / f"{m}.json"))
    docs = {m: got[m][-1].pop("doc") for m in modes}
    for runs in got.values():
        for r in runs:
            r.pop("doc", None)
    if len({json.dumps(d, sort_keys=True) for d in docs.values()}) != 1:
        raise RuntimeError(f"{label}: the reviews of {', '.join(modes)} differ")
    base = _median([r["wall"] for r in got[modes[0]]])
    base_cpu = _median([r["cpu"] for r in got[modes[0]]])
    n = len(docs[modes[0]]["principals"])
    rows = []
    for m in modes:
        wall, cpu = _median([r["wall"] for r in got[m]]), _median([r["cpu"] for r in got[m]])
        rows.append(f"| {label} | {n:,} | {m} | {wall:.2f} | {cpu:.2f} | "
                    f"{_median([r['rss'] for r in got[m]]):.0f} | {wall / base:.2f} | {cpu / base_cpu:.2f} |")
    return rows


HEADER = ["| store | principals reviewed | review | wall (s) | CPU (s) | peak RSS (MB) | wall / set-based | "
          "CPU / set-based |",
          "|---|---:|---|---:|---:|---:|---:|---:|"]


def sample(rounds: int, base: Path | None = None) -> str:
    """The sample logs with their IAM snapshot."""
    from miner import store as store_mod

    with tempfile.TemporaryDirectory() as tmp:
        st = Path(tmp) / "store"
        subprocess.run([sys.executable, "-P", "-m", "miner.cli", "ingest", str(ROOT / "sample_logs"), "--store",
                        str(st), "--quiet"], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        first, last = store_mod.data_days(st)
        args = ["--store", str(st), "--since", first.isoformat(), "--until", last.isoformat(),
                "--iam-snapshot", str(ROOT / "sample_logs" / "iam")]
        modes = ("set-based", "one process", "per-principal") + (("base",) if base else ())
        rows = compare("sample_logs", args, rounds, modes)
    return "\n".join(HEADER + rows)


def stores(paths: list[Path], rounds: int, baseline: bool) -> str:
    """Synthetic stores built by ``bench_suggest.py build`` (90 days from 2026-06-01, no IAM snapshot)."""
    rows = []
    for p in paths:
        meta = json.loads((p / "_bench.json").read_text())
        label = f"{p.name} ({meta['events']:,} events)"
        args = ["--store", str(p), "--since", "2026-06-01", "--until", "2026-08-29"]
        modes = ("set-based",) + (("per-principal",) if baseline else ()) + (("base",) if BASE else ())
        rows += compare(label, args, rounds, modes)
    return "\n".join(HEADER + rows)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--base", type=Path, help="another checkout whose set-based review runs interleaved (before/after)")
    st = sub.add_parser("stores")
    st.add_argument("--store", type=Path, action="append", required=True)
    st.add_argument("--rounds", type=int, default=3)
    st.add_argument("--baseline", action="store_true", help="also the per-principal review (slow on big stores)")
    st.add_argument("--base", type=Path, help="another checkout whose set-based review runs interleaved (before/after)")
    a = p.parse_args()
    global BASE
    BASE = getattr(a, "base", None)
    if BASE is not None:
        BASE = BASE.resolve()
        if not (BASE / "miner" / "cli.py").is_file():
            p.error(f"--base {BASE}: not a miner checkout")
    print(sample(a.rounds, BASE) if a.cmd == "sample" else stores(a.store, a.rounds, a.baseline))


if __name__ == "__main__":
    main()
