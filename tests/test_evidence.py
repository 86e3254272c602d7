"""Evidence per granted action from CloudTrail and IAM Access Advisor (miner/evidence.py, data/advisor_tracked.csv)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from miner import advisor, evidence

DONE = "2026-09-15T06:00:00Z"
ARN = "arn:aws:iam::111122223333:role/app"


def _witness(services: list[dict]) -> evidence.Witness:
    rows = advisor.report_rows(ARN, {"JobStatus": "COMPLETED", "JobCompletionDate": DONE,
                                     "ServicesLastAccessed": services})
    return evidence.Witness.of(pd.DataFrame(rows, columns=advisor.COLUMNS), ARN)


#: One report: s3 tracked at action level (ListBuckets used, CreateBucket never), glue never accessed, sqs accessed
#: (service level only).
REPORT = [
    {"ServiceName": "Amazon S3", "ServiceNamespace": "s3", "LastAuthenticated": "2026-05-01T10:00:00Z",
     "LastAuthenticatedRegion": "us-east-1", "LastAuthenticatedEntity": ARN,
     "TrackedActionsLastAccessed": [
         {"ActionName": "ListBuckets", "LastAccessedTime": "2026-05-01T10:00:00Z", "LastAccessedRegion": "us-east-1",
          "LastAccessedEntity": ARN},
         {"ActionName": "CreateBucket"}]},
    {"ServiceName": "AWS Glue", "ServiceNamespace": "glue"},
    {"ServiceName": "Amazon SQS", "ServiceNamespace": "sqs", "LastAuthenticated": "2026-09-01T00:00:00Z"},
]


@pytest.mark.parametrize("action, status, kind, never", [
    ("s3:GetObject", "used", evidence.USED_CLOUDTRAIL, False),            # CloudTrail decides first
    ("s3:ListBuckets", "unused", evidence.USED_ADVISOR, False),           # tracked, accessed before the window
    ("s3:CreateBucket", "unused", evidence.UNUSED_PROVEN, False),         # tracked, never accessed
    ("glue:GetJob", "unused", evidence.UNUSED_PROVEN, True),              # the service was never accessed
    ("glue:GetTable", "unobservable", evidence.UNUSED_PROVEN, True),      # ... logged or not
    ("sqs:DeleteQueue", "unused", evidence.UNUSED_CLOUDTRAIL, False),     # service-level only: cannot tell
    ("s3:PutBucketPolicy", "unused", evidence.UNUSED_CLOUDTRAIL, False),  # tracked service, action not listed
    ("sqs:SendMessage", "unobservable", evidence.UNOBSERVABLE, False),    # CloudTrail blind, Advisor cannot tell
    ("kms:Decrypt", "unused", evidence.UNUSED_CLOUDTRAIL, False),         # not in the report at all
    ("glue:GetJob", "blocked", evidence.BLOCKED, False),                  # an SCP denies it: Advisor's proof moot
    ("s3:ListBuckets", "blocked", evidence.BLOCKED, False),               # ... even when Advisor saw it used
])
def test_each_kind_of_evidence(action, status, kind, never):
    e = evidence.classify(action, status, calls=3, witness=_witness(REPORT))
    assert (e.kind, e.service_never_accessed) == (kind, never)
    if kind == evidence.USED_ADVISOR:
        assert e.last_accessed == datetime(2026, 5, 1, 10, tzinfo=timezone.utc) and "2026-05-01" in e.detail
    if kind == evidence.USED_CLOUDTRAIL:
        assert e.calls == 3


@pytest.mark.parametrize("status, kind", [("used", evidence.USED_CLOUDTRAIL), ("unused", evidence.UNUSED_CLOUDTRAIL),
                                          ("unobservable", evidence.UNOBSERVABLE), ("blocked", evidence.BLOCKED)])
def test_without_access_advisor_cloudtrail_alone_decides(status, kind):
    assert evidence.classify("glue:GetJob", status, witness=None).kind == kind


def test_tracking_period_is_400_days_before_the_job():
    w = _witness(REPORT)
    assert (w.job_completed - w.tracking_start).days == advisor.TRACKING_DAYS == 400
    assert "since 2025-08-11" in evidence.classify("glue:GetJob", "unused", witness=w).detail


def test_classify_all_counts_and_never_accessed_services():
    actions = ["s3:GetObject", "s3:CreateBucket", "glue:GetJob", "glue:GetTable", "sqs:DeleteQueue"]
    cls = pd.DataFrame({"action": actions,
                        "status": ["used", "unused", "unused", "unused", "unused"], "reason": [""] * 5})
    frame = evidence.classify_all(cls, {"s3:GetObject": 7}, _witness(REPORT))
    assert list(frame.columns) == evidence.COLUMNS
    assert evidence.counts(frame) == {"used_cloudtrail": 1, "used_advisor": 0, "unused_proven": 3,
                                      "unused_cloudtrail": 1, "unobservable": 0, "blocked": 0}
    assert evidence.never_accessed(frame) == [{"service": "glue", "actions": 2}]
    assert frame.set_index("action").loc["s3:GetObject", "calls"] == 7
    s = evidence.summary(frame, _witness(REPORT))
    json.dumps(s, allow_nan=False)  # JSON-ready and strict
    assert [i["action"] for i in s["unused_proven"]] == ["s3:CreateBucket"]  # never-accessed services listed apart


def test_never_accessed_services_rank_first():
    assert evidence.rank_services(["iam", "s3", "glue"], ["glue"]) == ["glue", "iam", "s3"]
    cands = evidence.removal_candidates([
        {"arn": "a", "rank": 2, "evidence": {"never_accessed_services": [{"service": "glue", "actions": 5}]}},
        {"arn": "b", "rank": 1, "evidence": {"never_accessed_services": [{"service": "s3", "actions": 50}]}},
        {"arn": "c", "rank": 3},
    ])
    assert [c["arn"] for c in cands] == ["b", "a"]


# ----------------------------------------------------------------------------------------- what is tracked: data


def test_tracked_services_are_iam_prefixes_of_the_catalogue():
    from miner.catalog import get_catalog

    services = evidence.tracked_services()
    assert services == {"ec2", "iam", "lambda", "s3"}
    assert services <= get_catalog().prefixes


def test_data_file_rows_name_their_source():
    from importlib import resources

    text = (resources.files("miner") / "data" / "advisor_tracked.csv").read_text()
    rows = [line.split(",", 2) for line in text.splitlines()[1:] if line and not line.startswith("#")]
    assert rows and all(r[1].startswith("https://docs.aws.amazon.com/") for r in rows)


def test_service_reference_flags_win_over_the_bundled_list(tmp_path, monkeypatch):
    (tmp_path / "s3.json").write_text(json.dumps({"Name": "s3", "Operations": [], "Actions": [
        {"Name": "GetObject", "SupportedBy": {"IAM Action Last Accessed": False}},
        {"Name": "CreateBucket", "SupportedBy": {"IAM Action Last Accessed": True}}]}))
    (tmp_path / "sqs.json").write_text(json.dumps({"Name": "sqs", "Operations": [], "Actions": [
        {"Name": "SendMessage", "SupportedBy": {"IAM Action Last Accessed": True}}]}))
    monkeypatch.setenv("MINER_SERVICE_REFERENCE", str(tmp_path))
    evidence._reference_flags.cache_clear()
    try:
        assert evidence.is_tracked("s3:CreateBucket") and not evidence.is_tracked("s3:GetObject")
        assert evidence.is_tracked("sqs:SendMessage")  # the flag, though the bundled list lacks sqs
        assert evidence.is_tracked("ec2:RunInstances") and not evidence.is_tracked("glue:GetJob")  # no flag: list
    finally:
        evidence._reference_flags.cache_clear()


# ----------------------------------------------------------------------------------------- rendering


def test_logged_values_are_escaped_in_every_review_format():
    evil = "<script>x</script>`|*\x1b"
    review = {"removal_proven": [{"arn": f"arn:aws:iam::1:role/{evil}", "name": evil, "rank": 1,
                                  "tracking_start": "2025-08-11", "services": [{"service": evil, "actions": 2}],
                                  "actions": 2}]}
    page = evidence.html_section(review)
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x1b" not in page
    md = "\n".join(evidence.markdown_section(review))
    assert "<script>" not in md.replace("`<script>", "") and "\x1b" not in md
    p = {"evidence": {"advisor": {"job_completed": DONE, "tracking_start": "2025-08-11"},
                      "counts": dict.fromkeys(evidence.KINDS, 1),
                      "never_accessed_services": [{"service": evil, "actions": 1}],
                      "unused_proven": [{"action": evil, "detail": evil}], "used_advisor": []}}
    block = evidence.html_principal(p)
    assert "<script>" not in block and "\x1b" not in block
