"""The Parquet store: Hive-partitioned event files, the manifest of ingested objects, and DuckDB access."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from miner.s3store import S3Path

    #: A store location: a local folder, or the root of a store on S3 (see :func:`root`).
    StoreLoc = Union[Path, S3Path]

#: Layout under the store root.
EVENTS_DIR = "events"  # events/account=<id>/region=<r>/date=<YYYY-MM-DD>/part-<run>-<n>.parquet
MANIFEST_DIR = "manifest"
TMP_DIR = "_tmp"

HIVE_TYPES = "{'account': 'VARCHAR', 'region': 'VARCHAR', 'date': 'DATE'}"


class StoreError(Exception):
    """A problem with the store that the user can fix (missing, empty, unreadable)."""


def is_s3(store) -> bool:
    """Whether a store location is on S3 (an ``s3://`` URL or a :class:`miner.s3store.S3Path`).

    Args:
        store: a path, string or S3 location.

    Returns:
        True for S3 locations.
    """
    return (isinstance(store, str) and store.startswith("s3://")) or type(store).__name__ == "S3Path"


def root(store, *, endpoint_url: str | None = None, profile: str | None = None) -> StoreLoc:
    """The store location as a local ``Path`` (``~`` expanded) or, for ``s3://bucket/prefix``, an S3 location.

    Args:
        store: a path, a string or an S3 location (returned as it is).
        endpoint_url: the S3 endpoint of a store on S3 (default: ``$MINER_STORE_ENDPOINT_URL``, else boto3's
            resolution, which honours ``AWS_ENDPOINT_URL_S3``).
        profile: the AWS profile of a store on S3 (default: the standard credential chain).

    Returns:
        A ``Path`` or a :class:`miner.s3store.S3Path`.

    Raises:
        StoreError: a bad ``s3://`` URL.
    """
    if isinstance(store, str) and store.startswith("s3://"):
        from miner import s3store

        return s3store.open_store(store, endpoint_url=endpoint_url, profile=profile)
    if is_s3(store):
        return store
    return Path(store).expanduser()


def event_files(store: Path) -> list[Path]:
    """All committed event Parquet files of a store.

    Args:
        store: the store root.

    Returns:
        The files, sorted by path (empty when the store has no ``events/``).
    """
    if is_s3(store):
        from miner import s3store

        return s3store.event_files(root(store))  # type: ignore[return-value]  (s3:// URLs)
    root_ = Path(store) / EVENTS_DIR
    return sorted(root_.glob("account=*/region=*/date=*/*.parquet")) if root_.is_dir() else []


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

    if is_s3(store):
        from miner import s3store

        store = root(store)
        files = s3store.event_files(store)
        if not files:
            raise StoreError(f"the store at {store} holds no events: run `miner ingest SOURCE --store {store}` "
                             "first")
        return s3store.connect(store, files, threads=threads)
    store = Path(store)
    if not store.exists():
        raise StoreError(f"no store at {store}: run `miner ingest SOURCE --store {store}` first")
    if not event_files(store):
        raise StoreError(f"the store at {store} holds no events: run `miner ingest SOURCE --store {store}` first")
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    # every query of a job reads the same files' footers again: keep them parsed (parts are never rewritten in place)
    con.execute("SET parquet_metadata_cache = true")
    pattern = str(store / EVENTS_DIR / "account=*" / "region=*" / "date=*" / "*.parquet").replace("'", "''")
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
        f"hive_types = {HIVE_TYPES}, union_by_name = true)"
    )
    return con


def data_days(store: Path) -> tuple[date, date] | None:
    """The first and last UTC day the store holds events for, from its ``date=`` partition folders (no file is read).

    Args:
        store: the store root.

    Returns:
        ``(first, last)`` days, or ``None`` when the store holds no events.
    """
    days = set()
    if is_s3(store):
        from miner import s3store

        for f in s3store.snapshot(root(store)):
            try:
                days.add(date.fromisoformat(str(f).rsplit("/date=", 1)[1].split("/", 1)[0]))
            except (IndexError, ValueError):
                continue
        return (min(days), max(days)) if days else None
    for folder in (Path(store) / EVENTS_DIR).glob("account=*/region=*/date=*"):
        try:
            day = date.fromisoformat(folder.name.split("=", 1)[1])
        except ValueError:
            continue
        if any(folder.glob("*.parquet")):
            days.add(day)
    return (min(days), max(days)) if days else None


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

@lru_cache(maxsize=1)
def _manifest_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        pa.field("source", pa.string()),          # absolute local path or s3://bucket/key
        pa.field("size", pa.int64()),             # bytes
        pa.field("version", pa.string()),         # S3 ETag, or the local mtime in nanoseconds
        pa.field("records", pa.int64()),          # records stored from it by the run that read it (after dedupe)
        pa.field("status", pa.string()),          # "ok" or "skipped"
        pa.field("reason", pa.string()),          # why it was skipped (null when ok)
        pa.field("run_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ])


def __getattr__(name: str):
    """``MANIFEST_SCHEMA``, the schema of the manifest of ingested objects (``manifest/*.parquet``), built on first
    use: importing this module (``miner --help`` does, for :class:`StoreError`) does not load pyarrow."""
    if name == "MANIFEST_SCHEMA":
        return _manifest_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    return (root(store) / EVENTS_DIR / f"account={partition_value(account)}" / f"region={partition_value(region)}"
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
    if is_s3(store):
        return Path(root(store).conn.tmp())  # local: parts are uploaded from here by :func:`publish`
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
    if is_s3(store):
        return root(store).conn.drop_tmp()  # nothing is ever written to the bucket before it is published
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


def tidy_after_write(store: Path, *, created: bool) -> None:
    """Remove what a writer leaves behind for nothing (call while holding :func:`write_lock`, after :func:`clean_tmp`).

    The empty ``_tmp/`` goes; in a store that holds nothing (no events, no manifest: an ingest of an empty folder)
    the lock file goes too, and the store folder when this run created it.

    Args:
        store: the store root.
        created: whether the run created the store folder.
    """
    if is_s3(store):
        return  # the lock object goes when the lock is released; S3 has no folders to remove
    store = Path(store)
    try:
        (store / TMP_DIR).rmdir()
    except OSError:
        pass  # absent, or not empty
    if (store / EVENTS_DIR).exists() or (store / MANIFEST_DIR).exists():
        return
    try:
        (store / LOCK_FILE).unlink()  # still locked through the open descriptor until the writer lets go
        if created:
            store.rmdir()
    except OSError:
        pass


@dataclass
class WriteLock:
    """The store's writer lock, as held by :func:`write_lock`."""

    path: Path
    #: Set when the lock of a writer that is gone was taken over (a line for the user), else ``None``.
    took_over: str | None = None
    #: Who holds the lock, as its record names them (see :func:`lock_held_by`): Spark executors check it before
    #: they publish, so a task left running by a killed driver never publishes into a store another run writes.
    owner: str | None = None


#: Lock descriptors this process holds; closed in forked children so that a worker never keeps the lock alive.
_HELD_LOCKS: set[int] = set()
_AT_FORK: list[bool] = []


def _close_held_locks_in_child() -> None:
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)  # the parent's copy keeps the lock (flock belongs to the open file description)
        except OSError:
            pass
    _HELD_LOCKS.clear()


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (empty where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].decode().split()
    except OSError:
        return []


def _process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot), or None where /proc cannot tell."""
    f = _proc_stat(pid)
    return f[19] if len(f) > 19 else None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether a process runs (an exited one not yet reaped does not count).

    Args:
        pid: the process id.
        start: its start time as recorded by the lock (``/proc/<pid>/stat`` field 22), to tell a reused pid apart.

    Returns:
        True when the process runs (and is the same process, when ``start`` is given).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    f = _proc_stat(pid)
    if f and f[0] == "Z":  # exited, not yet reaped
        return False
    return not (start is not None and len(f) > 19 and f[19] != start)  # else the pid was reused


def _flock_owner(fd: int) -> int | None:
    """The pid that took the flock on ``fd``'s file, from /proc/locks (Linux), or None."""
    st_ = os.fstat(fd)
    want = f"{os.major(st_.st_dev):02x}:{os.minor(st_.st_dev):02x}:{st_.st_ino}"
    try:
        with open("/proc/locks") as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 6 and f[1] == "FLOCK" and f[5] == want:
                    return int(f[4])
    except (OSError, ValueError):
        pass
    return None


def _lock_owner(fd: int) -> tuple[int | None, str | None, str]:
    """(pid, start time, description) of the writer holding the lock on ``fd``'s file.

    /proc/locks names the process that took the lock (also when leftover children hold it); the record in the
    file adds its start time (a reused pid is not mistaken for it) and serves where /proc is absent.
    """
    try:
        rec = json.loads(os.pread(fd, 4096, 0) or b"{}")
        rec_pid, start, host = int(rec["pid"]), rec.get("start"), rec.get("host")
    except (OSError, ValueError, KeyError, TypeError):  # none (released, or an older miner) or garbage
        rec_pid = start = host = None
    pid = _flock_owner(fd)
    if pid is None:
        if host not in (None, socket.gethostname()):
            return None, None, f"pid {rec_pid} on {host}"
        pid = rec_pid
    elif pid != rec_pid:
        start = None
    return pid, start, f"pid {pid}" if pid else "an unknown process"


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _take_over(store: Path, fd: int) -> int | None:
    """Replace the lock file whose owner is gone by a fresh one, locked; None when the owner turns out to be
    alive or another process changed the lock file meanwhile (the caller starts again).

    Leftover processes of the dead writer keep their lock on the old file, which no longer matters. A lock on the
    store directory serialises concurrent take-overs.
    """
    path = store / LOCK_FILE
    dfd = os.open(store, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None
        except FileNotFoundError:
            return None
        pid, start, _ = _lock_owner(fd)
        if pid is None or pid_alive(pid, start):
            return None
        os.replace(path, store / (LOCK_FILE + ".stale"))
        new = _open_lock(path)
        if not _try_flock(new):
            os.close(new)
            return None
        return new
    finally:
        os.close(dfd)


@contextmanager
def write_lock(store: Path) -> Iterator[WriteLock]:
    """Hold an exclusive lock on the store for one writer (a second concurrent ``miner ingest`` fails fast).

    The lock file records its owner (pid, process start time, host). When the lock is busy but its owner is gone
    (leftover worker processes of a killed ingest hold it), the lock is taken over and ``took_over`` says so.
    Forked children of this process (parser workers) never inherit the lock.

    Args:
        store: the store root (created when missing).

    Yields:
        The :class:`WriteLock`.

    Raises:
        StoreError: when a running process holds the lock, or the store cannot be created (a file is in the way,
            no permission).
    """
    if is_s3(store):
        from miner import s3store

        with s3store.write_lock(root(store)) as lock:
            yield lock
        return
    store = Path(store)
    lock = WriteLock(store / LOCK_FILE)
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(lock.path)
    except OSError as e:
        raise StoreError(f"cannot use {store} as a store: {e.strerror or e}") from None
    fd = _acquire(store, fd, lock)  # (closes fd when it fails)
    try:
        _HELD_LOCKS.add(fd)
        yield lock
    finally:
        _HELD_LOCKS.discard(fd)
        try:
            os.ftruncate(fd, 0)  # no owner record outlives the lock (only a killed writer leaves one)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(store: Path, fd: int, lock: WriteLock) -> int:
    """Lock ``fd`` (or a fresh lock file that replaces a stale one) and record this process as the owner."""
    try:
        for _ in range(3):
            if _try_flock(fd):
                break
            pid, start, who = _lock_owner(fd)
            if pid is None or pid_alive(pid, start):
                raise StoreError(f"another `miner ingest` ({who}) is writing to {store}; wait for it to finish")
            new = _take_over(store, fd)
            if new is not None:
                os.close(fd)
                fd = new
                lock.took_over = (f"took over the store lock of {who}, which is no longer running (processes it "
                                  f"left behind held the lock)")
                break
            os.close(fd)
            fd = _open_lock(lock.path)
        else:
            raise StoreError(f"cannot lock {store}: other processes keep replacing its lock file")
        rec = {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname(),
               "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(rec).encode(), 0)
        lock.owner = _owner_of(rec)
    except BaseException as e:
        os.close(fd)
        if isinstance(e, OSError):
            raise StoreError(f"cannot lock {store}: {e.strerror or e}") from None
        raise
    if not _AT_FORK:
        os.register_at_fork(after_in_child=_close_held_locks_in_child)
        _AT_FORK.append(True)
    return fd


def _owner_of(record: dict) -> str:
    """The owner named by a local lock file's record."""
    return f"{record.get('pid')}@{record.get('host')}:{record.get('start')}"


def lock_held_by(store: StoreLoc, owner: str | None) -> bool:
    """Whether the store's writer lock is still held by ``owner`` (:attr:`WriteLock.owner` of the holder).

    Read from the lock's record (a local lock file, or the lock object on S3), so any process can ask, e.g. a Spark
    executor about to publish for its driver.

    Args:
        store: the store root.
        owner: the owner to look for.

    Returns:
        False when the lock is free or another writer holds it.
    """
    if owner is None:
        return False
    if is_s3(store):
        from miner import s3store

        return s3store.lock_owner(root(store)) == owner
    try:
        record = json.loads((Path(store) / LOCK_FILE).read_bytes() or b"{}")
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and _owner_of(record) == owner


def location(store: StoreLoc) -> tuple:
    """A picklable reference to a store location, for another process (a Spark executor): see :func:`reopen`.

    Args:
        store: the store root.

    Returns:
        ``(path,)`` for a local store, ``(url, endpoint_url, profile, region)`` for a store on S3.
    """
    if is_s3(store):
        conn = store.conn
        return (f"s3://{conn.bucket}/{conn.prefix}".rstrip("/"), conn.endpoint_url, conn.profile, conn.region)
    return (str(store),)


def reopen(ref: tuple) -> StoreLoc:
    """The store location of a :func:`location` reference.

    Args:
        ref: the reference.

    Returns:
        A ``Path`` or a :class:`miner.s3store.S3Path`.
    """
    if len(ref) == 1:
        return Path(ref[0])
    from miner import s3store

    return s3store.open_store(ref[0], endpoint_url=ref[1], profile=ref[2], region=ref[3])


def write_parquet(table: pa.Table, path: Path, *, sync: bool = True) -> None:
    """Write one event (or manifest) table with the store's Parquet settings: zstd, 64k-row groups, zone maps.

    Args:
        table: the rows, already sorted as they should be stored.
        path: the file to write (normally under ``_tmp/``; publish it with :func:`publish`).
        sync: fsync the file, so a later rename never exposes unwritten data after a power loss.
    """
    import pyarrow.parquet as pq

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


def publish(tmp_path: Path, final_path: StoreLoc) -> None:
    """Atomically move a finished file from ``_tmp/`` to its final place (readers see all of it or nothing).

    On S3 the file is uploaded with one PutObject (an object is visible whole once the request completes, or not at
    all), then the local file is deleted.

    Args:
        tmp_path: the written file.
        final_path: its destination; the parent directory is created.
    """
    if is_s3(final_path):
        final_path.conn.put_file(str(tmp_path), final_path.key)
        Path(tmp_path).unlink(missing_ok=True)
        return
    final_path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_path, final_path)


def file_event_ids(path: Path) -> pa.Array:
    """The ``event_id`` column of one event file (reads only that column).

    Args:
        path: a Parquet event file.

    Returns:
        A string array.
    """
    if is_s3(path):
        from miner import s3store

        return s3store.read_parquet(path, ["event_id"]).column(0).combine_chunks()
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).read(columns=["event_id"]).column(0).combine_chunks()


def rewrite_filtered(path: Path, keep: pa.Array, dest: Path) -> pa.Array:
    """Copy an unpublished event file keeping only the rows where ``keep`` is true (order and settings preserved),
    then delete it.

    Published files are never rewritten or deleted: a reader may have listed them (the store is append-only).

    Args:
        path: the file to filter (under ``_tmp/``).
        keep: a boolean mask, one value per row (at least one true).
        dest: where to write the filtered copy (under ``_tmp/``).

    Returns:
        The ``event_id`` values kept.
    """
    import pyarrow.parquet as pq

    table = pq.ParquetFile(str(path)).read().filter(keep)
    write_parquet(table, dest)
    path.unlink(missing_ok=True)
    return table.column("event_id").combine_chunks()


def manifest_files(store: Path) -> list[Path]:
    """The committed manifest files of a store, oldest first.

    Args:
        store: the store root.

    Returns:
        The ``manifest/*.parquet`` files sorted by name (run ids sort by time).
    """
    if is_s3(store):
        return (root(store) / MANIFEST_DIR).glob("*.parquet")  # type: ignore[return-value]
    d = Path(store) / MANIFEST_DIR
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def read_manifest(store: Path) -> pa.Table:
    """Every object recorded as ingested, one row per (source, run) with :data:`MANIFEST_SCHEMA` columns.

    Args:
        store: the store root.

    Returns:
        A pyarrow Table (empty when nothing was ingested yet); ``.to_pandas()`` for a DataFrame.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = manifest_files(store)
    if not files:
        return _manifest_schema().empty_table()
    if is_s3(store):
        from miner import s3store

        return pa.concat_tables([s3store.read_small_parquet(f).cast(_manifest_schema()) for f in files])
    return pa.concat_tables([pq.ParquetFile(str(f)).read().cast(_manifest_schema()) for f in files])


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
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=_manifest_schema())
    tmp = tmp_dir(store) / f"manifest-{run_id}-{seq:05d}.parquet"
    write_parquet(table, tmp)
    final = root(store) / MANIFEST_DIR / f"manifest-{run_id}-{seq:05d}.parquet"
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
    publish(tmp, root(store) / MANIFEST_DIR / f"manifest-{run_id}-00000-compact.parquet")
    for f in files:
        f.unlink(missing_ok=True)
    return True
