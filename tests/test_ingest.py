"""Tests for miner ingest: containers, bad input, normalisation, dedupe, incremental runs, crash safety, S3 (moto)."""

from __future__ import annotations

import gzip
import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from miner import ingest as ig
from miner import models
from miner import store as st
from miner.cli import app

UTC = timezone.utc
ACCT = "111122223333"
ROLE = f"arn:aws:iam::{ACCT}:role/service-role/app-task"


# ----------------------------------------------------------------------------- record builders


def assumed(role: str = ROLE, session: str = "sess-1", **extra) -> dict:
    name = role.rsplit("/", 1)[-1]
    acct = role.split(":")[4]
    return {"type": "AssumedRole", "principalId": f"AROAEXAMPLE:{session}",
            "arn": f"arn:aws:sts::{acct}:assumed-role/{name}/{session}", "accountId": acct,
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": role,
                                                 "accountId": acct, "userName": name},
                               "attributes": {"creationDate": "2026-08-10T11:00:00Z", "mfaAuthenticated": "false"}},
            **extra}


def rec(eid: str, when: str = "2026-08-10T12:00:00Z", ident: dict | None = None, name: str = "GetObject",
        source: str = "s3.amazonaws.com", region: str = "us-east-1", account: str | None = ACCT, **extra) -> dict:
    r = {"eventVersion": "1.09", "userIdentity": ident if ident is not None else assumed(), "eventTime": when,
         "eventSource": source, "eventName": name, "awsRegion": region, "sourceIPAddress": "203.0.113.7",
         "userAgent": "aws-sdk-go/1.0", "requestParameters": {"bucketName": "b", "key": "k"},
         "responseElements": None, "requestID": "REQ", "eventID": eid, "readOnly": True, "eventType": "AwsApiCall",
         "managementEvent": False, "eventCategory": "Data"}
    if account is not None:
        r["recipientAccountId"] = account
    r.update(extra)
    return r


def write_gz(path: Path, obj, *, ndjson: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(json.dumps(o) for o in obj) if ndjson else json.dumps(obj)).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def delivery_path(root: Path, day: str, region: str = "us-east-1", acct: str = ACCT, tag: str = "A") -> Path:
    y, m, d = day.split("-")
    return (root / "AWSLogs" / acct / "CloudTrail" / region / y / m / d /
            f"{acct}_CloudTrail_{region}_{y}{m}{d}T1200Z_{tag}.json.gz")


def run(sources, store: Path, **kw) -> ig.IngestReport:
    kw.setdefault("processes", 1)
    return ig.ingest([str(s) for s in sources], store, **kw)


def rows(store: Path, sql: str = "select * from events order by event_id") -> list[dict]:
    cur = st.connect(store).execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def count(store: Path) -> tuple[int, int]:
    return st.connect(store).execute("select count(*), count(distinct event_id) from events").fetchall()[0]


def check_invariant(r: ig.IngestReport) -> None:
    assert r.records_read == r.records_written + r.duplicates + r.records_skipped + r.records_filtered


@pytest.fixture(params=["msgspec", "orjson"])
def decoder(request, monkeypatch):
    """Run a test with the msgspec fast path and with the orjson-only fallback."""
    if request.param == "msgspec":
        pytest.importorskip("msgspec")
    else:
        monkeypatch.setattr(ig, "_DECODER", [None])
    return request.param


# ----------------------------------------------------------------------------- containers


CONTAINERS = {
    "records_gz": ("x.json.gz", lambda rs: {"Records": rs}, False),
    "records_plain_json": ("x.json", lambda rs: {"Records": rs}, False),
    "gz_without_json_suffix": ("x.gz", lambda rs: {"Records": rs}, False),
    "top_level_array": ("x.json", lambda rs: rs, False),
    "ndjson": ("x.json", lambda rs: rs, True),
    "eventbridge_envelope_array": ("x.json", lambda rs: [
        {"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "account": ACCT,
         "time": r["eventTime"], "region": "us-east-1", "resources": [], "detail": r} for r in rs], False),
    "eventbridge_ndjson": ("x.json", lambda rs: [
        {"detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "detail": r} for r in rs], True),
    "streamalert_wrapper": ("x.json", lambda rs: [{"data": {"Records": rs}, "description": "d",
                                                   "log": "cloudtrail:events", "service": "s3"}], False),
    "records_list_of_docs": ("x.json", lambda rs: [{"Records": rs[:1]}, {"Records": rs[1:]}], False),
}


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_every_container_kind_is_read(tmp_path, kind, decoder):
    name, wrap, nd = CONTAINERS[kind]
    write_gz(tmp_path / "in" / name, wrap([rec("e1"), rec("e2", name="PutObject")]), ndjson=nd)
    r = run([tmp_path / "in"], tmp_path / "store")
    assert (r.records_written, r.files_skipped) == (2, 0)
    assert [x["event_name"] for x in rows(tmp_path / "store")] == ["GetObject", "PutObject"]
    check_invariant(r)


def test_single_record_object_and_envelope_fill_missing_fields(tmp_path):
    write_gz(tmp_path / "in" / "one.json", rec("e1"))
    bare = rec("e2")
    del bare["recipientAccountId"], bare["eventTime"]
    bare["userIdentity"] = {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}
    write_gz(tmp_path / "in" / "env.json", {"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
                                            "account": "012345678901", "time": "2026-08-11T01:02:03Z",
                                            "detail": bare})
    run([tmp_path / "in"], tmp_path / "s")
    got = {x["event_id"]: x for x in rows(tmp_path / "s")}
    assert got["e2"]["account_id"] == "012345678901"
    assert str(got["e2"]["event_time"]).startswith("2026-08-11 01:02:03")


def test_multi_member_gzip_and_bom(tmp_path):
    p = tmp_path / "in" / "multi.json.gz"
    p.parent.mkdir()
    p.write_bytes(gzip.compress(b'{"Records": [') + gzip.compress(json.dumps(rec("e1")).encode() + b"]}"))
    (tmp_path / "in" / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"Records": [rec("e2")]}).encode())
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 2 and not r.skipped


# ----------------------------------------------------------------------------- bad input


def _corrupt(path: Path) -> None:
    blob = bytearray(gzip.compress(json.dumps({"Records": [rec(f"c{i}") for i in range(50)]}).encode()))
    blob[len(blob) // 2: len(blob) // 2 + 8] = b"\xff" * 8
    path.write_bytes(bytes(blob))


def _truncated(path: Path) -> None:
    blob = gzip.compress(json.dumps({"Records": [rec(f"t{i}") for i in range(50)]}).encode())
    path.write_bytes(blob[: len(blob) // 2])


BAD = {
    "corrupt_gzip": ("a.json.gz", _corrupt, ig.R_CORRUPT_GZIP),
    "truncated_gzip": ("a.json.gz", _truncated, ig.R_TRUNCATED),
    "invalid_json": ("a.json", lambda p: p.write_text('{"Records": [ {"eventID": '), ig.R_INVALID_JSON),
    "csv_named_json": ("a.json", lambda p: p.write_text("eventName,eventID\nGetObject,1\n"), ig.R_NOT_JSON),
    "csv_in_folder": ("a.csv", lambda p: p.write_text("eventName,eventID\nGetObject,1\n"),
                      f"{ig.R_UNSUPPORTED} (.csv)"),
    "empty": ("a.json", lambda p: p.write_bytes(b" \n"), ig.R_EMPTY),
    "digest": ("a.json.gz", lambda p: p.write_bytes(gzip.compress(json.dumps(
        {"awsAccountId": ACCT, "digestStartTime": "2026-08-10T00:00:00Z", "digestEndTime": "2026-08-10T01:00:00Z",
         "digestS3Object": "AWSLogs/x", "logFiles": []}).encode())), ig.R_DIGEST),
    "json_not_cloudtrail": ("a.json", lambda p: p.write_text('{"UserDetailList": [], "RoleDetailList": []}'),
                            ig.R_NOT_CLOUDTRAIL),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_are_skipped_with_their_reason_and_good_records_kept(tmp_path, kind):
    name, make, reason = BAD[kind]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in" / name)
    write_gz(tmp_path / "in" / "good.json.gz", {"Records": [rec("g1"), rec("g2")]})
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 2
    assert [(s.source, s.reason) for s in r.skipped] == [(str((tmp_path / "in" / name).resolve()), reason)]
    assert r.outcome()[0] == 0


def test_only_bad_files_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.json").write_text("not json at all")
    r = run([tmp_path / "in"], tmp_path / "s")
    code, msg = r.outcome()
    assert code == 2 and "none of the 1 files" in msg


def test_invalid_json_with_concatenated_records_is_recovered(tmp_path):
    text = "[\n" + json.dumps(rec("c1"), indent=2) + "\n" + json.dumps(rec("c2"), indent=2) + "\n]"  # no comma
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "concat.json").write_text(text)
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 2 and not r.skipped
    assert [x.reason for x in r.recovered] == [ig.R_RECOVERED]


def test_insight_events_are_skipped_with_a_count(tmp_path):
    insight = {"eventVersion": "1.08", "eventTime": "2026-08-10T14:40:00Z", "awsRegion": "us-east-1",
               "eventID": "i1", "eventType": "AwsCloudTrailInsight", "recipientAccountId": ACCT,
               "insightDetails": {"state": "Start", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
                                  "insightContext": {"statistics": {"baseline": {"average": 8.82145e-05}}}}}
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [insight, dict(insight, eventID="i2"), rec("ok")]})
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 1 and r.records_skipped == 2
    assert r.skipped_groups()[ig.R_INSIGHT]["records"] == 2
    check_invariant(r)


def test_records_without_id_or_time_are_quarantined(tmp_path, decoder):
    no_id = rec("x")
    del no_id["eventID"]
    no_time = rec("nt")
    del no_time["eventTime"]
    logstash = rec("ls")
    del logstash["eventTime"]
    logstash["@timestamp"] = "2026-08-10T09:08:07.123Z"
    placeholder = rec("ph", when="eventTime")
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [no_id, no_time, logstash, placeholder, rec("ok")]})
    write_gz(tmp_path / "in" / "b.json", [rec("ok2"), "a string", 42])
    r = run([tmp_path / "in"], tmp_path / "s")
    assert sorted(x["event_id"] for x in rows(tmp_path / "s")) == ["ls", "ok", "ok2"]
    groups = r.skipped_groups()
    assert groups[ig.R_NO_ID]["records"] == 1
    assert groups[ig.R_NO_TIME]["records"] == 2
    assert groups[ig.R_NOT_RECORD]["records"] == 2
    got = {x["event_id"]: x for x in rows(tmp_path / "s")}
    assert got["ls"]["event_time"].isoformat() == "2026-08-10T09:08:07.123000+00:00"
    check_invariant(r)


# ----------------------------------------------------------------------------- normalisation


IDENTITIES = {
    "assumed_role_keeps_path": (assumed(ROLE, "i-0abc"), ROLE, "AssumedRole", "app-task", "i-0abc"),
    "assumed_role_empty_issuer": ({"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCT}:assumed-role/ops/bob",
                                   "accountId": ACCT, "sessionContext": {"sessionIssuer": {},
                                                                         "webIdFederationData": {}}},
                                  f"arn:aws:iam::{ACCT}:role/ops", "AssumedRole", "ops", "bob"),
    "assumed_role_without_session_part": ({"type": "AssumedRole",
                                           "arn": "arn:aws:sts::123456789012:assumed-role/tester",
                                           "accountId": "123456789012"},
                                          "arn:aws:iam::123456789012:role/tester", "AssumedRole", "tester", None),
    "iam_user": ({"type": "IAMUser", "arn": f"arn:aws:iam::{ACCT}:user/alice", "userName": "alice",
                  "accountId": ACCT, "accessKeyId": "AKIAEXAMPLE"},
                 f"arn:aws:iam::{ACCT}:user/alice", "IAMUser", "alice", None),
    "iam_user_without_arn": ({"type": "IAMUser", "principalId": "AIDA", "accountId": ACCT, "accessKeyId": "",
                              "userName": "alice"}, f"arn:aws:iam::{ACCT}:user/alice", "IAMUser", "alice", None),
    "root": ({"type": "Root", "principalId": ACCT, "arn": f"arn:aws:iam::{ACCT}:root", "accountId": ACCT,
              "accessKeyId": ""}, f"arn:aws:iam::{ACCT}:root", "Root", "root", None),
    "federated_user_is_its_issuer": ({"type": "FederatedUser", "principalId": f"{ACCT}:fed",
                                      "arn": f"arn:aws:sts::{ACCT}:federated-user/fed", "accountId": ACCT,
                                      "sessionContext": {"sessionIssuer": {
                                          "type": "IAMUser", "arn": f"arn:aws:iam::{ACCT}:user/fed-user",
                                          "userName": "fed-user"}}},
                                     f"arn:aws:iam::{ACCT}:user/fed-user", "FederatedUser", "fed-user", "fed"),
    "aws_service": ({"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
                    "cloudtrail.amazonaws.com", "AWSService", "cloudtrail.amazonaws.com", None),
    "no_type_uses_invoked_by": ({"accountId": ACCT, "invokedBy": "ec2.amazonaws.com"},
                                "ec2.amazonaws.com", "AWSService", "ec2.amazonaws.com", None),
    "identity_center_user": ({"type": "IdentityCenterUser", "arn": "", "accountId": "redacted", "accessKeyId": "",
                              "onBehalfOf": {"userId": "u-123", "identityStoreArn": "arn:aws:identitystore::1:x"},
                              "credentialId": "c"}, "identitycenter:u-123", "IdentityCenterUser", "u-123", None),
    "anonymous": ({"type": "AWSAccount", "principalId": "", "accountId": "ANONYMOUS_PRINCIPAL"},
                  "ANONYMOUS_PRINCIPAL", "AWSAccount", "ANONYMOUS_PRINCIPAL", None),
    "cross_account": ({"type": "AWSAccount", "principalId": "AIDAEXAMPLE", "accountId": "444455556666"},
                      "AWSAccount:444455556666", "AWSAccount", "444455556666", None),
    "no_identity": (None, None, None, None, None),
}


@pytest.mark.parametrize("kind", sorted(IDENTITIES))
def test_principal_normalisation(tmp_path, kind, decoder):
    ident, arn, typ, name, session = IDENTITIES[kind]
    r = rec("e1")
    r["userIdentity"] = ident
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [r]})
    run([tmp_path / "in"], tmp_path / "s")
    (got,) = rows(tmp_path / "s")
    assert (got["principal_arn"], got["principal_type"], got["principal_name"], got["session_name"]) == \
        (arn, typ, name, session)


def test_field_normalisation(tmp_path, decoder):
    odd = rec("odd", when="2024-12-12 16:04:32.000000000", account=None, region="us-gov-west-1",
              errorCode="", errorMessage=None, readOnly="True", managementEvent="false", userAgent=None,
              requestParameters='{\n  "accountName": "****"}', resources=[{"ARN": "arn:aws:s3:::b", "type": "T"}],
              vpcEndpointId="vpce-1")
    odd["userIdentity"] = assumed(ROLE.replace(ACCT, "012345678901"))
    odd["userIdentity"]["accountId"] = 12345678901  # a number: stored as text
    denied = rec("den", errorCode="Client.UnauthorizedOperation", errorMessage="You are not authorized")
    console = rec("con", name="ConsoleLogin", errorMessage="Failed authentication", requestParameters=None)
    offset = rec("off", when="2026-08-10T23:30:00+02:00")
    basic = rec("bas", when="20131102T010628Z", resources=None)
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [odd, denied, console, offset, basic]})
    run([tmp_path / "in"], tmp_path / "s")
    got = {x["event_id"]: x for x in rows(tmp_path / "s")}
    o = got["odd"]
    assert o["event_time"].isoformat() == "2024-12-12T16:04:32+00:00"
    assert o["account_id"] == "12345678901" and o["principal_account"] == "12345678901"
    assert o["error_code"] is None and o["outcome"] == "success"
    assert o["read_only"] is True and o["management_event"] is False
    assert o["request_parameters"] == '{\n  "accountName": "****"}'  # a JSON string stays as logged
    assert json.loads(o["resources"]) == [{"ARN": "arn:aws:s3:::b", "type": "T"}]
    assert o["partition"] == "aws" and o["user_agent"] is None and o["vpc_endpoint_id"] == "vpce-1"
    assert o["source_object"] == str((tmp_path / "in" / "a.json.gz").resolve())
    assert got["den"]["outcome"] == "denied"
    assert got["con"]["outcome"] == "success" and got["con"]["request_parameters"] is None
    assert got["off"]["event_time"].isoformat() == "2026-08-10T21:30:00+00:00"
    assert got["bas"]["event_time"].isoformat() == "2013-11-02T01:06:28+00:00" and got["bas"]["resources"] is None
    assert json.loads(got["den"]["request_parameters"]) == {"bucketName": "b", "key": "k"}
    parts = {p.parent.name for p in st.event_files(tmp_path / "s")}
    assert "date=2024-12-12" in parts and "date=2013-11-02" in parts
    accounts = {p.parent.parent.parent.name for p in st.event_files(tmp_path / "s")}
    assert "account=12345678901" in accounts  # recipientAccountId missing: userIdentity.accountId


def test_files_are_sorted_by_principal_then_time(tmp_path):
    recs = [rec(f"e{i}", when=f"2026-08-10T{12 - i % 5:02d}:00:00Z",
                ident=assumed(f"arn:aws:iam::{ACCT}:role/r{i % 3}")) for i in range(30)]
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": recs})
    run([tmp_path / "in"], tmp_path / "s")
    (f,) = st.event_files(tmp_path / "s")
    t = pq.read_table(f, columns=["principal_arn", "event_time"]).to_pylist()
    assert t == sorted(t, key=lambda x: (x["principal_arn"], x["event_time"]))


# ----------------------------------------------------------------------------- dedupe, incremental, crash safety


def test_dedupe_within_a_file_across_files_and_across_runs(tmp_path):
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", tag="A"), {"Records": [rec("a"), rec("b"), rec("a")]})
    # the same record delivered under another region's prefix (same partition: its awsRegion is us-east-1)
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", region="eu-west-1", tag="B"), {"Records": [rec("b")]})
    r1 = run([tmp_path / "in"], tmp_path / "s")
    assert (r1.records_read, r1.records_written, r1.duplicates) == (4, 2, 2)
    write_gz(tmp_path / "more" / "c.json", {"Records": [rec("a"), rec("c")]})
    r2 = run([tmp_path / "more"], tmp_path / "s")
    assert (r2.records_written, r2.duplicates) == (1, 1)
    assert count(tmp_path / "s") == (3, 3)
    check_invariant(r1)
    check_invariant(r2)


@pytest.mark.parametrize("first, second", [(80, 300), (300, 80)])
def test_dedupe_against_published_files_filters_the_new_file(tmp_path, first, second):
    """Overlapping parts above the in-memory threshold: the new file loses the shared ids, whatever the sizes."""
    a = [rec(f"id{i:04d}") for i in range(first)]
    b = [rec(f"id{i:04d}") for i in range(first - 40, first - 40 + second)]
    write_gz(tmp_path / "one" / "a.json.gz", {"Records": a})
    write_gz(tmp_path / "two" / "b.json.gz", {"Records": b})
    run([tmp_path / "one"], tmp_path / "s")
    r = run([tmp_path / "two"], tmp_path / "s")
    assert r.duplicates == 40
    n = first + second - 40
    assert count(tmp_path / "s") == (n, n)
    assert r.records_written == second - 40
    assert len(st.event_files(tmp_path / "s")) == 2


def test_incremental_rerun_reads_nothing_and_changed_files_are_reread(tmp_path):
    p = write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a"), rec("b")]})
    write_gz(tmp_path / "in" / "b.json.gz", {"Records": [rec("c")]})
    run([tmp_path / "in"], tmp_path / "s")
    files_before = st.event_files(tmp_path / "s")
    r = run([tmp_path / "in"], tmp_path / "s")
    assert (r.files_read, r.files_already_ingested, r.records_read) == (0, 2, 0)
    assert r.outcome()[0] == 0 and "nothing new" in r.outcome()[1]
    assert st.event_files(tmp_path / "s") == files_before
    write_gz(p, {"Records": [rec("a"), rec("b"), rec("d")]})  # the object changed (size/mtime)
    r = run([tmp_path / "in"], tmp_path / "s")
    assert (r.files_read, r.records_written, r.duplicates) == (1, 1, 2)
    m = ig.read_manifest(tmp_path / "s").to_pylist()
    assert {x["source"] for x in m} == {str(p.resolve()), str((tmp_path / "in" / "b.json.gz").resolve())}


def test_crash_after_data_commit_before_manifest_is_repaired_by_rerun(tmp_path, monkeypatch):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec(f"e{i}") for i in range(10)]})

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(st, "append_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        run([tmp_path / "in"], tmp_path / "s")
    assert count(tmp_path / "s") == (10, 10)  # data committed, readable
    assert ig.read_manifest(tmp_path / "s").num_rows == 0
    monkeypatch.undo()
    r = run([tmp_path / "in"], tmp_path / "s")
    assert (r.files_read, r.records_written, r.duplicates) == (1, 0, 10)
    assert count(tmp_path / "s") == (10, 10)
    assert run([tmp_path / "in"], tmp_path / "s").files_already_ingested == 1


def test_crash_inside_a_task_leaves_no_partial_file_and_rerun_completes(tmp_path, monkeypatch):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec(f"e{i}", ident=assumed(session=f"s{i}"))
                                                         for i in range(200)]})
    real = st.write_parquet

    def half_then_die(table, path, **kw):
        Path(path).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(st, "write_parquet", half_then_die)
    with pytest.raises(OSError):
        run([tmp_path / "in"], tmp_path / "s")
    assert st.event_files(tmp_path / "s") == []  # the half-written file never left _tmp/
    monkeypatch.setattr(st, "write_parquet", real)
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 200 and count(tmp_path / "s") == (200, 200)


def test_killed_run_leaves_a_readable_store_and_the_next_run_completes_it(sample_logs, expected, tmp_path):
    """SIGKILL an ingest after its first commit: no partial file is visible, no duplicate, and a re-run finishes."""
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "s"
    code = ("import sys; from miner.ingest import ingest; "
            "ingest([sys.argv[1]], sys.argv[2], processes=1, task_bytes=1 << 19)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(sample_logs), str(store)])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and len(st.event_files(store)) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = st.event_files(store)
    assert files, "nothing was committed before the kill"
    for f in files:
        pq.ParquetFile(f).metadata  # every visible file is complete
    total, distinct = count(store)
    assert total == distinct
    r = run([sample_logs], store)
    assert count(store) == (expected["distinct_event_ids"],) * 2
    assert r.tmp_files_cleaned >= 0 and not (store / st.TMP_DIR).exists()  # emptied, then removed


def test_leftover_tmp_files_are_ignored_by_queries_and_cleaned(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    run([tmp_path / "in"], tmp_path / "s")
    junk = st.tmp_dir(tmp_path / "s") / "part-crashed.parquet"
    st.write_parquet(pq.read_table(st.event_files(tmp_path / "s")[0]), junk)
    assert count(tmp_path / "s") == (1, 1)
    write_gz(tmp_path / "in" / "b.json.gz", {"Records": [rec("b")]})
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.tmp_files_cleaned == 1 and not junk.exists()
    assert count(tmp_path / "s") == (2, 2)


def test_a_second_concurrent_ingest_is_refused(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    with st.write_lock(tmp_path / "s"):
        with pytest.raises(st.StoreError, match="another"):
            run([tmp_path / "in"], tmp_path / "s")


def test_store_inside_the_source_folder_is_not_read(tmp_path):
    write_gz(tmp_path / "a.json.gz", {"Records": [rec("a")]})
    run([tmp_path], tmp_path / "store")
    r = run([tmp_path], tmp_path / "store")
    assert r.files_seen == 1 and r.files_already_ingested == 1


def test_a_folder_reached_again_through_a_symlink_is_walked_once(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")  # a link to a parent: used to recurse ~40 levels
    (tmp_path / "in" / "store-link").symlink_to(tmp_path / "in" / "store")  # the store by another name
    r = run([tmp_path / "in"], tmp_path / "in" / "store")
    assert (r.files_seen, r.records_read, r.records_written, r.duplicates) == (1, 1, 1, 0)
    assert r.skipped == []


# ----------------------------------------------------------------------------- windows and filters


def test_window_days_include_the_next_delivery_day_only():
    w = models.Window(datetime(2026, 8, 10, 6, tzinfo=UTC), datetime(2026, 8, 12, tzinfo=UTC))
    assert ig.window_days(w) == [date(2026, 8, 10), date(2026, 8, 11), date(2026, 8, 12)]


def test_local_window_filters_by_folder_date_and_record_time(tmp_path):
    for day in ("2026-08-09", "2026-08-10", "2026-08-11", "2026-08-12", "2026-08-20"):
        write_gz(delivery_path(tmp_path / "in", day), {"Records": [rec(f"{day}-a", when=f"{day}T00:01:00Z"),
                                                                   rec(f"{day}-b", when=f"{day}T18:00:00Z")]})
    write_gz(tmp_path / "in" / "flat.json", [rec("flat-in", when="2026-08-10T12:00:00Z"),
                                             rec("flat-out", when="2026-07-01T00:00:00Z")])
    w = models.Window(datetime(2026, 8, 10, tzinfo=UTC), datetime(2026, 8, 11, 12, tzinfo=UTC))
    r = run([tmp_path / "in"], tmp_path / "s", window=w)
    assert r.files_filtered == 2  # folders 08-09 and 08-20 never read; 08-12 read (records may spill into it)
    assert sorted(x["event_id"] for x in rows(tmp_path / "s")) == ["2026-08-10-a", "2026-08-10-b",
                                                                   "2026-08-11-a", "flat-in"]
    assert r.records_filtered == 4
    check_invariant(r)


def test_account_and_region_filters_on_local_files(tmp_path):
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", acct="444455556666"), {"Records": [rec("x")]})
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", region="eu-west-1"), {"Records": [rec("eu")]})
    write_gz(delivery_path(tmp_path / "in", "2026-08-10"), {"Records": [rec("us"), rec("eu2", region="eu-west-1")]})
    write_gz(tmp_path / "in" / "flat.json", [rec("other", account="999999999999"), rec("flat-us")])
    r = run([tmp_path / "in"], tmp_path / "s", accounts=[ACCT], regions=["us-east-1"])
    assert [x["event_id"] for x in rows(tmp_path / "s")] == ["flat-us", "us"]
    assert r.files_filtered == 2 and r.records_filtered == 2  # folders by path; other records by their fields
    check_invariant(r)


# ----------------------------------------------------------------------------- the sample logs


@pytest.fixture(scope="module")
def expected(sample_logs) -> dict:
    return json.loads((sample_logs / "EXPECTED.json").read_text())


@pytest.fixture(scope="module")
def sample_store(sample_logs, tmp_path_factory):
    store = tmp_path_factory.mktemp("sample") / "store"
    report = ig.ingest([str(sample_logs)], store, processes=2, task_bytes=4 << 20)  # several tasks: the pool path
    return store, report


def test_sample_logs_counts_match_expected(sample_store, expected):
    store, r = sample_store
    assert r.records_written == expected["distinct_event_ids"] == count(store)[0] == count(store)[1]
    assert r.duplicates == expected["duplicate_records"]
    assert r.records_read == expected["records_written"]
    corrupt = [s for s in r.skipped if s.source.endswith(expected["corrupt_file"])]
    assert [s.reason for s in corrupt] == [ig.R_TRUNCATED]
    assert r.trees_skipped == {"CloudTrail-Digest": 1, "CloudTrail-Insight": 1}
    check_invariant(r)


def test_sample_logs_principals_match_expected(sample_store, expected):
    store, _ = sample_store
    got = dict(st.connect(store).execute("select principal_arn, count(*) from events group by 1").fetchall())
    assert got == expected["per_principal_events"]
    accounts = {a for (a,) in st.connect(store).execute("select distinct account from events").fetchall()}
    assert "012345678901" in accounts  # the organization-trail member (AWSLogs/o-.../012345678901/)


def test_sample_logs_inline_and_pool_paths_store_the_same_rows(sample_logs, sample_store, tmp_path):
    store, _ = sample_store
    run([sample_logs / "AWSLogs" / "o-a1b2c3d4e5"], tmp_path / "s")
    # (which copy of a duplicate is kept, and so its source_object, depends on the order tasks finish)
    sql = ("select event_id, principal_arn, event_time, request_parameters, session_name, user_agent from events "
           "where account = '012345678901' order by event_id")
    assert st.connect(tmp_path / "s").execute(sql).fetchall() == st.connect(store).execute(sql).fetchall()


# ----------------------------------------------------------------------------- S3 through a moto server


BUCKET = "acme-trail-logs"
PREFIX = "trail/"


@pytest.fixture(scope="module")
def s3(moto_server, sample_logs):
    """Fake credentials + a bucket holding the sample logs under ``trail/`` (uploaded once for this module)."""
    import boto3
    import requests
    from concurrent.futures import ThreadPoolExecutor

    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    client = boto3.client("s3", endpoint_url=moto_server)
    client.create_bucket(Bucket=BUCKET)
    files = [p for p in (sample_logs / "AWSLogs").rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda p: client.put_object(Bucket=BUCKET, Key=PREFIX + p.relative_to(sample_logs).as_posix(),
                                                Body=p.read_bytes()), files))
    yield moto_server
    mp.undo()


class Recorder:
    """Records the S3 calls a client makes (operation name and parameters) via boto3's event hooks."""

    def __init__(self, client):
        self.calls: list[tuple[str, dict]] = []
        client.meta.events.register("provide-client-params.s3.*", self._record)
        self.client = client

    def _record(self, params, model, **_):
        self.calls.append((model.name, dict(params)))

    def lists(self) -> list[dict]:
        return [p for op, p in self.calls if op == "ListObjectsV2"]

    def gets(self) -> int:
        return sum(1 for op, _ in self.calls if op == "GetObject")


def s3_client(endpoint: str) -> Recorder:
    return Recorder(ig.make_s3_client(endpoint_url=endpoint, workers=8))


DAY_PREFIX = re.compile(r"^trail/AWSLogs/(?:o-[a-z0-9]+/)?(\d{12})/CloudTrail/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/$")


def assert_only_day_folders_listed(rec_: Recorder, allowed_days: set[str]) -> set[str]:
    """Every recursive listing is one day folder inside the window; the rest use Delimiter='/'."""
    listed = set()
    for p in rec_.lists():
        assert p["Prefix"].startswith(PREFIX + "AWSLogs/"), p  # never the bucket root
        if p.get("Delimiter") == "/":
            continue
        m = DAY_PREFIX.match(p["Prefix"])
        assert m, f"recursive listing outside a day folder: {p}"
        day = f"{m.group(3)}-{m.group(4)}-{m.group(5)}"
        assert day in allowed_days, f"listed a day outside the window: {p['Prefix']}"
        listed.add(day)
    return listed


@pytest.fixture(scope="module")
def s3_store(s3, tmp_path_factory, expected):
    store = tmp_path_factory.mktemp("s3") / "store"
    w = models.make_window(expected["start_date"], expected["end_date"], datetime(2026, 10, 1, tzinfo=UTC))
    rec_ = s3_client(s3)
    report = ig.ingest([f"s3://{BUCKET}/{PREFIX}"], store, window=w, s3_client=rec_.client, processes=1)
    return store, report, rec_, w


def test_s3_ingest_counts_match_expected(s3_store, expected):
    store, r, rec_, w = s3_store
    assert r.records_written == expected["distinct_event_ids"] == count(store)[0]
    assert r.duplicates == expected["duplicate_records"]
    assert [s.reason for s in r.skipped] == [ig.R_TRUNCATED]
    assert r.skipped[0].source == f"s3://{BUCKET}/{PREFIX}{expected['corrupt_file']}"
    assert r.trees_skipped == {"CloudTrail-Digest": 1, "CloudTrail-Insight": 1}
    listed = assert_only_day_folders_listed(rec_, {d.isoformat() for d in ig.window_days(w)})
    assert min(listed) == expected["start_date"]
    objs = [s for s in {x["source_object"] for x in rows(store, "select distinct source_object from events")}]
    assert all(o.startswith(f"s3://{BUCKET}/{PREFIX}AWSLogs/") for o in objs)
    assert "012345678901" in {a for (a,) in st.connect(store).execute("select distinct account from events")
                              .fetchall()}


def test_s3_rerun_fetches_nothing(s3, s3_store):
    store, first, _, w = s3_store
    rec_ = s3_client(s3)
    r = ig.ingest([f"s3://{BUCKET}/{PREFIX}"], store, window=w, s3_client=rec_.client, processes=1)
    assert rec_.gets() == 0
    assert r.files_read == 0 and r.files_already_ingested == first.files_read
    assert r.outcome()[0] == 0


def test_s3_window_lists_only_the_day_folders_of_the_window(s3, tmp_path, expected):
    w = models.Window(datetime(2026, 8, 20, tzinfo=UTC), datetime(2026, 8, 22, tzinfo=UTC))
    rec_ = s3_client(s3)
    r = ig.ingest([f"s3://{BUCKET}/{PREFIX}"], tmp_path / "s", window=w, s3_client=rec_.client, processes=1)
    listed = assert_only_day_folders_listed(rec_, {"2026-08-20", "2026-08-21", "2026-08-22"})
    assert listed == {"2026-08-20", "2026-08-21", "2026-08-22"}
    times = st.connect(tmp_path / "s").execute("select min(event_time), max(event_time) from events").fetchall()[0]
    assert times[0] >= w.since and times[1] < w.until
    assert r.records_filtered > 0  # records of the 08-22 folder from just before midnight are kept, the rest not


def test_s3_account_and_region_restrict_the_listing(s3, tmp_path):
    w = models.Window(datetime(2026, 8, 21, tzinfo=UTC), datetime(2026, 8, 22, tzinfo=UTC))
    rec_ = s3_client(s3)
    ig.ingest([f"s3://{BUCKET}/{PREFIX}"], tmp_path / "s", window=w, s3_client=rec_.client, processes=1,
              accounts=["012345678901"], regions=["eu-west-1"])
    deep = [p["Prefix"] for p in rec_.lists() if "/CloudTrail/" in p["Prefix"] and p.get("Delimiter") is None]
    assert deep and all(p.startswith(f"{PREFIX}AWSLogs/o-a1b2c3d4e5/012345678901/CloudTrail/eu-west-1/")
                        for p in deep)
    got = st.connect(tmp_path / "s").execute("select distinct account, region from events").fetchall()
    assert got == [("012345678901", "eu-west-1")]


@pytest.mark.parametrize("prefix, accounts", [
    ("trail", {ACCT, "444455556666", "012345678901"}),
    ("trail/AWSLogs", {ACCT, "444455556666", "012345678901"}),
    ("trail/AWSLogs/444455556666/CloudTrail/us-east-1/", {"444455556666"}),
    ("trail/AWSLogs/o-a1b2c3d4e5", {"012345678901"}),
])
def test_s3_prefixes_at_any_level_of_the_layout(s3, tmp_path, prefix, accounts):
    w = models.Window(datetime(2026, 8, 21, tzinfo=UTC), datetime(2026, 8, 22, tzinfo=UTC))
    rec_ = s3_client(s3)
    r = ig.ingest([f"s3://{BUCKET}/{prefix}"], tmp_path / "s", window=w, s3_client=rec_.client, processes=1)
    assert r.records_written > 0
    assert_only_day_folders_listed(rec_, {"2026-08-21", "2026-08-22"})
    got = {a for (a,) in st.connect(tmp_path / "s").execute("select distinct account from events").fetchall()}
    assert got == accounts


@pytest.mark.parametrize("kw, message", [({"accounts": ["999999999999"]}, "no log tree for --account 999999999999"),
                                         ({"regions": ["ap-south-9"]}, "no log tree for --region ap-south-9")])
def test_s3_filters_matching_nothing_are_errors(s3, tmp_path, kw, message):
    w = models.Window(datetime(2026, 8, 21, tzinfo=UTC), datetime(2026, 8, 22, tzinfo=UTC))
    with pytest.raises(ig.IngestError, match=message):
        ig.ingest([f"s3://{BUCKET}/{PREFIX}"], tmp_path / "s", window=w, endpoint_url=s3, processes=1, **kw)


def test_s3_empty_window_is_nothing_to_do(s3, tmp_path):
    w = models.Window(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    r = ig.ingest([f"s3://{BUCKET}/{PREFIX}"], tmp_path / "s", window=w, endpoint_url=s3, processes=1)
    assert r.files_seen == 0 and r.outcome() == (0, "no log files in the window")


@pytest.mark.parametrize("code, message", [("NoSuchBucket", "bucket does not exist"),
                                           ("AccessDenied", "access denied while listing"),
                                           ("InvalidAccessKeyId", "credentials were rejected"),
                                           ("InternalError", "S3 error InternalError")])
def test_s3_errors_become_one_line(code, message):
    import botocore.exceptions as be

    e = be.ClientError({"Error": {"Code": code, "Message": "m"}}, "ListObjectsV2")
    assert message in str(ig._s3_error(e, "listing s3://b/AWSLogs/"))


def test_unknown_profile_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(ig.IngestError, match="profile 'nope' not found"):
        ig.make_s3_client(profile="nope")


def test_s3_download_retries_throttling(monkeypatch):
    import botocore.exceptions as be

    monkeypatch.setattr(ig.time, "sleep", lambda s: None)

    class Body:
        def read(self):
            return b"data"

    class Flaky:
        calls = 0

        def get_object(self, **kw):
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise be.ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")
            return {"Body": Body()}

    obj = ig.SourceObject("s3://b/k", 4, "etag", "b", "k")
    assert ig._download(Flaky(), obj) == (obj, b"data") and Flaky.calls == 3

    class Denied:
        def get_object(self, **kw):
            raise be.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    assert ig._download(Denied(), obj)[1] == f"{ig.R_DOWNLOAD}: AccessDenied"


# ----------------------------------------------------------------------------- the command line


def cli(*args):
    return CliRunner().invoke(app, ["ingest", *map(str, args)])


def test_cli_ingest_local_json_summary(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a"), rec("a")]})
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "--json", "-q")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["records_written"], out["duplicates"], out["exit_code"]) == (1, 1, 0)


def test_cli_summary_on_stderr(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    _corrupt(tmp_path / "in" / "bad.json.gz")
    res = cli(tmp_path / "in", "--store", tmp_path / "s")
    assert res.exit_code == 0
    assert "1 new records stored" in res.stderr and "corrupt gzip: 1 file" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["/no/such/dir"], "no such file or directory"),
    (["s3://"], "no bucket name"),
])
def test_cli_bad_sources_exit_2_without_traceback(tmp_path, args, message):
    res = cli(*args, "--store", tmp_path / "s")
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output


def test_cli_store_path_that_is_a_file_exits_2_without_traceback(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    (tmp_path / "s").write_text("a file where the store should be")
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "-q")
    assert res.exit_code == 2
    assert "cannot use" in res.stderr and "Traceback" not in res.output


def test_cli_no_readable_files_exit_2(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.json").write_text("hello")
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "-q")
    assert res.exit_code == 2 and "held readable CloudTrail records" in res.stderr


def test_cli_s3_missing_bucket_exit_2(s3, tmp_path):
    res = cli("s3://no-such-bucket-here/x", "--store", tmp_path / "s", "--endpoint-url", s3, "-q")
    assert res.exit_code == 2
    assert "bucket does not exist" in res.stderr and "Traceback" not in res.output


def test_cli_s3_no_credentials_exit_2(s3, tmp_path, no_aws_credentials):
    res = cli(f"s3://{BUCKET}/{PREFIX}", "--store", tmp_path / "s", "--endpoint-url", s3, "-q")
    assert res.exit_code == 2 and "no AWS credentials" in res.stderr


@pytest.mark.parametrize("env, total", [(None, 11), ("1", 1), ("4", 4)])
def test_aws_max_attempts_counts_every_attempt(monkeypatch, env, total):
    """AWS_MAX_ATTEMPTS counts attempts in all, as the AWS SDKs and CLI read it (botocore's own "max_attempts"
    counts retries only); without it, 10 retries. The S3 source, the S3 store and LookupEvents share the setting."""
    from miner import aws

    if env is None:
        monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    else:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", env)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    def attempts(retries: dict) -> int:  # (botocore keeps "max_attempts" as retries, or fills in the total)
        return retries.get("total_max_attempts", retries.get("max_attempts", 0) + 1)

    assert attempts(aws.client_config().retries) == total and aws.client_config().retries["mode"] == "adaptive"
    assert attempts(ig.make_s3_client(endpoint_url="http://127.0.0.1:9").meta.config.retries) == total


def test_cli_s3_unreachable_endpoint_exit_2(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    res = cli(f"s3://{BUCKET}/", "--store", tmp_path / "s", "--endpoint-url", "http://127.0.0.1:9", "-q")
    assert res.exit_code == 2 and "cannot reach the S3 endpoint" in res.stderr


def test_cli_s3_json_summary(s3, tmp_path):
    res = cli(f"s3://{BUCKET}/{PREFIX}", "--store", tmp_path / "s", "--endpoint-url", s3, "--since", "2026-08-03",
              "--until", "2026-08-03", "--account", ACCT, "--json", "-q")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["records_written"] > 0 and out["s3_list_requests"] > 0
    assert out["window"].startswith("2026-08-03 00:00Z .. 2026-08-04 00:00Z")


# ----------------------------------------------------------------------------- ../shared/cloudtrail-real


def independent_distinct_ids(root: Path) -> tuple[set[str], int]:
    """Distinct eventIDs of API records, counted without miner's reader.

    Counted: records with an eventID and an ISO eventTime (or @timestamp), other than CloudTrail Insight events,
    found in {"Records": [...]}, top-level arrays, NDJSON lines, EventBridge envelopes (``detail``) and streamalert
    wrappers (``data.Records``). Excluded: Insight events, records without eventID, records whose time is a
    placeholder, CSV files.
    """
    ids: set[str] = set()
    files = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix == ".csv":
            continue
        files += 1
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        try:
            docs = [json.loads(raw)]
        except ValueError:
            docs = [json.loads(line) for line in raw.splitlines() if line.strip()]
        records = []
        for doc in docs:
            items = doc.get("Records", [doc]) if isinstance(doc, dict) else doc
            for it in items:
                if "detail" in it:
                    it = it["detail"]
                if "data" in it:
                    records.extend(it["data"]["Records"])
                    continue
                records.append(it)
        for r in records:
            t = r.get("eventTime") or r.get("@timestamp")
            try:
                datetime.fromisoformat(t)
            except (TypeError, ValueError):
                continue
            if r.get("eventID") and r.get("eventType") != "AwsCloudTrailInsight":
                ids.add(r["eventID"])
    return ids, files


def test_shared_real_data_ingests_completely(shared_real, tmp_path):
    r = ig.ingest([str(shared_real)], tmp_path / "s")
    ids, json_files = independent_distinct_ids(shared_real)
    total, distinct = count(tmp_path / "s")
    assert total == distinct == len(ids) == r.records_written
    stored = {i for (i,) in st.connect(tmp_path / "s").execute("select event_id from events").fetchall()}
    assert stored == ids
    assert r.files_read == json_files  # every JSON file was read; the CSV is reported, not read
    reasons = r.skipped_groups()
    assert reasons[f"{ig.R_UNSUPPORTED} (.csv)"]["files"] == 1
    assert {k for k, g in reasons.items() if g["records"] == 0} == {f"{ig.R_UNSUPPORTED} (.csv)"}
    assert r.duplicates >= 6496  # sans504's copies under two region prefixes
    check_invariant(r)


# ----------------------------------------------------------------------------- hostile input (issue 8, items 4-8)


def _pids_below(pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _running(pids: set[int]) -> set[int]:
    import psutil

    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out


# item 4: a record whose time or partition values are unusable is skipped, never the run

BAD_RECORDS = {
    "february_30": ({"eventTime": "2026-02-30T10:00:00Z"}, ig.R_NO_TIME),
    "hour_24": ({"eventTime": "2026-08-10T24:00:00Z"}, ig.R_NO_TIME),
    "year_0": ({"eventTime": "0000-01-01T00:00:00Z"}, ig.R_NO_TIME),
    "year_9999": ({"eventTime": "9999-01-01T00:00:00Z"}, ig.R_NO_TIME),
    "minute_61": ({"eventTime": "2026-08-10T12:61:00Z"}, ig.R_NO_TIME),
    "offset_year_0": ({"eventTime": "0000-01-01 00:00:00+01:00"}, ig.R_NO_TIME),
    "account_300_chars": ({"recipientAccountId": "1" * 300}, ig.R_BAD_ACCOUNT),
    "account_path": ({"recipientAccountId": "../../../tmp/x"}, ig.R_BAD_ACCOUNT),
    "account_object": ({"recipientAccountId": {"a": 1}}, ig.R_BAD_ACCOUNT),
    "region_300_chars": ({"awsRegion": "us-east-" + "1" * 300}, ig.R_BAD_REGION),
    "region_path": ({"awsRegion": "us-east-1/../../x"}, ig.R_BAD_REGION),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_one_bad_record_is_skipped_with_its_reason_and_the_rest_of_its_file_kept(tmp_path, kind, decoder):
    fields, reason = BAD_RECORDS[kind]
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a1"), rec("bad", **fields), rec("a2")]})
    write_gz(tmp_path / "in" / "b.json.gz", {"Records": [rec("b1")]})
    r = run([tmp_path / "in"], tmp_path / "s")
    assert sorted(x["event_id"] for x in rows(tmp_path / "s")) == ["a1", "a2", "b1"]
    assert r.skipped_groups()[reason]["records"] == 1
    assert r.outcome()[0] == 0
    check_invariant(r)
    assert all(len(p.name) < 64 for f in st.event_files(tmp_path / "s") for p in f.relative_to(tmp_path).parents)
    again = run([tmp_path / "in"], tmp_path / "s")
    assert (again.files_already_ingested, again.records_read) == (2, 0)


def test_a_valid_copy_after_a_bad_one_is_stored(tmp_path):
    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("x", eventTime="2026-02-30T10:00:00Z"), rec("x")]})
    r = run([tmp_path / "in"], tmp_path / "s")
    assert [x["event_id"] for x in rows(tmp_path / "s")] == ["x"] and r.records_skipped == 1


def test_placeholder_accounts_and_anonymised_regions_keep_their_partition(tmp_path):
    write_gz(tmp_path / "in" / "a.json", [rec("r", account="redacted"), rec("z", account="0000"),
                                          rec("f", region="us-north-2r"), rec("g", region="us-gov-west-1"),
                                          rec("h", region="redacted")])
    r = run([tmp_path / "in"], tmp_path / "s")
    assert r.records_written == 5 and r.records_skipped == 0
    got = set(st.connect(tmp_path / "s").execute("select account, region from events").fetchall())
    assert {("redacted", "us-east-1"), ("0000", "us-east-1"), (ACCT, "us-north-2r"), (ACCT, "us-gov-west-1"),
            (ACCT, "redacted")} == got


def test_cli_many_good_files_and_one_bad_record_exit_0(tmp_path):
    """The reproduction: with one bad record among many files, every run used to exit 1 with a traceback."""
    for i in range(30):
        write_gz(delivery_path(tmp_path / "in", "2026-08-10", tag=f"f{i:03d}"),
                 {"Records": [rec(f"g{i}-{j}", ident=assumed(session=f"s{j}")) for j in range(40)]})
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", tag="bad"),
             {"Records": [rec("bad", eventTime="2026-02-30T10:00:00Z"), rec("ok")]})
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "--processes", "2", "--json", "-q")
    assert res.exit_code == 0 and "Traceback" not in res.output
    assert json.loads(res.stdout)["records_written"] == 30 * 40 + 1


# item 5: a killed ingest leaves no worker and no lock behind


@pytest.mark.parametrize("source", ["local", "s3"])
def test_killed_ingest_leaves_no_orphan_workers_and_no_stale_lock(sample_logs, expected, tmp_path, source, request):
    """kill -9 the ingest mid-run: its workers (and the fork server) are gone within seconds; a re-run succeeds."""
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "s"
    src, endpoint, window = str(sample_logs), None, None
    if source == "s3":  # (threads run: the workers come from a fork server)
        src, endpoint = f"s3://{BUCKET}/{PREFIX}", request.getfixturevalue("s3")
        window = models.Window(datetime(2026, 8, 20, tzinfo=UTC), datetime(2026, 8, 24, tzinfo=UTC))
    code = ("import sys, time; from miner.ingest import ingest; from miner.models import Window\n"
            "w = Window(*map(datetime.fromisoformat, sys.argv[4:6])) if len(sys.argv) > 4 else None\n"
            "ingest([sys.argv[1]], sys.argv[2], processes=2, task_bytes=1 << 19, workers=2, window=w,\n"
            "       endpoint_url=sys.argv[3] or None, progress=lambda p: time.sleep(0.2))\n")
    args = [src, str(store), endpoint or ""] + ([window.since.isoformat(), window.until.isoformat()] if window else [])
    proc = subprocess.Popen([sys.executable, "-c", "from datetime import datetime\n" + code, *args])
    deadline = time.time() + 60
    children: set[int] = set()
    while time.time() < deadline and proc.poll() is None and (len(children) < 2 or not st.event_files(store)):
        children |= _pids_below(proc.pid)
        time.sleep(0.02)
    assert proc.poll() is None, "the ingest finished before it could be killed"
    children |= _pids_below(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while _running(children) and time.time() < deadline:
        time.sleep(0.05)
    assert not _running(children), f"orphans left: {_running(children)}"
    r = ig.ingest([src], store, processes=2, endpoint_url=endpoint, window=window)
    assert not r.notes  # the lock was free: no take-over needed
    total, distinct = count(store)
    assert total == distinct and (window or total == expected["distinct_event_ids"])
    assert ig.ingest([src], store, processes=2, endpoint_url=endpoint, window=window).files_read == 0


def _hold_lock_from_an_orphan(store: Path, record: bytes | None) -> int:
    """A process takes the store lock and forks a child that inherits it, then exits (as an ingest killed while an
    older miner's workers kept the lock). Returns the pid of the process that is gone."""
    import subprocess
    import sys
    import time

    store.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "if sys.argv[2]: os.write(fd, sys.argv[2].encode())\n"
            "if os.fork() == 0:\n"
            "    os.close(1); os.close(2); time.sleep(60); os._exit(0)\n"
            "print(os.getpid(), flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code, str(store / st.LOCK_FILE), (record or b"").decode()],
                         stdout=subprocess.PIPE, text=True, check=True, timeout=30)
    dead = int(out.stdout)
    deadline = time.time() + 5
    while st.pid_alive(dead) and time.time() < deadline:
        time.sleep(0.02)
    return dead


@pytest.mark.parametrize("record", [None, b'{"pid": 1, "start": "0"}'])
def test_stale_lock_of_a_dead_ingest_is_taken_over_with_a_message(tmp_path, record):
    import psutil

    store = tmp_path / "s"
    dead = _hold_lock_from_an_orphan(store, record)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if str(store) in " ".join(p.info["cmdline"] or [])]
    try:
        write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
        res = cli(tmp_path / "in", "--store", store)
        assert res.exit_code == 0, res.output
        assert "took over the store lock" in res.stderr
        r = run([tmp_path / "in"], store)  # the new lock is free again, and not taken over twice
        assert r.notes == [] and r.files_already_ingested == 1
        assert str(dead) in res.stderr or record is not None
    finally:
        for p in orphans:
            p.kill()


def test_a_lock_held_by_a_running_ingest_in_another_process_is_respected(tmp_path):
    import subprocess
    import sys

    store = tmp_path / "s"
    code = ("import sys, time; from miner import store; "
            "cm = store.write_lock(sys.argv[1]); cm.__enter__(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
        with pytest.raises(st.StoreError, match=f"pid {holder.pid}"):
            run([tmp_path / "in"], store)
    finally:
        holder.kill()
        holder.wait()


# item 6: decompression and parser bombs


def test_decompression_bomb_and_oversized_files_are_skipped_at_the_limit(tmp_path):
    (tmp_path / "in").mkdir()
    bomb = gzip.compress(b'{"Records": [' + b" " * (8 << 20) + b"]}", 9)  # 8 MiB from ~8 KB
    assert len(bomb) < 20_000
    (tmp_path / "in" / "bomb.json.gz").write_bytes(bomb)
    (tmp_path / "in" / "big.json").write_text(json.dumps({"Records": [rec(f"b{i}") for i in range(3000)]}))
    write_gz(tmp_path / "in" / "good.json.gz", {"Records": [rec("g1"), rec("g2")]})
    r = run([tmp_path / "in"], tmp_path / "s", max_object_size=1 << 20)
    assert r.records_written == 2
    assert r.skipped_groups()[ig.R_TOO_BIG]["files"] == 2
    assert ig.read_manifest(tmp_path / "s").num_rows == 1  # not recorded: a higher limit reads them next time
    r = run([tmp_path / "in"], tmp_path / "s", max_object_size=16 << 20)  # (the bomb holds an empty list)
    assert (r.files_read, r.records_written, r.skipped) == (2, 3000, [])


def test_gunzip_stops_inflating_at_the_limit():
    blob = gzip.compress(b"x" * (4 << 20))
    assert len(ig._gunzip(blob, 4 << 20)) == 4 << 20
    with pytest.raises(ig._TooBig):
        ig._gunzip(blob, (4 << 20) - 1)
    with pytest.raises(ig._TooBig):  # the limit counts every member of a multi-member gzip
        ig._gunzip(blob + blob, 5 << 20)


def test_lenient_reader_work_is_bounded(tmp_path):
    """A ~10 KB gzip of one long string used to cost minutes of CPU in the lenient reader (quadratic)."""
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "string.json.gz").write_bytes(gzip.compress(b'["' + b"x" * (8 << 20) + b"{" * 5000, 9))
    (tmp_path / "in" / "brackets.json.gz").write_bytes(gzip.compress(b"[" + b"[]" * (4 << 20), 9))
    write_gz(tmp_path / "in" / "good.json.gz", {"Records": [rec("g1")]})
    t0 = time.process_time()
    r = run([tmp_path / "in"], tmp_path / "s")
    assert time.process_time() - t0 < 10  # ~1 s here; the quadratic reader needed minutes
    assert r.records_written == 1 and r.skipped_groups()[ig.R_INVALID_JSON]["files"] == 2


def _deep(levels: int) -> str:
    return '{"eventID": "deep", "requestParameters": ' + '{"a": ' * levels + "1" + "}" * levels + "}"


@pytest.mark.parametrize("container", ["records", "records_without_commas", "array", "ndjson"])
def test_a_deeply_nested_record_costs_only_itself(tmp_path, container, decoder):
    good = [json.dumps(rec("g1")), _deep(2000), json.dumps(rec("g2"))]
    text = {"records": '{"Records": [' + ", ".join(good) + "]}",
            "records_without_commas": '{"Records": [' + "\n".join(good) + "]}",
            "array": "[" + ",\n".join(good) + "]",
            "ndjson": "\n".join(good)}[container]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json.gz").write_bytes(gzip.compress(text.encode()))
    r = run([tmp_path / "in"], tmp_path / "s")
    assert sorted(x["event_id"] for x in rows(tmp_path / "s")) == ["g1", "g2"]
    assert r.records_skipped == 1 and r.files_skipped == 0
    check_invariant(r)


@pytest.mark.parametrize("text, size", [("256MiB", 256 << 20), ("1G", 1 << 30), ("500 mb", 500 << 20),
                                        ("1.5k", 1536), ("100b", 100), ("4096", 4096)])
def test_parse_size(text, size):
    assert models.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "lots", "1ib", "-5M", "1e9"])
def test_parse_size_rejects_other_text(text):
    with pytest.raises(ValueError, match="as a size"):
        models.parse_size(text)


def test_cli_max_object_size_option(tmp_path):
    write_gz(tmp_path / "in" / "a.json", {"Records": [rec("a")]})
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "--max-object-size", "100b")
    assert res.exit_code == 2 and "larger than --max-object-size" in res.stderr
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "--max-object-size", "lots")
    assert res.exit_code == 2 and "cannot read 'lots' as a size" in res.stderr and "Traceback" not in res.output
    assert cli(tmp_path / "in", "--store", tmp_path / "s", "--max-object-size", "1MiB", "-q").exit_code == 0


# item 7: readers never see a listed file vanish


def test_published_files_never_change_when_a_later_run_drops_duplicates(tmp_path):
    """An organization trail and an account trail deliver the same events: the second run finds them stored. The
    files a reader may have listed stay as they are (they used to be rewritten or deleted), and concurrent
    queries never fail."""
    import threading

    store = tmp_path / "s"
    for i in range(6):  # small published files, all of whose rows come again below
        write_gz(tmp_path / "account" / f"a{i}.json.gz", {"Records": [rec(f"id{i:02d}-{j:03d}") for j in range(300)]})
    run([tmp_path / "account"], store)
    before = {f: (f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) for f in st.event_files(store)}
    write_gz(tmp_path / "org" / "o.json.gz", {"Records": [rec(f"id{i:02d}-{j:03d}") for i in range(8)
                                                          for j in range(300)]})
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                st.connect(store).execute("select principal_arn, count(*) from events group by 1").fetchall()
            except Exception as e:  # noqa: BLE001 - any failure is the bug
                errors.append(str(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        r = run([tmp_path / "org"], store)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert {f: (f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) for f in before} == before
    assert (r.duplicates, r.records_written) == (1800, 600)
    assert count(store) == (2400, 2400)


def test_cli_read_commands_retry_once_when_a_listed_file_vanishes(sample_store, monkeypatch):
    import duckdb

    from miner import usage

    store, _ = sample_store
    real, calls = usage.principals, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.IOException("IO Error: Cannot open file \"x/part-1.parquet\": No such file or directory")
        return real(*a, **k)

    monkeypatch.setattr(usage, "principals", flaky)
    res = CliRunner().invoke(app, ["principals", "--store", str(store), "--since", "2026-01-01", "--until",
                                   "2026-12-31", "--format", "json"])
    assert res.exit_code == 0 and len(calls) == 2 and json.loads(res.stdout)

    def always(*a, **k):
        raise duckdb.IOException("IO Error: Cannot open file \"x/part-1.parquet\": No such file or directory")

    monkeypatch.setattr(usage, "principals", always)
    res = CliRunner().invoke(app, ["principals", "--store", str(store), "--since", "2026-01-01"])
    assert res.exit_code == 2 and "changed while it was read" in res.stderr and "Traceback" not in res.output


# item 8: disk full, throttled downloads, conflicting duplicates


def test_disk_full_is_one_line_naming_the_store(tmp_path, monkeypatch):
    import errno

    write_gz(tmp_path / "in" / "a.json.gz", {"Records": [rec("a")]})
    run([tmp_path / "in"], tmp_path / "s")
    write_gz(tmp_path / "in" / "b.json.gz", {"Records": [rec(f"b{i}", ident=assumed(session=f"s{i}"))
                                                         for i in range(300)]})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "write_parquet", full)
    res = cli(tmp_path / "in", "--store", tmp_path / "s", "-q")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.count("\n") == 1 and f"no space left for the store at {tmp_path / 's'}" in res.stderr
    monkeypatch.undo()
    assert count(tmp_path / "s") == (1, 1)  # what was committed is safe
    assert run([tmp_path / "in"], tmp_path / "s").records_written == 300


def test_a_run_whose_every_download_is_throttled_says_so(s3, tmp_path, monkeypatch):
    import botocore.exceptions as be

    monkeypatch.setattr(ig.time, "sleep", lambda s: None)
    real = ig.make_s3_client(endpoint_url=s3)

    class Throttled:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_object(self, **kw):
            raise be.ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")

    w = models.Window(datetime(2026, 8, 21, tzinfo=UTC), datetime(2026, 8, 22, tzinfo=UTC))
    r = ig.ingest([f"s3://{BUCKET}/{PREFIX}"], tmp_path / "s", window=w, s3_client=Throttled(), processes=1)
    code, verdict = r.outcome()
    assert code == 2 and r.files_seen > 0
    assert verdict == f"nothing stored: {r.files_seen} files could not be downloaded (SlowDown after 6 attempts: " \
                      f"{r.files_seen}); run again later, they are retried"


@pytest.mark.parametrize("first, second", [(80, 300), (300, 80), (1, 1)])
def test_a_duplicate_event_id_with_other_content_keeps_the_stored_copy(tmp_path, first, second):
    """One documented rule, within a run and across runs: the first copy stored is kept, whatever the sizes."""
    a = [rec(f"id{i:04d}") for i in range(first)]
    b = [rec(f"id{i:04d}", name="DeleteObject") for i in range(first - 1, first - 1 + second)]  # one shared id
    write_gz(tmp_path / "one" / "a.json.gz", {"Records": a})
    write_gz(tmp_path / "two" / "b.json.gz", {"Records": b})
    run([tmp_path / "one"], tmp_path / "s")
    r = run([tmp_path / "two"], tmp_path / "s")
    assert r.duplicates == 1
    shared = rows(tmp_path / "s", f"select event_name from events where event_id = 'id{first - 1:04d}'")
    assert shared == [{"event_name": "GetObject"}]
    write_gz(tmp_path / "both" / "1.json.gz", {"Records": a})  # one run, the copies in path order
    write_gz(tmp_path / "both" / "2.json.gz", {"Records": b})
    run([tmp_path / "both"], tmp_path / "s2")
    assert rows(tmp_path / "s2", f"select event_name from events where event_id = 'id{first - 1:04d}'") == shared


def test_periodic_flushes_hold_buffered_copies_back_so_no_file_is_rewritten(tmp_path, monkeypatch):
    """A copy delivered under another region's prefix waits in memory (and its object's manifest row with it)
    until the copy it duplicates arrives: no published file is touched, no new file rewritten."""
    monkeypatch.setattr(ig, "MANIFEST_FLUSH_SECONDS", 0.0)  # a manifest flush after every task
    rewrites = []
    real = st.rewrite_filtered
    monkeypatch.setattr(st, "rewrite_filtered", lambda *a, **k: rewrites.append(a) or real(*a, **k))
    home = [rec(f"h{i:03d}", ident=assumed(session=f"s{i}")) for i in range(400)]
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", region="eu-west-1"), {"Records": home[:3]})
    write_gz(delivery_path(tmp_path / "in", "2026-08-10", region="us-east-1"), {"Records": home})
    r = run([tmp_path / "in"], tmp_path / "s", task_bytes=1)
    assert (r.records_written, r.duplicates, rewrites) == (400, 3, [])
    # the flush after the first task held its object's row back; the one after the second wrote both
    assert ig.read_manifest(tmp_path / "s").num_rows == 2 and len(st.manifest_files(tmp_path / "s")) == 1
