"""Writes sample_logs/advisor/: IAM Access Advisor reports for the sample accounts' roles and users (deterministic).

Each report is what ``aws iam get-service-last-accessed-details`` prints for an ``ACTION_LEVEL`` job, with the
``"Arn"`` the job was generated for added, one file per account. The reports agree with the rest of sample_logs/:

- the services listed are those the principal's identity policies in ``sample_logs/iam`` allow (Access Advisor
  reads identity policies only: no boundary, no SCP);
- a service's (and a tracked action's) last access is the principal's last call to it in the sample trail
  (authorised or denied: Access Advisor counts attempts), in the region of that call;
- a few accesses predate the trail's 45 days (:data:`BEFORE_THE_TRAIL`): Access Advisor reaches 400 days back;
- the services of ``miner/data/advisor_tracked.csv`` list their tracked actions: the granted actions of the service
  that CloudTrail logs as management events (synthetic: AWS's per-action flags are not in the pinned catalogue).

So ``unused-etl`` (glue:*, s3:*) and ``legacy-batch`` (AdministratorAccess, yet only S3 and SQS in the trail) hold
services no request reached in 400 days: the review's strongest removal candidates.

Run: python scripts/gen_sample_advisor.py [--logs sample_logs] [--out sample_logs/advisor]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: When the sample's Access Advisor jobs completed: the morning after the trail's last day.
JOB_CREATED = datetime(2026, 9, 15, 6, 0, 0, tzinfo=timezone.utc)
JOB_COMPLETED = datetime(2026, 9, 15, 6, 0, 41, tzinfo=timezone.utc)
#: Accesses older than the trail: (principal name, action, time, region).
BEFORE_THE_TRAIL = [
    ("legacy-batch", "ec2:DescribeInstances", datetime(2026, 3, 2, 4, 10, tzinfo=timezone.utc), "us-east-1"),
    ("legacy-batch", "s3:GetBucketLocation", datetime(2026, 3, 2, 4, 11, tzinfo=timezone.utc), "us-east-1"),
    ("orders-api-task", "s3:GetBucketLocation", datetime(2026, 5, 11, 9, 30, tzinfo=timezone.utc), "us-east-1"),
]


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usage(store: Path) -> dict[str, dict[str, tuple[datetime, str]]]:
    """principal ARN -> action -> (last call, its region), from the whole sample trail."""
    import pandas as pd

    from miner import jobs, store as st, usage

    con = st.connect(store)
    out: dict[str, dict[str, tuple[datetime, str]]] = {}
    for arn in usage.principals(con, jobs.EVERYTHING)["principal_arn"]:
        if ":role/" not in arn and ":user/" not in arn:
            continue
        u = usage.collect(con, usage.Principal(arn), jobs.EVERYTHING)
        seen = out.setdefault(arn, {})
        for r in u.actions.itertuples(index=False):
            if not isinstance(r.action, str):
                continue
            last = pd.Timestamp(r.last_seen).to_pydatetime().astimezone(timezone.utc).replace(microsecond=0)
            regions = list(r.regions) if r.regions is not None and not isinstance(r.regions, str) else [r.regions]
            if r.action not in seen or last > seen[r.action][0]:
                seen[r.action] = (last, sorted(x for x in regions if x)[0] if any(regions) else "us-east-1")
    return out


def _report(arn: str, granted: set[str], used: dict[str, tuple[datetime, str]], catalog) -> dict:
    from miner import diff, evidence

    by_service: dict[str, list[str]] = {}
    for a in sorted(granted):
        by_service.setdefault(a.split(":", 1)[0], []).append(a)
    names = catalog.service_names
    services = []
    for svc, acts in sorted(by_service.items()):
        hits = [(used[a], a) for a in acts if a in used]
        entry: dict = {"ServiceName": names.get(svc) or svc, "ServiceNamespace": svc}
        if hits:
            (last, region), _ = max(hits)
            entry.update({"LastAuthenticated": _iso(last), "LastAuthenticatedEntity": arn,
                          "LastAuthenticatedRegion": region, "TotalAuthenticatedEntities": 1})
        else:
            entry["TotalAuthenticatedEntities"] = 0
        if svc in evidence.tracked_services():
            tracked = []
            for a in acts:
                if diff.unobservable_reason(a, set()) is not None:
                    continue  # object-level and never-logged actions: not in the sample's tracked lists
                item: dict = {"ActionName": a.split(":", 1)[1]}
                if a in used:
                    item.update({"LastAccessedEntity": arn, "LastAccessedTime": _iso(used[a][0]),
                                 "LastAccessedRegion": used[a][1]})
                tracked.append(item)
            entry["TrackedActionsLastAccessed"] = tracked
        services.append(entry)
    return {"Arn": arn, "JobStatus": "COMPLETED", "JobType": "ACTION_LEVEL", "JobCreationDate": _iso(JOB_CREATED),
            "JobCompletionDate": _iso(JOB_COMPLETED), "ServicesLastAccessed": services, "IsTruncated": False}


def _dumps(reports: list[dict]) -> str:
    """The reports as JSON with one service per line (readable diffs, a third of ``indent=1``'s size)."""
    out = []
    for r in reports:
        head = {k: v for k, v in r.items() if k != "ServicesLastAccessed"}
        services = ",\n  ".join(json.dumps(s, separators=(",", ":")) for s in r["ServicesLastAccessed"])
        out.append(json.dumps(head, separators=(",", ":"))[:-1] + ',"ServicesLastAccessed":[\n  ' + services + "]}")
    return "[\n" + ",\n".join(out) + "\n]\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--logs", type=Path, default=REPO / "sample_logs")
    ap.add_argument("--out", type=Path, default=REPO / "sample_logs" / "advisor")
    ap.add_argument("--store", type=Path, help="an existing store of the sample logs (default: ingest them now)")
    args = ap.parse_args(argv)

    from miner import diff, ingest, review
    from miner.catalog import get_catalog

    catalog = get_catalog()
    with tempfile.TemporaryDirectory(prefix="miner-advisor-sample-") as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "store"
            ingest.ingest([str(args.logs)], store)
        used = _usage(store)
    source = review.snapshot_source(args.logs / "iam")
    reports: dict[str, list[dict]] = {}
    for inv in sorted(source.inventory, key=lambda i: i["arn"]):
        arn = inv["arn"]
        mine = dict(used.get(arn, {}))
        for name, action, when, region in BEFORE_THE_TRAIL:
            if inv["name"] == name and action not in mine:
                mine[action] = (when, region)
        attached = source.attached(arn)
        granted = set(diff.granted_set(attached.documents, None, catalog))  # identity policies only, as AWS
        reports.setdefault(inv["account"], []).append(_report(arn, granted, mine, catalog))
    args.out.mkdir(parents=True, exist_ok=True)
    for account, items in sorted(reports.items()):
        (args.out / f"{account}.json").write_text(_dumps(items), encoding="utf-8")
        print(f"{args.out / (account + '.json')}: {len(items)} reports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
