"""The Parquet store: Hive-partitioned event files, the manifest of ingested objects, and DuckDB access."""

from __future__ import annotations

from pathlib import Path

import duckdb

#: Layout under the store root.
EVENTS_DIR = "events"  # events/account=<id>/region=<r>/date=<YYYY-MM-DD>/part-<run>-<n>.parquet
MANIFEST_DIR = "manifest"
TMP_DIR = "_tmp"

HIVE_TYPES = "{'account': 'VARCHAR', 'region': 'VARCHAR', 'date': 'DATE'}"


class StoreError(Exception):
    """A problem with the store that the user can fix (missing, empty, unreadable)."""


def event_files(store: Path) -> list[Path]:
    """All committed event Parquet files of a store."""
    root = Path(store) / EVENTS_DIR
    return sorted(root.glob("account=*/region=*/date=*/*.parquet")) if root.is_dir() else []


def connect(store: Path, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with an ``events`` view over the store.

    Partition keys ``account``, ``region`` (VARCHAR) and ``date`` (DATE) come from the Hive paths, so
    filters on them prune whole files; the other columns are those of :data:`miner.models.EVENT_SCHEMA`.

    Args:
        store: the store root directory.
        threads: DuckDB worker threads (default: DuckDB's own choice).

    Returns:
        An in-memory DuckDB connection.

    Raises:
        StoreError: when the store does not exist or holds no events.
    """
    store = Path(store)
    if not store.exists():
        raise StoreError(f"no store at {store}: run `miner ingest SOURCE --store {store}` first")
    if not event_files(store):
        raise StoreError(f"the store at {store} holds no events: run `miner ingest SOURCE --store {store}` first")
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    pattern = str(store / EVENTS_DIR / "account=*" / "region=*" / "date=*" / "*.parquet").replace("'", "''")
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
        f"hive_types = {HIVE_TYPES}, union_by_name = true)"
    )
    return con
