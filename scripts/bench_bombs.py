"""Benchmark `miner ingest` on hostile files (decompression and parser bombs) against a normal file of the same size.

Usage:
    python scripts/bench_bombs.py                       # files built once, cached under /tmp/miner-bench/bombs
    python scripts/bench_bombs.py --repeat 5 --max-object-size 64MiB

Builds (once, cached), each in its own folder:

* ``normal``: one CloudTrail ``.json.gz`` of ~4 MiB (records of ``scripts/gen_sample_logs.py``): the baseline;
* ``gzip-bomb``: a ~4 MiB ``.json.gz`` that inflates to 4 GiB (``{"Records": [`` + spaces + ``]}``);
* ``long-string``: a ~50 KB gzip of one 48 MiB string followed by 5,000 ``{`` (not JSON: the lenient reader);
* ``deep-record``: the normal file with one record nested 2,000 deep (the other records must be kept).

Then runs ``miner ingest DIR --store FRESH -q --json`` on each, ``--repeat`` times, interleaved (so background load
hits every case alike), in a subprocess: wall time, CPU time (user+sys of the process tree) and peak memory
(summed RSS and PSS, polled every 50 ms; see ``bench_ingest.py``). Prints the medians, and the ratios against
``normal`` measured in the same run, as a markdown table (paste it into BENCHMARKS.md "Hostile input").

Asserts that the bomb's peak RSS stays below the normal file's plus ``--max-object-size`` (a gzip stops inflating
there), and that the long string costs less CPU than the normal file's parse times 10. Runs against whichever
``miner`` is importable: ``PYTHONPATH=<old checkout>`` measures an older version (nothing is asserted then).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench_ingest import REPO, _machine, _measure

CASES = ("normal", "gzip-bomb", "long-string", "deep-record")
NORMAL_GZ_BYTES = 4 << 20
BOMB_BYTES = 4 << 30


def _normal_records(tmp: Path) -> list[dict]:
    """Realistic records from the sample generator (no corrupt/digest files)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from gen_sample_logs import generate

    generate(str(tmp), seed=11, days=2, scale=4, sample_extras=False)
    records: list[dict] = []
    for p in sorted(tmp.rglob("*.json.gz")):
        records.extend(json.loads(gzip.decompress(p.read_bytes()))["Records"])
    return records


def _write_normal(path: Path, records: list[dict], extra: str | None = None) -> int:
    """``{"Records": [...]}`` of ~NORMAL_GZ_BYTES of gzip (the records repeated with new eventIDs as needed);
    returns the record count."""
    sample = gzip.compress(json.dumps(records[:2000], separators=(",", ":")).encode(), 6)
    want = NORMAL_GZ_BYTES * 2000 // len(sample)
    parts = []
    for i in range(want):
        r = dict(records[i % len(records)], eventID=f"bench-{i:08d}")
        parts.append(json.dumps(r, separators=(",", ":")))
    if extra is not None:
        parts.insert(len(parts) // 2, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(('{"Records":[' + ",".join(parts) + "]}").encode(), 6))
    return want


def _write_bomb(path: Path) -> None:
    """A gzip of ``{"Records": [`` + 4 GiB of spaces + ``]}``, streamed (never 4 GiB in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (16 << 20)
    with open(path, "wb") as fh:
        fh.write(z.compress(b'{"Records": ['))
        for _ in range(BOMB_BYTES // len(block)):
            fh.write(z.compress(block))
        fh.write(z.compress(b"]}"))
        fh.write(z.flush())


def build(root: Path) -> dict[str, dict]:
    """Build the four cases under ``root`` (cached); returns ``{case: {"dir", "gz_bytes", "raw_bytes", "records"}}``."""
    meta_path = root / "cases.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.time()
    print(f"building the cases in {root} (once) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        records = _normal_records(Path(tmp))
    meta: dict[str, dict] = {}
    n = _write_normal(root / "normal" / "normal.json.gz", records)
    meta["normal"] = {"records": n}
    _write_bomb(root / "gzip-bomb" / "bomb.json.gz")
    meta["gzip-bomb"] = {"records": 0}
    (root / "long-string").mkdir(parents=True)
    (root / "long-string" / "string.json.gz").write_bytes(gzip.compress(b'["' + b"x" * (48 << 20) + b"{" * 5000, 9))
    meta["long-string"] = {"records": 0}
    deep = '{"eventID":"deep","eventTime":"2026-08-01T00:00:00Z","requestParameters":' + '{"a":' * 2000 + "1" \
        + "}" * 2000 + "}"
    n = _write_normal(root / "deep-record" / "deep.json.gz", records, extra=deep)
    meta["deep-record"] = {"records": n}  # the good records only
    for case in CASES:
        (path,) = (root / case).iterdir()
        meta[case].update(dir=str(root / case), gz_bytes=path.stat().st_size, raw_bytes=_inflated_size(path))
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"built in {time.time() - t0:.0f} s", file=sys.stderr)
    return meta


def _inflated_size(path: Path) -> int:
    d, n = zlib.decompressobj(31), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            data = d.decompress(chunk, 64 << 20)
            n += len(data)
            while d.unconsumed_tail:
                data = d.decompress(d.unconsumed_tail, 64 << 20)
                n += len(data)
    return n


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/miner-bench/bombs", help="cache directory for the built files")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (the median is reported)")
    ap.add_argument("--max-object-size", default=None, help="passed to miner ingest (default: miner's own, 256MiB)")
    args = ap.parse_args(argv)

    import miner
    from miner import models

    print(f"machine: {_machine()}; miner from {Path(miner.__file__).parent}", file=sys.stderr)
    meta = build(Path(args.data))
    limit = models.parse_size(args.max_object_size or "256MiB") if hasattr(models, "parse_size") else None
    extra = ["--max-object-size", args.max_object_size] if args.max_object_size else []
    runs: dict[str, list[dict]] = {c: [] for c in CASES}
    written: dict[str, int] = {}
    for i in range(args.repeat):
        for case in CASES if i % 2 == 0 else reversed(CASES):
            store = Path(tempfile.mkdtemp(prefix="miner-bomb-store-", dir=args.data))
            try:
                m = _measure([sys.executable, "-m", "miner.cli", "ingest", meta[case]["dir"], "--store", str(store),
                              "-q", "--json", *extra], check=False)
            finally:
                shutil.rmtree(store, ignore_errors=True)
            out = json.loads(m["stdout"]) if m["stdout"].strip() else {}
            written[case] = out.get("records_written", -1)
            runs[case].append(m)
            print(f"  {case}: {m['wall']:.2f} s wall, {m['cpu']:.2f} s CPU, peak RSS {_mib(m['rss'])}, exit "
                  f"{m['returncode']}, {written[case]:,} records written", file=sys.stderr, flush=True)

    med = {c: {k: statistics.median(m[k] for m in runs[c]) for k in ("wall", "cpu", "rss", "pss")} for c in CASES}
    base = med["normal"]
    print()
    print("| file | gzip | inflates to | records written | wall (median) | CPU (median) | peak RSS / PSS | "
          "wall, CPU, RSS vs normal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in CASES:
        m = med[c]
        print(f"| {c} | {_mib(meta[c]['gz_bytes'])} | {_mib(meta[c]['raw_bytes'])} | {written[c]:,} | "
              f"{m['wall']:.2f} s | {m['cpu']:.2f} s | {_mib(m['rss'])} / {_mib(m['pss'])} | "
              f"{m['wall'] / base['wall']:.2f}x, {m['cpu'] / base['cpu']:.2f}x, {m['rss'] / base['rss']:.2f}x |")
    if limit is None:
        print("\nan older miner (no --max-object-size): nothing asserted", file=sys.stderr)
        return 0
    bound = base["rss"] + limit
    print(f"\nbomb peak RSS {_mib(max(m['rss'] for m in runs['gzip-bomb']))} (max of {args.repeat}); bound: normal "
          f"{_mib(base['rss'])} + max-object-size {_mib(limit)} = {_mib(bound)}", file=sys.stderr)
    assert max(m["rss"] for m in runs["gzip-bomb"]) < bound, "the decompression bomb's memory is not bounded"
    assert med["long-string"]["cpu"] < 10 * base["cpu"], "the lenient reader's work is not bounded"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
