"""Benchmark `miner suggest` on large synthetic stores (build the store with pyarrow, time the CLI in a subprocess).

Usage:
    python scripts/bench_suggest.py build --events 10000000 --out /tmp/miner-bench/store-10M [--principals 1000]
    python scripts/bench_suggest.py run --store /tmp/miner-bench/store-10M [--store ...]
    python scripts/bench_suggest.py phases --store /tmp/miner-bench/store-10M [--base /tmp/base] [--rounds 5]
        # time per step, fresh process, best of the rounds
    python scripts/bench_suggest.py scan --store /tmp/miner-bench/store-10M     # what the usage query reads
    python scripts/bench_suggest.py latency --store /tmp/miner-bench/store-10M [--base /tmp/base] [--rounds 7]
        # suggest beside its own usage query, each in a fresh process, interleaved; medians, wall and CPU
    python scripts/bench_suggest.py all          # builds 5M and 10M stores (cached) and prints the table

The store has the layout of ``miner ingest`` (``events/account=/region=/date=/part-0.parquet``), each file sorted by
principal_arn (then event_time) with row groups of 64k rows. Two benchmark roles have a FIXED number of events in
every store size (``bench-heavy``: ~200k events, ``bench-light``: ~2k events); the other principals (998 by default,
``--principals``) share the rest, so a bigger store means more events of other principals, not more of the measured
roles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ACCOUNTS = ("111122223333", "444455556666", "012345678901")
REGIONS = ("us-east-1", "eu-west-1")
DAYS = 90
START = datetime(2026, 6, 1, tzinfo=timezone.utc)
N_PRINCIPALS = 1000
HEAVY_EVENTS = 200_000
LIGHT_EVENTS = 2_000
ROW_GROUP = 64 * 1024


def _ops(acct: str, region: str, i: int, n_keys: int) -> list[tuple[str, str, str, str | None, str, bool]]:
    """The (event_source, event_name, request_parameters, resources, category, read_only) pool of one principal."""
    bucket = f"data-{acct}-{i % 37}"
    table = f"table-{i % 53}"
    ops = []
    for k in range(n_keys):
        key = f"incoming/{k % 31:02d}/object-{k}.json"
        ops.append(("s3.amazonaws.com", "GetObject", json.dumps({"bucketName": bucket, "key": key}),
                    json.dumps([{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                                {"accountId": acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}]),
                    "Data", True))
    for k in range(max(1, n_keys // 10)):
        key = f"out/{k}.json"
        ops.append(("s3.amazonaws.com", "PutObject", json.dumps({"bucketName": bucket, "key": key}),
                    json.dumps([{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"}]), "Data", False))
    ops += [
        ("s3.amazonaws.com", "ListObjects", json.dumps({"bucketName": bucket, "prefix": "incoming/"}), None, "Data", True),
        ("dynamodb.amazonaws.com", "GetItem", json.dumps({"tableName": table}),
         json.dumps([{"type": "AWS::DynamoDB::Table", "ARN": f"arn:aws:dynamodb:{region}:{acct}:table/{table}"}]), "Data", True),
        ("dynamodb.amazonaws.com", "PutItem", json.dumps({"tableName": table}),
         json.dumps([{"type": "AWS::DynamoDB::Table", "ARN": f"arn:aws:dynamodb:{region}:{acct}:table/{table}"}]), "Data", False),
        ("dynamodb.amazonaws.com", "DescribeTable", json.dumps({"tableName": table}), None, "Management", True),
        ("kms.amazonaws.com", "Decrypt", json.dumps({"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
         json.dumps([{"type": "AWS::KMS::Key", "ARN": f"arn:aws:kms:{region}:{acct}:key/{i:08d}-0000-0000-0000-000000000000"}]),
         "Management", True),
        ("sqs.amazonaws.com", "SendMessage", json.dumps({"queueUrl": f"https://sqs.{region}.amazonaws.com/{acct}/q-{i % 11}"}),
         None, "Data", False),
        ("ec2.amazonaws.com", "DescribeInstances", None, None, "Management", True),
        ("sts.amazonaws.com", "GetCallerIdentity", None, None, "Management", True),
        ("logs.amazonaws.com", "DescribeLogGroups", None, None, "Management", True),
        ("lambda.amazonaws.com", "Invoke", json.dumps({"functionName": f"fn-{i % 17}"}),
         json.dumps([{"type": "AWS::Lambda::Function", "ARN": f"arn:aws:lambda:{region}:{acct}:function:fn-{i % 17}"}]),
         "Data", False),
    ]
    return ops


def _principals(n: int = N_PRINCIPALS):
    """(arn, type, name, account) of ``n`` principals, and their activity weights; indexes 0 and 1 are the benchmark
    roles (weight 0: their events are fixed)."""
    import numpy as np

    out = []
    for i in range(n):
        acct = ACCOUNTS[i % len(ACCOUNTS)]
        if i == 0:
            arn, typ, name = f"arn:aws:iam::{acct}:role/service-role/bench-heavy", "AssumedRole", "bench-heavy"
        elif i == 1:
            arn, typ, name = f"arn:aws:iam::{acct}:role/bench-light", "AssumedRole", "bench-light"
        elif i % 10 == 0:
            arn, typ, name = f"arn:aws:iam::{acct}:user/user-{i:04d}", "IAMUser", f"user-{i:04d}"
        else:
            arn, typ, name = f"arn:aws:iam::{acct}:role/app/svc-{i:04d}", "AssumedRole", f"svc-{i:04d}"
        out.append((arn, typ, name, acct))
    weights = 1.0 / np.arange(1, n + 1) ** 0.8  # Zipf-like activity
    weights[:2] = 0
    return out, weights / weights.sum()


def build(events: int, out: Path, seed: int = 7, row_group: int = ROW_GROUP, principals: int = N_PRINCIPALS) -> Path:
    """Write a synthetic store of about ``events`` records.

    Args:
        events: total number of records.
        out: the store root (created; reused when its marker says the same size was built).
        seed: RNG seed.
        row_group: rows per Parquet row group (the ingest stage writes 64k).
        principals: how many principals act (the two benchmark roles included).

    Returns:
        The store root.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from miner.models import EVENT_SCHEMA

    marker = out / "_bench.json"
    if marker.exists() and json.loads(marker.read_text()).get("events") == events and \
            json.loads(marker.read_text()).get("row_group", ROW_GROUP) == row_group and \
            json.loads(marker.read_text()).get("principals", N_PRINCIPALS) == principals:
        return out
    t0 = time.time()
    rng = np.random.default_rng(seed)
    n_principals = principals
    principals, weights = _principals(n_principals)
    others = events - HEAVY_EVENTS - LIGHT_EVENTS
    per_principal = rng.multinomial(others, weights)
    per_principal[0], per_principal[1] = HEAVY_EVENTS, LIGHT_EVENTS
    fields = ("event_source", "event_name", "request_parameters", "resources", "event_category", "read_only")
    # One flat pool of operations; each (principal, region) owns a slice [offset, offset + length).
    flat: list[tuple] = []
    offset = np.zeros((n_principals, len(REGIONS)), dtype=np.int64)
    length = np.zeros((n_principals, len(REGIONS)), dtype=np.int64)
    for i, (arn, typ, name, acct) in enumerate(principals):
        n_keys = 5000 if i == 0 else 50 if i == 1 else max(5, min(2000, int(per_principal[i] // 200)))
        for r, region in enumerate(REGIONS):
            ops = _ops(acct, region, i, n_keys)
            offset[i, r], length[i, r] = len(flat), len(ops)
            flat.extend(ops)
    pool = {f: np.array([op[c] for op in flat], dtype=object) for c, f in enumerate(fields)}
    pool["read_only"] = pool["read_only"].astype(bool)
    per = {  # per-principal constant columns
        "principal_arn": [p[0] for p in principals], "principal_type": [p[1] for p in principals],
        "principal_name": [p[2] for p in principals], "principal_account": [p[3] for p in principals],
        "source_ip": [f"10.0.{i % 250}.{i % 7}" for i in range(n_principals)],
        "session_name": [f"{p[2]}-session" for p in principals],
        "session_arn": [f"arn:aws:sts::{p[3]}:assumed-role/{p[2]}/{p[2]}-session" for p in principals],
    }
    per = {k: np.array(v, dtype=object) for k, v in per.items()}
    arn_rank = np.argsort(np.argsort(per["principal_arn"]))
    # Split each principal's events over (region, day) cells.
    cells: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for i, (arn, typ, name, acct) in enumerate(principals):
        n = int(per_principal[i])
        if n == 0:
            continue
        counts = rng.multinomial(n, np.full(len(REGIONS) * DAYS, 1.0 / (len(REGIONS) * DAYS)))
        for c, k in enumerate(counts):
            if k:
                cells.setdefault((acct, REGIONS[c // DAYS], c % DAYS), []).append((i, int(k)))
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    written = 0
    for (acct, region, day), members in sorted(cells.items()):
        day_start = START + timedelta(days=day)
        ids = np.array([m[0] for m in members])
        member = np.repeat(ids, [m[1] for m in members])
        n = len(member)
        r = REGIONS.index(region)
        pick = offset[member, r] + (rng.random(n) * length[member, r]).astype(np.int64)
        arrays = {f: pool[f][pick] for f in fields}
        arrays.update({f: v[member] for f, v in per.items()})
        base = np.datetime64(day_start.replace(tzinfo=None), "us")
        secs = rng.integers(0, 86400 * 10**6, size=n)
        order = np.lexsort((secs, arn_rank[member]))  # sorted by (principal_arn, event_time)
        arrays = {f: v[order] for f, v in arrays.items()}
        arrays["event_time"] = base + secs[order].astype("timedelta64[us]")
        denied = rng.random(n) < 0.02  # 2% of calls are denied
        arrays["error_code"] = np.where(denied, "AccessDenied", None)
        arrays["outcome"] = np.where(denied, "denied", "success")
        arrays["management_event"] = arrays["event_category"] == "Management"
        arrays["event_id"] = np.array([f"{acct}-{region}-{day}-{j}" for j in range(n)], dtype=object)
        for field, value in (("account_id", acct), ("aws_region", region), ("partition", "aws"),
                             ("event_type", "AwsApiCall"), ("event_version", "1.09"),
                             ("user_agent", "aws-sdk-java/2.20 Linux"), ("access_key_id", "ASIAEXAMPLE"),
                             ("error_message", None), ("invoked_by", None), ("vpc_endpoint_id", None),
                             ("source_object", f"bench/{acct}/{region}/{day}")):
            arrays[field] = np.full(n, value, dtype=object)
        table = pa.table({f.name: pa.array(arrays[f.name], type=f.type) for f in EVENT_SCHEMA})
        d = tmp / "events" / f"account={acct}" / f"region={region}" / f"date={day_start:%Y-%m-%d}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, d / "part-0.parquet", row_group_size=row_group, compression="zstd")
        written += n
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    (out / "_bench.json").write_text(json.dumps({"events": events, "written": written, "row_group": row_group,
                                                 "principals": n_principals, "seconds": round(time.time() - t0, 1)}))
    print(f"built {written:,} events in {time.time() - t0:.0f} s -> {out}", file=sys.stderr)
    return out


_TIMED = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
          "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE); "
          "w = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN); "
          "print(json.dumps({'wall': w, 'cpu': u.ru_utime + u.ru_stime, 'rss': u.ru_maxrss / 1024, "
          "'rc': r.returncode, 'out': r.stdout.decode()[-4000:], 'err': r.stderr.decode()[-2000:]}))")


def timed(cmd: list[str], pythonpath: str | None = None) -> dict:
    """Run ``cmd`` once in a fresh process, through a wrapper that measures it alone.

    Args:
        cmd: the command.
        pythonpath: ``PYTHONPATH`` for the command (the tree to run), else the inherited one.

    Returns:
        ``wall`` and ``cpu`` (user + system) seconds, peak ``rss`` (MB), ``rc``, and the tails of ``out``/``err``.
    """
    env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
    # as after `pip install`, which compiles the package's bytecode: a run reads .pyc files rather than compiling
    # every module (a development shell's PYTHONDONTWRITEBYTECODE=1 would add ~0.2 s to every run)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    res = subprocess.run([sys.executable, "-c", _TIMED, *cmd], capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout)


def measure(args: list[str], repeat: int = 3) -> tuple[float, float]:
    """Run ``miner ARGS`` in a subprocess ``repeat`` times; the best wall time (s) and the peak RSS (MB) of that run."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        got = timed([sys.executable, "-m", "miner.cli", *args])
        if got["rc"] != 0:
            raise RuntimeError(f"miner {' '.join(args)} failed: {got['err']}")
        if got["wall"] < best[0]:
            best = (got["wall"], got["rss"])
    return best


def role_events(store: Path, arn: str) -> int:
    """How many events a principal has in a store."""
    from miner.store import connect

    return connect(store).execute("SELECT count(*) FROM events WHERE principal_arn = $a", {"a": arn}).fetchall()[0][0]


def run(stores: list[Path], repeat: int = 5) -> str:
    """Time ``suggest`` for the two benchmark roles on each store; returns a Markdown table.

    The runs are interleaved (every configuration once per round, ``repeat`` rounds) and the best wall time is
    kept, so that other load on the machine affects all configurations alike.
    """
    principals, _ = _principals()
    configs = []
    for store in stores:
        meta = json.loads((store / "_bench.json").read_text())
        for idx, name in ((0, "bench-heavy"), (1, "bench-light")):
            n = role_events(store, principals[idx][0])
            for label, sel in (("--role", ["--role", name]), ("--principal", ["--principal", principals[idx][0]])):
                args = ["suggest", *sel, "--store", str(store), "--since", "2026-06-01", "--until", "2026-08-29", "--quiet"]
                configs.append(((meta["written"], meta.get("row_group", ROW_GROUP), name, n, label), args))
    best: dict[tuple, tuple[float, float]] = {}
    for _ in range(repeat):
        for key, args in configs:
            wall, rss = measure(args, repeat=1)
            if wall < best.get(key, (9e9, 0))[0]:
                best[key] = (wall, rss)
    rows = ["| store events | row group | role | role events | command | wall (s) | peak RSS (MB) |",
            "|---|---|---|---|---|---|---|"]
    for (total, rg, name, n, label), (wall, rss) in best.items():
        rows.append(f"| {total:,} | {rg:,} | {name} | {n:,} | suggest {label} | {wall:.2f} | {rss:.0f} |")
    return "\n".join(rows)


_PHASES_CHILD = r"""
import json, sys, time
t0 = (time.perf_counter(), time.process_time())
import miner.cli  # noqa: F401  (what the CLI imports)
from datetime import datetime, timezone
from miner import diff, models, synthesize, usage  # noqa: F401
from miner.store import connect
def mark(name):
    marks.append((name, (time.perf_counter(), time.process_time())))
marks = []
mark("imports")
win = models.make_window("2026-06-01", "2026-08-29", datetime(2026, 9, 1, tzinfo=timezone.utc))
con = connect(sys.argv[1]); con.execute("SET parquet_metadata_cache = true"); mark("connect")
who = usage.resolve_principal(con, win, role=sys.argv[2]); mark("resolve")
shapes = usage.call_shapes(con, who.arn, win); mark("shapes query")
mapped = usage.map_shapes(shapes); mark("map")
actions = usage.aggregate(mapped); mark("aggregate")
synthesize.synthesize(actions[actions["outcome_class"] == "authorised"]); mark("synthesize")
out, prev = {"shapes": len(shapes)}, t0
for k, v in marks:
    out[k], prev = [v[0] - prev[0], v[1] - prev[1]], v
print(json.dumps(out))
"""


def phases(store: Path, role: str, repeat: int = 5, base: Path | None = None) -> list[str]:
    """Time each step of ``suggest`` in a fresh process (cold, as the CLI runs): wall (CPU of the process) seconds, each
    the best of ``repeat``; a table row for this tree, and one for ``base`` (another checkout, run through
    ``PYTHONPATH``, interleaved round by round)."""
    here = str(Path(__file__).resolve().parent.parent)
    trees = [("this tree", here)] + ([("base", str(base))] if base else [])
    best: dict[str, dict[str, float]] = {label: {} for label, _ in trees}
    shapes = 0
    for _ in range(repeat):
        for label, tree in trees:
            res = subprocess.run([sys.executable, "-P", "-c", _PHASES_CHILD, str(store), role],  # -P: PYTHONPATH
                                 capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=tree))
            got = json.loads(res.stdout.strip().splitlines()[-1])  # the last line: DuckDB may draw on stdout
            shapes = got.pop("shapes")
            for k, (wall, cpu) in got.items():
                was = best[label].get(k, (9e9, 9e9))
                best[label][k] = (min(was[0], wall), min(was[1], cpu))
    return [f"| {store.name} | {role} | {label} | {shapes:,} | " +
            " | ".join(f"{w:.2f} ({c:.2f})" for w, c in b.values()) +
            f" | {sum(w for w, _c in b.values()):.2f} ({sum(c for _w, c in b.values()):.2f}) |"
            for label, b in best.items()]


def scan(store: Path, role: str) -> str:
    """Bytes and row groups the usage query reads for one role (DuckDB EXPLAIN ANALYZE; load-independent)."""
    import re

    from miner import models, queries
    from miner.store import connect

    principals, _ = _principals()
    arn = next(p[0] for p in principals if p[2] == role)
    win = models.make_window("2026-06-01", "2026-08-29", datetime(2026, 9, 1, tzinfo=timezone.utc))
    con = connect(store)
    plan = con.execute("EXPLAIN ANALYZE " + queries.load("usage_by_principal"),
                       {"since": win.since, "until": win.until, "principal_arn": arn}).fetchall()[0][1]
    read = re.search(r"Data Read:\s*([\d.]+\s*\w+)", plan)
    groups = re.search(r"Row Groups Scanned:\s*([\d,]+\s*/\s*[\d,]+)", plan)
    return (f"| {store.name} | {role} | {role_events(store, arn):,} | {groups.group(1) if groups else '?'} | "
            f"{read.group(1) if read else '?'} |")


_QUERY_CHILD = r"""
import json, sys, time
from datetime import datetime
t0 = time.perf_counter()
import duckdb
store, sql_file, arn, since, until = sys.argv[1:6]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("CREATE VIEW events AS SELECT * FROM read_parquet('" + store.replace("'", "''") +
            "/events/account=*/region=*/date=*/*.parquet', hive_partitioning = true, "
            "hive_types = {'account': 'VARCHAR', 'region': 'VARCHAR', 'date': 'DATE'}, union_by_name = true)")
t1 = time.perf_counter()
params = {"since": datetime.fromisoformat(since), "until": datetime.fromisoformat(until), "principal_arn": arn}
sql = open(sql_file, encoding="utf-8").read()
rows = con.sql(sql, params={k: v for k, v in params.items() if "$" + k in sql}).to_arrow_table().num_rows
t2 = time.perf_counter()
print(json.dumps({"setup": t1 - t0, "query": t2 - t1, "rows": rows}))
"""


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def latency(stores: list[Path], rounds: int = 7, base: Path | None = None) -> str:
    """``miner suggest`` beside the DuckDB query of its usage, each in a fresh process, interleaved; a Markdown table.

    Per round and (store, role): the usage query (``queries/usage_by_principal.sql`` of this tree, run by a process
    that imports only duckdb and opens the store's view as ``miner.store.connect`` does), then ``miner suggest
    --role ROLE --quiet`` of this tree, then of ``base`` (another checkout, through ``PYTHONPATH``) when given.
    Medians over the rounds: wall and CPU time, peak RSS, and suggest's wall over the query process's wall.
    """
    from miner import models

    here = str(Path(__file__).resolve().parent.parent)
    win = models.make_window("2026-06-01", "2026-08-29", datetime(2026, 9, 1, tzinfo=timezone.utc))
    sql = Path(here) / "queries" / "usage_by_principal.sql"
    principals, _ = _principals()
    trees = [("this tree", here)] + ([("base", str(base))] if base else [])
    got: dict[tuple, list[dict]] = {}
    for _ in range(rounds):
        for store in stores:
            for idx, role in ((0, "bench-heavy"), (1, "bench-light")):
                q = timed([sys.executable, "-c", _QUERY_CHILD, str(store), str(sql), principals[idx][0],
                           win.since.isoformat(), win.until.isoformat()])
                if q["rc"] != 0:
                    raise RuntimeError(f"usage query failed: {q['err']}")
                q.update(json.loads(q["out"].strip().splitlines()[-1]))  # the last line: DuckDB may draw on stdout
                got.setdefault((store.name, role, "query"), []).append(q)
                for label, tree in trees:
                    r = timed([sys.executable, "-P", "-m", "miner.cli", "suggest", "--role", role, "--store", str(store),
                               "--since", "2026-06-01", "--until", "2026-08-29", "--quiet"], pythonpath=tree)
                    if r["rc"] != 0:
                        raise RuntimeError(f"suggest failed ({label}): {r['err']}")
                    got.setdefault((store.name, role, label), []).append(r)
    rows = ["| store | role | run | wall (s) | CPU (s) | peak RSS (MB) | query alone in it (s) | wall / query process |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for store in stores:
        for role in ("bench-heavy", "bench-light"):
            q = got[(store.name, role, "query")]
            q_wall = _median([x["wall"] for x in q])
            rows.append(f"| {store.name} | {role} | usage query ({q[0]['rows']:,} shapes) | {q_wall:.2f} | "
                        f"{_median([x['cpu'] for x in q]):.2f} | {_median([x['rss'] for x in q]):.0f} | "
                        f"{_median([x['query'] for x in q]):.2f} | 1.00 |")
            for label, _tree in trees:
                r = got[(store.name, role, label)]
                wall = _median([x["wall"] for x in r])
                rows.append(f"| {store.name} | {role} | suggest, {label} | {wall:.2f} | "
                            f"{_median([x['cpu'] for x in r]):.2f} | {_median([x['rss'] for x in r]):.0f} | | "
                            f"{wall / q_wall:.2f} |")
    return "\n".join(rows)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--events", type=int, default=10_000_000)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--row-group", type=int, default=ROW_GROUP, help="rows per row group (ingest writes 64k)")
    b.add_argument("--principals", type=int, default=N_PRINCIPALS, help="principals that act (2 benchmark roles + the rest)")
    r = sub.add_parser("run")
    r.add_argument("--store", type=Path, action="append", required=True)
    ph = sub.add_parser("phases")
    ph.add_argument("--store", type=Path, action="append", required=True)
    ph.add_argument("--rounds", type=int, default=5, help="best of this many fresh processes per tree")
    ph.add_argument("--base", type=Path, help="another checkout to time beside this tree")
    sc = sub.add_parser("scan")
    sc.add_argument("--store", type=Path, action="append", required=True)
    lt = sub.add_parser("latency")
    lt.add_argument("--store", type=Path, action="append", required=True)
    lt.add_argument("--rounds", type=int, default=7)
    lt.add_argument("--base", type=Path, help="another checkout to run beside this tree (e.g. git archive e0a2d04)")
    a = sub.add_parser("all")
    a.add_argument("--dir", type=Path, default=Path(os.environ.get("MINER_BENCH_DIR", "/tmp/miner-bench")))
    args = p.parse_args()
    if args.cmd == "build":
        build(args.events, args.out, row_group=args.row_group, principals=args.principals)
    elif args.cmd == "latency":
        print(latency(args.store, args.rounds, args.base))
    elif args.cmd == "run":
        print(run(args.store))
    elif args.cmd == "scan":
        print("| store | role | role events | row groups scanned | data read |")
        print("|---|---|---|---|---|")
        for store in args.store:
            for role in ("bench-heavy", "bench-light"):
                print(scan(store, role))
    elif args.cmd == "phases":
        print("| store | role | tree | call shapes | imports | connect | resolve | shapes query | map | aggregate | "
              "synthesize | sum |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for store in args.store:
            for role in ("bench-heavy", "bench-light"):
                print("\n".join(phases(store, role, args.rounds, args.base)))
    else:
        stores = [build(n, args.dir / f"store-{n // 1_000_000}M") for n in (5_000_000, 10_000_000)]
        print(run(stores))


if __name__ == "__main__":
    main()
