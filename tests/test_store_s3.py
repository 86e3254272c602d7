"""The store on S3 (moto server): same layout and answers as a local store, re-runs, killed runs, the lock, errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from miner import ingest as ig
from miner import s3store
from miner import store as st
from miner.cli import app

REPO = Path(__file__).resolve().parent.parent
BUCKET = "miner-store"
PREFIX = "team/miner"
URL = f"s3://{BUCKET}/{PREFIX}"
WINDOW = ["--since", "2026-08-01", "--until", "2026-09-15"]


def run(*args, **kwargs):
    """Invoke the CLI in this process (stdout and stderr apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def s3env(moto_server):
    """Fake credentials, the store endpoint in ``$MINER_STORE_ENDPOINT_URL``, an empty bucket (for this module)."""
    import boto3
    import requests

    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", s3store.ENDPOINT_ENV: moto_server}.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("MINER_STORE", raising=False)
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    client = boto3.client("s3", endpoint_url=moto_server)
    client.create_bucket(Bucket=BUCKET)
    yield client
    mp.undo()


def keys(client, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        out += [o["Key"][len(prefix) + 1:] for o in page.get("Contents", ())]
    return sorted(out)


@pytest.fixture(scope="module")
def s3_ingested(s3env, sample_logs):
    """The sample logs ingested into ``s3://miner-store/team/miner`` by the CLI."""
    r = run("ingest", sample_logs, "--store", URL, "--json", "-q")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def table(store, sql="select * exclude (source_object) from events order by event_id"):
    return st.connect(store).sql(sql).to_arrow_table()


# ----------------------------------------------------------------------------- layout and contents


def test_s3_store_has_the_local_layout_and_the_same_rows(s3env, s3_ingested, sample_store):
    assert s3_ingested["records_written"] > 19000
    got = keys(s3env, PREFIX)
    assert not [k for k in got if not (k.startswith("events/") or k.startswith("manifest/"))]  # no lock, no _tmp
    events = [k for k in got if k.startswith("events/")]
    parts = {k.rsplit("/", 1)[0] for k in events}
    local_parts = {p.parent.relative_to(sample_store).as_posix() for p in st.event_files(sample_store)}
    assert parts == local_parts
    assert all(k.rsplit("/", 1)[1].startswith("part-") and k.endswith(".parquet") for k in events)
    assert [k for k in got if k.startswith("manifest/")]
    local = st.connect(sample_store).sql("select * from events order by event_id").to_arrow_table()
    remote = st.connect(URL).sql("select * from events order by event_id").to_arrow_table()
    assert remote.schema == local.schema
    assert remote.equals(local)
    assert st.data_days(URL) == st.data_days(sample_store)
    man_l, man_r = st.read_manifest(sample_store), st.read_manifest(URL)
    cols = ["source", "size", "version", "records", "status", "reason"]
    assert man_r.select(cols).sort_by("source").equals(man_l.select(cols).sort_by("source"))


def test_rerun_ingests_nothing(s3env, s3_ingested, sample_logs):
    before = keys(s3env, PREFIX)
    r = run("ingest", sample_logs, "--store", URL, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["records_written"] == 0 and rep["files_read"] == 0 and rep["files_already_ingested"] > 1000
    assert keys(s3env, PREFIX) == before


# ----------------------------------------------------------------------------- every command: same answers


@pytest.mark.parametrize("args", [
    ["principals", *WINDOW, "--format", "json"],
    ["principals", *WINDOW, "--format", "csv"],
    ["usage", "--role", "orders-api-task", *WINDOW, "--format", "json"],
    ["suggest", "--role", "orders-api-task", *WINDOW, "--format", "json"],
    ["suggest", "--role", "orders-api-task", *WINDOW, "--format", "terraform"],
    ["coverage", "--format", "json"],
    ["backtest", "--role", "orders-api-task", "--train", "20d", "--test", "10d", "--until", "2026-09-14",
     "--format", "json"],
])
def test_commands_answer_the_same_on_s3_and_locally(s3_ingested, sample_store, args):
    local = run(*args, "--store", sample_store, "-q")
    remote = run(*args, "--store", URL, "-q")
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout


def test_review_json_is_the_same_on_s3_and_locally(s3_ingested, sample_store, sample_logs):
    args = ["review", *WINDOW, "--iam-snapshot", sample_logs / "iam", "--format", "json", "-q"]
    local = run(*args, "--store", sample_store)
    remote = run(*args, "--store", URL)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert b.pop("store") == URL and a.pop("store") == str(sample_store)
    a.pop("generated_at"), b.pop("generated_at")
    assert a == b


def test_miner_store_variable_and_endpoint_option(s3env, s3_ingested, sample_store, monkeypatch, moto_server):
    monkeypatch.setenv("MINER_STORE", URL)
    monkeypatch.delenv(s3store.ENDPOINT_ENV)
    local = run("principals", *WINDOW, "--format", "csv", "--store", sample_store, "-q")
    remote = run("principals", *WINDOW, "--format", "csv", "--store-endpoint-url", moto_server, "-q")
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)  # boto3's own variable works too
    assert run("principals", *WINDOW, "--format", "csv", "-q").stdout == local.stdout


# ----------------------------------------------------------------------------- crash safety


def _assert_nothing_half_visible(client, prefix: str) -> int:
    """Every object under events/ is a whole Parquet file with no event id twice; returns the rows."""
    rows = 0
    for k in keys(client, prefix):
        assert k.startswith(("events/", "manifest/", ".ingest.lock")), k
        if k.startswith("events/"):
            t = pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=f"{prefix}/{k}")["Body"].read()))
            rows += t.num_rows
    if rows:
        con = st.connect(f"s3://{BUCKET}/{prefix}")
        n, distinct = con.execute("select count(*), count(distinct event_id) from events").fetchone()
        assert n == distinct == rows
    return rows


def test_run_that_fails_mid_way_then_rerun_has_no_duplicates(s3env, sample_logs, sample_store, monkeypatch):
    prefix = "crash/in-process"
    url = f"s3://{BUCKET}/{prefix}"
    real = s3store.S3Conn.put_file
    calls = []

    def flaky(self, local, key):
        if "/events/" in key and len(calls) >= 40:
            raise s3store.StoreError("simulated failure after 40 parts")
        calls.append(key)
        real(self, local, key)

    monkeypatch.setattr(s3store.S3Conn, "put_file", flaky)
    with pytest.raises(s3store.StoreError, match="simulated"):
        ig.ingest([str(sample_logs)], url, processes=1)
    monkeypatch.setattr(s3store.S3Conn, "put_file", real)
    assert ".ingest.lock" not in keys(s3env, prefix)  # released on the way out
    partial = _assert_nothing_half_visible(s3env, prefix)
    assert 0 < partial < 19868
    r = ig.ingest([str(sample_logs)], url, processes=1)
    assert r.records_written == 19868 - partial
    assert table(url).equals(table(sample_store))
    _assert_nothing_half_visible(s3env, prefix)


def test_killed_run_then_rerun_takes_the_lock_over_and_has_no_duplicates(s3env, sample_logs, sample_store,
                                                                          moto_server):
    prefix = "crash/killed"
    url = f"s3://{BUCKET}/{prefix}"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from miner import ingest, s3store
        real = s3store.S3Conn.put_file
        n = []
        def dying(self, local, key):
            if "/events/" in key and len(n) >= 30:
                os.kill(os.getpid(), signal.SIGKILL)  # as a kill -9 mid-upload
            n.append(key)
            real(self, local, key)
        s3store.S3Conn.put_file = dying
        ingest.ingest([{str(sample_logs)!r}], {url!r}, processes=1)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert ".ingest.lock" in keys(s3env, prefix)  # a killed writer leaves its lock
    partial = _assert_nothing_half_visible(s3env, prefix)
    assert 0 < partial < 19868
    r = run("ingest", sample_logs, "--store", url, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert any("took over the store lock" in n for n in rep["notes"])
    assert rep["records_written"] == 19868 - partial
    assert table(url).equals(table(sample_store))
    assert _assert_nothing_half_visible(s3env, prefix) == 19868
    assert ".ingest.lock" not in keys(s3env, prefix)


# ----------------------------------------------------------------------------- the lock


def test_lock_is_exclusive_and_expires(s3env, monkeypatch):
    url = f"s3://{BUCKET}/locks/a"
    with st.write_lock(url) as lock:
        assert lock.took_over is None
        body = json.loads(s3env.get_object(Bucket=BUCKET, Key="locks/a/.ingest.lock")["Body"].read())
        assert body["pid"] == os.getpid()
        with pytest.raises(st.StoreError, match="another `miner ingest`"):
            with st.write_lock(url):
                pass
    assert "locks/a/.ingest.lock" not in [o["Key"] for o in s3env.list_objects_v2(Bucket=BUCKET,
                                                                                 Prefix="locks/").get("Contents", [])]
    # a lock of another host, not renewed for longer than the TTL, is taken over
    s3env.put_object(Bucket=BUCKET, Key="locks/b/.ingest.lock",
                     Body=json.dumps({"pid": 1, "host": "elsewhere", "ttl": 1}).encode())
    with pytest.raises(st.StoreError, match="pid 1 on elsewhere"):
        with st.write_lock(f"s3://{BUCKET}/locks/b"):
            pass
    monkeypatch.setattr(s3store, "_server_age", lambda resp: 5.0)
    with st.write_lock(f"s3://{BUCKET}/locks/b") as lock:
        assert "pid 1 on elsewhere" in lock.took_over


def test_a_writer_that_lost_its_lock_stops_before_the_next_upload(s3env, monkeypatch, tmp_path):
    monkeypatch.setattr(s3store, "LOCK_HEARTBEAT", 0.05)
    root = st.root(f"s3://{BUCKET}/locks/c")
    with st.write_lock(root):
        s3env.put_object(Bucket=BUCKET, Key="locks/c/.ingest.lock", Body=b'{"pid": 2, "host": "other"}')
        import time

        deadline = time.time() + 10
        while not root.conn.lock_lost and time.time() < deadline:
            time.sleep(0.05)
        f = tmp_path / "x.parquet"
        f.write_bytes(b"x")
        with pytest.raises(st.StoreError, match="took over the lock"):
            st.publish(f, root / "events" / "x.parquet")
    body = s3env.get_object(Bucket=BUCKET, Key="locks/c/.ingest.lock")["Body"].read()
    assert b"other" in body  # the new owner's lock is left alone


# ----------------------------------------------------------------------------- errors: one line, exit 2


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "s3://Bad_Bucket/x", "s3://b/x"])
def test_bad_s3_url_is_one_line(s3env, url):
    for cmd in (["principals"], ["ingest", "sample_logs"]):
        r = run(*cmd, "--store", url, "-q")
        assert r.exit_code == 2
        assert "bad S3 store URL" in one_line_error(r.stderr)


def test_missing_bucket_is_one_line(s3env, sample_logs):
    r = run("principals", "--store", "s3://no-such-store-bucket/x", "-q")
    assert r.exit_code == 2 and "no S3 bucket named 'no-such-store-bucket'" in one_line_error(r.stderr)
    r = run("ingest", sample_logs, "--store", "s3://no-such-store-bucket/x", "-q")
    assert r.exit_code == 2 and "no S3 bucket named" in one_line_error(r.stderr)


def test_empty_s3_store_is_one_line(s3env):
    r = run("principals", "--store", f"s3://{BUCKET}/nothing-here", "-q")
    assert r.exit_code == 2 and "holds no events" in one_line_error(r.stderr)


def test_no_credentials_is_one_line(s3env, no_aws_credentials):
    r = run("principals", "--store", URL, "-q")
    assert r.exit_code == 2 and "no AWS credentials for the store" in one_line_error(r.stderr)


def test_unreachable_endpoint_is_one_line(s3env, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    r = run("principals", "--store", URL, "--store-endpoint-url", "http://127.0.0.1:9", "-q")
    assert r.exit_code == 2 and "cannot reach the S3 endpoint" in one_line_error(r.stderr)


@pytest.mark.parametrize("code,status,message", [
    ("AccessDenied", 403, "access denied to the store"),
    ("403", 403, "access denied to the store"),
    ("NoSuchBucket", 404, "no S3 bucket named 'b'"),
    ("InvalidAccessKeyId", 403, "credentials were refused"),
    ("SlowDown", 503, "SlowDown"),
])
def test_s3_errors_become_one_line(code, status, message):
    import botocore.exceptions as be

    e = be.ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")
    got = str(s3store.s3_error(e, "s3://b/p", "reading the store"))
    assert message in got and "\n" not in got
