"""parse_objects: the ingest's parse step as a pure function (for distributed execution) stores what ingest stores."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from miner import ingest as ig
from miner import models


def _stored(store: Path) -> pa.Table:
    files = sorted((store / "events").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, schema=models.EVENT_SCHEMA) for f in files])


def _by_id(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("event_id", "ascending")]))


def test_parse_objects_equals_local_ingest_of_sample_logs(sample_logs, sample_store):
    files = sorted(str(p) for p in (sample_logs / "AWSLogs").rglob("*")
                   if p.is_file() and p.name.lower().endswith(ig.READ_SUFFIXES) and "CloudTrail-Digest" not in str(p)
                   and "CloudTrail-Insight" not in str(p))
    res = ig.parse_objects(files)
    got = res.table()
    assert got.schema == models.EVENT_SCHEMA
    assert [o.uri for o in res.outcomes] == files
    assert sum(o.kept for o in res.outcomes) == got.num_rows
    assert res.read == sum(o.records for o in res.outcomes)
    stored = _stored(sample_store)
    assert got.num_rows == stored.num_rows
    assert _by_id(got).equals(_by_id(stored))


def test_parse_objects_outcomes_fetch_and_filters(tmp_path):
    good = {"Records": [
        {"eventID": "e1", "eventTime": "2026-08-10T12:00:00Z", "eventSource": "s3.amazonaws.com",
         "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333",
         "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice", "userName": "alice",
                          "accountId": "111122223333"}},
        {"eventID": "e1", "eventTime": "2026-08-10T12:00:00Z", "eventSource": "s3.amazonaws.com",
         "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333"},
        {"eventID": "e2", "eventTime": "2026-08-10T12:00:01Z", "eventSource": "s3.amazonaws.com",
         "eventName": "PutObject", "awsRegion": "eu-west-1", "recipientAccountId": "111122223333"},
    ]}
    blob = gzip.compress(json.dumps(good).encode())
    local = tmp_path / "a.json.gz"
    local.write_bytes(blob)
    objects = {("bucket", "k/good.json.gz"): blob, ("bucket", "k/cut.json.gz"): blob[:-20],
               ("bucket", "k/digest.json.gz"): gzip.compress(b'{"digestStartTime": "x", "digestS3Object": "y"}')}

    def fetch(bucket: str, key: str) -> bytes:
        if (bucket, key) not in objects:
            raise KeyError(key)
        return objects[(bucket, key)]

    res = ig.parse_objects([*objects, ("bucket", "missing"), str(local)], fetch=fetch)
    out = {o.uri: o for o in res.outcomes}
    assert out["s3://bucket/k/good.json.gz"].kept == 2 and out["s3://bucket/k/good.json.gz"].records == 3
    assert out["s3://bucket/k/cut.json.gz"].reason == ig.R_TRUNCATED
    assert out["s3://bucket/k/digest.json.gz"].reason == ig.R_DIGEST
    assert out["s3://bucket/missing"].reason.startswith(ig.R_DOWNLOAD)
    assert out[str(local)].kept == 0  # the same event ids as the first object: duplicates within the call
    assert res.duplicates == 4
    t = res.table()
    assert sorted(t.column("event_id").to_pylist()) == ["e1", "e2"]
    assert set(t.column("source_object").to_pylist()) == {"s3://bucket/k/good.json.gz"}

    only = ig.parse_objects([str(local)], regions=["eu-west-1"])
    assert only.table().column("event_id").to_pylist() == ["e2"] and only.filtered == 2
