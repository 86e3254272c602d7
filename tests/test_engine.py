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
    """The `mapped` relation usage_actions.sql reads: orders-api-task's shapes joined with the mapping."""
    from miner import store, usage

    con = store.connect(sample_store)
    shapes = queries.run(con, "usage_by_principal", **CASES["usage_by_principal"][0])
    return usage.map_shapes(shapes)


@pytest.mark.spark
@pytest.mark.parametrize("name, case", [(n, i) for n in sorted(CASES) for i in range(len(CASES[n]))])
def test_every_query_returns_the_same_rows_on_duckdb_and_spark(name, case, sample_store, spark, mapped):
    """The same file, the same parameters, the same rows in the same order (each query has a total ORDER BY)."""
    from miner import store, usage

    params = CASES[name][case]
    if name == "usage_actions":  # runs on a relation, not the store: both engines get the same input
        import duckdb

        local = duckdb.connect()
        local.execute("SET TimeZone = 'UTC'")
        needed = ["action", "resource", "events", "first_seen", "last_seen", "aws_region", "account_id",
                  "event_source", "event_name", "outcome", "event_category", "derivation", "reason", "implicit",
                  "invoked_by", "status", "condition_key", "condition_value", *usage.CONTEXT_COLUMNS]
        frame = usage._with_context(mapped[[c for c in needed if c in mapped.columns]]).to_pandas()
        local.register("mapped", frame)
        want = queries.run(local, name)
        got = engine.connect(sample_store, "spark", spark=spark).run_sql(name, queries.load(name), {},
                                                                           relations={"mapped": frame})
    else:
        want = queries.run(store.connect(sample_store), name, **params)
        got = queries.run(engine.connect(sample_store, "spark", spark=spark), name, **params)
    assert list(got.columns) == list(want.columns)
    assert _rows(got) == _rows(want)
