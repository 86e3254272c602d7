"""Distributed ingest (``--engine spark``): the parse tasks on Spark executors, the commit on the driver; the store
it writes holds exactly what a local ingest stores, and re-runs read nothing again."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from miner import ingest as ig
from miner import s3store
from miner.cli import app
from miner.models import EVENT_SCHEMA, Window

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
WINDOW = Window(dt.datetime(2026, 8, 1, tzinfo=UTC), dt.datetime(2026, 9, 15, tzinfo=UTC))
CLI_WINDOW = ["--since", "2026-08-01", "--until", "2026-09-15"]


def run(*args, **kwargs):
    """Invoke the CLI in this process."""
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def local_rows(store: Path) -> list[tuple]:
    """Every stored row (partition columns and ``source_object`` left out), sorted by event id."""
    table = ds.dataset(str(store / "events"), format="parquet", partitioning="hive").to_table()
    table = table.select([c for c in table.column_names if c not in ("account", "region", "date", "source_object")])
    return [tuple(r.values()) for r in table.sort_by("event_id").to_pylist()]


def comparable(report: ig.IngestReport) -> dict:
    """An ingest report's fields that do not depend on the engine (files written, run id, timing left out)."""
    d = report.to_dict()
    for k in ("run_id", "seconds", "store", "data_files_written", "tmp_files_cleaned", "notes"):
        d.pop(k)
    d["skipped"] = sorted(map(json.dumps, d["skipped"]))
    return d


def test_spark_ingest_of_sample_logs_equals_local_ingest(spark, sample_logs, sample_store, tmp_path):
    target = tmp_path / "store"
    r = ig.ingest([str(sample_logs)], target, engine="spark", spark=spark, task_bytes=1 << 20)
    assert r.outcome()[0] == 0
    assert r.skipped and r.duplicates  # the sample logs hold both: the comparison below can fail
    assert comparable(r) == comparable(ig.ingest([str(sample_logs)], tmp_path / "local", task_bytes=1 << 20))
    ids = local_rows(target)
    assert ids == local_rows(sample_store)
    assert len({row[0] for row in ids}) == len(ids)  # no event id twice
    manifest = ig.read_manifest(target)
    assert set(manifest["source"]) == set(ig.read_manifest(sample_store)["source"])

    again = ig.ingest([str(sample_logs)], target, engine="spark", spark=spark)
    assert again.records_written == 0 and again.files_read == 0
    assert again.files_already_ingested == r.files_read
    assert local_rows(target) == ids


def test_spark_store_reads_the_same_on_duckdb(spark, sample_logs, sample_store, tmp_path):
    target = tmp_path / "store"
    r = run("ingest", sample_logs, "--store", target, "--engine", "spark", "--spark-master", "local[2]", "-q")
    assert r.exit_code == 0, r.output
    a = run("principals", "--store", target, *CLI_WINDOW, "--format", "json")
    b = run("principals", "--store", sample_store, *CLI_WINDOW, "--format", "json")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_unknown_engine_is_one_line_error(sample_logs, tmp_path):
    r = run("ingest", sample_logs, "--store", tmp_path / "s", "--engine", "hive", "-q")
    assert r.exit_code != 0 and "--engine" in r.output


@pytest.fixture
def s3_spark(spark, aws_env, monkeypatch):
    """The moto server's fake credentials also in the executors' environment (the session started before them)."""
    env = spark.sparkContext.environment
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setitem(env, k, "testing" if k != "AWS_DEFAULT_REGION" else "us-east-1")
    monkeypatch.setenv(s3store.ENDPOINT_ENV, aws_env)
    monkeypatch.delenv("MINER_STORE", raising=False)
    return spark


def test_spark_ingest_from_s3_into_s3_store(s3_spark, aws_env, sample_logs, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=aws_env)
    client.create_bucket(Bucket="trail")
    client.create_bucket(Bucket="store")
    logs = sorted(p for p in (sample_logs / "AWSLogs").rglob("*") if p.is_file())
    for p in logs:
        client.put_object(Bucket="trail", Key=p.relative_to(sample_logs).as_posix(), Body=p.read_bytes())
    local = tmp_path / "local"
    local_report = ig.ingest([str(sample_logs / "AWSLogs")], local, window=WINDOW)

    url = "s3://store/miner"
    r = ig.ingest(["s3://trail"], url, window=WINDOW, endpoint_url=aws_env, engine="spark", spark=s3_spark,
                  task_bytes=1 << 20)
    assert r.outcome()[0] == 0, r.to_dict()
    assert r.files_read > 1000 and r.records_written == local_report.records_written
    copy = tmp_path / "copy"  # the S3 store's objects, as a local folder
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="store", Prefix="miner/"):
        for o in page.get("Contents", []):
            dest = copy / o["Key"][len("miner/"):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(client.get_object(Bucket="store", Key=o["Key"])["Body"].read())
    assert local_rows(copy) == local_rows(local)

    again = ig.ingest(["s3://trail"], url, window=WINDOW, endpoint_url=aws_env, engine="spark", spark=s3_spark)
    assert again.records_written == 0 and again.files_read == 0 and again.files_already_ingested == r.files_read


# ----------------------------------------------------------------------------- a driver killed mid-way

_KILLED_DRIVER = """
import sys
from miner import engine, ingest as ig
ig.SPARK_WAVE_TASKS_PER_SLOT = 1  # many small waves: parts are published long before the run ends
ig.ingest([sys.argv[1]], sys.argv[2], engine="spark", spark=engine.spark_session("local[2]"), task_bytes=1 << 19)
"""


def _events(store: str, client) -> dict[str, int]:
    """Published event files of a local or S3 store -> their rows."""
    import pyarrow.parquet as pq

    if not store.startswith("s3://"):
        return {str(p): pq.ParquetFile(p).metadata.num_rows for p in Path(store).glob("events/*/*/*/*.parquet")}
    bucket, _, prefix = store[5:].partition("/")
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/events/"):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out[o["Key"]] = pq.ParquetFile(pa.BufferReader(body)).metadata.num_rows
    return out


def _store_rows(store: str) -> list[tuple]:
    """Every stored row of a local or S3 store (``source_object`` left out), sorted by event id."""
    from miner import store as st

    con = st.connect(store)
    cols = [d[0] for d in con.execute("select * from events limit 0").description if d[0] != "source_object"]
    return con.execute(f"select {', '.join(cols)} from events order by event_id").fetchall()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_spark_ingest_killed_mid_way_then_rerun_has_no_duplicates_and_no_missing_rows(
        kind, spark, aws_env, monkeypatch, sample_logs, sample_store, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=aws_env)
    if kind == "s3":
        client.create_bucket(Bucket="store")
        monkeypatch.setenv(s3store.ENDPOINT_ENV, aws_env)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):  # the shared session's
            monkeypatch.setitem(spark.sparkContext.environment, k, os.environ[k])  # executors, for the re-run
    target = "s3://store/killed" if kind == "s3" else str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", _KILLED_DRIVER, str(sample_logs), target], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not _events(target, client) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its JVM and Python workers go with it
        assert driver.wait() == -signal.SIGKILL, driver.stderr.read().decode()[-3000:]
        while time.monotonic() < deadline:  # until they have gone (a task still running publishes no more once
            try:  # the re-run has taken the lock over, but may until then)
                os.killpg(driver.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()
    partial = sum(_events(target, client).values())
    total = len(_store_rows(str(sample_store)))
    assert 0 < partial < total  # killed mid-way: some parts published, not all
    assert len(ig.read_manifest(target)) < len(ig.read_manifest(sample_store))

    r = ig.ingest([str(sample_logs)], target, engine="spark", spark=spark)
    if kind == "s3":  # (a local lock is free once the killed processes are gone; the lock object stays)
        assert any("took over the store lock" in n for n in r.notes), r.notes
    assert r.records_written == total - partial
    rows = _store_rows(target)
    assert len({row[0] for row in rows}) == len(rows)  # no event id twice
    assert rows == _store_rows(str(sample_store))  # none missing
    assert set(ig.read_manifest(target)["source"]) == set(ig.read_manifest(sample_store)["source"])


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_part_writer_dedupes_against_the_store_and_publishes_only_under_the_drivers_lock(kind, aws_env, monkeypatch,
                                                                                         sample_store, tmp_path):
    from miner import store as st

    if kind == "s3":
        import boto3

        boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket="store")
        monkeypatch.setenv(s3store.ENDPOINT_ENV, aws_env)
    target = st.root("s3://store/w" if kind == "s3" else tmp_path / "w")
    table = ds.dataset(str(sample_store / "events"), format="parquet", partitioning="hive").to_table()
    biggest = table.group_by(["account", "region", "date"]).aggregate([([], "count_all")]).sort_by(
        [("count_all", "descending")]).slice(0, 1).to_pylist()[0]
    some = table.filter(pc.and_(pc.and_(pc.equal(table["account"], biggest["account"]),
                                        pc.equal(table["region"], biggest["region"])),
                                pc.equal(table["date"], biggest["date"]))).slice(0, 50)
    rows = some.select([f.name for f in EVENT_SCHEMA]).cast(EVENT_SCHEMA)
    key = "/".join(str(biggest[c]) for c in ("account", "region", "date"))
    twice = pa.concat_tables([rows.slice(0, 30), rows.slice(20, 30)])  # ids 20..29 twice in the wave
    with st.write_lock(target) as lock:
        stranger = ig._PartWriter(st.location(target), "run", "someone else")
        with pytest.raises(st.StoreError, match="no longer holds the lock"):
            stranger.write(key, [twice], 1)
        assert not st.event_files(target) if kind == "local" else not s3store.event_files(target)
        writer = ig._PartWriter(st.location(target), "run", lock.owner)
        assert writer.write(key, [twice], 1)[3:] == ("part-run-00001.parquet", 50, 10)
        assert writer.write(key, [rows.slice(40, 10), rows], 2)[3:] == (None, 0, 60)  # all stored already
    files = st.event_files(target) if kind == "local" else s3store.event_files(target)
    assert [str(f).rpartition("/")[2] for f in files] == ["part-run-00001.parquet"]
    stored = st.connect(target).execute("select event_id from events order by event_id").fetchall()
    assert [r[0] for r in stored] == sorted(rows.column("event_id").to_pylist())
    if kind == "local":
        assert not list((tmp_path / "w" / "_tmp").glob("*"))  # the refused part left nothing behind
