"""The Parquet store: Hive-partitioned event files, the manifest of ingested objects, and DuckDB access."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import duckdb

#: Layout under the store root.
EVENTS_DIR = "events"  # events/account=<id>/region=<r>/date=<YYYY-MM-DD>/part-<run>-<n>.parquet
MANIFEST_DIR = "manifest"
TMP_DIR = "_tmp"

HIVE_TYPES = "{'account': 'VARCHAR', 'region': 'VARCHAR', 'date': 'DATE'}"


class StoreError(Exception):
    """A problem with the store that the user can fix (missing, empty, unreadable)."""


def event_files(store: Path) -> list[Path]:
    """All committed event Parquet files of a store.

    Args:
        store: the store root.

    Returns:
        The files, sorted by path (empty when the store has no ``events/``).
    """
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
    import duckdb  # imported here: ingest (and its worker processes) never need it

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


# ----------------------------------------------------------------------------- writing (used by miner.ingest)

#: Rows per Parquet row group: small enough that DuckDB skips most groups of a file via principal_arn zone maps.
ROW_GROUP_ROWS = 64 * 1024

#: Columns worth dictionary encoding (few distinct values per file); the rest are written plain.
DICT_COLUMNS = [
    "event_source", "event_name", "aws_region", "account_id", "principal_arn", "principal_type", "principal_name",
    "principal_account", "user_agent", "error_code", "outcome", "event_type", "event_category", "invoked_by",
    "vpc_endpoint_id", "partition", "event_version", "source_object",
]

#: Columns with min/max statistics (zone maps used for pruning); statistics on the big JSON columns are useless.
STATS_COLUMNS = ["event_id", "event_time", "event_source", "event_name", "aws_region", "account_id", "principal_arn",
                 "principal_type", "principal_name", "outcome", "event_type", "event_category"]

#: Schema of the manifest of ingested objects (``manifest/*.parquet``).
MANIFEST_SCHEMA = pa.schema([
    pa.field("source", pa.string()),          # absolute local path or s3://bucket/key
    pa.field("size", pa.int64()),             # bytes
    pa.field("version", pa.string()),         # S3 ETag, or the local mtime in nanoseconds
    pa.field("records", pa.int64()),          # records stored from it by the run that read it (after dedupe)
    pa.field("status", pa.string()),          # "ok" or "skipped"
    pa.field("reason", pa.string()),          # why it was skipped (null when ok)
    pa.field("run_id", pa.string()),
    pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
])

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
LOCK_FILE = ".ingest.lock"


def partition_value(value: str | None) -> str:
    """A Hive partition value safe in a path: ``unknown`` when empty; other than ``[A-Za-z0-9_.-]`` becomes ``_``.

    Args:
        value: the raw account id, region or date.

    Returns:
        The path-safe value.
    """
    if not value:
        return "unknown"
    return _UNSAFE.sub("_", value) if _UNSAFE.search(value) else value


def partition_dir(store: Path, account: str, region: str, day: str) -> Path:
    """The directory of one partition (values are made path-safe with :func:`partition_value`).

    Args:
        store: the store root.
        account: account id.
        region: region name.
        day: ``YYYY-MM-DD`` (UTC).

    Returns:
        ``<store>/events/account=<a>/region=<r>/date=<d>``.
    """
    return (Path(store) / EVENTS_DIR / f"account={partition_value(account)}" / f"region={partition_value(region)}"
            / f"date={partition_value(day)}")


def new_run_id(now: datetime) -> str:
    """A sortable, unique id for one ingest run, e.g. ``20260914T101500Z-3fa2c1``.

    Args:
        now: the run's start time (UTC).

    Returns:
        The run id.
    """
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def tmp_dir(store: Path) -> Path:
    """The store's scratch directory (same filesystem as ``events/``, so ``os.replace`` from it is atomic).

    Args:
        store: the store root.

    Returns:
        ``<store>/_tmp``, created when missing.
    """
    d = Path(store) / TMP_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def clean_tmp(store: Path) -> int:
    """Delete files an interrupted run left in ``_tmp/`` (call only while holding :func:`write_lock`).

    Args:
        store: the store root.

    Returns:
        How many files were removed.
    """
    d = Path(store) / TMP_DIR
    n = 0
    if d.is_dir():
        for p in d.iterdir():
            try:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                n += 1
            except FileNotFoundError:
                pass
    return n


@contextmanager
def write_lock(store: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store for one writer (a second concurrent ``miner ingest`` fails fast).

    Args:
        store: the store root (created when missing).

    Raises:
        StoreError: when another process holds the lock, or the store cannot be created (a file is in the way,
            no permission).
    """
    store = Path(store)
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot use {store} as a store: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another `miner ingest` is writing to {store}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_parquet(table: pa.Table, path: Path, *, sync: bool = True) -> None:
    """Write one event (or manifest) table with the store's Parquet settings: zstd, 64k-row groups, zone maps.

    Args:
        table: the rows, already sorted as they should be stored.
        path: the file to write (normally under ``_tmp/``; publish it with :func:`publish`).
        sync: fsync the file, so a later rename never exposes unwritten data after a power loss.
    """
    events = "event_id" in table.column_names
    # store_schema=False: string columns handed over as Arrow dictionaries read back as plain strings
    pq.write_table(
        table, str(path), compression="zstd", row_group_size=ROW_GROUP_ROWS, store_schema=not events,
        use_dictionary=DICT_COLUMNS if events else True, write_statistics=STATS_COLUMNS if events else True,
    )
    if sync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp_path: Path, final_path: Path) -> None:
    """Atomically move a finished file from ``_tmp/`` to its final place (readers see all of it or nothing).

    Args:
        tmp_path: the written file.
        final_path: its destination; the parent directory is created.
    """
    final_path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_path, final_path)


def file_event_ids(path: Path) -> pa.Array:
    """The ``event_id`` column of one event file (reads only that column).

    Args:
        path: a Parquet event file.

    Returns:
        A string array.
    """
    return pq.ParquetFile(str(path)).read(columns=["event_id"]).column(0).combine_chunks()


def rewrite_filtered(path: Path, keep: pa.Array, tmp: Path, *, replace: bool = True) -> pa.Array | None:
    """Rewrite an event file keeping only the rows where ``keep`` is true (order and settings preserved).

    Args:
        path: the file to filter.
        keep: a boolean mask, one value per row.
        tmp: where to write the filtered copy (under ``_tmp/``).
        replace: atomically replace ``path`` with the copy (or delete ``path`` when no row is kept); when false,
            the copy stays at ``tmp`` and ``path`` is deleted.

    Returns:
        The ``event_id`` values kept, or ``None`` when no row was kept.
    """
    table = pq.ParquetFile(str(path)).read().filter(keep)
    if table.num_rows == 0:
        path.unlink(missing_ok=True)
        return None
    write_parquet(table, tmp)
    if replace:
        os.replace(tmp, path)
    else:
        path.unlink(missing_ok=True)
    return table.column("event_id").combine_chunks()


def manifest_files(store: Path) -> list[Path]:
    """The committed manifest files of a store, oldest first.

    Args:
        store: the store root.

    Returns:
        The ``manifest/*.parquet`` files sorted by name (run ids sort by time).
    """
    d = Path(store) / MANIFEST_DIR
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def read_manifest(store: Path) -> pa.Table:
    """Every object recorded as ingested, one row per (source, run) with :data:`MANIFEST_SCHEMA` columns.

    Args:
        store: the store root.

    Returns:
        A pyarrow Table (empty when nothing was ingested yet); ``.to_pandas()`` for a DataFrame.
    """
    files = manifest_files(store)
    if not files:
        return MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables([pq.ParquetFile(str(f)).read().cast(MANIFEST_SCHEMA) for f in files])


def manifest_index(store: Path) -> dict[str, tuple[int, str]]:
    """Source -> (size, version) of every object in the manifest, for skipping unchanged objects on a re-run.

    Args:
        store: the store root.

    Returns:
        The index (latest entry wins).
    """
    t = read_manifest(store)
    return {s: (z, v) for s, z, v in zip(t.column("source").to_pylist(), t.column("size").to_pylist(),
                                         t.column("version").to_pylist())}


def append_manifest(store: Path, rows: list[dict], run_id: str, seq: int) -> Path | None:
    """Atomically add manifest rows (call only AFTER the data of those objects is published).

    Args:
        store: the store root.
        rows: dicts with the :data:`MANIFEST_SCHEMA` fields.
        run_id: the current run.
        seq: a per-run sequence number (makes the file name unique).

    Returns:
        The new manifest file, or ``None`` when ``rows`` is empty.
    """
    if not rows:
        return None
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    tmp = tmp_dir(store) / f"manifest-{run_id}-{seq:05d}.parquet"
    write_parquet(table, tmp)
    final = Path(store) / MANIFEST_DIR / f"manifest-{run_id}-{seq:05d}.parquet"
    publish(tmp, final)
    return final


def compact_manifest(store: Path, run_id: str, min_files: int = 64) -> bool:
    """Merge many small manifest files into one (safe at any crash point: duplicate rows are harmless).

    Args:
        store: the store root (hold :func:`write_lock`).
        run_id: the current run (names the merged file).
        min_files: do nothing below this many files.

    Returns:
        Whether the manifest was compacted.
    """
    files = manifest_files(store)
    if len(files) < min_files:
        return False
    table = read_manifest(store)
    tmp = tmp_dir(store) / f"manifest-{run_id}-compact.parquet"
    write_parquet(table, tmp)
    publish(tmp, Path(store) / MANIFEST_DIR / f"manifest-{run_id}-00000-compact.parquet")
    for f in files:
        f.unlink(missing_ok=True)
    return True
