"""Benchmark `miner ingest` on local delivery-layout logs against the zcat floor and a plain-Python baseline.

Usage:
    python scripts/bench_ingest.py                        # 1M and 2M records, data cached under /tmp/miner-bench
    python scripts/bench_ingest.py --records 500000 --data /tmp/miner-bench --repeat 3
    python scripts/bench_ingest.py --sizes 1 --repeat 5 --against ../old-checkout   # old and new alternating

Generates (once, cached) realistic CloudTrail in the S3 delivery layout with ``scripts/gen_sample_logs.py``
(``generate(..., sample_extras=False)``: no corrupt/digest/insight files, ~1% duplicate deliveries), then for each
size N and 2N measures, in the same run and on the same files:

* ``zcat``: ``xargs -0 zcat > /dev/null`` over all files (one decompressor at a time: the decompression floor);
* plain Python: ``gzip.decompress`` + ``json.loads`` of every file in one process (no normalisation, no output);
* ``miner ingest DIR --store fresh -q`` in a subprocess: wall time, CPU time and peak memory of its whole process
  tree (psutil polling every 50 ms: the sum of RSS, which counts shared library pages once per process, and the
  sum of PSS, which shares them out).

Prints a markdown table (paste it into BENCHMARKS.md "## Ingest").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: records generated per unit of gen_sample_logs' ``scale`` (45 days; measured: scale 30 -> ~472k records)
RECORDS_PER_SCALE = 15_700


def _gen(out: Path, records: int) -> dict:
    """Generate (or reuse) ~``records`` records under ``out``; returns the generator's statistics."""
    marker = out / "bench-stats.json"
    if marker.exists():
        stats = json.loads(marker.read_text())
        if stats.get("records_written", 0) >= records * 0.95:
            return stats
    sys.path.insert(0, str(REPO / "scripts"))
    from gen_sample_logs import generate

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    print(f"generating ~{records:,} records in {out} ...", file=sys.stderr, flush=True)
    stats = generate(str(out), seed=7, days=45, scale=records / RECORDS_PER_SCALE, sample_extras=False)
    stats = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
    stats["generated_in_s"] = round(time.time() - t0, 1)
    marker.write_text(json.dumps(stats, indent=1))
    return stats


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json.gz"))


def _zcat(root: Path) -> float:
    t0 = time.perf_counter()
    find = subprocess.Popen(["find", str(root / "AWSLogs"), "-name", "*.json.gz", "-print0"], stdout=subprocess.PIPE)
    subprocess.run(["xargs", "-0", "zcat"], stdin=find.stdout, stdout=subprocess.DEVNULL, check=True)
    find.wait()
    return time.perf_counter() - t0


def _python_baseline(files: list[Path]) -> tuple[float, int]:
    code = ("import gzip, json, sys, time\n"
            "t = time.perf_counter(); n = 0\n"
            "for p in sys.stdin.read().split('\\0'):\n"
            "    if p:\n"
            "        with open(p, 'rb') as fh:\n"
            "            n += len(json.loads(gzip.decompress(fh.read()))['Records'])\n"
            "print(time.perf_counter() - t, n)\n")
    res = subprocess.run([sys.executable, "-c", code], input="\0".join(map(str, files)), capture_output=True,
                         text=True, check=True)
    secs, n = res.stdout.split()
    return float(secs), int(n)


def _measure(cmd: list[str], check: bool = True) -> dict:
    """Run ``cmd``; wall, CPU (user+sys) and peak summed RSS/PSS of its process tree (and its exit status: a
    non-zero one raises when ``check``)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak_rss = peak_pss = 0
    tick = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        rss = pss = 0
        for p in procs:
            try:
                with p.oneshot():
                    c = p.cpu_times()
                    cpu[p.pid] = c.user + c.system
                    rss += p.memory_info().rss
                    if tick % 4 == 0:  # PSS needs smaps: every 200 ms
                        pss += p.memory_full_info().pss
            except psutil.Error:
                pass
        peak_rss = max(peak_rss, rss)
        if tick % 4 == 0:
            peak_pss = max(peak_pss, pss)
        tick += 1
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"wall": wall, "cpu": sum(cpu.values()), "rss": peak_rss, "pss": peak_pss, "stdout": out,
            "returncode": proc.returncode}


def _machine() -> str:
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")),
               "0")
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor())
    try:
        import msgspec
        fast = f"msgspec {msgspec.__version__}"
    except ImportError:
        fast = "no msgspec (orjson only)"
    return (f"{len(os.sched_getaffinity(0))} CPUs ({model}), {int(mem) / 2**20:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {fast}, load average at start {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/miner-bench", help="cache directory for generated logs")
    ap.add_argument("--records", type=int, default=1_000_000, help="the smaller size N (2N is measured too)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of miner ingest per size (best wall is kept)")
    ap.add_argument("--sizes", default="1,2", help="multiples of --records to measure")
    ap.add_argument("--orjson", action="store_true", help="measure the orjson-only parser (MINER_JSON=orjson), "
                                                          "as without msgspec installed")
    ap.add_argument("--against", metavar="CHECKOUT", help="also run the miner of another checkout, alternating "
                                                          "with this one, and print both medians")
    args = ap.parse_args(argv)

    if args.orjson:
        os.environ["MINER_JSON"] = "orjson"
    print(f"machine: {_machine()}" + (" [MINER_JSON=orjson]" if args.orjson else ""), file=sys.stderr)
    results = []
    for mult in [int(x) for x in args.sizes.split(",")]:
        n = args.records * mult
        data = Path(args.data) / f"ingest-data-{n // 1000}k"
        stats = _gen(data, n)
        files = _files(data)
        compressed = sum(p.stat().st_size for p in files)
        records = stats["records_written"]
        print(f"{records:,} records in {len(files):,} files ({compressed / 2**20:.0f} MiB gzip)", file=sys.stderr)
        z = _zcat(data)
        py, py_n = _python_baseline(files)
        assert py_n == records, (py_n, records)
        runs = []
        other: list[dict] = []
        trees = [str(REPO)] + ([str(Path(args.against).resolve())] if args.against else [])
        for i in range(args.repeat):
            for tree in trees if i % 2 == 0 else trees[::-1]:  # alternating: background load hits both alike
                store = Path(tempfile.mkdtemp(prefix="miner-bench-store-", dir=args.data))
                os.environ["PYTHONPATH"] = tree
                try:
                    m = _measure([sys.executable, "-m", "miner.cli", "ingest", str(data), "--store", str(store), "-q",
                                  "--json"])
                finally:
                    shutil.rmtree(store, ignore_errors=True)
                summary = json.loads(m["stdout"])
                assert summary["records_read"] == records
                assert summary["records_written"] == stats["distinct_event_ids"]
                (runs if tree == trees[0] else other).append(m)
                print(f"  miner ingest ({tree}): {m['wall']:.2f} s wall, {m['cpu']:.2f} s CPU, peak RSS "
                      f"{m['rss'] / 2**20:.0f} MiB (PSS {m['pss'] / 2**20:.0f} MiB)", file=sys.stderr)
        for tree, ms in zip(trees, (runs, other)):
            print(f"  median of {len(ms)} ({tree}): {statistics.median(m['wall'] for m in ms):.2f} s wall, "
                  f"{statistics.median(m['cpu'] for m in ms):.2f} s CPU, peak RSS "
                  f"{statistics.median(m['rss'] for m in ms) / 2**20:.0f} MiB", file=sys.stderr)
        best = min(runs, key=lambda m: m["wall"])
        results.append({"records": records, "files": len(files), "mib": compressed / 2**20,
                        "bytes_per_record": stats.get("uncompressed_bytes", 0), "zcat": z, "python": py,
                        "miner": best, "miner_cpu_best": min(m["cpu"] for m in runs),
                        "rss_max": max(m["rss"] for m in runs), "pss_max": max(m["pss"] for m in runs)})

    print()
    print("| records | files (gzip) | zcat floor | plain Python (gzip+json.loads) | `miner ingest` | "
          "miner vs zcat | miner vs Python | miner CPU (all processes) | peak memory: RSS sum / PSS sum |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        n, m = r["records"], r["miner"]
        print(f"| {n:,} | {r['files']:,} ({r['mib']:.0f} MiB) | {r['zcat']:.2f} s = {n / r['zcat'] / 1e3:.0f}k/s | "
              f"{r['python']:.2f} s = {n / r['python'] / 1e3:.0f}k/s | **{m['wall']:.2f} s = "
              f"{n / m['wall'] / 1e3:.0f}k/s** | {m['wall'] / r['zcat']:.2f}x the zcat time | "
              f"{r['python'] / m['wall']:.1f}x faster | {r['miner_cpu_best']:.1f} s = "
              f"{n / r['miner_cpu_best'] / 1e3:.0f}k records per CPU-second | "
              f"{r['rss_max'] / 2**20:.0f} / {r['pss_max'] / 2**20:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
