"""Benchmark `miner ingest cloudtrail://REGION` against a local LookupEvents endpoint (tests/lookup_server.py).

Usage:
    python scripts/bench_lookup.py                       # both modes, 3 runs each
    python scripts/bench_lookup.py --repeat 5 --events 40000

Two modes, each run ``--repeat`` times, interleaved with its baseline:

* ``limited``: the real limit (2 requests per second, ``MINER_LOOKUP_RATE`` unset) on ``--limited-events`` events
  over 3 days: the achieved requests per second and events per second, against the arithmetic of the limit
  (``requests * 1.05 / 2`` seconds, the spacing miner keeps).
* ``unlimited``: ``MINER_LOOKUP_RATE=1000000`` on ``--events`` events over 5 days: miner's own cost per event
  (parse, normalise, commit), against a baseline measured in the same run: a plain boto3 loop over the same day
  slices and pages that only ``json.loads`` each ``CloudTrailEvent`` (no store).

Each run is a subprocess (``python -m miner.cli ingest ... -q --json`` into a fresh store, or the baseline loop);
wall time, and CPU time (user+sys) of the subprocess. Prints medians as a markdown table for BENCHMARKS.md. The
endpoint runs in this process, so its own CPU is not counted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_ingest import _machine  # noqa: E402
from lookup_server import ACCOUNT, serve  # noqa: E402

UTC = timezone.utc

_BASELINE = """
import json, sys, boto3
from datetime import datetime, timedelta, timezone
url, since, until = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
client = boto3.client("cloudtrail", region_name="us-east-1", endpoint_url=url)
t, end, n, requests = datetime.fromtimestamp(since, timezone.utc), datetime.fromtimestamp(until, timezone.utc), 0, 0
while t < end:
    stop = min(datetime(t.year, t.month, t.day, tzinfo=timezone.utc) + timedelta(days=1), end)
    kw = {"StartTime": t, "EndTime": stop - timedelta(seconds=1), "MaxResults": 50}
    while True:
        resp = client.lookup_events(**kw)
        requests += 1
        n += sum(1 for e in resp["Events"] if json.loads(e["CloudTrailEvent"]))
        if not resp.get("NextToken"):
            break
        kw["NextToken"] = resp["NextToken"]
    t = stop
print(json.dumps({"records_written": n, "lookup_requests": requests}))
"""


def _records(n: int, days: int, end: datetime) -> list[dict]:
    """``n`` management records of the sample logs (account 111122223333, us-east-1), new eventIDs, spread evenly
    over the ``days`` before ``end``."""
    base = []
    for f in sorted((REPO / "sample_logs" / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1").rglob("*.json.gz")):
        try:
            base += [r for r in json.loads(gzip.decompress(f.read_bytes()))["Records"]
                     if r.get("eventCategory") == "Management"]
        except (EOFError, OSError):
            continue
    step = days * 86400 / n
    start = end - timedelta(days=days)
    return [dict(base[i % len(base)], eventID=str(uuid.UUID(int=i + 1)),
                 eventTime=(start + timedelta(seconds=int(i * step))).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for i in range(n)]


def _run(cmd: list[str], env: dict) -> tuple[float, float, dict]:
    """Wall and CPU seconds of a subprocess, and its JSON output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out)


def _mode(name: str, events: int, days: int, rate: str | None, repeat: int) -> list[str]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    records = _records(events, days, end)
    since, until = end - timedelta(days=days), end
    rows = {"miner": [], "baseline": []}
    with serve({"us-east-1": records}) as server, tempfile.TemporaryDirectory(prefix="miner-bench-lookup-") as tmp:
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL_STS=server.url,
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("MINER_LOOKUP_RATE", None)
        if rate:
            env["MINER_LOOKUP_RATE"] = rate
        for i in range(repeat):
            store = Path(tmp) / f"store-{i}"
            rows["miner"].append(_run([sys.executable, "-P", "-m", "miner.cli", "ingest", "cloudtrail://us-east-1",
                                       "--store", str(store), "--since", since.isoformat(), "--until",
                                       until.isoformat(), "--cloudtrail-endpoint-url", server.url, "-q", "--json"],
                                      env))
            if rate:  # (the limited mode compares with the arithmetic of the limit instead)
                rows["baseline"].append(_run([sys.executable, "-c", _BASELINE, server.url, str(since.timestamp()),
                                              str(until.timestamp())], env))
    out = []
    for who, runs in rows.items():
        if not runs:
            continue
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        written = runs[0][2]["records_written"]
        requests = runs[0][2]["lookup_requests"]
        assert written == events, (who, written, events)
        floor = requests * 1.05 / 2 if not rate else None
        ratio = (f"{wall / floor:.2f}x the limit's {floor:.1f} s" if floor else
                 f"{wall / statistics.median(r[0] for r in rows['baseline']):.2f}x baseline")
        out.append(f"| {name} | {who} | {events:,} | {requests:,} | {wall:.2f} s | {cpu:.2f} s | "
                   f"{requests / wall:.2f} | {events / wall:,.0f} | {ratio} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--events", type=int, default=20000, help="events of the unlimited mode")
    ap.add_argument("--limited-events", type=int, default=1500, help="events of the limited mode (2 requests/s)")
    args = ap.parse_args()
    print(f"machine: {_machine()}")
    print(f"command: python scripts/bench_lookup.py {' '.join(sys.argv[1:])}".rstrip())
    print("| mode | run | events | requests | wall (median) | CPU (median) | requests/s | events/s | vs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for line in _mode("unlimited", args.events, 5, "1000000", args.repeat):
        print(line, flush=True)
    for line in _mode("limited (2/s)", args.limited_events, 3, None, args.repeat):
        print(line, flush=True)


if __name__ == "__main__":
    main()
