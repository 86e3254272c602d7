"""Benchmark `miner review` (or `miner ingest`) on DuckDB vs Apache Spark (local[1], local[2]), each run fresh.

Usage:
    python scripts/bench_engine.py --store /tmp/miner-bench/store-1M-100p [--rounds 3] [--engines duckdb,spark1,spark2]
        [--since 2026-06-01 --until 2026-08-30] [--startup-rounds 3]
    python scripts/bench_engine.py --job ingest --source /tmp/miner-bench/ingest-data-1000k [--rounds 3]
        # `miner ingest SOURCE --store FRESH -q`: the local process pool (label DuckDB, --processes 2) vs Spark

Each round runs every engine once, interleaved (duckdb, spark local[1], spark local[2], ...), so a noisy machine
slows all of them alike; the table gives medians of wall and CPU seconds. CPU is user + system of the whole process
tree, the JVM included: the wrapper process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so the JVM
that outlives the Python process is reaped by it and counted in getrusage(RUSAGE_CHILDREN). Processes whose parent
never waits for them (Spark's Python workers) escape getrusage, so the wrapper also samples every process of the
command's session from /proc four times a second and reports the larger of the two sums (the sample misses at most
the last quarter second of each process). Spark's session start-up
(JVM launch, SparkContext, a one-row job) is timed on its own, in fresh processes too.

Build a store with: python scripts/bench_suggest.py build --events 1000000 --principals 100 --out DIR
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

REPO = Path(__file__).resolve().parent.parent

#: engine label -> extra CLI arguments
ENGINES = {
    "duckdb": ["--engine", "duckdb"],
    "spark1": ["--engine", "spark", "--spark-master", "local[1]"],
    "spark2": ["--engine", "spark", "--spark-master", "local[2]"],
}
LABELS = {"duckdb": "DuckDB", "spark1": "Spark local[1]", "spark2": "Spark local[2]"}

# The wrapper: a child subreaper, so every descendant (the JVM too) is reaped here and counted in RUSAGE_CHILDREN.
_WRAPPER = r"""
import ctypes, json, os, resource, subprocess, sys, threading, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
tck = os.sysconf("SC_CLK_TCK")
seen = {}  # pid -> its own user + system seconds, last seen (processes of the command's session)
def sample(sid):
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(f[3]) == sid:
                seen[p] = (int(f[11]) + int(f[12])) / tck
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
done = threading.Event()
def watch():
    while not done.wait(0.25):
        sample(proc.pid)
threading.Thread(target=watch, daemon=True).start()
out, err = proc.communicate()
wall = time.perf_counter() - t
while True:  # orphaned descendants (the JVM) were re-parented to us: reap them so their CPU counts
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
done.set()
tree = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({'wall': wall, 'tree_wall': tree, 'cpu': max(u.ru_utime + u.ru_stime, sum(seen.values())),
                  'rusage_cpu': u.ru_utime + u.ru_stime, 'sampled_cpu': sum(seen.values()), 'rss': u.ru_maxrss / 1024,
                  'rc': proc.returncode, 'err': err.decode()[-2000:]}))
"""

_STARTUP = r"""
import sys, time
t = time.perf_counter()
from miner import engine
s = engine.spark_session(sys.argv[1])
up = time.perf_counter() - t
s.range(1).count()
print(f"{up:.3f} {time.perf_counter() - t:.3f}", file=sys.stderr)
"""


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process under the subreaper wrapper.

    Args:
        cmd: the command.

    Returns:
        ``wall`` (until the command's own process exits), ``tree_wall`` (until every descendant has), ``cpu`` (user +
        system of the whole tree), ``rss`` (the largest process, MB), ``rc`` and the tail of stderr.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout)


def review_cmd(store: str, since: str, until: str, engine: str, out: Path) -> list[str]:
    """The ``miner review`` command line for one engine (JSON to a file, no IAM source: usage only)."""
    return [sys.executable, "-m", "miner.cli", "review", "--store", store, "--since", since, "--until", until,
            "--out", str(out), "-q", *ENGINES[engine]]


def ingest_cmd(source: str, engine: str, store: Path) -> list[str]:
    """The ``miner ingest`` command line for one engine, into a fresh store (the local engine: 2 parser processes)."""
    extra = ["--processes", "2"] if engine == "duckdb" else ENGINES[engine]
    return [sys.executable, "-m", "miner.cli", "ingest", source, "--store", str(store), "-q", *extra]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", choices=("review", "ingest"), default="review")
    ap.add_argument("--store", help="the store to review (--job review)")
    ap.add_argument("--source", help="the logs to ingest (--job ingest)")
    ap.add_argument("--since", default="2026-06-01")
    ap.add_argument("--until", default="2026-09-01")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--startup-rounds", type=int, default=3)
    ap.add_argument("--engines", default="duckdb,spark1,spark2")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement here")
    args = ap.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.job == "ingest":
        LABELS["duckdb"] = "local, 2 processes"
    results: dict[str, list[dict]] = {e: [] for e in engines}
    startup: dict[str, list[dict]] = {}
    outputs: dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    for r in range(args.rounds):
        for e in engines:
            out = tmp / f"review-{e}-{r}.json"
            cmd = review_cmd(args.store, args.since, args.until, e, out) if args.job == "review" else \
                ingest_cmd(args.source, e, tmp / f"store-{e}-{r}")
            got = timed(cmd)
            if got["rc"] != 0:
                raise SystemExit(f"{e} failed (exit {got['rc']}): {got['err']}")
            results[e].append(got)
            if args.job == "review":
                outputs[e] = out
            else:
                import shutil
                shutil.rmtree(tmp / f"store-{e}-{r}", ignore_errors=True)
            print(f"round {r + 1} {LABELS[e]:15s} wall {got['wall']:7.1f} s  cpu {got['cpu']:7.1f} s", file=sys.stderr)
    for r in range(args.startup_rounds):
        for e in (x for x in engines if x.startswith("spark")):
            master = ENGINES[e][-1]
            got = timed([sys.executable, "-c", _STARTUP, master])
            up, job = (float(x) for x in got["err"].strip().splitlines()[-1].split())
            startup.setdefault(e, []).append(dict(got, session=up, first_job=job))
    same = _same_reviews(outputs) if args.job == "review" else None
    what = f"`miner review` over {args.store} ({_events(args.store)}), window {args.since} .. {args.until}" \
        if args.job == "review" else f"`miner ingest {args.source}` into a fresh local store"
    print(f"\n{what}; "
          f"medians of {args.rounds} interleaved rounds, each run a fresh process; CPU = user + system of the "
          f"process tree (the JVM included)\n")
    print("| engine | wall (s) | CPU (s) | CPU / wall | peak RSS of one process (MB) | vs DuckDB (wall) |")
    print("|---|---:|---:|---:|---:|---:|")
    base = median([x["wall"] for x in results.get("duckdb", [])])
    for e in engines:
        w = median([x["wall"] for x in results[e]])
        c = median([x["cpu"] for x in results[e]])
        rss = max(x["rss"] for x in results[e])
        ratio = f"{w / base:.1f}x" if base == base and "duckdb" in results else "-"
        print(f"| {LABELS[e]} | {w:.1f} | {c:.1f} | {c / w:.2f} | {rss:.0f} | {ratio} |")
    if startup:
        print("\nSpark start-up alone (fresh process: import, JVM launch, SparkSession; then a one-row job):\n")
        print("| master | session up (s) | + first job (s) | process wall (s) | CPU (s) |")
        print("|---|---:|---:|---:|---:|")
        for e, xs in startup.items():
            print(f"| {ENGINES[e][-1]} | {median([x['session'] for x in xs]):.1f} | "
                  f"{median([x['first_job'] for x in xs]):.1f} | {median([x['wall'] for x in xs]):.1f} | "
                  f"{median([x['cpu'] for x in xs]):.1f} |")
    if "spark1" in results and "spark2" in results:
        w1, w2 = (median([x["wall"] for x in results[e]]) for e in ("spark1", "spark2"))
        line = f"\nSpark local[1] -> local[2]: {w1 / w2:.2f}x on wall"
        if "spark1" in startup and "spark2" in startup:  # the work itself, each engine's start-up taken off
            s1, s2 = (median([x["first_job"] for x in startup[e]]) for e in ("spark1", "spark2"))
            line += (f"; {(w1 - s1) / (w2 - s2):.2f}x without start-up and first job "
                     f"({w1 - s1:.1f} s -> {w2 - s2:.1f} s)")
        print(line)
    if args.job == "review":
        print(f"\nreview JSON identical across engines (generated_at aside): {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "startup": startup, "same": same}, indent=1))
    return 0


def _events(store: str) -> str:
    meta = Path(store) / "_bench.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return f"{m['events']:,} events, {m.get('principals', '?')} principals"
    return "store"


def _same_reviews(outputs: dict[str, Path]) -> bool | None:
    docs = []
    for path in outputs.values():
        doc = json.loads(path.read_text())
        doc.pop("generated_at", None)
        docs.append(doc)
    return all(d == docs[0] for d in docs[1:]) if len(docs) > 1 else None


if __name__ == "__main__":
    raise SystemExit(main())
