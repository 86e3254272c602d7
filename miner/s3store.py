"""The store on S3: object locations, the conditional-write lock, single-PUT publishing and DuckDB reads via fsspec."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Iterator

from miner.store import (EVENTS_DIR, HIVE_TYPES, LOCK_FILE, MANIFEST_DIR, StoreError, WriteLock, _process_start,
                         pid_alive)

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

#: Seconds after its last renewal that a writer's lock object counts as abandoned (another host may take it over).
LOCK_TTL = 600
#: Seconds between renewals of a held lock.
LOCK_HEARTBEAT = 60

#: Reads go to S3 in blocks of this many bytes (one ranged GET each; a small part file is one block).
READ_BLOCK = 4 << 20
#: Blocks kept in memory per store and process (published objects never change, so they never go stale).
READ_CACHE_BYTES = 512 << 20

#: DuckDB threads over a store on S3 unless told otherwise (each waits on one ranged GET at a time).
IO_THREADS = 16

#: Environment variable naming the store's S3 endpoint (``--store-endpoint-url`` wins over it).
ENDPOINT_ENV = "MINER_STORE_ENDPOINT_URL"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_EVENT_KEY = re.compile(r"account=[^/]+/region=[^/]+/date=[^/]+/[^/]+\.parquet$")


def is_s3(store: Any) -> bool:
    """Whether a store location is on S3 (an ``s3://`` URL or an :class:`S3Path`).

    Args:
        store: a path, string or :class:`S3Path`.

    Returns:
        True for S3 locations.
    """
    return isinstance(store, S3Path) or (isinstance(store, str) and store.startswith("s3://"))


def parse_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and prefix (no leading or trailing slash).

    Args:
        url: the store URL.

    Returns:
        ``(bucket, prefix)``; the prefix may be empty.

    Raises:
        StoreError: when the URL has no valid bucket name.
    """
    rest = url[5:] if url.startswith("s3://") else url
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StoreError(f"bad S3 store URL {url!r}: expected s3://bucket/prefix with a valid bucket name")
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise StoreError(f"bad S3 store URL {url!r}: empty folder name in the prefix")
    return bucket, prefix


class S3Conn:
    """The client of one S3 store (boto3, made on first use), its read cache, and the local scratch folder where
    part files are written before they are uploaded."""

    def __init__(self, bucket: str, endpoint_url: str | None = None, profile: str | None = None,
                 region: str | None = None, prefix: str = ""):
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        self.profile = profile
        self.region = region
        self._client = None
        self._fs = None
        self.sizes: dict[str, int] = {}  # "bucket/key" -> size, from listings
        self.mtimes: dict[str, datetime] = {}  # "bucket/key" -> last modified, from listings
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0
        self._tmp: str | None = None
        self.snapshot: list[str] | None = None  # the event files a reader listed (see :func:`snapshot`)
        self.lock_lost: str | None = None  # set by the heartbeat when another writer took the lock over
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ clients
    @property
    def client(self):
        """The boto3 S3 client (standard credential chain, ``profile``, endpoint; the retries of
        :func:`miner.aws.client_config`); the bucket is checked once."""
        with self._mutex:
            if self._client is None:
                import boto3
                import botocore.exceptions as be

                from miner import aws

                try:
                    session = boto3.session.Session(profile_name=self.profile) if self.profile else \
                        boto3.session.Session()
                except be.ProfileNotFound:
                    raise StoreError(f"no AWS profile named {self.profile!r} (for the store s3://{self.bucket})") \
                        from None
                cfg = aws.client_config(max_pool_connections=16)
                client = session.client("s3", endpoint_url=self.endpoint_url, config=cfg,
                                        region_name=self.region or session.region_name or "us-east-1")
                try:
                    head = client.head_bucket(Bucket=self.bucket)
                except Exception as e:  # noqa: BLE001 - translated into one line
                    raise s3_error(e, f"s3://{self.bucket}", "opening the store") from None
                hdrs = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                self.region = self.region or hdrs.get("x-amz-bucket-region") or client.meta.region_name
                self._client = client
            return self._client

    def fsspec(self):
        """The read-only fsspec filesystem of this store (protocol ``s3``) that DuckDB reads through (made once)."""
        if self._fs is None:
            self._fs = _filesystem(self)
        return self._fs

    def read_range(self, path: str, start: int, end: int, size: int) -> bytes:
        """Bytes ``[start, end)`` of an object, in :data:`READ_BLOCK` blocks fetched by ranged GETs and kept in an
        LRU cache (:data:`READ_CACHE_BYTES`): published objects never change, so a block is fetched once per
        process however many queries read it."""
        end = min(end, size)
        if start >= end:
            return b""
        bucket, _, key = path.partition("/")
        out = []
        for b in range(start // READ_BLOCK, (end - 1) // READ_BLOCK + 1):
            ck = (path, b)
            with self._mutex:
                data = self._blocks.get(ck)
                if data is not None:
                    self._blocks.move_to_end(ck)
            if data is None:
                lo, hi = b * READ_BLOCK, min(size, (b + 1) * READ_BLOCK)
                try:
                    data = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={lo}-{hi - 1}")["Body"].read()
                except Exception as e:  # noqa: BLE001
                    if _code(e) in ("NoSuchKey", "404"):
                        raise FileNotFoundError(f"s3://{path}") from None
                    raise OSError(str(s3_error(e, f"s3://{path}", "reading the store"))) from None
                with self._mutex:
                    self._blocks[ck] = data
                    self._cached += len(data)
                    while self._cached > READ_CACHE_BYTES and len(self._blocks) > 1:
                        self._cached -= len(self._blocks.popitem(last=False)[1])
            out.append(data[max(start - b * READ_BLOCK, 0):end - b * READ_BLOCK])
        return b"".join(out)

    def size(self, path: str) -> int:
        """The size of an object (``bucket/key``): from the listing that found it, else one HEAD request."""
        n = self.sizes.get(path)
        if n is None:
            bucket, _, key = path.partition("/")
            try:
                n = int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except Exception as e:  # noqa: BLE001
                if _code(e) in ("NoSuchKey", "404", "NotFound"):
                    raise FileNotFoundError(f"s3://{path}") from None
                raise OSError(str(s3_error(e, f"s3://{path}", "reading the store"))) from None
            self.sizes[path] = n
        return n

    def tmp(self) -> str:
        """The local scratch folder for part files before upload: one per store and host under the system's temp
        folder (only the lock holder writes it, so a run may delete what a killed run on this host left there)."""
        if self._tmp is None:
            digest = hashlib.sha1(f"{self.endpoint_url}|{self.bucket}|{self.prefix}".encode()).hexdigest()[:12]
            self._tmp = os.path.join(tempfile.gettempdir(), f"miner-s3-store-{digest}")
        os.makedirs(self._tmp, mode=0o700, exist_ok=True)
        return self._tmp

    def drop_tmp(self) -> int:
        """Delete the local scratch folder (hold the writer lock); how many entries it held."""
        d = self.tmp()
        n = len(os.listdir(d))
        shutil.rmtree(d, ignore_errors=True)
        return n

    # ------------------------------------------------------------------ objects
    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (one request per 1,000 keys)."""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for o in page.get("Contents", ()):
                    self.sizes[f"{self.bucket}/{o['Key']}"] = int(o.get("Size", 0))
                    if "LastModified" in o:
                        self.mtimes[f"{self.bucket}/{o['Key']}"] = o["LastModified"]
                    yield o["Key"]
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            raise s3_error(e, f"s3://{self.bucket}/{prefix}", "listing the store") from None

    def get(self, key: str) -> bytes:
        """The bytes of one object."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise s3_error(e, f"s3://{self.bucket}/{key}", "reading the store") from None

    def put_file(self, local: str, key: str) -> None:
        """Upload a local file to ``key`` with one PutObject (visible whole, or not at all)."""
        if self.lock_lost:
            raise StoreError(self.lock_lost)
        try:
            with open(local, "rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=fh)
        except Exception as e:  # noqa: BLE001
            raise s3_error(e, f"s3://{self.bucket}/{key}", "writing the store") from None

    def delete(self, key: str) -> None:
        """Delete one object (absent is fine)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:  # noqa: BLE001
            raise s3_error(e, f"s3://{self.bucket}/{key}", "writing the store") from None


def s3_error(e: Exception, where: str, what: str) -> StoreError:
    """One clear line for a boto3/botocore failure on the store.

    Args:
        e: the exception.
        where: the ``s3://`` location involved.
        what: what miner was doing, e.g. ``listing the store``.

    Returns:
        A :class:`StoreError` to raise.
    """
    import botocore.exceptions as be

    if isinstance(e, StoreError):
        return e
    if isinstance(e, be.NoCredentialsError):
        return StoreError(f"no AWS credentials for the store {where}: configure the standard chain (environment, "
                          "~/.aws, instance role) or pass --profile")
    if isinstance(e, (be.EndpointConnectionError, be.ConnectTimeoutError, be.ReadTimeoutError)):
        return StoreError(f"cannot reach the S3 endpoint of the store {where} while {what}: {e}")
    if isinstance(e, be.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = where[5:].partition("/")[0]
        if code in ("NoSuchBucket", "404") or (status == 404 and what == "opening the store"):
            return StoreError(f"no S3 bucket named {bucket!r} for the store {where}: create it first, or check "
                              "the name and --store-endpoint-url")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return StoreError(f"the AWS credentials were refused for the store {where} ({code})")
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            return StoreError(f"access denied to the store {where} while {what}: the credentials need "
                              "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it")
        return StoreError(f"S3 error on the store {where} while {what}: {code or status}: "
                          f"{e.response.get('Error', {}).get('Message', '')}".rstrip(": "))
    if isinstance(e, be.BotoCoreError):
        return StoreError(f"S3 error on the store {where} while {what}: {e}")
    return StoreError(f"S3 error on the store {where} while {what}: {type(e).__name__}: {e}")


class S3Path:
    """A location in a store on S3, with the few ``pathlib`` methods the store's writer uses (``/``, ``name``,
    ``glob``, ``is_dir``, ``exists``, ``unlink``); ``str()`` gives its ``s3://`` URL."""

    __slots__ = ("conn", "key")

    def __init__(self, conn: S3Conn, key: str):
        self.conn = conn
        self.key = key.strip("/")

    def __truediv__(self, name: str) -> S3Path:
        return S3Path(self.conn, f"{self.key}/{name}" if self.key else str(name))

    def __str__(self) -> str:
        return f"s3://{self.conn.bucket}/{self.key}" if self.key else f"s3://{self.conn.bucket}"

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and (other.conn.bucket, other.key) == (self.conn.bucket, self.key)

    def __hash__(self) -> int:
        return hash((self.conn.bucket, self.key))

    def __lt__(self, other: S3Path) -> bool:
        return self.key < other.key

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def parent(self) -> S3Path:
        return S3Path(self.conn, self.key.rpartition("/")[0])

    def expanduser(self) -> S3Path:
        return self

    def _dir(self) -> str:
        return f"{self.key}/" if self.key else ""

    def glob(self, pattern: str) -> list[S3Path]:
        """Objects under this location whose relative key matches ``pattern`` segment by segment, sorted."""
        parts = pattern.split("/")
        out = []
        base = self._dir()
        for k in self.conn.keys(base):
            rel = k[len(base):].split("/")
            if len(rel) == len(parts) and all(fnmatchcase(a, b) for a, b in zip(rel, parts)):
                out.append(S3Path(self.conn, k))
        return sorted(out)

    def is_dir(self) -> bool:
        try:
            resp = self.conn.client.list_objects_v2(Bucket=self.conn.bucket, Prefix=self._dir(), MaxKeys=1)
        except Exception as e:  # noqa: BLE001
            raise s3_error(e, str(self), "listing the store") from None
        return bool(resp.get("KeyCount") or resp.get("Contents"))

    def exists(self) -> bool:
        return self.is_dir()

    def unlink(self, missing_ok: bool = False) -> None:
        self.conn.delete(self.key)


def open_store(url: str, *, endpoint_url: str | None = None, profile: str | None = None,
               region: str | None = None) -> S3Path:
    """The root of a store on S3 (nothing is contacted until the store is used).

    Args:
        url: ``s3://bucket/prefix``.
        endpoint_url: an S3-compatible endpoint (default: ``$MINER_STORE_ENDPOINT_URL``, else boto3's own
            resolution: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the AWS config, AWS itself).
        profile: AWS profile (default: the standard credential chain).
        region: region of the client (default: the bucket's).

    Returns:
        The store root.

    Raises:
        StoreError: a bad URL.
    """
    bucket, prefix = parse_url(url)
    return S3Path(S3Conn(bucket, endpoint_url, profile, region, prefix), prefix)


# ----------------------------------------------------------------------------- reading


def event_files(root: S3Path) -> list[str]:
    """The ``s3://`` URLs of every event file of the store (one listing: a snapshot), sorted.

    Args:
        root: the store root.

    Returns:
        The URLs (empty when the store holds no events).
    """
    base = (root / EVENTS_DIR)._dir()
    bucket = root.conn.bucket
    files = sorted(f"s3://{bucket}/{k}" for k in root.conn.keys(base) if _EVENT_KEY.fullmatch(k[len(base):]))
    root.conn.snapshot = files
    return files


def snapshot(root: S3Path) -> list[str]:
    """The event files a reader of this store location listed first (see :func:`event_files`), so that every
    step of one command (the view, the window's coverage note) sees the same files; listed now if none was.

    Args:
        root: the store root.

    Returns:
        The ``s3://`` URLs.
    """
    return root.conn.snapshot if root.conn.snapshot is not None else event_files(root)


def connect(root: S3Path, files: list[str], *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose ``events`` view reads exactly ``files`` through an fsspec filesystem.

    Args:
        root: the store root.
        files: the event files listed by :func:`event_files` (the reader's snapshot).
        threads: DuckDB worker threads.

    Returns:
        The connection.
    """
    import duckdb

    con = duckdb.connect()
    # reads wait on the network, not the CPU: more threads than cores keep more ranged GETs in flight
    con.execute(f"SET threads = {int(threads or max(IO_THREADS, os.cpu_count() or 1))}")
    # every query of a job reads the same files' footers again: keep them parsed (parts are never rewritten in place)
    con.execute("SET parquet_metadata_cache = true")
    conn = root.conn
    paths = [f[5:] for f in files]
    if sum(conn.sizes.get(p, READ_CACHE_BYTES) for p in paths) <= READ_CACHE_BYTES // 2:
        # a small store: fetch it whole, in parallel (every query reads most of it; DuckDB asks one range at a time)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(IO_THREADS, thread_name_prefix="miner-s3-read") as ex:
            list(ex.map(lambda p: conn.read_range(p, 0, conn.sizes[p], conn.sizes[p]), paths))
    con.register_filesystem(conn.fsspec())
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, "
        f"hive_types = {HIVE_TYPES}, union_by_name = true)"
    )
    return con


def read_parquet(path: S3Path, columns: list[str] | None = None) -> pa.Table:
    """Read (columns of) one Parquet object with ranged reads.

    Args:
        path: the object.
        columns: the columns to read (default: all).

    Returns:
        A pyarrow Table.
    """
    import pyarrow.parquet as pq

    try:
        with path.conn.fsspec().open(f"{path.conn.bucket}/{path.key}", "rb") as fh:
            return pq.ParquetFile(fh).read(columns=columns)
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e}") from None


def read_small_parquet(path: S3Path) -> pa.Table:
    """Read a small Parquet object (a manifest file) in one GET.

    Args:
        path: the object.

    Returns:
        A pyarrow Table.
    """
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(path.conn.get(path.key)))


def _filesystem(conn: S3Conn):
    """A read-only fsspec filesystem (protocol ``s3``) over :meth:`S3Conn.read_range` (boto3's credentials, so
    they refresh as boto3 refreshes them)."""
    from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

    class StoreFile(AbstractBufferedFile):
        def _fetch_range(self, start, end):
            return self.fs.conn.read_range(self.path, start, end, self.size)

    class StoreFS(AbstractFileSystem):
        protocol = "s3"
        root_marker = ""
        cachable = False

        def __init__(self, conn_: S3Conn):
            super().__init__()
            self.conn = conn_

        @classmethod
        def _strip_protocol(cls, path):
            if isinstance(path, list):
                return [cls._strip_protocol(p) for p in path]
            return (path[5:] if path.startswith("s3://") else path).rstrip("/")

        def info(self, path, **kwargs):
            path = self._strip_protocol(path)
            try:
                return {"name": path, "size": self.conn.size(path), "type": "file"}
            except FileNotFoundError:
                if self.ls(path, detail=False):
                    return {"name": path, "size": 0, "type": "directory"}
                raise

        def ls(self, path, detail=True, **kwargs):
            path = self._strip_protocol(path)
            bucket, _, prefix = path.partition("/")
            prefix = f"{prefix}/" if prefix else ""
            out = {}
            for k in self.conn.keys(prefix):
                rest = k[len(prefix):]
                name, sub, _ = rest.partition("/")
                full = f"{bucket}/{prefix}{name}"
                out[full] = {"name": full, "size": 0 if sub else self.conn.sizes.get(f"{bucket}/{k}", 0),
                             "type": "directory" if sub else "file"}
            return list(out.values()) if detail else sorted(out)

        def modified(self, path):
            path = self._strip_protocol(path)
            self.conn.size(path)  # (FileNotFoundError when absent)
            return self.conn.mtimes.get(path) or datetime(1970, 1, 1, tzinfo=timezone.utc)  # (never rewritten)

        def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
            if mode != "rb":
                raise NotImplementedError("the store on S3 is written by `miner ingest` only")
            return StoreFile(self, path, mode, block_size=READ_BLOCK, cache_type="none", size=self.conn.size(path))

    return StoreFS(conn)


# ----------------------------------------------------------------------------- the writer lock


def _server_age(resp: dict) -> float | None:
    """Seconds since the object of a GET response was last written, by the server's own clock (no skew)."""
    try:
        now = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
        return (now - resp["LastModified"]).total_seconds()
    except (KeyError, TypeError, ValueError):
        lm = resp.get("LastModified")
        return (datetime.now(timezone.utc) - lm).total_seconds() if lm else None


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


class _Heartbeat(threading.Thread):
    """Renews the lock object (conditional on its ETag) every :data:`LOCK_HEARTBEAT` seconds; when another writer
    has replaced it, sets ``conn.lock_lost`` so that the next upload stops the run."""

    def __init__(self, root: S3Path, key: str, body: dict, etag: str):
        super().__init__(name="miner-s3-lock", daemon=True)
        self.root, self.key, self.body, self.etag = root, key, body, etag
        self.stop = threading.Event()

    def run(self) -> None:
        conn = self.root.conn
        while not self.stop.wait(LOCK_HEARTBEAT):
            self.body["renewed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            try:
                resp = conn.client.put_object(Bucket=conn.bucket, Key=self.key, Body=json.dumps(self.body).encode(),
                                              IfMatch=self.etag)
                self.etag = resp["ETag"]
            except Exception as e:  # noqa: BLE001
                if _code(e) in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                    conn.lock_lost = (f"another writer took over the lock of the store {self.root} (this run "
                                      f"could not renew it for {LOCK_TTL} s); stopping: run again when it is done")
                    return
                # a transient error: try again at the next beat (the lock lasts LOCK_TTL seconds)


def lock_owner(root: S3Path) -> str | None:
    """The ``owner`` token of the store's lock object (one GET), or None when there is no lock.

    Args:
        root: the store root.

    Returns:
        The token the holder's :func:`write_lock` wrote.
    """
    conn = root.conn
    try:
        raw = conn.client.get_object(Bucket=conn.bucket, Key=(root / LOCK_FILE).key)["Body"].read()
    except Exception as e:  # noqa: BLE001
        if _code(e) in ("NoSuchKey", "404"):
            return None
        raise s3_error(e, str(root), "reading the store lock") from None
    try:
        rec = json.loads(raw or b"{}")
    except ValueError:
        return None
    return rec.get("owner") if isinstance(rec, dict) else None


@contextmanager
def write_lock(root: S3Path) -> Iterator[WriteLock]:
    """Hold the store's writer lock: a ``.ingest.lock`` object created with ``If-None-Match: *`` (only one writer
    can create it), renewed by a heartbeat, deleted at the end (conditional on its ETag).

    A lock whose owner ran on this host and is gone, or that was not renewed for :data:`LOCK_TTL` seconds (by the
    server's clock), is taken over with a write conditional on its ETag (two writers taking over race; one wins).

    Args:
        root: the store root.

    Yields:
        The :class:`miner.store.WriteLock` (``took_over`` says when a stale lock was taken over).

    Raises:
        StoreError: when a live writer holds the lock, or the bucket cannot be used.
    """
    conn = root.conn
    key = (root / LOCK_FILE).key
    body = {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname(),
            "owner": secrets.token_hex(8), "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ttl": LOCK_TTL}
    lock = WriteLock(root / LOCK_FILE, owner=body["owner"])  # type: ignore[arg-type]
    client = conn.client
    etag = None
    for _ in range(3):
        try:
            etag = client.put_object(Bucket=conn.bucket, Key=key, Body=json.dumps(body).encode(),
                                     IfNoneMatch="*")["ETag"]
            break
        except Exception as e:  # noqa: BLE001
            if _code(e) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise s3_error(e, str(root), "locking the store") from None
        try:
            cur = client.get_object(Bucket=conn.bucket, Key=key)
            raw = cur["Body"].read()
        except Exception as e:  # noqa: BLE001
            if _code(e) == "NoSuchKey":
                continue  # released meanwhile
            raise s3_error(e, str(root), "locking the store") from None
        try:
            rec = json.loads(raw or b"{}")
            pid, host = int(rec["pid"]), rec.get("host")
        except (ValueError, KeyError, TypeError):
            rec, pid, host = {}, None, None
        who = f"pid {pid} on {host}" if pid else "an unknown process"
        age = _server_age(cur)
        gone = pid is not None and host == socket.gethostname() and not pid_alive(pid, rec.get("start"))
        expired = age is not None and age > int(rec.get("ttl") or LOCK_TTL)
        if not (gone or expired):
            raise StoreError(f"another `miner ingest` ({who}) is writing to {root}; wait for it to finish (a lock "
                             f"not renewed for {LOCK_TTL} s counts as abandoned)")
        try:
            etag = client.put_object(Bucket=conn.bucket, Key=key, Body=json.dumps(body).encode(),
                                     IfMatch=cur["ETag"])["ETag"]
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                continue  # another writer was quicker: look again
            raise s3_error(e, str(root), "locking the store") from None
        lock.took_over = (f"took over the store lock of {who}, which is no longer running"
                          if gone else f"took over the store lock of {who}, not renewed for {age:.0f} s")
        break
    else:
        raise StoreError(f"cannot lock {root}: other writers keep replacing its lock object")
    conn.lock_lost = None
    beat = _Heartbeat(root, key, body, etag)
    beat.start()
    try:
        yield lock
    finally:
        beat.stop.set()
        beat.join()
        if not conn.lock_lost:
            try:
                client.delete_object(Bucket=conn.bucket, Key=key, IfMatch=beat.etag)
            except Exception as e:  # noqa: BLE001
                if _code(e) in ("NotImplemented", "InvalidArgument"):  # no conditional deletes: ours, by the beat
                    try:
                        client.delete_object(Bucket=conn.bucket, Key=key)
                    except Exception:  # noqa: BLE001
                        pass
                # else: taken over meanwhile (not ours to delete), or unreachable (it expires)
