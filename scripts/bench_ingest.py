"""Benchmark `miner ingest` on local delivery-layout logs against the inflate+decode floor, zcat and plain Python.

Usage:
    python scripts/bench_ingest.py                        # 1M and 2M records, data cached under /tmp/miner-bench
    python scripts/bench_ingest.py --records 500000 --data /tmp/miner-bench --repeat 3
    python scripts/bench_ingest.py --sizes 1 --repeat 5 --against ../old-checkout   # old and new alternating
    python scripts/bench_ingest.py --floor --sizes 1 --repeat 5 --processes 1,2 --base /tmp/ingest-base
    python scripts/bench_ingest.py --readers --repeat 3                 # native JSON readers vs msgspec
    python scripts/bench_ingest.py --stages --repeat 3                  # where miner's parse step spends CPU

``--floor``: CPU per record, side by side in one run, interleaved rounds (each round runs every command once, in a
rotated order, so background load hits all alike), medians:

* the floor: one process inflating every file with ISA-L (``isal.isal_zlib``) and, separately, zlib-ng
  (``zlib_ng``) when installed, and decoding only the fields the store keeps with a msgspec struct (the same
  fields as miner's decoder; requestParameters/resources as raw JSON); the cheaper of the two is "the floor";
* ``zcat`` (``find -print0 | xargs -0 zcat > /dev/null``), for reference;
* ``miner ingest DIR --store fresh -q --json --processes P`` for each P of ``--processes`` (parser processes; the
  ``--workers`` option is the number of S3 download threads), and the same for the ``--base`` checkout;

every figure is the CPU time (user+system) of the whole process tree, interpreter start included, divided by the
records read, beside the wall time; the table gives each one's ratio to the floor.

``--readers``: CPU per record of the native JSON readers that could decode the kept fields straight into Arrow
columns (``pyarrow.json`` with an explicit schema, the files batched as one NDJSON buffer; DuckDB ``read_json`` with
explicit ``columns``, one thread), beside ISA-L inflate and the msgspec decode miner uses, on the same first
``--reader-files`` files, in one process, interleaved rounds, medians (with msgspec validating only, the cost of
a native scan); and whether DuckDB's text of ``requestParameters`` (a ``JSON`` column) is the logged text byte for
byte, as the store keeps it.

``--stages``: CPU per record of each step of miner's parse step (read, inflate, decode, ``_normalise``, freeing,
``_chunk``, ``_write_parts``), in one process, on the same first ``--reader-files`` files in tasks of 500 files.

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
from functools import partial
from pathlib import Path
from typing import Callable

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


def _measure(cmd: list[str], check: bool = True, env: dict | None = None) -> dict:
    """Run ``cmd``; wall, CPU (user+sys) and peak summed RSS/PSS of its process tree (and its exit status: a
    non-zero one raises when ``check``)."""
    import psutil

    t0 = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    after = os.times()
    # CPU from the kernel's rusage of the waited-for process tree (exact, short-lived children included); the
    # polled sum can only miss some
    waited = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall": wall, "cpu": max(waited, sum(cpu.values())), "rss": peak_rss, "pss": peak_pss, "stdout": out,
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


#: The floor: inflate every file, decode only the fields miner's store keeps (msgspec struct), count the records.
_FLOOR_CODE = """
import sys, time
from typing import Any, Optional
import msgspec
if sys.argv[1] == "isal":
    from isal.isal_zlib import decompress
else:
    from zlib_ng.zlib_ng import decompress
issuer = msgspec.defstruct("Issuer", [("arn", Any, None), ("userName", Any, None)], gc=False)
context = msgspec.defstruct("Context", [("sessionIssuer", Optional[issuer], None)], gc=False)
ident = msgspec.defstruct("Identity", [(n, Optional[context] if n == "sessionContext" else Any, None) for n in (
    "type", "arn", "accountId", "invokedBy", "accessKeyId", "userName", "sessionContext", "principalId",
    "onBehalfOf")], gc=False)
fields = ("eventID", "eventTime", "eventType", "userIdentity", "recipientAccountId", "awsRegion", "eventSource",
          "eventName", "eventCategory", "eventVersion", "readOnly", "managementEvent", "errorCode", "errorMessage",
          "requestParameters", "resources", "sourceIPAddress", "userAgent", "vpcEndpointId")
raw = ("requestParameters", "resources")
rec = msgspec.defstruct("Rec", [(n, msgspec.Raw if n in raw else Optional[ident] if n == "userIdentity" else Any,
                                 None) for n in fields], gc=False)
decode = msgspec.json.Decoder(msgspec.defstruct("Doc", [("Records", list[rec])], gc=False)).decode
n = 0
for p in sys.stdin.read().split("\\0"):
    if p:
        with open(p, "rb") as fh:
            n += len(decode(decompress(fh.read(), 31)).Records)
print(n)
"""


def _floor_main(args) -> int:
    """``--floor``: one table per size of CPU per record, miner vs the inflate+decode floor (see the docstring)."""
    import importlib.util

    print(f"machine: {_machine()}; nproc {os.cpu_count()}", file=sys.stderr)
    procs = [int(x) for x in args.processes.split(",")]
    trees = [("this", str(REPO))] + ([("base", str(Path(args.against).resolve()))] if args.against else [])
    floors = [k for k, mod in (("isal", "isal"), ("zlib-ng", "zlib_ng")) if importlib.util.find_spec(mod)]
    if not floors:
        raise SystemExit("the floor needs `pip install isal` (or zlib-ng)")
    for mult in [int(x) for x in args.sizes.split(",")]:
        n = args.records * mult
        data = Path(args.data) / f"ingest-data-{n // 1000}k"
        stats = _gen(data, n)
        files = _files(data)
        records = stats["records_written"]
        listing = "\0".join(map(str, files))
        print(f"{records:,} records in {len(files):,} files ({sum(p.stat().st_size for p in files) / 2**20:.0f} MiB "
              f"gzip)", file=sys.stderr)
        runs: dict[str, list[dict]] = {}

        def floor(kind: str) -> dict:
            m = _measure_input([sys.executable, "-c", _FLOOR_CODE, "isal" if kind == "isal" else "zlib-ng"], listing)
            assert int(m["stdout"]) == records, (m["stdout"], records)
            return m

        def zcat() -> dict:
            return _measure(["sh", "-c", f"find '{data / 'AWSLogs'}' -name '*.json.gz' -print0 | xargs -0 zcat "
                                         f"> /dev/null"])

        def miner(tree: str, p: int) -> Callable[[], dict]:
            def run() -> dict:
                store = Path(tempfile.mkdtemp(prefix="miner-bench-store-", dir=args.data))
                env = {**os.environ, "PYTHONPATH": tree}
                try:
                    m = _measure([sys.executable, "-m", "miner.cli", "ingest", str(data), "--store", str(store),
                                  "-q", "--json", "--processes", str(p)], env=env)
                finally:
                    shutil.rmtree(store, ignore_errors=True)
                summary = json.loads(m["stdout"])
                assert summary["records_read"] == records
                assert summary["records_written"] == stats["distinct_event_ids"]
                return m
            return run

        cmds: list[tuple[str, Callable[[], dict]]] = [(f"floor: {k} + msgspec", partial(floor, k)) for k in floors]
        cmds.append(("zcat", zcat))
        cmds += [(f"miner ingest --processes {p}" + ("" if name == "this" else f" ({name}: {tree})"), miner(tree, p))
                 for name, tree in trees for p in procs]
        for i in range(args.repeat):
            order = cmds[i % len(cmds):] + cmds[:i % len(cmds)]  # rotated: each command in every position
            for label, run in order:
                m = run()
                runs.setdefault(label, []).append(m)
                print(f"  round {i + 1}: {label}: {m['cpu']:.2f} s CPU, {m['wall']:.2f} s wall", file=sys.stderr)
        med = {k: (statistics.median(m["cpu"] for m in v), statistics.median(m["wall"] for m in v),
                   max(m["rss"] for m in v)) for k, v in runs.items()}
        floor_label = min((k for k in med if k.startswith("floor")), key=lambda k: med[k][0])
        f_cpu = med[floor_label][0]
        print()
        print(f"{records:,} records, {len(files):,} files; medians of {args.repeat} interleaved rounds; the floor is "
              f"`{floor_label}`")
        print()
        print("| command | CPU (s) | CPU per record | wall (s) | CPU vs the floor | peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, (cpu, wall, rss) in med.items():
            print(f"| {k} | {cpu:.2f} | {cpu / records * 1e6:.2f} us | {wall:.2f} | {cpu / f_cpu:.2f}x | "
                  f"{rss / 2**20:.0f} MiB |")
    return 0


#: The kept fields, as a struct of the native readers (requestParameters/resources: raw JSON where the reader can).
_READER_FIELDS = [
    ("eventID", "VARCHAR"), ("eventTime", "VARCHAR"), ("eventType", "VARCHAR"),
    ("userIdentity", "STRUCT(type VARCHAR, arn VARCHAR, accountId VARCHAR, invokedBy VARCHAR, accessKeyId VARCHAR, "
                     "userName VARCHAR, principalId VARCHAR, sessionContext STRUCT(sessionIssuer STRUCT(arn VARCHAR, "
                     "userName VARCHAR)))"),
    ("recipientAccountId", "VARCHAR"), ("awsRegion", "VARCHAR"), ("eventSource", "VARCHAR"), ("eventName", "VARCHAR"),
    ("eventCategory", "VARCHAR"), ("eventVersion", "VARCHAR"), ("readOnly", "BOOLEAN"), ("managementEvent", "BOOLEAN"),
    ("errorCode", "VARCHAR"), ("errorMessage", "VARCHAR"), ("requestParameters", "JSON"), ("resources", "JSON"),
    ("sourceIPAddress", "VARCHAR"), ("userAgent", "VARCHAR"), ("vpcEndpointId", "VARCHAR"),
]


def _arrow_type(sql: str):
    """The pyarrow type of one of :data:`_READER_FIELDS`' DuckDB types (JSON has no Arrow reader type: skipped)."""
    import pyarrow as pa

    if sql.startswith("STRUCT("):
        fields, depth, start = [], 0, 7
        for i in range(7, len(sql)):
            depth += sql[i] == "("
            depth -= sql[i] == ")"
            if (sql[i] == "," and depth == 0) or i == len(sql) - 1:
                name, _, typ = sql[start:i].strip().partition(" ")
                fields.append(pa.field(name, _arrow_type(typ)))
                start = i + 1
        return pa.struct(fields)
    return {"VARCHAR": pa.string(), "BOOLEAN": pa.bool_()}[sql]


def _readers_main(args) -> int:
    """``--readers``: CPU per record of inflate, msgspec and the native JSON readers on the same files (docstring)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.json as pj
    from isal.isal_zlib import decompress

    sys.path.insert(0, str(REPO))
    from miner import ingest

    print(f"machine: {_machine()}; nproc {os.cpu_count()}; pyarrow {pa.__version__}, duckdb {duckdb.__version__}",
          file=sys.stderr)
    data = Path(args.data) / f"ingest-data-{args.records // 1000}k"
    _gen(data, args.records)
    files = _files(data)[:args.reader_files]
    blobs = [p.read_bytes() for p in files]
    docs = [decompress(b, 31) for b in blobs]
    decoder = ingest._struct_decoder()[0]
    records = sum(len(decoder.decode(d).Records) for d in docs)
    ndjson = b"\n".join(d.replace(b"\n", b" ") for d in docs)  # (JSON strings hold no raw newline)
    schema = pa.schema([("Records", pa.list_(pa.struct(
        [pa.field(n, _arrow_type(t)) for n, t in _READER_FIELDS if t != "JSON"])))])
    columns = "STRUCT(" + ", ".join(f"{n} {t}" for n, t in _READER_FIELDS) + ")[]"
    tmp = Path(tempfile.mkdtemp(prefix="miner-bench-readers-", dir=args.data))
    (tmp / "batch.ndjson").write_bytes(ndjson)
    con = duckdb.connect()
    con.execute("SET threads=1")
    query = ("SELECT unnest(Records, recursive := true) FROM read_json($f, columns = {'Records': $c}, "
             "format = $fmt, maximum_object_size = 16777216)")

    def pyarrow_json() -> int:
        table = pj.read_json(pa.BufferReader(ndjson), read_options=pj.ReadOptions(use_threads=False,
                                                                                     block_size=len(ndjson) + 1),
                             parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        return len(table.column("Records").combine_chunks().flatten())

    def duckdb_json(paths: list[str], fmt: str) -> Callable[[], int]:
        return lambda: con.sql(query, params={"f": paths, "c": columns, "fmt": fmt}).to_arrow_table().num_rows

    import msgspec

    def msgspec_decoder(fields: list[tuple]) -> Callable[[], int]:
        rec = msgspec.defstruct("Rec", fields, gc=False)
        dec = msgspec.json.Decoder(msgspec.defstruct("Doc", [("Records", list[rec])], gc=False))
        return lambda: sum(len(dec.decode(d).Records) for d in docs)

    cmds: list[tuple[str, Callable[[], int]]] = [
        ("inflate (ISA-L)", lambda: len([decompress(b, 31) for b in blobs]) and records),
        ("msgspec, validating only (no field materialised): the native scan floor", msgspec_decoder([])),
        ("msgspec, the kept fields as Raw spans", msgspec_decoder(
            [(n.lstrip("@"), msgspec.Raw, msgspec.field(default=None, name=n)) for n in ingest._FIELDS])),
        ("msgspec decode of the kept fields (miner's decoder)", lambda: sum(len(decoder.decode(d).Records)
                                                                          for d in docs)),
        ("pyarrow.json, explicit schema, one NDJSON buffer (no requestParameters/resources)", pyarrow_json),
        ("DuckDB read_json, explicit columns, one NDJSON file (inflated)",
         duckdb_json([str(tmp / "batch.ndjson")], "newline_delimited")),
        ("DuckDB read_json, explicit columns, the .json.gz files", duckdb_json([str(p) for p in files], "auto")),
    ]
    cpu: dict[str, list[float]] = {}
    try:
        for _, run in cmds:  # warm-up: extension loading, pyarrow's first-use imports
            run()
        for i in range(args.repeat):
            for label, run in cmds[i % len(cmds):] + cmds[:i % len(cmds)]:
                t0 = time.process_time()
                n = run()
                cpu.setdefault(label, []).append(time.process_time() - t0)
                assert n == records, (label, n, records)
        # the store keeps requestParameters as logged; DuckDB's JSON column is its own re-serialisation
        check = docs
        if args.reader_data:
            check = []
            for path in sorted(Path(args.reader_data).rglob("*.json*")):
                doc = path.read_bytes()
                doc = decompress(doc, 31) if doc[:2] == b"\x1f\x8b" else doc
                try:
                    decoder.decode(doc)
                except Exception:  # not {"Records": [...]}: the fast path would not take it anyway
                    continue
                check.append(doc)
        raw: list[bytes] = []
        texts: list[str] = []
        for doc in check:
            (tmp / "one.json").write_bytes(doc.replace(b"\n", b" "))
            try:
                got = [r[0] for r in con.sql(
                    "SELECT coalesce(CAST(r.requestParameters AS VARCHAR), 'null') FROM (SELECT unnest(Records) AS r "
                    "FROM read_json($f, columns = {'Records': $c}, format = 'newline_delimited', "
                    "maximum_object_size = 268435456))", params={"f": str(tmp / "one.json"), "c": columns}).fetchall()]
            except duckdb.Error:  # DuckDB rejects the file (a type it cannot cast): the Python path would take it
                continue
            raw += [bytes(r.requestParameters) for r in decoder.decode(doc).Records]
            texts += got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    differ = sum(a != b.encode() for a, b in zip(raw, texts))
    print()
    print(f"{records:,} records in the first {len(files):,} files; CPU of this process, medians of {args.repeat} "
          f"interleaved rounds")
    print()
    print("| step | CPU per record | vs msgspec |")
    print("|---|---:|---:|")
    ref = statistics.median(cpu[cmds[3][0]])
    for label, _ in cmds:
        m = statistics.median(cpu[label])
        print(f"| {label} | {m / records * 1e6:.2f} us | {m / ref:.1f}x |")
    print()
    print(f"requestParameters: DuckDB's text differs from the logged text in {differ:,} of {len(raw):,} records of "
          f"{args.reader_data or 'these files'} (each difference would change a stored value)")
    return 0


def _stages_main(args) -> int:
    """``--stages``: CPU per record of each step of miner's parse step, in one process (see the docstring)."""
    import gc

    import pyarrow as pa

    sys.path.insert(0, str(REPO))
    from miner import ingest

    print(f"machine: {_machine()}; nproc {os.cpu_count()}", file=sys.stderr)
    data = Path(args.data) / f"ingest-data-{args.records // 1000}k"
    _gen(data, args.records)
    files = [str(p) for p in _files(data)[:args.reader_files]]
    tmp = tempfile.mkdtemp(prefix="miner-bench-stages-", dir=args.data)
    limit = ingest.MAX_OBJECT_BYTES
    steps = ("read", "inflate", "decode", "_normalise", "free", "_chunk", "_write_parts")
    runs: dict[str, list[float]] = {}
    first = True
    clock = time.process_time
    gc.disable()  # as in a parser task
    try:
        for _ in range(args.repeat):
            if first:  # pyarrow imports pandas on its first pa.array of a process: measured apart, once
                t0 = clock()
                pa.array(["x"], pa.string())
                runs["(pyarrow's first pa.array imports pandas: once per process)"] = [clock() - t0]
                first = False
            spent = dict.fromkeys(steps, 0.0)
            n = 0
            for i in range(0, len(files), 500):
                rows: list = []
                srcs: list = []
                chunks: list = []
                seen: set = set()
                uris: list[str] = []
                codes = ingest._Codes(None)
                for path in files[i:i + 500]:
                    t0 = clock()
                    payload = ingest._read_file(path, limit)
                    t1 = clock()
                    payload, _ = ingest._gunzip_or_reason(payload, limit)
                    t2 = clock()
                    recs, struct = ingest._load(payload, limit)[:2]
                    t3 = clock()
                    before = len(rows)
                    n += ingest._normalise(recs, struct, rows, seen, {}, None, codes)[0]
                    t4 = clock()
                    recs = None
                    t5 = clock()
                    srcs.extend([len(uris)] * (len(rows) - before))
                    uris.append(path)
                    for k, a, b in zip(steps, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                        spent[k] += b - a
                    if len(rows) >= ingest.CHUNK_ROWS:
                        t0 = clock()
                        chunks.append(ingest._chunk(rows, srcs))
                        rows, srcs = [], []
                        spent["_chunk"] += clock() - t0
                t0 = clock()
                if rows:
                    chunks.append(ingest._chunk(rows, srcs))
                t1 = clock()
                parts = ingest._write_parts(chunks, codes, uris, ingest._Task(i, [], tmp, "bench", None, None))
                spent["_chunk"] += t1 - t0
                spent["_write_parts"] += clock() - t1
                for part in parts:
                    if part[3]:
                        os.unlink(part[3])
            for k, v in spent.items():
                runs.setdefault(k, []).append(v / n)
    finally:
        gc.enable()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{n:,} records in the first {len(files):,} files; CPU of this process, medians of {args.repeat} passes")
    print()
    print("| step | CPU per record |")
    print("|---|---:|")
    for k, v in runs.items():
        m = statistics.median(v)
        print(f"| {k} | " + (f"{m:.3f} s |" if k.startswith("(") else f"{m * 1e6:.2f} us |"))
    print(f"| all steps | {sum(statistics.median(v) for k, v in runs.items() if not k.startswith('(')) * 1e6:.2f} us |")
    return 0


def _measure_input(cmd: list[str], stdin: str) -> dict:
    """Run ``cmd`` with ``stdin`` as its input: wall and CPU time (user+system, from the kernel's rusage)."""
    t0 = time.perf_counter()
    before = os.times()
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall": time.perf_counter() - t0, "cpu": cpu, "rss": 0, "stdout": res.stdout}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/miner-bench", help="cache directory for generated logs")
    ap.add_argument("--records", type=int, default=1_000_000, help="the smaller size N (2N is measured too)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of miner ingest per size (best wall is kept)")
    ap.add_argument("--sizes", default="1,2", help="multiples of --records to measure")
    ap.add_argument("--orjson", action="store_true", help="measure the orjson-only parser (MINER_JSON=orjson), "
                                                          "as without msgspec installed")
    ap.add_argument("--against", "--base", metavar="CHECKOUT", help="also run the miner of another checkout, "
                    "alternating with this one, and print both medians (e.g. a `git worktree` of the commit before)")
    ap.add_argument("--floor", action="store_true", help="CPU per record of miner ingest vs the inflate+decode floor "
                                                         "and zcat (interleaved rounds, medians; see the docstring)")
    ap.add_argument("--processes", default="1,2", help="with --floor: the --processes values of miner ingest")
    ap.add_argument("--readers", action="store_true", help="CPU per record of the native JSON readers (pyarrow.json, "
                                                           "DuckDB read_json) vs inflate and msgspec (docstring)")
    ap.add_argument("--stages", action="store_true", help="CPU per record of each step of miner's parse step "
                                                          "(docstring)")
    ap.add_argument("--reader-files", type=int, default=2000, help="with --readers/--stages: how many files (first "
                                                                  "in order)")
    ap.add_argument("--reader-data", metavar="DIR", help="with --readers: check DuckDB's requestParameters text "
                                                         "against the logged text on these files instead")
    args = ap.parse_args(argv)
    if args.floor:
        return _floor_main(args)
    if args.readers:
        return _readers_main(args)
    if args.stages:
        return _stages_main(args)

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
