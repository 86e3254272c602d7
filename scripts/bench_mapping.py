"""Measure the mapping stage: coverage targets on real CloudTrail data and the time to map 1M events."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REAL = REPO.parent / "shared" / "cloudtrail-real"

#: Columns of the frame :func:`load_records` returns (a subset of the store schema, same names).
COLUMNS = ("event_id", "event_source", "event_name", "event_type", "request_parameters", "resources", "account_id",
           "aws_region", "partition", "principal_type", "outcome", "source_object")


def _records(obj):
    """Yield CloudTrail records from any of the containers seen in the wild (see ODDITIES.md section A)."""
    if isinstance(obj, list):
        for x in obj:
            yield from _records(x)
    elif isinstance(obj, dict):
        if isinstance(obj.get("Records"), list):
            yield from _records(obj["Records"])
        elif isinstance(obj.get("detail"), dict) and ("eventName" in obj["detail"] or "eventSource" in obj["detail"]):
            yield obj["detail"]
        elif isinstance(obj.get("data"), dict):
            yield from _records(obj["data"])
        elif "eventName" in obj or "eventname" in obj or "eventSource" in obj:
            yield obj


def _parse(data: bytes):
    import orjson

    try:
        yield from _records(orjson.loads(data))
        return
    except orjson.JSONDecodeError:
        pass
    for line in data.splitlines():
        line = line.strip()
        if line:
            try:
                yield from _records(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue


def _text(v):
    import orjson

    if v is None:
        return None
    if isinstance(v, str):
        return v
    return orjson.dumps(v).decode()


def load_records(root: Path):
    """Parse every ``.json``/``.json.gz`` file under ``root`` into a DataFrame (deduped on eventID).

    A minimal stand-in for ``miner ingest`` so the benchmark does not depend on the store: only the columns the
    mapping and its targets need.

    Args:
        root: a folder of CloudTrail files (any container: Records, arrays, NDJSON, EventBridge).

    Returns:
        A pandas DataFrame with :data:`COLUMNS`.
    """
    import pandas as pd

    from miner.models import classify_outcome, partition_of

    rows, seen = [], set()
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or not (path.name.endswith(".json") or path.name.endswith(".gz")):
            continue
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError):
            continue
        for r in _parse(data):
            lower = {k.lower(): v for k, v in r.items()}
            eid = r.get("eventID") or lower.get("eventid")
            if eid and eid in seen:
                continue
            if eid:
                seen.add(eid)
            ui = r.get("userIdentity") if isinstance(r.get("userIdentity"), dict) else {}
            region = r.get("awsRegion") or lower.get("awsregion")
            arn = ui.get("arn") if isinstance(ui.get("arn"), str) else None
            rows.append((
                eid, r.get("eventSource") or lower.get("eventsource"), r.get("eventName") or lower.get("eventname"),
                r.get("eventType") or lower.get("eventtype"), _text(r.get("requestParameters")),
                _text(r.get("resources")), str(r.get("recipientAccountId") or ui.get("accountId") or ""), region,
                partition_of(region, arn), ui.get("type"),
                classify_outcome(r.get("errorCode") or None, r.get("errorMessage")), str(path.relative_to(root)),
            ))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def target_mask(df):
    """Authorised (outcome not denied), non-service (principal_type != AWSService) AwsApiCall events."""
    return (df["outcome"] != "denied") & (df["principal_type"].fillna("") != "AWSService") & (
        df["event_type"].fillna("AwsApiCall") == "AwsApiCall")


def measure(df) -> dict:
    """Mapping figures over a frame of events (see the module docstring for the definitions)."""
    from miner.catalog import get_catalog
    from miner.mapping import REASON_NO_RESOURCE_LEVEL, get_mapper, map_frame

    cat = get_catalog()
    mapper = get_mapper("")  # built-in rules only: the figures must not depend on a local service reference
    t0 = time.perf_counter()
    m = map_frame(df.reset_index(drop=True).assign(_row=range(len(df))), mapper)
    seconds = time.perf_counter() - t0
    bad = sorted({a for a in m["action"].dropna() if not cat.has_action(a)})
    tgt = m[target_mask(m)]
    per_event = tgt.groupby("_row")["status"].first()
    needs = per_event[per_event.isin(["mapped", "unmapped"])]
    prim = tgt[(tgt["status"] == "mapped") & ~tgt["implicit"] & tgt["action"].notna()]
    kinds = {a: (cat.info(a).supports_resource_level, any(rt.required for rt in cat.info(a).resource_types))
             for a in prim["action"].unique()}
    rl = prim[prim["action"].map(lambda a: kinds[a][0]).astype(bool)]
    rl_events = ~(rl["resource"] == "*").groupby(rl["_row"]).any()  # every resource-level action got an ARN
    req = prim[prim["action"].map(lambda a: kinds[a][1]).astype(bool)]
    req_events = ~(req["resource"] == "*").groupby(req["_row"]).any()
    unmapped = tgt[tgt["status"] == "unmapped"].groupby(["event_source", "event_name"]).size()
    return {
        "records": len(df),
        "target_events": int(len(per_event)),
        "no_permission": int((per_event == "no_permission").sum()),
        "service_or_other": int((~per_event.isin(["mapped", "unmapped", "no_permission"])).sum()),
        "need_action": int(len(needs)),
        "mapped": int((needs == "mapped").sum()),
        "mapped_share": float((needs == "mapped").mean()) if len(needs) else float("nan"),
        "resource_level_events": int(len(rl_events)),
        "narrow_events": int(rl_events.sum()),
        "narrow_share": float(rl_events.mean()) if len(rl_events) else float("nan"),
        "required_type_events": int(len(req_events)),
        "required_type_narrow_share": float(req_events.mean()) if len(req_events) else float("nan"),
        "star_no_resource_level": int((prim["reason"] == REASON_NO_RESOURCE_LEVEL).sum()),
        "unknown_actions": bad,
        "unmapped": {f"{s} {n}": int(c) for (s, n), c in unmapped.items()},
        "map_seconds": seconds,
    }


def bench_scale(df, n: int) -> dict:
    """Time map_frame over ``n`` rows made by replicating ``df``, each run with a fresh (cold) mapper.

    Two runs: the mapping input columns only, and every column of ``df`` passed through (the exploded output
    then copies the request-parameter JSON too, which dominates).
    """
    import numpy as np

    from miner.mapping import FRAME_INPUTS, Mapper, map_frame

    reps = int(np.ceil(n / max(len(df), 1)))
    big = df.iloc[np.tile(np.arange(len(df)), reps)[:n]].reset_index(drop=True)
    keys = big[[c for c in FRAME_INPUTS + ("event_type",) if c in big.columns]]
    out = {"rows": len(big), "distinct_inputs": int(keys.drop_duplicates().shape[0])}
    for label, frame in (("inputs_only", keys), ("all_columns", big)):
        t0 = time.perf_counter()
        res = map_frame(frame, Mapper())
        out[label] = {"seconds": time.perf_counter() - t0, "output_rows": len(res), "columns": len(frame.columns)}
    return out


def main(argv=None) -> int:
    """Command line: ``python scripts/bench_mapping.py [--real DIR] [--sample DIR] [--rows N] [--json]``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real CloudTrail files")
    ap.add_argument("--sample", type=Path, default=REPO / "sample_logs", help="bundled sample logs (also measured)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for the scale test (0: skip)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from miner.mapping import get_mapper

    results = {"versions": get_mapper("").version}
    frames = {}
    for name, root in (("real", args.real), ("sample", args.sample)):
        if root and root.is_dir():
            t0 = time.perf_counter()
            frames[name] = load_records(root)
            results[f"{name}_load_seconds"] = time.perf_counter() - t0
            results[name] = measure(frames[name])
    if args.rows and frames:
        base = frames.get("real", next(iter(frames.values())))
        results["scale"] = bench_scale(base, args.rows)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    print(f"mapping: {results['versions']}")
    print(f"{'data':8} {'target events':>13} {'no-perm':>8} {'mapped':>14} {'mapped %':>9} {'res-level':>10} "
          f"{'narrow %':>9} {'req-type narrow %':>18}")
    for name in ("real", "sample"):
        r = results.get(name)
        if not r:
            continue
        print(f"{name:8} {r['target_events']:>13} {r['no_permission']:>8} {r['mapped']:>6}/{r['need_action']:<7} "
              f"{100 * r['mapped_share']:>8.2f}% {r['resource_level_events']:>10} {100 * r['narrow_share']:>8.2f}% "
              f"{100 * r['required_type_narrow_share']:>17.2f}%")
        if r["unknown_actions"]:
            print(f"  ACTIONS NOT IN THE CATALOGUE: {r['unknown_actions']}")
        for k, v in r["unmapped"].items():
            print(f"  unmapped: {k} ({v})")
    if "scale" in results:
        s = results["scale"]
        for label in ("inputs_only", "all_columns"):
            r = s[label]
            print(f"scale ({label}, {r['columns']} columns): map_frame over {s['rows']:,} rows "
                  f"({s['distinct_inputs']:,} distinct inputs) -> {r['output_rows']:,} rows in {r['seconds']:.2f} s "
                  f"({s['rows'] / r['seconds']:,.0f} rows/s, cold mapper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
