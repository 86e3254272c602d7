"""The same queries/*.sql on DuckDB and on Apache Spark: translation, and the same rows over the sample-log store."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from miner import engine, queries

UTC = dt.timezone.utc
WINDOW = {"since": dt.datetime(2026, 8, 1, tzinfo=UTC), "until": dt.datetime(2026, 9, 15, tzinfo=UTC)}
ORDERS = "arn:aws:iam::111122223333:role/service-role/orders-api-task"

#: Parameters each query is compared with (NULL parameters included); every query file needs an entry.
CASES: dict[str, list[dict]] = {
    "principals": [dict(WINDOW, principal_name=None, principal_arn=None),
                   dict(WINDOW, principal_name="alice", principal_arn=None),
                   dict(WINDOW, principal_name=None, principal_arn=ORDERS)],
    "principal_names": [{}],
    "principal_lookup": [dict(WINDOW, principal_name="orders-api-task", principal_arn=None),
                         dict(WINDOW, principal_name=None, principal_arn=ORDERS)],
    "usage_by_principal": [dict(WINDOW, principal_arn=ORDERS)],
    "usage_sources": [dict(WINDOW, principal_arn=ORDERS, limit=10)],
    "denied_calls": [dict(WINDOW, principal_arn=None), dict(WINDOW, principal_arn=ORDERS)],
    "usage_timeline": [dict(WINDOW, principal_arn=None), dict(WINDOW, principal_arn=ORDERS)],
    "data_events": [dict(WINDOW, account=None), dict(WINDOW, account="111122223333")],
    "event_shapes": [WINDOW],
    "usage_actions": [{}],  # over the `mapped` relation, built below from the sample store
}


def test_every_query_has_a_parity_case():
    assert set(queries.available()) <= set(CASES), "add the new query to CASES with its parameters"


@pytest.mark.parametrize("name", queries.available())
def test_every_query_translates_to_spark_sql(name):
    pytest.importorskip("sqlglot")
    sql = engine.to_spark_sql(queries.load(name))
    for p in queries.parameters(name):
        assert f":{p}" in sql and f"${p}" not in sql


def _cell(v):
    """A value in a form both engines agree on (lists as tuples, every missing value as None, times as UTC text)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(_cell(x) for x in v)
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.tz_convert("UTC").isoformat() if v.tzinfo else v.isoformat()
    if isinstance(v, dt.datetime):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, dt.date):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return round(float(v), 9)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(_cell(v) for v in row) for row in frame.itertuples(index=False)]


@pytest.fixture(scope="module")
def mapped(sample_store):
    """The `mapped` relation usage_actions.sql reads: every principal's shapes joined with the mapping."""
    from miner import store, usage

    con = store.connect(sample_store)
    shapes = queries.run(con, "usage_by_principal", **dict(WINDOW, principal_arn=None))
    return usage.map_and_resolve(shapes)


@pytest.fixture(scope="module")
def spark_con(sample_store, spark):
    """One Spark view over the sample store for the module, cached (the parity queries read it 17 times)."""
    con = engine.connect(sample_store, "spark", spark=spark).cache()
    yield con
    con.close()


@pytest.mark.spark
@pytest.mark.parametrize("name, case", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n]))])
def test_every_query_returns_the_same_rows_on_duckdb_and_spark(name, case, sample_store, spark_con, mapped):
    """The same file, the same parameters, the same rows in the same order (each query has a total ORDER BY)."""
    from miner import store, usage

    params = CASES[name][case]
    if name == "usage_actions":  # runs on a relation, not the store: both engines get the same input
        import duckdb

        local = duckdb.connect()
        local.execute("SET TimeZone = 'UTC'")
        needed = ["principal_arn", "action", "resource", "events", "first_seen", "last_seen", "aws_region",
                  "account_id", "event_source", "event_name", "outcome", "event_category", "derivation", "reason",
                  "implicit", "invoked_by", "status", "condition_key", "condition_value", *usage.CONTEXT_COLUMNS]
        table = usage._with_context(mapped[[c for c in needed if c in mapped.columns]])
        local.register("mapped", table)
        want = queries.run(local, name)
        got = spark_con.run_sql(name, queries.load(name), {}, relations={"mapped": table})
        assert len(want) > 10
    else:
        want = queries.run(store.connect(sample_store), name, **params)
        got = queries.run(spark_con, name, **params)
    assert list(got.columns) == list(want.columns)
    assert _rows(got) == _rows(want)


def _review_json(sample_store, sample_logs, engine_name: str) -> dict:
    import json

    from miner import jobs

    rv = jobs.review(sample_store, jobs.Window(**WINDOW), grants=jobs.Grants(snapshot=sample_logs / "iam"),
                     engine=engine_name)
    out = json.loads(rv.render("json"))
    out.pop("generated_at", None)
    return out


@pytest.mark.spark
def test_review_json_is_the_same_on_duckdb_and_spark(sample_store, sample_logs, spark):
    """`miner review --format json`: every principal, usage mapped on the executors, the same document."""
    want = _review_json(sample_store, sample_logs, "duckdb")
    got = _review_json(sample_store, sample_logs, "spark")
    assert want["principals"], "the sample review lists principals"
    assert got == want


@pytest.mark.spark
@pytest.mark.parametrize("who", ["orders-api-task", "alice"])
def test_suggest_is_the_same_on_duckdb_and_spark(who, sample_store, sample_logs, spark):
    """`miner suggest` (policy, summary and the diff report against the snapshot) on both engines."""
    from miner import jobs

    def run(engine_name):
        r = jobs.suggest(sample_store, jobs.Window(**WINDOW), role=who if who != "alice" else None,
                         user="alice" if who == "alice" else None, grants=jobs.Grants(snapshot=sample_logs / "iam"),
                         engine=engine_name)
        return r.policy("json"), r.summary, r.report_text(), r.report_dict()

    assert run("spark") == run("duckdb")


@pytest.mark.spark
def test_principals_and_coverage_are_the_same_on_duckdb_and_spark(sample_store, spark):
    from miner import jobs

    win = jobs.Window(**WINDOW)
    want, got = (jobs.principals(sample_store, win, engine=e).frame for e in ("duckdb", "spark"))
    assert list(got.columns) == list(want.columns) and _rows(got) == _rows(want)
    want, got = (jobs.coverage(sample_store, win.since, win.until, engine=e) for e in ("duckdb", "spark"))
    assert got.to_dict() == want.to_dict()


def test_an_unknown_engine_is_a_user_error(sample_store):
    with pytest.raises(engine.EngineError, match="unknown engine"):
        engine.connect(sample_store, "presto")


def test_spark_without_pyspark_says_how_to_install_it(monkeypatch):
    """No pyspark: one line naming the extra (the CLI prints it and exits 2)."""
    import builtins

    real = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    with pytest.raises(engine.EngineError, match=r"pip install 'miner\[spark\]'"):
        engine.spark_session()


def test_the_cli_exits_2_when_the_spark_extra_is_missing(sample_store, monkeypatch):
    from typer.testing import CliRunner

    from miner import cli

    def missing(master=None):
        raise engine.EngineError("the spark engine needs the spark extra: pip install 'miner[spark]'")

    monkeypatch.setattr(engine, "spark_session", missing)
    result = CliRunner().invoke(cli.app, ["principals", "--store", str(sample_store), "--engine", "spark",
                                          "--since", "2026-08-01", "--until", "2026-09-15"])
    assert result.exit_code == 2
    assert "pip install 'miner[spark]'" in result.output


def test_s3_store_urls_become_s3a_for_spark():
    assert engine.spark_path("s3://bucket/miner") == engine.spark_path("s3://bucket/miner/") == "s3a://bucket/miner"
    assert engine.spark_path("s3a://bucket/miner/") == "s3a://bucket/miner"


def test_a_result_left_on_the_executors_drops_its_order_unless_limited():
    pytest.importorskip("sqlglot")
    assert "ORDER BY" in engine.to_spark_sql(queries.load("usage_by_principal"))
    assert "ORDER BY" not in engine.to_spark_sql(queries.load("usage_by_principal"), ordered=False)
    assert "ORDER BY" in engine.to_spark_sql(queries.load("usage_sources"), ordered=False)  # LIMIT: order kept


def test_local_masters_get_one_shuffle_partition_per_core():
    assert engine._local_cores("local[2]") == 2 and engine._local_cores("local") == 1
    assert engine._local_cores("local[*]") >= 1
    assert engine._local_cores("yarn") is None and engine._local_cores("spark://host:7077") is None
