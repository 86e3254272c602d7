"""Distributed ingest (``--engine spark``): the parse tasks on Spark executors, the commit on the driver; the store
it writes holds exactly what a local ingest stores, and re-runs read nothing again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from miner import ingest as ig
from miner import s3store
from miner.cli import app
from miner.models import Window

pytestmark = pytest.mark.spark

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


def test_spark_ingest_of_sample_logs_equals_local_ingest(spark, sample_logs, sample_store, tmp_path):
    target = tmp_path / "store"
    r = ig.ingest([str(sample_logs)], target, engine="spark", spark=spark, task_bytes=1 << 20)
    assert r.outcome()[0] == 0
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
