"""Ingest CloudTrail logs from local files or S3 into the Parquet store: parse, normalise, dedupe, commit atomically."""

from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import random
import re
import signal
import sys
import time
import zlib
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from miner import aws, lookup
from miner import store as st
from miner.models import (ACCOUNT_ID_SHAPE, ACCOUNT_PLACEHOLDER_SHAPE, EVENT_SCHEMA, EVENT_YEARS, REGION_SHAPE,
                          IngestSummary, SkippedInput, Window, classify_outcome, partition_of)

# ----------------------------------------------------------------------------------------------------------- tuning

#: Window used for S3 sources when neither --since nor --until is given (local sources default to everything).
S3_DEFAULT_DAYS = 7
#: Estimated decompressed bytes of input per worker task (~40-50k records); one task -> one file per partition.
TASK_BYTES = 64 << 20
TASK_MAX_FILES = 5000
#: Rows converted to Arrow at a time inside a task: bounds the Python objects alive in a worker, and the memory
#: the allocator cannot reuse because short-lived parsing garbage sits between the rows kept.
CHUNK_ROWS = 16384
#: Typical gzip ratio of CloudTrail JSON, to estimate decompressed size from object size.
GZIP_RATIO = 15
#: Event ids kept in memory for cross-task dedupe (LRU over partitions); bounds memory whatever the input size.
ID_CACHE_LIMIT = 300_000
#: Partition parts smaller than this go to the main process in memory (buffered, deduped, written once) ...
SMALL_PART_ROWS = 256
#: ... and so do "foreign" parts up to this size: rows of another account/region than most of the task (copies
#: delivered under another region's prefix), which are usually duplicates of rows published by another task.
FOREIGN_PART_ROWS = 4096
#: Upper bound of rows buffered in memory by the main process (the largest buffers are written past it).
BUFFER_ROWS = 32_768
MANIFEST_FLUSH_SECONDS = 20.0
MANIFEST_FLUSH_ROWS = 20_000
#: When a folder is split between two tasks, the second one first reads the event ids of this many files before
#: the cut (about an hour of deliveries) and skips them: CloudTrail re-delivers within minutes.
LOOK_BEHIND_FILES = 12
#: Default largest object read, decompressed (``--max-object-size``): CloudTrail delivers objects of a few MB at
#: most; a bigger one (e.g. a decompression bomb) is skipped after inflating this much, never held whole.
MAX_OBJECT_BYTES = 256 << 20
#: Bytes inflated per step: a gzip is inflated in pieces, so stopping at the limit never holds more than this on top.
INFLATE_STEP = 16 << 20

#: Extensions read when walking a folder (anything else is reported as an unsupported file type).
READ_SUFFIXES = (".json", ".gz", ".jsonl", ".ndjson", ".log")
#: Trees of a trail bucket that never hold API records; pruned without reading (S3 and local).
SKIPPED_TREES = ("CloudTrail-Digest", "CloudTrail-Insight")

# Reasons (stable strings: summaries group by them).
R_TRUNCATED = "truncated gzip"
R_CORRUPT_GZIP = "corrupt gzip"
R_EMPTY = "empty file"
R_NOT_JSON = "not JSON (CSV or other text)"
R_INVALID_JSON = "invalid JSON"
R_DIGEST = "CloudTrail digest file (no records)"
R_NOT_CLOUDTRAIL = "JSON without CloudTrail records"
R_UNSUPPORTED = "unsupported file type"
R_READ_ERROR = "cannot read file"
R_DOWNLOAD = "download failed"
R_INTERNAL = "internal error while parsing"
R_INSIGHT = "insight event, not an API call"
R_NO_ID = "record without eventID"
R_NO_TIME = "record without a usable eventTime"
R_NOT_RECORD = "not a CloudTrail record"
R_BAD_LINE = "invalid JSON line"
R_MALFORMED = "malformed record"
R_RECOVERED = "invalid JSON: records recovered by the lenient reader"
R_TOO_BIG = "larger than --max-object-size when decompressed"
R_BAD_ACCOUNT = "record with an unusable account id (not 12 digits or a short placeholder)"
R_BAD_REGION = "record with an unusable awsRegion (not a region name)"
R_UNPARSABLE = "record the JSON parser rejects (invalid, or nested too deeply)"

#: File-level reasons that are a property of the object itself (recorded in the manifest, not retried).
_PERMANENT = {R_TRUNCATED, R_CORRUPT_GZIP, R_EMPTY, R_NOT_JSON, R_INVALID_JSON, R_DIGEST, R_NOT_CLOUDTRAIL}

_LAYOUT_DATE = re.compile(r"/CloudTrail/([^/]+)/(\d{4})/(\d{2})/(\d{2})/[^/]+$")
_LAYOUT_ACCOUNT = re.compile(r"(?:^|/)AWSLogs/(?:(o-[a-z0-9]{10,32})/)?([^/]+)/CloudTrail/")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
_WS = re.compile(rb"\s*")


class IngestError(Exception):
    """A source problem the user can fix (missing path or bucket, no credentials, no access); one clear line."""


@dataclass
class IngestReport(IngestSummary):
    """What one ingest run did: :class:`miner.models.IngestSummary` plus ingest details.

    Invariant: ``records_read == records_written + duplicates + records_skipped + records_filtered``.
    """

    run_id: str = ""
    window: str | None = None
    files_filtered: int = 0
    records_filtered: int = 0
    trees_skipped: dict[str, int] = field(default_factory=dict)
    recovered: list[SkippedInput] = field(default_factory=list)
    data_files_written: int = 0
    partitions_written: int = 0
    s3_list_requests: int = 0
    lookup_slices: int = 0  # LookupEvents slices (account, region, UTC day) of the window
    lookup_slices_done_before: int = 0  # ... finished by earlier runs (not read again)
    lookup_slices_failed: int = 0  # ... not read to their end (retried by the next run)
    lookup_requests: int = 0
    lookup_retries: int = 0  # requests botocore retried (throttled, 5xx)
    lookup_windows: list[str] = field(default_factory=list)  # "account region window" read from LookupEvents
    tmp_files_cleaned: int = 0
    notes: list[str] = field(default_factory=list)  # things the user should know (e.g. a stale lock taken over)

    @property
    def files_skipped(self) -> int:
        """Files that were not used at all (reason in ``skipped`` with no record count)."""
        return sum(1 for s in self.skipped if s.records == 0)

    def skipped_groups(self, examples: int = 3) -> dict[str, dict[str, Any]]:
        """Skipped files/records grouped by reason.

        Args:
            examples: how many example sources to keep per reason.

        Returns:
            ``{reason: {"files": n, "records": n, "examples": [...]}}``, sorted by reason.
        """
        out: dict[str, dict[str, Any]] = {}
        for s in self.skipped:
            g = out.setdefault(s.reason, {"files": 0, "records": 0, "examples": []})
            g["files"] += 1
            g["records"] += s.records
            if len(g["examples"]) < examples:
                g["examples"].append(s.source)
        return dict(sorted(out.items()))

    def outcome(self) -> tuple[int, str]:
        """The exit status a command line should use, with a one-line verdict.

        Returns:
            ``(0, message)`` when records were stored or there was nothing new to do; ``(2, message)`` when no
            file was found, none could be downloaded or read (the message says why), or none of the files read
            held CloudTrail records.
        """
        failed = self._not_read()
        retried = f"; {failed} (retried by the next run)" if failed else ""
        if self.lookup_slices and not self.files_seen and not self.records_read:  # LookupEvents sources only
            if self.lookup_slices_done_before == self.lookup_slices:
                return 0, (f"nothing new to ingest: the {self.lookup_slices:,} LookupEvents slices of the window are "
                           f"already in the store")
            if self.lookup_slices_failed:
                return 2, f"nothing stored: {failed}; run again later, they are retried"
            return 0, "no management events in the window (LookupEvents)"
        if self.records_written:
            return 0, f"{self.records_written:,} new records stored{retried}"
        if self.records_read:
            return 0, f"nothing new to store: every record read is already in the store or outside the window{retried}"
        if self.files_already_ingested:
            return 0, f"nothing new to ingest: {self.files_already_ingested:,} files are already in the store{retried}"
        if self.files_read == 0 and (self.files_filtered or (self.files_seen == 0 and self.s3_list_requests)):
            return 0, "no log files in the window"
        if self.files_seen == 0:
            return 2, "no CloudTrail log files found in the sources"
        if failed and self.files_read == 0:
            return 2, f"nothing stored: {failed}; run again later, they are retried"
        return 2, f"none of the {self.files_seen:,} files held readable CloudTrail records{retried}"

    def _not_read(self) -> str:
        """``"N files could not be downloaded (reason: n, ...)"`` for the files a transient error kept from being
        read (downloads, reads), or ``""``."""
        counts: dict[str, int] = {}
        slices = True
        for s in self.skipped:
            if s.records == 0 and s.reason.startswith((R_DOWNLOAD, R_READ_ERROR)):
                counts[s.reason] = counts.get(s.reason, 0) + 1
                slices = slices and lookup.is_source(s.source)
        if not counts:
            return ""
        n = sum(counts.values())
        verb = "downloaded" if all(r.startswith(R_DOWNLOAD) for r in counts) else "downloaded or read"
        why = ", ".join(f"{r.partition(': ')[2] or r}: {k:,}" for r, k in sorted(counts.items(), key=lambda x: -x[1]))
        what = ("LookupEvents slice", "be read to the end") if slices else ("file", f"be {verb}")
        return f"{n:,} {what[0]}{'s' if n != 1 else ''} could not {what[1]} ({why})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` summary)."""
        d = asdict(self)
        d["files_skipped"] = self.files_skipped
        d["skipped_by_reason"] = self.skipped_groups()
        d["exit_code"], d["verdict"] = self.outcome()
        d["skipped"] = d["skipped"][:1000]
        return d


@dataclass(frozen=True)
class SourceObject:
    """One input object: a local file or an S3 object."""

    uri: str  # absolute path or s3://bucket/key
    size: int
    version: str  # S3 ETag, or mtime_ns of a local file
    bucket: str | None = None
    key: str | None = None

    @property
    def estimate(self) -> int:
        """Estimated decompressed size in bytes."""
        return self.size * GZIP_RATIO if self.uri.endswith(".gz") else self.size


@dataclass
class Progress:
    """Progress of a run, passed to the ``progress`` callback after discovery and after each task."""

    files_done: int = 0
    files_total: int = 0
    records: int = 0
    listing_done: bool = False
    requests: int = 0  # LookupEvents requests
    days_done: float = 0.0  # LookupEvents: days of event history read (all regions) ...
    days_total: float = 0.0  # ... of this many


# ============================================================================================= worker side: parsing


class _Truncated(Exception):
    pass


class _TooBig(Exception):
    pass


_INFLATE: list = []  # [(decompressobj factory, errors)], chosen on first use


def _inflater() -> tuple[Callable[[int], Any], tuple[type[Exception], ...]]:
    """The fastest inflater installed: ISA-L (``isal``, about twice as fast as zlib) or zlib (``MINER_INFLATE=zlib``
    forces zlib); both expose the zlib ``decompressobj`` interface."""
    if not _INFLATE:
        try:
            if os.environ.get("MINER_INFLATE") == "zlib":
                raise ImportError
            from isal import isal_zlib

            _INFLATE.append((isal_zlib.decompressobj, (zlib.error, isal_zlib.error)))
        except ImportError:
            _INFLATE.append((zlib.decompressobj, (zlib.error,)))
    return _INFLATE[0]


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a (possibly multi-member) gzip blob, inflating at most ``limit`` bytes in all, in steps of
    :data:`INFLATE_STEP` (a bomb stops at the limit); raises _Truncated, _TooBig or zlib.error (also for the
    errors of ISA-L)."""
    decompressobj, errors = _inflater()
    try:
        return _gunzip_with(decompressobj, data, limit)
    except errors[1:] as e:
        raise zlib.error(str(e)) from None


def _gunzip_with(decompressobj: Callable[[int], Any], data: bytes, limit: int) -> bytes:
    parts = []
    left = limit
    while True:
        d = decompressobj(31)
        while True:
            step = min(left + 1, INFLATE_STEP)
            part = d.decompress(data, step)
            parts.append(part)
            left -= len(part)
            if left < 0:
                raise _TooBig
            if d.eof:
                break
            data = d.unconsumed_tail
            if not data and len(part) < step:  # the input ran out before the end of the stream
                raise _Truncated
        data = d.unused_data
        if not data or data[:2] != b"\x1f\x8b":  # trailing padding/garbage after the last member is ignored
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _gunzip_or_reason(data: bytes, limit: int) -> tuple[bytes, str | None]:
    """``(decompressed data, None)``, or ``(b"", file skip reason)`` when the gzip is truncated, corrupt or
    inflates past ``limit`` bytes."""
    try:
        return _gunzip(data, limit), None
    except _Truncated:
        return b"", R_TRUNCATED
    except _TooBig:
        return b"", R_TOO_BIG
    except zlib.error:
        return b"", R_CORRUPT_GZIP


def _looks_like_record(d: dict) -> bool:
    return "eventID" in d or "eventName" in d or "eventSource" in d or "eventTime" in d or "eventType" in d \
        or "eventVersion" in d


def _unwrap_items(items: Iterable[Any]) -> tuple[list, int, bool]:
    """Records of a list of top-level items (plain records, {"Records"}, EventBridge envelopes, streamalert wrappers).

    Returns:
        (records, items that are not CloudTrail at all, whether a digest document was seen).
    """
    out: list = []
    other = 0
    digest = False
    for it in items:
        if it.__class__ is not dict:
            other += 1
            continue
        if "eventID" in it or "eventName" in it or "eventTime" in it:  # the common case: a plain record
            out.append(it)
            continue
        recs = it.get("Records")
        if isinstance(recs, list):
            out.extend(recs)
            continue
        det = it.get("detail")
        if isinstance(det, dict) and ("detail-type" in it or "source" in it):  # EventBridge envelope
            if _looks_like_record(det):
                if "eventTime" not in det and it.get("time"):
                    det = {**det, "eventTime": it["time"]}
                if "recipientAccountId" not in det and it.get("account"):
                    det = {**det, "recipientAccountId": it["account"]}
                out.append(det)
            else:
                other += 1
            continue
        data = it.get("data")
        if isinstance(data, dict) and isinstance(data.get("Records"), list):  # streamalert test fixture
            out.extend(data["Records"])
            continue
        if "digestStartTime" in it or "digestS3Object" in it:
            digest = True
            continue
        if _looks_like_record(it):
            out.append(it)
        else:
            other += 1
    return out, other, digest


#: JSON text up to the next bracket: anything but brackets and quotes, and whole strings (brackets inside are text).
_FLAT = re.compile(rb'(?:[^"\[\]{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+')
_OPENING = re.compile(rb"[\[{]+")
_CLOSING = re.compile(rb"[\]}]+")
_RECORDS_OPEN = re.compile(rb'\s*\{\s*"Records"\s*:\s*\[')
#: Items nested deeper than this are not handed to a parser (CloudTrail records nest a dozen levels at most).
_MAX_DEPTH = 200


def _lenient(data: bytes) -> tuple[list, bool, int]:
    """Recover the records of a document the JSON parsers reject as a whole: array elements concatenated without
    commas, or one record nested deeper than the parsers allow.

    One scan, without recursion, finds the balanced items (the elements of ``{"Records": [...]}`` or of a
    top-level array, or concatenated objects) and how deep each nests; items nested deeper than
    :data:`_MAX_DEPTH` are dropped, the others decoded on their own, so a bad item costs only itself (the records
    of a ``{"Records": [...]}`` document are first decoded together by the fast decoder). The work is linear in
    the size of the data, and capped: a scan that needs more than one step per 16 bytes stops there (CloudTrail
    needs one per ~100 bytes; only pathological input needs more).

    Returns:
        (the decoded items, whether they are msgspec structs, how many items were dropped; a scan cut short counts
        one more).
    """
    m = _RECORDS_OPEN.match(data)
    i = _WS.match(data).end()
    level = 2 if m else 1 if data[i:i + 1] == b"[" else 0
    depth = 2 if m else 0
    pos = m.end() if m else 0
    spans: list[tuple[int, int]] = []
    bad = 0
    start = deepest = -1
    flat, opening, closing = _FLAT.match, _OPENING.match, _CLOSING.match
    n = len(data)
    for _ in range(n // 16 + 100_000):
        pos = flat(data, pos).end()
        if pos >= n or data[pos] == 34:  # the end, or an unterminated string: nothing after it is usable
            break
        if data[pos] in b"[{":
            a, pos = opening(data, pos).span()
            if depth <= level < depth + pos - a and data[a + level - depth] == 123:  # an object item opens
                start, deepest = a + level - depth, 0
            depth += pos - a
            if depth - level > deepest:
                deepest = depth - level
        else:
            a, pos = closing(data, pos).span()
            after = depth - (pos - a)
            if start >= 0 and after <= level < depth:
                if deepest <= _MAX_DEPTH:
                    spans.append((start, a + depth - level))
                else:
                    bad += 1
                start = -1
            depth = after
            if depth < level:
                if level:  # the array of items is closed
                    break
                depth = 0
    else:
        bad += 1  # work cap reached
        start = -1
    if start >= 0:
        bad += 1  # an item cut off by the end of the data
    view = memoryview(data)
    fast = _struct_decoder() if level == 2 else None
    if fast is not None and spans:  # records: all together, through the fast decoder
        try:
            doc = b'{"Records":[' + b",".join(view[a:b] for a, b in spans) + b"]}"
            return fast[0].decode(doc).Records, True, bad
        except fast[3]:
            pass
    out: list = []
    loads = orjson.loads
    for a, b in spans:
        try:
            out.append(loads(view[a:b]))
        except orjson.JSONDecodeError:
            bad += 1
    return out, False, bad


_DECODER: list = []  # [(msgspec Decoder of {"Records": [...]}, msgspec.Raw)] or [None]; built on first use


def _struct_decoder():
    """A msgspec decoder that materialises only the fields the store keeps (None when msgspec is absent)."""
    if _DECODER:
        return _DECODER[0]
    try:
        if os.environ.get("MINER_JSON") == "orjson":  # benchmark/debug switch: the orjson-only path
            raise ImportError
        import msgspec
    except ImportError:
        _DECODER.append(None)
        return None

    raw_fields = ("requestParameters", "resources")  # kept as raw JSON text, never parsed
    issuer = msgspec.defstruct("_Issuer", [("arn", Any, None), ("userName", Any, None)], gc=False)
    context = msgspec.defstruct("_Context", [("sessionIssuer", Optional[issuer], None)], gc=False)
    ident = msgspec.defstruct("_Identity", [(name, Optional[context] if name == "sessionContext" else Any, None)
                                            for name in _UI_FIELDS], gc=False)
    types = {"userIdentity": Optional[ident]}
    rec = msgspec.defstruct("_Rec", [
        (name.lstrip("@"), msgspec.Raw if name in raw_fields else types.get(name, Any),
         msgspec.field(default=None, name=name) if name.startswith("@") else None)
        for name in _FIELDS], gc=False)
    doc = msgspec.defstruct("_Doc", [("Records", list[rec])], gc=False)
    # a record whose shape does not fit (e.g. sessionIssuer that is not an object), or nesting deeper than the
    # recursion limit, fails the whole file over to the general (orjson) path, which handles anything
    dec = (msgspec.json.Decoder(doc), msgspec.Raw, msgspec.structs.astuple, (msgspec.DecodeError, RecursionError),
           ident, msgspec.to_builtins)
    _DECODER.append(dec)
    return dec


#: userIdentity fields of the msgspec struct (the rest of userIdentity is never materialised).
_UI_FIELDS = ("type", "arn", "accountId", "invokedBy", "accessKeyId", "userName", "sessionContext", "principalId",
              "onBehalfOf", "assumed_role", "session_name")

#: Top-level record fields read by the normaliser, in the order of the msgspec struct.
_FIELDS = ("eventID", "eventTime", "@timestamp", "eventType", "userIdentity", "recipientAccountId", "awsRegion",
           "eventSource", "eventName", "eventCategory", "eventVersion", "readOnly", "managementEvent", "errorCode",
           "errorMessage", "requestParameters", "resources", "sourceIPAddress", "userAgent", "vpcEndpointId")


def _load(data: bytes, limit: int) -> tuple[list | None, bool, str | None, dict[str, int], bool]:
    """Decode one file's bytes (gzip inflated up to ``limit`` bytes).

    Returns:
        (records or None, records are msgspec structs?, file skip reason, record-level skips {reason: n},
        recovered leniently?).
    """
    if data[:2] == b"\x1f\x8b":
        data, reason = _gunzip_or_reason(data, limit)
        if reason:
            return None, False, reason, {}, False
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    i = _WS.match(data).end()
    if i == len(data):
        return None, False, R_EMPTY, {}, False
    first = data[i:i + 1]
    if first not in (b"{", b"["):
        return None, False, R_NOT_JSON, {}, False
    if first == b"{":
        fast = _struct_decoder()
        if fast is not None:
            try:
                return fast[0].decode(data).Records, True, None, {}, False
            except fast[3]:  # not {"Records": [...]} of objects: the general path below decides
                pass
    skips: dict[str, int] = {}
    recovered = False
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        items, bad = _ndjson(data) if first == b"{" else ([], 1)
        if items and bad <= len(items):
            doc = items
            if bad:
                skips[R_BAD_LINE] = bad
        else:
            doc, struct, bad = _lenient(data)
            if not doc:
                return None, False, R_INVALID_JSON, {}, False
            if bad:
                skips[R_UNPARSABLE] = bad
            if struct:
                return doc, True, None, skips, True
            recovered = True
    if doc.__class__ is dict:
        recs = doc.get("Records")
        if isinstance(recs, list):
            return recs, False, None, skips, recovered
        if "digestStartTime" in doc or "digestS3Object" in doc:
            return None, False, R_DIGEST, skips, recovered
        doc = [doc]
    if doc.__class__ is not list:
        return None, False, R_NOT_CLOUDTRAIL, skips, recovered
    if not doc:
        return [], False, None, skips, recovered
    recs, other, digest = _unwrap_items(doc)
    if not recs:
        if recovered:
            return None, False, R_INVALID_JSON, {}, False
        return None, False, (R_DIGEST if digest else R_NOT_CLOUDTRAIL), skips, False
    if other:
        skips[R_NOT_RECORD] = skips.get(R_NOT_RECORD, 0) + other
    return recs, False, None, skips, recovered


def _ndjson(data: bytes) -> tuple[list, int]:
    items = []
    bad = 0
    loads = orjson.loads
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            items.append(loads(line))
        except orjson.JSONDecodeError:
            bad += 1
    return items, bad


_UTC = timezone.utc


def _slow_time(v: Any) -> tuple[str, datetime] | None:
    """Parse a non-canonical timestamp (space separator, fractions, offsets, basic format); None if unusable
    (no such date or time, or a year outside :data:`miner.models.EVENT_YEARS`)."""
    if v.__class__ is not str or len(v) < 10:
        return None
    try:
        dt = datetime.fromisoformat(v.strip())
    except ValueError:
        return None
    dt = dt.replace(tzinfo=_UTC) if dt.tzinfo is None else dt.astimezone(_UTC)
    if not EVENT_YEARS[0] <= dt.year <= EVENT_YEARS[1]:
        return None
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return (f"{s}.{dt.microsecond:06d}Z" if dt.microsecond else s + "Z"), dt


_CANON: list = []  # [(valid "YYYY-MM-DDTHH" cache, valid ":MM:SSZ" set)], built on first use


def _canonical_tables() -> tuple[dict[str, bool], frozenset]:
    """Lookup tables that check a canonical ``YYYY-MM-DDTHH:MM:SSZ`` time in two steps (no parsing per record)."""
    if not _CANON:
        _CANON.append(({}, frozenset(f":{m:02d}:{s:02d}Z" for m in range(60) for s in range(60))))
    return _CANON[0]


def _hour_ok(prefix: str, cache: dict[str, bool]) -> bool:
    """Whether ``YYYY-MM-DDTHH`` is a real day in :data:`miner.models.EVENT_YEARS` and an hour 00-23 (cached)."""
    if len(cache) > 100_000:
        cache.clear()
    hour = prefix[11:13]
    try:
        day = date.fromisoformat(prefix[:10]) if prefix[4] == prefix[7] == "-" else None
    except ValueError:
        day = None
    ok = cache[prefix] = day is not None and EVENT_YEARS[0] <= day.year <= EVENT_YEARS[1] and hour.isascii() \
        and hour.isdigit() and hour <= "23"
    return ok


_BOOL: dict[Any, bool] = {True: True, False: False, "true": True, "True": True, "TRUE": True, "false": False,
                          "False": False, "FALSE": False}
_EMPTY: dict = {}


def _text(v: Any) -> str | None:
    """Any JSON value as text for a string column."""
    if v is None or v.__class__ is str:
        return v
    if v.__class__ is bytes:
        return v.decode("utf-8", "replace")
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return str(v)


def _hashable(v: Any) -> Any:
    return orjson.dumps(v).decode() if isinstance(v, (dict, list)) else v


_RAW_SPECIAL = frozenset(b'n"')


def _raw_json(b: bytes) -> bytes | str | None:
    """Raw JSON of requestParameters/resources from the msgspec path: null -> None; a JSON string -> its text."""
    if b == b"null":
        return None
    if b[:1] == b'"':
        try:
            return orjson.loads(b)
        except orjson.JSONDecodeError:
            return b
    return b


def _role_from_session(sarn: str | None, ui: dict, pacct: Any) -> tuple[str | None, str | None]:
    """An AssumedRole without sessionIssuer: rebuild the role ARN from the session ARN (the role path is lost)."""
    if sarn and ":assumed-role/" in sarn:
        head, _, rest = sarn.partition(":assumed-role/")
        role = rest.split("/", 1)[0]
        parts = head.split(":")
        if len(parts) >= 5 and role:
            return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}", role
    role = ui.get("assumed_role")  # Datadog re-shaped records
    if role and pacct:
        return f"arn:aws:iam::{pacct}:role/{role}", role
    return sarn, role


def _principal_other(ui: dict, ptype: Any, sarn: Any, invoked: Any, pacct: Any) -> tuple[Any, Any, Any, Any]:
    """(principal_arn, principal_name, session_name, principal_type) for the less common identity shapes."""
    ug = ui.get
    if sarn is not None and sarn.__class__ is not str:
        sarn = _text(sarn)
    if not ptype:
        if invoked:
            return invoked, invoked, None, "AWSService"
        if sarn:
            ptype = ("AssumedRole" if ":assumed-role/" in sarn else "IAMUser" if ":user/" in sarn
                     else "Root" if sarn.endswith(":root") else "FederatedUser" if ":federated-user/" in sarn else None)
            if ptype == "AssumedRole":
                parn, pname = _role_from_session(sarn, ui, pacct)
                return parn, pname, sarn.split("/", 2)[2] if sarn.count("/") >= 2 else None, ptype
            return sarn, sarn.rsplit("/", 1)[-1], None, ptype
        return None, None, None, ptype
    if ptype == "IAMUser":
        name = ug("userName")
        if sarn:
            return sarn, name or sarn.rsplit("/", 1)[-1], None, ptype
        return (f"arn:aws:iam::{pacct}:user/{name}" if name and pacct else None), name, None, ptype
    if ptype == "Root":
        return sarn or (f"arn:aws:iam::{pacct}:root" if pacct else None), ug("userName") or "root", None, ptype
    if ptype == "AssumedRole":
        parn, pname = _role_from_session(sarn, ui, pacct)
        session = sarn.split("/", 2)[2] if sarn and sarn.count("/") >= 2 else ug("session_name")
        return parn, pname, session, ptype
    if ptype == "FederatedUser":
        si = (ug("sessionContext") or _EMPTY).get("sessionIssuer")
        session = sarn.rsplit("/", 1)[-1] if sarn and "/" in sarn else None
        if si and si.get("arn"):
            return si["arn"], si.get("userName"), session, ptype
        return sarn, session, session, ptype
    if ptype == "IdentityCenterUser":
        obo = ug("onBehalfOf")
        uid = obo.get("userId") if isinstance(obo, dict) else None
        if uid:
            return f"identitycenter:{uid}", ug("userName") or str(uid), None, ptype
        return sarn, ug("userName"), None, ptype
    if ptype == "AWSAccount":
        if pacct == "ANONYMOUS_PRINCIPAL" or (not ug("principalId") and not sarn):
            return "ANONYMOUS_PRINCIPAL", "ANONYMOUS_PRINCIPAL", None, ptype
        if sarn:
            return sarn, None, None, ptype
        pid = ug("principalId")
        session = pid.split(":", 1)[1] if isinstance(pid, str) and ":" in pid else None
        return (f"AWSAccount:{pacct}" if pacct else None), (str(pacct) if pacct else None), session, ptype
    if ptype == "AWSService":
        return invoked, invoked, None, ptype
    # SAMLUser, WebIdentityUser, Directory, Unknown, ...: the issuer if any, else the identity as logged
    si = (ug("sessionContext") or _EMPTY).get("sessionIssuer")
    if si and si.get("arn"):
        return si["arn"], si.get("userName"), (sarn.rsplit("/", 1)[-1] if sarn and "/" in sarn else None), ptype
    return sarn or ug("principalId") or None, ug("userName"), None, ptype


#: Low-cardinality columns stored once per distinct combination ("code A") instead of once per record.
_A_COLS = ("event_source", "event_name", "event_type", "event_category", "event_version", "aws_region", "account_id",
           "read_only", "management_event", "error_code", "vpc_endpoint_id", "user_agent", "outcome")
#: Columns that depend only on the principal ("code B").
_B_COLS = ("principal_type", "principal_arn", "principal_name", "principal_account", "invoked_by", "partition")
#: Per-record columns, in the order of the row tuples _normalise appends (then code A, code B).
#: Columns that depend only on the session and where it called from ("code C").
_C_COLS = ("session_arn", "session_name", "access_key_id", "source_ip")
_R_COLS = ("event_id", "event_time", "error_message", "_outcome", "request_parameters", "resources")
#: Marker in a code-C key: the session name is the last part of the assumed-role ARN (derived once per key).
_FROM_ARN = object()
#: Code-A values of records not stored: outside the account/region filters, or an unusable partition value.
_A_FILTERED, _A_BAD_ACCOUNT, _A_BAD_REGION = -1, -2, -3


class _Codes:
    """Per-task dictionaries of the code-A/code-B combinations (raw key -> code; code -> normalised values)."""

    def __init__(self, filt: tuple | None):
        self.a: dict = {}
        self.a_vals: list[tuple] = []
        self.b: dict = {}
        self.b_vals: list[tuple] = []
        self.c: dict = {}
        self.c_vals: list[tuple] = []
        self.filt = filt

    def new_a(self, key: tuple) -> int:
        esrc, ename, etype, ecat, ever, region, acct, ro, mgmt, ec, vpce, ua = key
        t = _text
        region, acct, ec = t(region), t(acct), (t(ec) or None)
        ro = _BOOL.get(_hashable(ro)) if ro is not None else None
        mgmt = _BOOL.get(_hashable(mgmt)) if mgmt is not None else None
        vals = (t(esrc), t(ename), t(etype), t(ecat), t(ever), region, acct, ro, mgmt, ec, t(vpce), t(ua),
                classify_outcome(ec) if ec else "success")
        code = len(self.a_vals)
        self.a_vals.append(vals)
        if acct and not (ACCOUNT_ID_SHAPE.fullmatch(acct) or ACCOUNT_PLACEHOLDER_SHAPE.fullmatch(acct)):
            code = _A_BAD_ACCOUNT  # (values that become a partition directory are validated, never trusted)
        elif region and not (REGION_SHAPE.fullmatch(region) or ACCOUNT_PLACEHOLDER_SHAPE.fullmatch(region)):
            code = _A_BAD_REGION
        elif self.filt is not None:
            accts, regs = self.filt
            if (accts and acct not in accts) or (regs and region not in regs):
                code = _A_FILTERED
        self.a[key] = code
        return code

    def new_b(self, key: tuple) -> int:
        ptype, parn, pname, pacct, invoked, region = key
        t = _text
        parn, region = t(parn), t(region)
        vals = (t(ptype), parn, t(pname), t(pacct), t(invoked), partition_of(region, parn))
        code = self.b[key] = len(self.b_vals)
        self.b_vals.append(vals)
        return code

    def new_c(self, key: tuple) -> int:
        sarn, session, akid, sip = key
        sarn = _text(sarn)
        if session is _FROM_ARN:
            j = sarn.find("/", sarn.find(":assumed-role/") + 14) if sarn else -1
            session = sarn[j + 1:] if j > 0 else None
        code = self.c[key] = len(self.c_vals)
        self.c_vals.append((sarn, _text(session), _text(akid) or None, _text(sip)))
        return code


def _normalise(records: list, struct: bool, rows: list, seen: set, skips: dict, win: tuple | None, codes: _Codes,
               strict: bool = False) -> tuple[int, int, int]:
    """The hot loop: append one tuple per stored record to ``rows`` (_R_COLS, then codes A, B and C).

    ``records`` are dicts, or msgspec structs (``struct``) whose fields are :data:`_FIELDS`. Canonical times
    (``YYYY-MM-DDTHH:MM:SSZ``) are checked here only when ``strict``; otherwise :func:`_chunk` checks them all at
    once and raises :class:`_BadTime` when one is not a real time, and the task is redone strictly.

    Returns:
        (records read, in-task duplicates, records filtered out by the window/account/region).
    """
    append = rows.append
    seen_add = seen.add
    empty = _EMPTY
    dumps = orjson.dumps
    str_, dict_, tuple_, map_ = str, dict, tuple, map
    a_get, b_get, c_get = codes.a.get, codes.b.get, codes.c.get
    from_arn = _FROM_ARN
    fields = _FIELDS
    if struct:
        _, raw_t, astuple, _, ui_t, to_builtins = _struct_decoder()
    else:
        raw_t = astuple = ui_t = to_builtins = None
    if win is not None:
        since_s, until_s, since_dt, until_dt = win
    else:
        since_s = until_s = since_dt = until_dt = None
    hours, mmss = _canonical_tables() if strict else ({}, frozenset())
    dup = out = n_insight = n_noid = n_notime = n_notrec = n_bad = n_account = n_region = 0
    n = 0
    for r in records:
        n += 1
        try:
            if struct:
                v = astuple(r)
            elif r.__class__ is dict_:
                v = tuple_(map_(r.get, fields))
            else:
                n_notrec += 1
                continue
            (eid, et, ts, etype, ui, acct, region, esrc, ename, ecat, ever, ro, mgmt, ec, em, rp, res, sip, ua,
             vpce) = v
            if etype == "AwsCloudTrailInsight":
                n_insight += 1
                continue
            if eid.__class__ is not str_:
                if not eid:
                    n_noid += 1
                    continue
                eid = _text(eid)
            elif not eid:
                n_noid += 1
                continue
            if not et:
                et = ts
            if et.__class__ is str_ and len(et) == 20 and et[10] == "T" and et[19] == "Z":
                if strict:
                    ok = hours.get(et[:13])
                    if not (ok or (ok is None and _hour_ok(et[:13], hours))) or et[13:] not in mmss:
                        n_notime += 1  # e.g. 2026-02-30, T24:00:00, year 0000
                        continue
                if since_s is not None and (et < since_s or et >= until_s):
                    out += 1
                    continue
            else:
                t = _slow_time(et)
                if t is None:
                    n_notime += 1
                    continue
                et, dt = t
                if since_dt is not None and (dt < since_dt or dt >= until_dt):
                    out += 1
                    continue
            if ui.__class__ is ui_t:  # msgspec path
                ptype, sarn, pacct, invoked, akid, uname, sc = astuple(ui)[:7]
                si = sc.sessionIssuer if sc is not None else None
                si_arn, si_name = (si.arn, si.userName) if si is not None else (None, None)
            else:
                if ui.__class__ is not dict_:
                    ui = empty
                ug = ui.get
                ptype, sarn, pacct, invoked, akid, uname = (ug("type"), ug("arn"), ug("accountId"),
                                                            ug("invokedBy"), ug("accessKeyId"), ug("userName"))
                si = (ug("sessionContext") or empty).get("sessionIssuer") if ptype == "AssumedRole" else None
                si_arn, si_name = (si.get("arn"), si.get("userName")) if si else (None, None)
            if not acct:
                acct = pacct
            if not struct and (esrc is None or sip is None or ua is None):  # re-shaped exports (Panther, Datadog)
                esrc = esrc or r.get("eventsource")
                ename = ename or r.get("eventname")
                region = region or r.get("awsregion")
                if sip is None and "network" in r:
                    sip = ((r["network"] or empty).get("client") or empty).get("ip")
                if ua is None and "http" in r:
                    ua = (r["http"] or empty).get("useragent")
            ka = (esrc, ename, etype, ecat, ever, region, acct, ro, mgmt, ec, vpce, ua)
            try:
                ca = a_get(ka)
            except TypeError:  # a list/dict where a scalar belongs
                ka = tuple_(_hashable(x) for x in ka)
                ca = a_get(ka)
            if ca is None:
                ca = codes.new_a(ka)
            if ca < 0:
                if ca == _A_FILTERED:
                    out += 1
                elif ca == _A_BAD_ACCOUNT:
                    n_account += 1
                else:
                    n_region += 1
                continue
            if eid in seen:
                dup += 1
                continue
            seen_add(eid)
            if not sarn:
                sarn = None
            if ptype == "AssumedRole" and si_arn:  # the role, path kept (the session ARN drops it)
                parn = si_arn
                pname = si_name
                session = from_arn
            elif ptype == "AWSService":
                parn = pname = invoked
                session = None
            elif ptype == "IAMUser" and sarn:
                parn = sarn
                pname = uname
                session = None
            else:
                parn, pname, session, ptype = _principal_other(
                    to_builtins(ui) if ui.__class__ is ui_t else ui, ptype, sarn, invoked, pacct)
            kb = (ptype, parn, pname, pacct, invoked, region)
            try:
                cb = b_get(kb)
            except TypeError:
                kb = tuple_(_hashable(x) for x in kb)
                cb = b_get(kb)
            if cb is None:
                cb = codes.new_b(kb)
            kc = (sarn, session, akid, sip)
            try:
                cc = c_get(kc)
            except TypeError:
                kc = tuple_(_hashable(x) for x in kc)
                cc = c_get(kc)
            if cc is None:
                cc = codes.new_c(kc)
            if rp is not None:
                if rp.__class__ is raw_t:
                    rp = bytes(rp)
                    if rp[0] in _RAW_SPECIAL:  # null, or a JSON string
                        rp = _raw_json(rp)
                elif rp.__class__ is not str_:
                    rp = dumps(rp)
            if res is not None:
                if res.__class__ is raw_t:
                    res = bytes(res)
                    if res[0] in _RAW_SPECIAL:
                        res = _raw_json(res)
                elif res.__class__ is not str_:
                    res = dumps(res)
            append((eid, et, em, classify_outcome(None, _text(em)) if em and not ec else None, rp, res, ca, cb,
                    cc))
        except Exception:  # a record of an unexpected shape never stops the file
            n_bad += 1
    for reason, k in ((R_INSIGHT, n_insight), (R_NO_ID, n_noid), (R_NO_TIME, n_notime), (R_NOT_RECORD, n_notrec),
                      (R_MALFORMED, n_bad), (R_BAD_ACCOUNT, n_account), (R_BAD_REGION, n_region)):
        if k:
            skips[reason] = skips.get(reason, 0) + k
    return n, dup, out


_TS = pa.timestamp("us", tz="UTC")
#: Event times accepted, in microseconds since the epoch: the years of EVENT_YEARS, both included.
_TIME_RANGE = (int(datetime(EVENT_YEARS[0], 1, 1, tzinfo=_UTC).timestamp()) * 1_000_000,
               int(datetime(EVENT_YEARS[1] + 1, 1, 1, tzinfo=_UTC).timestamp()) * 1_000_000)
_TYPES = {f.name: f.type for f in EVENT_SCHEMA}
_TYPES["_outcome"] = pa.string()


@dataclass
class _Task:
    number: int
    items: list  # [(SourceObject, bytes | None)]
    tmp: str | None  # where big partition parts are written (None: every part stays in memory)
    run_id: str
    win: tuple | None
    filt: tuple | None
    behind: list = field(default_factory=list)  # local files just before the task in the same folder: their
    # event ids are skipped (the previous task stores them), so re-deliveries across the cut need no rewrite
    limit: int = MAX_OBJECT_BYTES  # largest object read, decompressed


@dataclass
class _FileResult:
    obj: SourceObject
    records: int = 0  # records read from the file
    kept: int = 0  # rows produced (before cross-task dedupe)
    reason: str | None = None  # file-level skip reason
    skips: dict[str, int] = field(default_factory=dict)  # record-level skips
    recovered: bool = False


@dataclass
class _TaskResult:
    number: int
    files: list[_FileResult]
    parts: list[tuple]  # (account, region, day, tmp path, rows, event ids)
    read: int = 0
    dup: int = 0
    filtered: int = 0
    gzip_bytes: int = 0  # compressed bytes of the task's gzip files
    gunzip_bytes: int = 0  # their decompressed size (tasks are sized by the observed ratio)
    unread: list = field(default_factory=list)  # [(SourceObject, reason)]: S3 objects a Spark executor could not
    # download (recorded as the driver's failed downloads are: skipped, not in the manifest)


class _BadTime(Exception):
    """A canonical-looking eventTime is not a real time (e.g. 2026-02-30), or its year is out of range."""


def _process_task(task: _Task) -> _TaskResult:
    """Parse, normalise, dedupe (within the task), sort and write one batch of files to ``_tmp/``."""
    gc_was = gc.isenabled()
    gc.disable()  # parsed JSON holds no cycles; the collector would rescan millions of live objects
    try:
        try:
            return _process_task_inner(task, False)
        except _BadTime:  # (rare) again, checking every time record by record: a bad one is skipped and counted,
            # before it could hide a valid copy of its eventID
            return _process_task_inner(task, True)
    finally:
        if gc_was:
            gc.enable()


def _column(values: Sequence, typ: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        if typ == pa.bool_():
            return pa.array([v if v is None or v.__class__ is bool else None for v in values], typ)
        return pa.array([_text(v) for v in values], typ)


def _chunk(rows: list, srcs: list) -> dict[str, pa.Array]:
    """Row tuples -> Arrow arrays: the per-record columns, plus int32 codes (``_a``, ``_b``, ``_src``).

    Raises:
        _BadTime: a time is not a real time, or its year is outside :data:`miner.models.EVENT_YEARS`.
    """
    cols = list(zip(*rows))
    out: dict[str, pa.Array] = {}
    for i, name in enumerate(_R_COLS):
        if name == "event_time":
            try:
                times = pa.array(cols[i], pa.string()).cast(_TS)
            except pa.ArrowInvalid:
                raise _BadTime from None
            lo, hi = pc.min_max(times.cast(pa.int64())).values()
            if lo.as_py() < _TIME_RANGE[0] or hi.as_py() >= _TIME_RANGE[1]:
                raise _BadTime
            out[name] = times
        else:
            out[name] = _column(cols[i], _TYPES[name])
    out["_a"] = pa.array(cols[-3], pa.int32())
    out["_b"] = pa.array(cols[-2], pa.int32())
    out["_c"] = pa.array(cols[-1], pa.int32())
    out["_src"] = pa.array(srcs, pa.int32())
    return out


def _dict_column(codes: pa.Array, values: list, typ: pa.DataType) -> pa.Array:
    """Expand a per-combination value list by codes: a dictionary array for strings (cheap to sort, take and
    write), a plain array for booleans."""
    if typ != pa.string():
        return _column(values, typ).take(codes)
    nulls = [v is None for v in values]
    dictionary = _column(["" if v is None else v for v in values], typ)
    if any(nulls):
        mask = pa.array(nulls, pa.bool_()).take(codes)
        codes = pc.if_else(mask, pa.scalar(None, pa.int32()), codes)
    return pa.DictionaryArray.from_arrays(codes, dictionary)


def _ranks(keys: list) -> list[int]:
    """Rank of each key in sorted order (equal keys share a rank; None sorts last)."""
    order = {k: i for i, k in enumerate(sorted(set(keys), key=lambda k: (k is None, k)))}
    return [order[k] for k in keys]


def _read_file(path: str, limit: int) -> bytes | None:
    """A local file's bytes, or None when it holds more than ``limit`` bytes (never read whole then, even when it
    grows, or is a device that never ends)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            return None
        data = fh.read(size + 1)  # (a buffer of the file's size: never one of the limit's)
        if len(data) > size:
            data += fh.read(limit + 1 - len(data))
    return data if len(data) <= limit else None


def _process_task_inner(task: _Task, strict: bool) -> _TaskResult:
    rows: list = []
    srcs: list = []
    uris: list[str] = []
    chunks: list[dict[str, pa.Array]] = []
    seen: set = set()
    codes = _Codes(task.filt)
    files: list[_FileResult] = []
    read = dup = filtered = comp = raw = 0
    for obj in task.behind:  # ids the previous task stores
        try:
            recs, struct = _load(_read_file(obj.uri, task.limit) or b"", task.limit)[:2]
            if recs:
                seen.update(r.eventID if struct else r.get("eventID") for r in recs if struct or r.__class__ is dict)
        except Exception:  # only an optimisation: the main process dedupes anyway
            pass
    struct = True
    for obj, payload in task.items:
        fr = _FileResult(obj)
        files.append(fr)
        try:
            if payload is None:
                try:
                    payload = _read_file(obj.uri, task.limit)
                except OSError as e:
                    fr.reason = f"{R_READ_ERROR}: {e.strerror or e}"
                    continue
                if payload is None:
                    fr.reason = R_TOO_BIG
                    continue
            if payload[:2] == b"\x1f\x8b":
                comp += len(payload)
                payload, fr.reason = _gunzip_or_reason(payload, task.limit)
                if fr.reason:
                    continue
                raw += len(payload)
            recs, struct, reason, skips, recovered = _load(payload, task.limit)
            payload = None
            fr.skips, fr.recovered = skips, recovered
            if reason:
                fr.reason = reason
                continue
            before = len(rows)
            unusable = sum(skips.values())  # bad NDJSON lines, items that are not records
            n, d, o = _normalise(recs, struct, rows, seen, fr.skips, task.win, codes, strict)
            recs = None
            fr.records = n + unusable
            fr.kept = len(rows) - before
            read += fr.records
            dup += d
            filtered += o
            if fr.kept:
                srcs.extend([len(uris)] * fr.kept)
                uris.append(obj.uri)
        except Exception as e:  # never lose the other files of the task
            fr.reason = f"{R_INTERNAL}: {type(e).__name__}: {e}"[:200]
            del rows[len(srcs):]
        if len(rows) >= (CHUNK_ROWS if struct else CHUNK_ROWS // 4):  # orjson: many short-lived objects
            # between the rows kept; converting sooner lets the allocator reuse that memory
            chunks.append(_chunk(rows, srcs))
            rows, srcs = [], []
    if rows:
        chunks.append(_chunk(rows, srcs))
    rows = srcs = seen = None  # type: ignore[assignment]
    parts = _write_parts(chunks, codes, uris, task) if chunks else []
    return _TaskResult(task.number, files, parts, read, dup, filtered, comp, raw)


class _IpcTable:
    """A table pickled as a compact Arrow IPC stream (slices are copied, not shipped with their parents)."""

    def __init__(self, table: pa.Table):
        self.table = table

    def __reduce__(self):
        return _IpcTable._load, (_ipc_bytes(self.table),)

    @staticmethod
    def _load(data: bytes) -> "_IpcTable":
        return _IpcTable(pa.ipc.open_stream(data).read_all())


def _ipc_bytes(table: pa.Table, compression: str | None = None) -> bytes:
    """A table as an Arrow IPC stream (``compression``: ``lz4``, ``zstd`` or none)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _write_parts(chunks: list[dict[str, pa.Array]], codes: _Codes, uris: list[str], task: _Task) -> list[tuple]:
    """Sort rows by (account, region, day, principal_arn, event_time); write one _tmp file per partition."""
    cols = {k: chunks[0][k] if len(chunks) == 1 else pa.concat_arrays([c[k] for c in chunks]) for k in chunks[0]}
    del chunks[:]
    a, b, c = cols.pop("_a"), cols.pop("_b"), cols.pop("_c")
    for j, name in enumerate(_A_COLS):
        cols[name] = _dict_column(a, [v[j] for v in codes.a_vals], _TYPES[name])
    for j, name in enumerate(_B_COLS):
        cols[name] = _dict_column(b, [v[j] for v in codes.b_vals], _TYPES[name])
    for j, name in enumerate(_C_COLS):
        cols[name] = _dict_column(c, [v[j] for v in codes.c_vals], _TYPES[name])
    own = cols.pop("_outcome")
    if own.null_count < len(own):  # some console failures carry their outcome in errorMessage only
        cols["outcome"] = pc.coalesce(own, cols["outcome"].dictionary_decode())
    cols["source_object"] = pa.DictionaryArray.from_arrays(cols.pop("_src"), pa.array(uris, pa.string()))

    # integer sort keys: rank of (account, region), UTC day, rank of principal_arn, event time
    ia, ir = _A_COLS.index("account_id"), _A_COLS.index("aws_region")
    pairs = [(v[ia] or "", v[ir] or "") for v in codes.a_vals]
    pair_ranks = _ranks(pairs)
    a_rank = pa.array(pair_ranks, pa.int32()).take(a)
    b_rank = pa.array(_ranks([v[_B_COLS.index("principal_arn")] for v in codes.b_vals]), pa.int32()).take(b)
    t = cols["event_time"]
    day = pc.cast(t, pa.date32()).cast(pa.int32())
    keys = pa.table({"a": a_rank, "d": day, "p": b_rank, "t": t})
    idx = pc.sort_indices(keys, sort_keys=[("a", "ascending"), ("d", "ascending"), ("p", "ascending"),
                                           ("t", "ascending")])
    table = pa.table({f.name: cols[f.name] for f in EVENT_SCHEMA}).take(idx)
    ka, kd = a_rank.take(idx), day.take(idx)
    n = len(table)
    starts = [0]
    if n > 1:
        change = pc.or_(pc.not_equal(ka.slice(1), ka.slice(0, n - 1)), pc.not_equal(kd.slice(1), kd.slice(0, n - 1)))
        starts += [i + 1 for i in pc.indices_nonzero(change).to_pylist()]
    starts.append(n)
    pair_of_rank = dict(zip(pair_ranks, pairs))
    sizes: dict[int, int] = {}
    for k in range(len(starts) - 1):
        r = ka[starts[k]].as_py()
        sizes[r] = sizes.get(r, 0) + starts[k + 1] - starts[k]
    home = max(sizes, key=sizes.get) if sizes and max(sizes.values()) * 2 > n else None
    out = []
    for k in range(len(starts) - 1):
        off, end = starts[k], starts[k + 1]
        acct, region = pair_of_rank[ka[off].as_py()]
        d = date(1970, 1, 1) + timedelta(days=kd[off].as_py())
        part = table.slice(off, end - off)
        # compact copies: pickling a slice would ship the whole task's buffers
        ids = pa.concat_arrays(part.column("event_id").chunks)
        if task.tmp is None or end - off < SMALL_PART_ROWS or (
                end - off <= FOREIGN_PART_ROWS and home is not None
                and ka[off].as_py() != home):  # in memory: main buffers/dedupes it (always, without a tmp dir)
            out.append((acct, region, d.isoformat(), None, end - off, ids, _IpcTable(part.cast(EVENT_SCHEMA))))
        else:
            path = os.path.join(task.tmp, f"{task.run_id}-{task.number:06d}-{k:04d}.parquet")
            st.write_parquet(part.cast(EVENT_SCHEMA), Path(path))  # plain columns: Parquet dictionary-encodes
            # them itself, 15% smaller and no slower than handing over the task-wide Arrow dictionaries
            out.append((acct, region, d.isoformat(), path, end - off, ids))
    return out


@dataclass
class ObjectOutcome:
    """What :func:`parse_objects` made of one source object.

    ``records`` counts the records read, ``kept`` the rows returned for it (after the window/account/region
    filters and the dedupe within the call); ``reason`` is set when the object was not used at all (the
    ingest's file skip reasons: truncated or corrupt gzip, digest file, too big, ...), ``skips`` counts the
    records skipped by reason, ``recovered`` says the lenient reader recovered its records from invalid JSON.
    """

    uri: str
    records: int = 0
    kept: int = 0
    reason: str | None = None
    skips: dict[str, int] = field(default_factory=dict)
    recovered: bool = False


@dataclass
class ParseResult:
    """The output of :func:`parse_objects`: rows in the store schema, and one outcome per object, in input order."""

    batches: list[pa.RecordBatch]
    outcomes: list[ObjectOutcome]
    read: int = 0  # records read
    duplicates: int = 0  # copies of an event id met earlier in the same call (dropped)
    filtered: int = 0  # records outside the window/account/region filters

    def table(self) -> pa.Table:
        """The rows as one table of :data:`miner.models.EVENT_SCHEMA`."""
        return pa.Table.from_batches(self.batches, EVENT_SCHEMA)


def parse_objects(refs: Iterable[str | os.PathLike | tuple[str, str]], *,
                  fetch: Callable[[str, str], bytes] | None = None, window: Window | None = None,
                  accounts: Iterable[str] = (), regions: Iterable[str] = (),
                  max_object_size: int = MAX_OBJECT_BYTES) -> ParseResult:
    """Parse source objects into store rows, in memory, with no store, lock or manifest: the parse step of
    :func:`ingest` as a pure function, for distributed execution (e.g. a Spark executor running
    ``mapInArrow`` over object keys calls it; the driver then commits with the usual dedupe on eventID).

    The rows are exactly what a local ingest stores for these objects (same normalisation, validation and
    hostile-input handling: decompression bombs stop at ``max_object_size``, truncated or corrupt gzip, digest
    files, EventBridge envelopes, ...), deduplicated on eventID within the call (the first copy in input order is
    kept), and sorted as the store sorts them (account, region, day, principal, time). Dedupe against the store,
    and across calls, is the committer's job.

    Args:
        refs: local paths, and/or ``(bucket, key)`` pairs of S3 objects.
        fetch: ``fetch(bucket, key) -> bytes`` for the ``(bucket, key)`` refs (e.g. a boto3 ``get_object``); an
            exception it raises is reported as that object's outcome (``"download failed: ..."``).
        window: keep only records in ``[since, until)``; ``None``: every record.
        accounts: keep only these account ids (empty: all).
        regions: keep only these regions (empty: all).
        max_object_size: largest object read, in bytes once decompressed.

    Returns:
        A :class:`ParseResult`: record batches of :data:`miner.models.EVENT_SCHEMA` and one
        :class:`ObjectOutcome` per ref, in the order given.
    """
    items: list = []
    for ref in refs:
        if isinstance(ref, tuple):
            bucket, key = ref
            obj = SourceObject(f"s3://{bucket}/{key}", 0, "", bucket, key)
            if fetch is None:
                raise ValueError(f"no fetch function for {obj.uri}")
            try:
                data = fetch(bucket, key)
            except Exception as e:  # reported, as a failed download is
                items.append((obj, f"{R_DOWNLOAD}: {type(e).__name__}: {e}"[:200]))
                continue
            items.append((obj, R_TOO_BIG if len(data) > max_object_size else bytes(data)))
        else:
            path = os.path.abspath(os.fspath(ref))
            items.append((SourceObject(path, 0, ""), None))
    filt = (frozenset(map(str, accounts)), frozenset(map(str, regions)))
    task = _Task(0, [(o, p) for o, p in items if not isinstance(p, str)], None, "", _window_tuple(window),
                 filt if filt[0] or filt[1] else None, limit=max_object_size)
    res = _result(task, partial(_process_task, task)) if task.items else _TaskResult(0, [], [])
    by_uri = {fr.obj.uri: fr for fr in res.files}
    outcomes = []
    for obj, payload in items:
        fr = by_uri.get(obj.uri) if not isinstance(payload, str) else _FileResult(obj, reason=payload)
        outcomes.append(ObjectOutcome(obj.uri, fr.records, fr.kept, fr.reason, dict(fr.skips), fr.recovered))
    batches = [b for part in res.parts for b in part[6].table.to_batches()]
    return ParseResult(batches, outcomes, res.read, res.dup, res.filtered)


# ============================================================================================== main side: commit


class _Committer:
    """Publishes task outputs into partitions (no event id twice in a partition), then writes the manifest.

    Big parts arrive as files in ``_tmp/`` and are published by an atomic rename. Small and foreign parts (see
    :data:`SMALL_PART_ROWS`, :data:`FOREIGN_PART_ROWS`; typically copies delivered under another region's
    prefix) arrive in memory and are buffered per partition, so they cost no file unless they survive dedupe;
    the manifest rows of objects with buffered rows wait until those are written, so the manifest never names an
    object whose rows are not all published.

    Dedupe: the ids of a partition's files are cached as Arrow arrays (LRU, bounded by :data:`ID_CACHE_LIMIT` ids,
    read back from the ``event_id`` column when evicted or written by an earlier run). The store is append-only:
    the first copy of an eventID published is the one kept, and a published file is never rewritten or removed
    (a reader may have listed it), so a new file that overlaps published files is rewritten in ``_tmp/`` without
    the shared ids before it is published; buffered (unpublished) copies are dropped when a file brings the same
    ids.
    """

    def __init__(self, store: Path, run_id: str, report: IngestReport, now: datetime):
        self.store = store
        self.run_id = run_id
        self.report = report
        self.now = now
        self.seq = 0
        self.ids: OrderedDict[Path, dict[Path, pa.Array]] = OrderedDict()
        self.cached = 0
        self.buf: dict[Path, list[pa.Table]] = {}
        self.buf_sources: dict[Path, set[str]] = {}  # objects with rows in each buffer (their manifest rows wait)
        self.buffered = 0
        self.buffer_files = 0
        self.partitions: set[Path] = set()
        self.pending: list[dict] = []
        self.held = 0  # pending rows held back at the last flush
        self.manifest_seq = 0
        self.last_flush = time.monotonic()

    def _entry(self, d: Path) -> dict[Path, pa.Array]:
        entry = self.ids.get(d)
        if entry is not None:
            self.ids.move_to_end(d)
            return entry
        entry = {f: st.file_event_ids(f) for f in sorted(d.glob("*.parquet"))} if d.is_dir() else {}
        self.ids[d] = entry
        self.cached += sum(len(a) for a in entry.values())
        return entry

    def _evict(self) -> None:
        while self.cached > ID_CACHE_LIMIT and len(self.ids) > 1:
            _, old = self.ids.popitem(last=False)  # re-read from the event_id columns when needed again
            self.cached -= sum(len(a) for a in old.values())

    def _publish(self, d: Path, path: Path, ids: pa.Array, n: int) -> None:
        self.seq += 1
        final = d / f"part-{self.run_id}-{self.seq:05d}.parquet"
        st.publish(path, final)
        entry = self.ids.get(d)
        if entry is not None:  # (an evicted partition is re-read from disk, this file included)
            entry[final] = ids
            self.cached += len(ids)
        self._count(d, n)

    def _count(self, d: Path, n: int) -> None:
        self.report.records_written += n
        self.report.data_files_written += 1
        self.partitions.add(d)
        self.report.partitions_written = len(self.partitions)

    def count_published(self, account: str, region: str, day: str, name: str | None, n: int, dups: int) -> None:
        """Count a part that a Spark executor published (``name`` None: every row was a duplicate)."""
        self.report.duplicates += dups
        if name is not None:
            self._count(st.partition_dir(self.store, account, region, day), n)

    def commit_part(self, account: str, region: str, day: str, tmp: str | None, n: int, ids: pa.Array,
                    small: _IpcTable | None = None) -> None:
        """Dedupe and publish (file) or buffer (in-memory table) one partition's rows of a task."""
        d = st.partition_dir(self.store, account, region, day)
        table = small.table if small is not None else None
        entry = self._entry(d)
        self._evict()  # (d is the most recently used: never evicted here)
        buf = self.buf.get(d)
        if table is not None:  # small part: drop ids already published or buffered, buffer the rest
            known = [*entry.values(), *(t.column("event_id") for t in buf or ())]
            if known:
                dup = pc.is_in(ids, value_set=pa.chunked_array(known, pa.string()).combine_chunks())
                ndup = pc.sum(dup).as_py() or 0
                if ndup:
                    self.report.duplicates += ndup
                    table = table.filter(pc.invert(dup))
            if table.num_rows:
                self.buf.setdefault(d, []).append(table)
                self.buf_sources.setdefault(d, set()).update(pc.unique(table.column("source_object")).to_pylist())
                self.buffered += table.num_rows
                if self.buffered > BUFFER_ROWS:  # write the largest buffers until half the budget is free
                    sizes = sorted(((sum(t.num_rows for t in ts), k) for k, ts in self.buf.items()), reverse=True)
                    big, total = [], self.buffered
                    for rows_, k in sizes:
                        if total <= BUFFER_ROWS // 2:
                            break
                        big.append(k)
                        total -= rows_
                    self._flush_buffers(big)
            return
        path = Path(tmp)
        if buf:  # the buffered copies lose: filtering memory is free
            kept = []
            for t in buf:
                dup = pc.is_in(t.column("event_id"), value_set=ids)
                ndup = pc.sum(dup).as_py() or 0
                self.report.duplicates += ndup
                self.buffered -= ndup
                if ndup < t.num_rows:
                    kept.append(t.filter(pc.invert(dup)) if ndup else t)
            if kept:
                self.buf[d] = kept
            else:
                del self.buf[d], self.buf_sources[d]
        if entry:
            existing = pa.chunked_array(list(entry.values()), pa.string())
            dup_mask = pc.is_in(ids, value_set=existing.combine_chunks())
            ndup = pc.sum(dup_mask).as_py() or 0
            if ndup:  # the stored copies win: published files are never rewritten (a reader may have listed them)
                self.report.duplicates += ndup
                if ndup == n:
                    path.unlink(missing_ok=True)
                    return
                path = Path(tmp[:-8] + "-dedup.parquet")
                ids = st.rewrite_filtered(Path(tmp), pc.invert(dup_mask), path)
                n -= ndup
        self._publish(d, path, ids, n)
        self._evict()

    def _flush_buffers(self, only: list[Path] | None = None) -> None:
        """Write buffered parts as one sorted file per partition (files written in parallel threads)."""
        jobs = []
        for d in only if only is not None else list(self.buf):
            tables = self.buf.pop(d, None)
            self.buf_sources.pop(d, None)
            if not tables:
                continue
            table = pa.concat_tables(tables)
            self.buffered -= table.num_rows
            idx = pc.sort_indices(table, sort_keys=[("principal_arn", "ascending"), ("event_time", "ascending")])
            self.buffer_files += 1
            tmp = Path(st.tmp_dir(self.store)) / f"{self.run_id}-buffer-{self.buffer_files:05d}.parquet"
            jobs.append((d, table.take(idx), tmp))
        if len(jobs) > 1:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="miner-flush") as ex:
                list(ex.map(lambda j: st.write_parquet(j[1], j[2]), jobs))
        elif jobs:
            st.write_parquet(jobs[0][1], jobs[0][2])
        for d, table, tmp in jobs:
            self._publish(d, tmp, table.column("event_id").combine_chunks(), table.num_rows)
        self._evict()

    def commit(self, res: _TaskResult) -> None:
        """Publish a task's parts, count its files and queue their manifest rows."""
        rep = self.report
        for p in res.parts:
            self.commit_part(*p)
        rep.records_read += res.read
        rep.duplicates += res.dup
        rep.records_filtered += res.filtered
        for fr in res.files:
            rep.files_read += 1
            status, reason = "ok", None
            if fr.reason:
                rep.skipped.append(SkippedInput(fr.obj.uri, fr.reason, 0))
                status, reason = "skipped", fr.reason
                if fr.reason not in _PERMANENT:
                    continue  # transient (download/read error): not in the manifest, retried next run
            for r, k in fr.skips.items():
                rep.skipped.append(SkippedInput(fr.obj.uri, r, k))
                rep.records_skipped += k
            if fr.recovered:
                rep.recovered.append(SkippedInput(fr.obj.uri, R_RECOVERED, fr.records))
            self.pending.append({"source": fr.obj.uri, "size": fr.obj.size, "version": fr.obj.version,
                                 "records": fr.records, "status": status, "reason": reason, "run_id": self.run_id,
                                 "ingested_at": self.now})
        if len(self.pending) - self.held >= MANIFEST_FLUSH_ROWS or \
                time.monotonic() - self.last_flush > MANIFEST_FLUSH_SECONDS:
            self.flush(final=False)

    def skip(self, obj: SourceObject, reason: str) -> None:
        """Record a file that was not parsed (download error, unsupported type); it is not in the manifest."""
        self.report.skipped.append(SkippedInput(obj.uri, reason, 0))

    def flush(self, final: bool = True) -> None:
        """Write the pending manifest rows of objects whose rows are all published (data always before manifest).

        At the end of a run (``final``) the buffers are published first, so every row goes. Periodic flushes
        leave the buffers in memory (a copy buffered now may still meet the copy it duplicates, for free) and
        hold back the rows of their objects.
        """
        if final:
            self._flush_buffers()
        held = set().union(*self.buf_sources.values()) if self.buf_sources else set()
        ready = [r for r in self.pending if r["source"] not in held] if held else self.pending
        if ready:
            self.manifest_seq += 1
            st.append_manifest(self.store, ready, self.run_id, self.manifest_seq)
            self.pending = [r for r in self.pending if r["source"] in held] if held else []
        self.held = len(self.pending)
        self.last_flush = time.monotonic()


# ============================================================================================== sources and windows


def window_days(window: Window) -> list[date]:
    """The delivery-folder days that can hold records of a window: its UTC days plus the next one.

    CloudTrail names folders by delivery time (minutes after the call), so records from just before midnight sit
    in the next day's folder; one extra day is listed at the end, never any day before the window.

    Args:
        window: the time window.

    Returns:
        The days, ascending.
    """
    first = window.since.astimezone(_UTC).date()
    last = (window.until.astimezone(_UTC) - timedelta(microseconds=1)).date() + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _window_tuple(window: Window | None) -> tuple | None:
    if window is None:
        return None
    # canonical event times have whole seconds: t >= since  <=>  t >= ceil(since); same for until
    def ceil_s(d: datetime) -> str:
        d = d.astimezone(_UTC)
        if d.microsecond:
            d = d.replace(microsecond=0) + timedelta(seconds=1)
        return d.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ceil_s(window.since), ceil_s(window.until), window.since.astimezone(_UTC), window.until.astimezone(_UTC)


def _walk(top: str, visited: set[tuple[int, int]], report: IngestReport) -> Iterator[tuple[str, os.DirEntry | None]]:
    """Files under ``top`` in sorted path order (hidden entries, digest/insight trees pruned).

    ``visited`` holds the (device, inode) of the directories walked or excluded (the store): a directory reached
    again through a symbolic link (a link to a parent would loop) is not walked twice.
    """
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        report.skipped.append(SkippedInput(top, f"{R_READ_ERROR}: {e.strerror or e}", 0))
        return
    dirs = []
    for e in entries:
        name = e.name
        if name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            yield e.path, e
        elif name in SKIPPED_TREES:
            report.trees_skipped[name] = report.trees_skipped.get(name, 0) + 1
        elif name != "__pycache__":
            try:
                s = e.stat()  # follows a link
                key = (s.st_dev, s.st_ino)
            except OSError:  # a dangling or unreadable link: reported when scanned
                key = None
            if key not in visited:
                if key is not None:
                    visited.add(key)
                dirs.append(e.path)
    for d in dirs:
        yield from _walk(d, visited, report)


def _local_objects(src: str, store: Path, days: set[str] | None, accounts: set[str], regions: set[str],
                   report: IngestReport, committer: _Committer) -> list[SourceObject]:
    """Files under a local path, in path order, minus those outside the window/filters by their delivery path."""
    p = Path(src).expanduser()
    if not p.exists():
        raise IngestError(f"no such file or directory: {src}")
    if p.is_file():
        found: Iterable[tuple[str, os.DirEntry | None]] = [(str(p.resolve()), None)]
    elif p.is_dir():
        top = p.stat()
        visited = {(top.st_dev, top.st_ino)}
        try:
            if not st.is_s3(store):
                s = store.stat()
                visited.add((s.st_dev, s.st_ino))  # a store inside the source is never read
        except OSError:
            pass
        found = _walk(str(p.resolve()), visited, report)
    else:
        raise IngestError(f"not a file or directory: {src}")
    out = []
    for path, entry in found:
        try:
            stt = entry.stat() if entry is not None else os.stat(path)
        except OSError as e:
            report.files_seen += 1
            report.skipped.append(SkippedInput(path, f"{R_READ_ERROR}: {e.strerror or e}", 0))
            continue
        obj = SourceObject(path, stt.st_size, str(stt.st_mtime_ns))
        report.files_seen += 1
        name = path.rpartition(os.sep)[2]
        if entry is not None and "." in name and not name.lower().endswith(READ_SUFFIXES):
            committer.skip(obj, f"{R_UNSUPPORTED} (.{name.rpartition('.')[2].lower()})")
            continue
        m = _LAYOUT_DATE.search(path)
        if m and days is not None and f"{m.group(2)}-{m.group(3)}-{m.group(4)}" not in days:
            report.files_filtered += 1
            continue
        if m and regions and m.group(1) not in regions:
            report.files_filtered += 1
            continue
        if accounts:
            ma = _LAYOUT_ACCOUNT.search(path)
            if ma and ma.group(2) not in accounts:
                report.files_filtered += 1
                continue
        out.append(obj)
    return out


# -------------------------------------------------------------------------------------------------------------- S3

_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
             "RequestThrottled", "ServiceUnavailable", "InternalError", "503", "500"}


def make_s3_client(profile: str | None = None, endpoint_url: str | None = None, region: str | None = None,
                   workers: int = 16):
    """A boto3 S3 client with the standard credential chain and adaptive retries (:func:`miner.aws.client_config`).

    Args:
        profile: a named profile of the AWS config (``--profile``).
        endpoint_url: an S3-compatible endpoint (``--endpoint-url``), e.g. a moto server or MinIO.
        region: the client region (default from the environment/config; S3 redirects to the bucket's region).
        workers: download threads (sizes the connection pool).

    Returns:
        A ``botocore`` S3 client.

    Raises:
        IngestError: when the profile does not exist.
    """
    session = aws.session(profile, IngestError)
    cfg = aws.client_config(max_pool_connections=max(10, workers + 4))
    return session.client("s3", endpoint_url=endpoint_url, region_name=region or session.region_name or "us-east-1",
                          config=cfg)


def _s3_error(e: Exception, what: str) -> IngestError:
    """Translate a boto3/botocore exception into one clear line."""
    import botocore.exceptions as be

    common = aws.common_error(e, what, "S3")
    if common:
        return IngestError(common)
    if isinstance(e, be.ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        msg = e.response.get("Error", {}).get("Message", "")
        if code == "NoSuchBucket":
            return IngestError(f"the bucket does not exist ({what})")
        if code in ("AccessDenied", "AllAccessDisabled", "403"):
            return IngestError(f"access denied while {what}: the credentials need s3:ListBucket and s3:GetObject")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return IngestError(f"the AWS credentials were rejected ({code}) while {what}")
        return IngestError(f"S3 error {code} while {what}: {msg}")
    return IngestError(f"{type(e).__name__} while {what}: {e}")


class _Lister:
    """ListObjectsV2 with pagination; counts requests and turns errors into IngestError."""

    def __init__(self, client, bucket: str, report: IngestReport):
        self.client, self.bucket, self.report = client, bucket, report

    def _pages(self, **kw) -> Iterator[dict]:
        import botocore.exceptions as be

        token = None
        while True:
            args = dict(Bucket=self.bucket, **kw)
            if token:
                args["ContinuationToken"] = token
            try:
                self.report.s3_list_requests += 1
                resp = self.client.list_objects_v2(**args)
            except (be.BotoCoreError, be.ClientError) as e:
                raise _s3_error(e, f"listing s3://{self.bucket}/{kw.get('Prefix', '')}") from None
            yield resp
            if not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")

    def dirs(self, prefix: str) -> list[str]:
        """Immediate sub-prefixes of ``prefix`` (Delimiter='/')."""
        out = []
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            out.extend(cp["Prefix"] for cp in page.get("CommonPrefixes", []))
        return out

    def objects(self, prefix: str) -> Iterator[SourceObject]:
        """Every object under ``prefix`` (only ever called on a day folder or an explicit non-layout prefix)."""
        for page in self._pages(Prefix=prefix):
            for o in page.get("Contents", []):
                yield SourceObject(f"s3://{self.bucket}/{o['Key']}", int(o.get("Size", 0)),
                                   str(o.get("ETag", "")).strip('"'), self.bucket, o["Key"])


def _s3_region_prefixes(lister: _Lister, prefix: str, accounts: set[str], regions: set[str],
                        report: IngestReport) -> tuple[list[str], str]:
    """Find ``.../AWSLogs/[o-org/]<acct>/CloudTrail/<region>/`` prefixes with Delimiter listings only.

    Returns:
        (region prefixes, a date prefix such as ``2026/08`` when the user's prefix went below the region level).
    """
    base, sep, rest = prefix.partition("AWSLogs/")
    if not sep:
        base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        rest = ""
    comps = [c for c in rest.split("/") if c]
    root = base + "AWSLogs/"
    org = comps.pop(0) if comps and _ORG.match(comps[0]) else None
    acct = comps.pop(0) if comps else None
    trail_dir = comps.pop(0) if comps else None
    region = comps.pop(0) if comps else None
    date_prefix = "/".join(comps)
    if trail_dir is not None and trail_dir != "CloudTrail":
        raise IngestError(f"s3://{lister.bucket}/{prefix} is not a CloudTrail log tree (expected .../CloudTrail/...)")

    # accounts (and organization ids)
    if acct is not None:
        acct_prefixes = [f"{root}{org}/{acct}/" if org else f"{root}{acct}/"]
    else:
        tops = [f"{root}{org}/"] if org else lister.dirs(root)
        if not tops:
            raise IngestError(f"no CloudTrail logs under s3://{lister.bucket}/{root} (expected "
                              f"AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/)")
        acct_prefixes = []
        for t in tops:
            name = t[len(root):].strip("/").split("/")[-1]
            if _ORG.match(name):
                acct_prefixes.extend(lister.dirs(t))
            else:
                acct_prefixes.append(t)
    if accounts:
        found = sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in acct_prefixes})
        acct_prefixes = [p for p in acct_prefixes if p.rstrip("/").rsplit("/", 1)[-1] in accounts]
        if not acct_prefixes:
            raise IngestError(f"no log tree for --account {', '.join(sorted(accounts))} under "
                              f"s3://{lister.bucket}/{root} (accounts found: {', '.join(found) or 'none'})")

    out = []
    seen_regions: set[str] = set()
    for ap in acct_prefixes:
        if trail_dir is None:
            subs = lister.dirs(ap)
            for s in subs:
                name = s[len(ap):].strip("/")
                if name in SKIPPED_TREES:
                    report.trees_skipped[name] = report.trees_skipped.get(name, 0) + 1
            if ap + "CloudTrail/" not in subs:
                continue
        ct = ap + "CloudTrail/"
        regs = [f"{ct}{region}/"] if region else lister.dirs(ct)
        for rp in regs:
            name = rp[len(ct):].strip("/")
            seen_regions.add(name)
            if not regions or name in regions:
                out.append(rp)
    if regions and not out and seen_regions:
        raise IngestError(f"no log tree for --region {', '.join(sorted(regions))} (regions found: "
                          f"{', '.join(sorted(seen_regions))})")
    return out, date_prefix


def _s3_objects(lister: _Lister, prefix: str, window: Window, accounts: set[str], regions: set[str],
                report: IngestReport) -> Iterator[SourceObject]:
    """Objects of the window: one listing per (account, region, day folder); never a recursive list of AWSLogs/."""
    region_prefixes, date_prefix = _s3_region_prefixes(lister, prefix, accounts, regions, report)
    days = [d.strftime("%Y/%m/%d") for d in window_days(window)]
    if date_prefix:
        days = [d for d in days if (d + "/").startswith(date_prefix.rstrip("/") + "/")]
    for rp in region_prefixes:
        for d in days:
            yield from lister.objects(f"{rp}{d}/")


def _s3_flat_objects(lister: _Lister, prefix: str, days: set[str] | None, report: IngestReport
                     ) -> Iterator[SourceObject]:
    """An explicit prefix that is not the AWSLogs layout: list it (filtered by path date where the layout shows)."""
    for obj in lister.objects(prefix):
        m = _LAYOUT_DATE.search(obj.key or "")
        if m and days is not None and f"{m.group(2)}-{m.group(3)}-{m.group(4)}" not in days:
            report.files_filtered += 1
            continue
        yield obj


def _download(client, obj: SourceObject, limit: int = MAX_OBJECT_BYTES, attempts: int = 6
              ) -> tuple[SourceObject, bytes | str]:
    """GET one object with backoff on throttling and broken streams; returns bytes or an error reason (also when
    it is larger than ``limit`` bytes: then it is not downloaded)."""
    import botocore.exceptions as be

    if obj.size > limit:
        return obj, R_TOO_BIG
    delay = 0.2
    last = ""
    for attempt in range(attempts):
        try:
            resp = client.get_object(Bucket=obj.bucket, Key=obj.key)
            if int(resp.get("ContentLength") or 0) > limit:  # (replaced since it was listed)
                resp["Body"].close()
                return obj, R_TOO_BIG
            return obj, resp["Body"].read()
        except be.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            last = code
            if code not in _THROTTLE:
                return obj, f"{R_DOWNLOAD}: {code}"
        except (be.BotoCoreError, OSError) as e:  # read timeouts, incomplete reads, reset connections
            last = type(e).__name__
        time.sleep(delay * (2 ** attempt) * (0.5 + random.random()))
    return obj, f"{R_DOWNLOAD}: {last} after {attempts} attempts"


def _fetch(objs: Iterator[SourceObject], client, workers: int, limit: int
           ) -> Iterator[tuple[SourceObject, bytes | str | None]]:
    """Local objects pass through (workers read them); S3 objects are downloaded by a thread pool."""
    if client is None:
        for o in objs:
            yield o, None
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="miner-s3") as ex:
        pending: set = set()
        for o in objs:
            pending.add(ex.submit(_download, client, o, limit))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()


# ============================================================================================== the run


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[5:]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise IngestError(f"no bucket name in {uri!r} (expected s3://bucket/prefix)")
    return bucket, prefix


def ingest(sources: Sequence[str], store: Path, *, window: Window | None = None, accounts: Iterable[str] = (),
           regions: Iterable[str] = (), workers: int = 16, processes: int | None = None, profile: str | None = None,
           endpoint_url: str | None = None, s3_region: str | None = None, s3_client=None,
           progress: Callable[[Progress], None] | None = None, now: datetime | None = None,
           task_bytes: int = TASK_BYTES, max_object_size: int = MAX_OBJECT_BYTES, engine: str = "duckdb",
           spark_master: str | None = None, spark=None, cloudtrail_endpoint_url: str | None = None) -> IngestReport:
    """Ingest CloudTrail logs into the store: new objects only, deduplicated, committed atomically.

    With ``engine="spark"`` the parse tasks run on Spark executors instead of local processes (an executor
    downloads its S3 objects with its own client, built from ``profile``/``endpoint_url``/``s3_region``), and the
    executors also dedupe and publish the parts, each store partition of a wave by one Spark task; listing, the
    lock and the manifest stay on the driver, with the same rules as the local engine.

    A ``cloudtrail://REGION[,REGION...]`` source reads the event history of the caller's account through CloudTrail
    ``LookupEvents`` (:mod:`miner.lookup`): management events only, the last 90 days at most (the window is clipped,
    with a note), in UTC-day slices recorded in the manifest as they finish, so a re-run reads only the others.

    Args:
        sources: local files/folders, ``s3://bucket/prefix`` URIs and/or ``cloudtrail://REGION`` sources.
        store: the store root (created when missing): a folder, an ``s3://bucket/prefix`` URL or a location from
            :func:`miner.store.root` (which carries the S3 endpoint and profile of the store).
        window: keep only records in ``[since, until)``; local files in the delivery layout outside it are not
            read. ``None``: everything for local sources, the last :data:`S3_DEFAULT_DAYS` days for S3.
        accounts: restrict to these account ids (S3 listing and records).
        regions: restrict to these regions (S3 listing and records).
        workers: S3 download threads.
        processes: parser processes (default: the CPUs available to this process).
        profile: AWS profile for S3.
        endpoint_url: S3 endpoint override.
        s3_region: region of the S3 client.
        s3_client: a ready boto3 S3 client (tests); overrides profile/endpoint/region.
        progress: called with a :class:`Progress` as the run advances.
        now: the current time (default: the real clock, read at call time).
        task_bytes: estimated decompressed bytes per parser task.
        max_object_size: largest object read, in bytes once decompressed; a bigger one is skipped (a gzip stops
            inflating there).
        engine: where parse tasks run: ``duckdb`` (local processes, the default) or ``spark``.
        spark_master: with ``spark``, the master URL (see :func:`miner.engine.spark_session`).
        spark: with ``spark``, a ready SparkSession (tests); overrides ``spark_master``.
        cloudtrail_endpoint_url: CloudTrail endpoint override for ``cloudtrail://`` sources.

    Returns:
        The :class:`IngestReport` of the run.

    Raises:
        IngestError: a source is missing or unreachable (nothing is written for that source).
        miner.engine.EngineError: ``engine`` is unknown, or Spark is not installed or cannot start.
        miner.store.StoreError: another ingest holds the store lock, or the store's disk is full (what was
            committed before stays readable).
    """
    t0 = time.monotonic()
    now = now or datetime.now(_UTC)
    store = st.root(store, profile=profile)  # (an s3:// store: the source's profile, the store's own endpoint)
    accounts = {str(a) for a in accounts}
    regions = {str(r) for r in regions}
    if not sources:
        raise IngestError("no SOURCE given")
    if engine != "duckdb":
        from miner import engine as engines

        if engine not in engines.ENGINES:
            raise engines.EngineError(f"unknown engine {engine!r} (one of {', '.join(engines.ENGINES)})")
        spark = spark or engines.spark_session(spark_master)
    else:
        spark = None
    for s in sources:
        if s.startswith("s3://"):
            _split_s3(s)
        elif lookup.is_source(s):
            with _lookup_errors():
                lookup.regions_of(s)
        elif not Path(s).expanduser().exists():
            raise IngestError(f"no such file or directory: {s}")
    report = IngestReport(store=str(store))
    run_id = st.new_run_id(now)
    report.run_id = run_id
    s3_window = window or Window(now - timedelta(days=S3_DEFAULT_DAYS), now)
    if window is not None:
        report.window = str(window)
    elif any(s.startswith("s3://") for s in sources):
        report.window = f"{s3_window} (S3 default: last {S3_DEFAULT_DAYS} days)"
    filt = (frozenset(accounts), frozenset(regions)) if accounts or regions else None
    prog = Progress()
    created = not st.is_s3(store) and not store.exists()

    with _disk_full_is_a_store_error(store), st.write_lock(store) as lock:
        if lock.took_over:
            report.notes.append(lock.took_over)
        report.tmp_files_cleaned = st.clean_tmp(store)
        st.compact_manifest(store, run_id)
        tmp = str(st.tmp_dir(store))
        known = st.manifest_index(store)
        committer = _Committer(store, run_id, report, now)
        pool: list[Executor] = []
        n_proc = max(1, int(processes or _cpus()))
        failed = False
        try:
            for src in sources:
                if lookup.is_source(src):
                    with _lookup_errors():
                        _run_lookup(src, store, window, now, profile, cloudtrail_endpoint_url, filt,
                                    max_object_size, tmp, run_id, report, committer, prog, progress, pool)
                    continue
                if src.startswith("s3://"):
                    bucket, prefix = _split_s3(src)
                    client = s3_client or make_s3_client(profile, endpoint_url, s3_region, workers)
                    lister = _Lister(client, bucket, report)
                    win = _window_tuple(window or s3_window)
                    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
                    if not folder or folder.startswith("AWSLogs/") or "/AWSLogs/" in folder \
                            or lister.dirs(folder + "AWSLogs/"):
                        objs: Iterator[SourceObject] = _s3_objects(lister, folder, window or s3_window, accounts,
                                                                   regions, report)
                    else:  # an explicit prefix outside the AWSLogs layout: its own objects
                        days = {d.isoformat() for d in window_days(window or s3_window)}
                        objs = _s3_flat_objects(lister, prefix, days, report)
                    objs = _first_then_lazy(objs)  # surfaces listing errors (no bucket, denied) before any work
                    total_est = folders = None
                else:
                    client = None
                    win = _window_tuple(window)
                    days = {d.isoformat() for d in window_days(window)} if window else None
                    local = _local_objects(src, store, days, accounts, regions, report, committer)
                    objs = iter(local)
                    todo = [o for o in local if known.get(o.uri) != (o.size, o.version)]
                    total_est = sum(o.estimate for o in todo)
                    folders = {}
                    for o in todo:
                        k = o.uri.rpartition("/")[0]
                        folders[k] = folders.get(k, 0) + (o.size if o.uri.endswith(".gz") else o.size // GZIP_RATIO)
                if spark is not None:
                    _run_source_spark(spark, objs, (profile, endpoint_url, s3_region, workers), win, filt, n_proc,
                                      task_bytes, max_object_size, run_id, known, report, committer, prog,
                                      progress, total_est, folders, (st.location(store), run_id, lock.owner))
                else:
                    _run_source(objs, client, win, filt, workers, n_proc, task_bytes, max_object_size, tmp, run_id,
                                known, report, committer, prog, progress, pool, total_est, folders)
        except BaseException:
            failed = True
            raise
        finally:
            for p in pool:
                p.shutdown(wait=True, cancel_futures=True)
            try:
                committer.flush()  # what was published is recorded, also after an interruption
            except Exception:
                if not failed:
                    raise  # (after a failure, the first error is the one reported)
            st.clean_tmp(store)
            st.tidy_after_write(store, created=created)
    report.seconds = round(time.monotonic() - t0, 3)
    return report


@contextmanager
def _lookup_errors() -> Iterator[None]:
    """A :class:`miner.lookup.LookupEventsError` as an :class:`IngestError` (one line)."""
    try:
        yield
    except lookup.LookupEventsError as e:
        raise IngestError(str(e)) from None


def _run_lookup(src: str, store: Path, window: Window | None, now: datetime, profile: str | None,
                endpoint_url: str | None, filt, object_limit: int, tmp: str, run_id: str, report: IngestReport,
                committer: _Committer, prog: Progress, progress: Callable[[Progress], None] | None,
                pool: list[Executor]) -> None:
    """Ingest one ``cloudtrail://`` source: the slices no earlier run finished, read through LookupEvents
    (:func:`miner.lookup.fetch`), each piece parsed and committed as a file source's object is; malformed
    results are counted as skipped records."""
    win, note = lookup.clip(window, now)
    if note and note not in report.notes:
        report.notes.append(note)
    report.window = report.window or f"{win} (LookupEvents: at most the last {lookup.MAX_DAYS} days)"
    spans = lookup.finished_spans(store)
    work: dict[str, tuple[object, list]] = {}
    account = None
    for region in lookup.regions_of(src):
        client, session = lookup.make_client(region, profile, endpoint_url)
        account = account or lookup.caller_account(session, region)
        slices = lookup.day_slices(win, account, region)
        todo = [s for s in slices if not lookup.is_finished(s, spans)]
        report.lookup_slices += len(slices)
        report.lookup_slices_done_before += len(slices) - len(todo)
        report.lookup_windows.append(f"{account} {region} {win}")
        prog.days_total += sum((s.end - s.start).total_seconds() for s in todo) / 86400
        if todo:
            work[region] = (client, todo)
    if not work:
        return
    stats = lookup.Stats()
    done_before, read_before = prog.days_done, report.files_read

    def fetched() -> Iterator[tuple[SourceObject, bytes]]:
        for item in lookup.fetch(work, per_second=lookup.rate(), now=now, stats=stats):
            prog.requests = report.lookup_requests + stats.requests
            prog.days_done = done_before + stats.covered / 86400
            if isinstance(item, lookup.Failed):
                report.lookup_slices_failed += 1
                committer.skip(SourceObject(item.slice.uri, 0, ""), f"{R_DOWNLOAD}: {item.reason}")
            elif isinstance(item, lookup.Chunk):
                uri = item.slice.uri
                for reason, n in sorted(item.bad.items()):
                    report.skipped.append(SkippedInput(uri, reason, n))
                    report.records_skipped += n
                    report.records_read += n
                yield SourceObject(uri, len(item.payload), lookup.COMPLETE if item.complete else lookup.PARTIAL), \
                    item.payload
                if item.last:  # (committed by now: the tasks run one by one) publish the slice and record it, so
                    committer.flush()  # that a killed run loses at most the slices in flight
                continue
            if progress:
                progress(prog)

    try:
        _run_source(iter(()), None, _window_tuple(win), filt, 1, 1, 1, object_limit, tmp, run_id, {}, report,
                    committer, prog, progress, pool, fetched=fetched())
    finally:
        report.lookup_requests += stats.requests
        report.lookup_retries += stats.retries
        report.files_read = read_before  # (pieces of slices are not files: the summary counts slices)


@contextmanager
def _disk_full_is_a_store_error(store: Path) -> Iterator[None]:
    """Turn a full disk (or quota) into one :class:`miner.store.StoreError` line naming the store."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise st.StoreError(f"no space left for the store at {store} ({e.strerror}): free some space and run "
                            f"again; what was committed is safe, and the next run completes it") from None


def _cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _first_then_lazy(objs: Iterator[SourceObject]) -> Iterator[SourceObject]:
    """Pull the first item now (so discovery errors raise here), then continue lazily."""
    it = iter(objs)
    first = next(it, None)
    return iter(()) if first is None else chain([first], it)


def _run_source(objs: Iterator[SourceObject], client, win, filt, workers: int, n_proc: int, task_bytes: int,
                object_limit: int, tmp: str, run_id: str, known: dict, report: IngestReport, committer: _Committer,
                prog: Progress, progress: Callable[[Progress], None] | None, pool: list[Executor],
                total_est: int | None = None, folders: dict[str, int] | None = None,
                run_tasks: Callable[[Iterator[_Task]], Iterator[_TaskResult]] | None = None,
                fetched: Iterator[tuple[SourceObject, bytes]] | None = None) -> None:
    """Stream one source's objects through download -> parse tasks -> commit (objects larger than
    ``object_limit`` bytes, decompressed, are skipped).

    ``fetched`` (LookupEvents) replaces ``objs`` with objects already in memory, each parsed as a task of its own
    as soon as it arrives (with ``n_proc`` 1, in order, so the manifest row of a slice's last piece comes after
    the rows of its other pieces).

    ``total_est`` (known for local sources) lets the last tasks shrink so that the workers finish together;
    ``folders`` (compressed bytes per folder, local sources) lets tasks end where a folder ends. ``run_tasks``
    (Spark) runs the tasks elsewhere and yields their results; the commit stays here.
    """

    def new_objects() -> Iterator[SourceObject]:
        for o in objs:
            if o.bucket is not None:
                report.files_seen += 1
            prog.files_total += 1
            if known.get(o.uri) == (o.size, o.version):
                report.files_already_ingested += 1
                prog.files_done += 1
                continue
            yield o

    def tasks() -> Iterator[_Task]:
        # Local objects arrive in path order: a task ends where a folder (one account/region/day of the delivery
        # layout) ends when the next folder would not fit, so a partition rarely spans two tasks (no cross-task
        # duplicates to rewrite); only a folder larger than a task is split.
        items: list = []
        est = 0
        left = total_est
        limit = task_bytes
        folder = None
        ratio = gz_ratio
        behind: list = []
        source = fetched if fetched is not None else _fetch(new_objects(), client, workers, object_limit)
        for obj, payload in source:
            if isinstance(payload, str):
                committer.skip(obj, payload)
                prog.files_done += 1
                continue
            here = obj.uri.rpartition("/")[0]
            if items and (len(items) >= TASK_MAX_FILES or est >= limit or (
                    here != folder and folders is not None and est + folders.get(here, 0) * ratio[0] > limit)):
                yield _Task(_next_task_number(), items, tmp, run_id, win, filt, behind, object_limit)
                behind = [o for o, _ in items[-LOOK_BEHIND_FILES:] if o.uri.rpartition("/")[0] == here] \
                    if folders is not None else []
                if left is not None:
                    left -= est
                    limit = min(task_bytes, max(task_bytes // 8, left // (2 * n_proc)))
                items, est = [], 0
            folder = here
            items.append((obj, payload))
            est += int(obj.size * ratio[0]) if obj.uri.endswith(".gz") else obj.size
            if fetched is not None:
                yield _Task(_next_task_number(), items, tmp, run_id, win, filt, [], object_limit)
                items, est = [], 0
        if items:
            yield _Task(_next_task_number(), items, tmp, run_id, win, filt, behind, object_limit)

    gz_ratio = [float(GZIP_RATIO)]
    seen_gz = [0, 0]

    def done(res: _TaskResult) -> None:
        if res.gzip_bytes:
            seen_gz[0] += res.gzip_bytes
            seen_gz[1] += res.gunzip_bytes
            gz_ratio[0] = max(1.0, seen_gz[1] / seen_gz[0])
        committer.commit(res)
        prog.files_done += len(res.files)
        prog.records += res.read
        if progress:
            progress(prog)

    it = tasks()
    if run_tasks is not None:
        if progress:
            progress(prog)
        for res in run_tasks(it):
            for obj, reason in res.unread:
                committer.skip(obj, reason)
                prog.files_done += 1
            done(res)
        return
    first = next(it, None)
    second = next(it, None) if first is not None and n_proc > 1 else None
    if second is None or n_proc <= 1:
        if progress:
            progress(prog)
        for t in chain([first] if first else [], [second] if second else [], it):
            done(_result(t, partial(_process_task, t)))
        return
    if not pool:
        pool.append(_new_pool(n_proc))
    ex = pool[0]
    pending: dict = {}
    for t in chain([first, second], it):
        pending[ex.submit(_process_task, t)] = t
        if len(pending) == 1:
            gc.unfreeze()  # see _new_pool
            if progress:
                progress(prog)
        while len(pending) >= 2 * n_proc:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done(_result(pending.pop(f), f.result))
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in finished:
            done(_result(pending.pop(f), f.result))


def _run_source_spark(spark, objs: Iterator[SourceObject], s3: tuple, win, filt, n_proc: int, task_bytes: int,
                      object_limit: int, run_id: str, known: dict, report: IngestReport, committer: _Committer,
                      prog: Progress, progress: Callable[[Progress], None] | None, total_est: int | None,
                      folders: dict[str, int] | None, target: tuple) -> None:
    """:func:`_run_source` with parsing and writing on Spark executors, in waves (see :func:`_spark_waves`).

    S3 objects are not downloaded here: tasks carry references, an executor fetches them with its own client from
    ``s3`` = (profile, endpoint, region, threads). ``target`` = (:func:`miner.store.location` of the store, run id,
    :attr:`miner.store.WriteLock.owner`) tells the writers where to publish, and under whose lock. Only counts, part
    names and the tasks' file reports come back; the driver counts them and writes the manifest.
    """
    try:
        slots = int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect: no SparkContext
        slots = n_proc

    def run(tasks: Iterator[_Task]) -> Iterator[_TaskResult]:
        for results, parts in _spark_waves(spark, tasks, s3, target, slots, committer):
            for p in parts:  # every part of the wave is published: its sources may enter the manifest now
                committer.count_published(*p)
            yield from results

    _run_source(objs, None, win, filt, s3[3], max(n_proc, slots), task_bytes, object_limit, None, run_id, known,
                report, committer, prog, progress, [], total_est, folders, run_tasks=run)


#: Parse tasks per Spark job ("wave"), per executor slot. A wave's store partitions are each written by one task;
#: the next wave starts once they are published (its dedupe reads them), so a wave ends with idle slots: big waves
#: keep that short, small ones publish (and record in the manifest) sooner.
SPARK_WAVE_TASKS_PER_SLOT = 8
#: Write tasks of a wave per executor slot (store partitions are hashed to them).
SPARK_WRITERS_PER_SLOT = 4

#: Rows of a wave's parse stage: a part of one store partition (``key`` = ``account/region/date``, ``blob`` an
#: Arrow IPC stream) or, with ``report``, the task's pickled :class:`_TaskResult` without its parts.
_SPARK_PARSED = "key string, task long, report boolean, blob binary"
#: Rows of a wave's write stage: a task's report, passed through, or a pickled :meth:`_PartWriter.write` result.
_SPARK_WRITTEN = "task long, report boolean, blob binary"


def _spark_waves(spark, tasks: Iterator[_Task], s3: tuple, target: tuple, slots: int,
                 committer: _Committer) -> Iterator[tuple[list[_TaskResult], list[tuple]]]:
    """Run tasks on Spark, one job per wave of :data:`SPARK_WAVE_TASKS_PER_SLOT` tasks per slot; yield each wave's
    task results (in task order, without parts) and the parts its writers published.

    A wave is one job of two stages: parse (one Spark task per parse task, ``mapInArrow``), then a shuffle on the
    store partition (``repartition`` on ``account/region/date``) into :data:`SPARK_WRITERS_PER_SLOT` write tasks
    per slot, so each store partition of the wave is written by one task (:class:`_PartWriter`): the dedupe on
    eventID needs no other step. The next wave's tasks are cut while this one runs; it is submitted once this one
    is published.
    """
    import pickle
    from itertools import islice

    wave = max(2, SPARK_WAVE_TASKS_PER_SLOT * slots)
    writers = max(1, SPARK_WRITERS_PER_SLOT * slots)

    def submit(batch: list[_Task], number: int):
        rows = [(i, pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)) for i, t in enumerate(batch)]
        df = spark.createDataFrame(rows, "i long, task binary").repartitionByRange(len(rows), "i")
        parsed = df.mapInArrow(partial(_spark_parse, s3=s3), _SPARK_PARSED)
        out = parsed.repartition(writers, "key").mapInArrow(partial(_spark_write, target=target, wave=number),
                                                            _SPARK_WRITTEN)
        try:
            got = out.collect()
        except Exception as e:  # a writer's StoreError (lock lost, S3 refused) as its one line
            line = re.search(r"miner\.store\.StoreError: ([^\n]+)", str(e))
            if line:
                raise st.StoreError(line.group(1)) from None
            raise
        reports = sorted((r["task"], r["blob"]) for r in got if r["report"])
        return [pickle.loads(b) for _, b in reports], [pickle.loads(r["blob"]) for r in got if not r["report"]]

    def number() -> int:  # waves are numbered run-wide: part-<run>-<wave>.parquet is unique in its partition
        committer.seq += 1
        return committer.seq

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="miner-spark") as ex:
        batch = list(islice(tasks, wave))
        fut = ex.submit(submit, batch, number()) if batch else None
        while fut is not None:
            nxt = list(islice(tasks, wave))  # (listing the next wave while this one runs)
            done = fut.result()
            fut = ex.submit(submit, nxt, number()) if nxt else None
            yield done


_EXECUTOR_S3: dict = {}  # one S3 client per executor process and source settings
_EXECUTOR_WRITERS: dict = {}  # one _PartWriter per executor process and target


def _spark_parse(batches: Iterator[pa.RecordBatch], s3: tuple) -> Iterator[pa.RecordBatch]:
    """Executor side, parse stage (``mapInArrow``): run each pickled :class:`_Task`; one row per part it made
    (keyed by store partition) and one with its report (see :data:`_SPARK_PARSED`)."""
    import pickle

    schema = pa.schema([("key", pa.string()), ("task", pa.int64()), ("report", pa.bool_()), ("blob", pa.binary())])
    for b in batches:
        for blob in b.column("task").to_pylist():
            res = _executor_task(pickle.loads(blob), s3)
            keys = ["/".join(st.partition_value(v) for v in p[:3]) for p in res.parts]
            blobs = [_ipc_bytes(p[6].table, "lz4") for p in res.parts]
            res.parts = []
            keys.append(f"#{res.number}")
            blobs.append(pickle.dumps(res, protocol=5))
            yield pa.RecordBatch.from_arrays(
                [pa.array(keys, pa.string()), pa.array([res.number] * len(keys), pa.int64()),
                 pa.array([False] * (len(keys) - 1) + [True], pa.bool_()), pa.array(blobs, pa.binary())],
                schema=schema)


def _spark_write(batches: Iterator[pa.RecordBatch], target: tuple, wave: int) -> Iterator[pa.RecordBatch]:
    """Executor side, write stage (``mapInArrow`` after the shuffle): pass the task reports through; gather the
    parts of each store partition (every part of the wave for that partition lands here) and write them as one
    file with :class:`_PartWriter` (see :data:`_SPARK_WRITTEN`)."""
    import pickle

    schema = pa.schema([("task", pa.int64()), ("report", pa.bool_()), ("blob", pa.binary())])
    parts: dict[str, list[tuple[int, bytes]]] = {}
    for b in batches:
        cols = [b.column(c).to_pylist() for c in ("key", "task", "report", "blob")]
        for key, task, report, blob in zip(*cols):
            if report:
                yield pa.RecordBatch.from_pydict({"task": [task], "report": [True], "blob": [blob]}, schema)
            else:
                parts.setdefault(key, []).append((task, blob))
    if not parts:
        return
    writer = _EXECUTOR_WRITERS.get(target)
    if writer is None:
        writer = _EXECUTOR_WRITERS[target] = _PartWriter(*target)
    for key in sorted(parts):
        blobs = sorted(parts.pop(key), key=lambda p: p[0])  # task order: the first copy of an event id wins
        done = writer.write(key, [pa.ipc.open_stream(blob).read_all() for _, blob in blobs], wave)
        yield pa.RecordBatch.from_pydict({"task": [-1], "report": [False], "blob": [pickle.dumps(done)]}, schema)


class _PartWriter:
    """Executor side: writes one wave's rows of a store partition as one part, under the driver's lock.

    The same rules as :class:`_Committer`: no event id twice in a partition (the first copy in task order wins
    within the wave; the copies already published win over new ones, read from the ``event_id`` column of the
    partition's files), write in the store's scratch (``_tmp/``, or the local scratch of a store on S3), then
    publish whole (a rename, or one PutObject), never rewriting a published file. Before each publish it checks that
    the driver still holds the store lock (a task left running by a killed driver publishes nothing once another
    run has taken the lock over).
    """

    def __init__(self, location: tuple, run_id: str, owner: str | None):
        self.root = st.reopen(location)
        self.run_id = run_id
        self.owner = owner

    def write(self, key: str, tables: list[pa.Table], wave: int) -> tuple:
        """Dedupe and publish one partition's rows of a wave.

        Returns:
            ``(account, region, day, part name or None, rows written, duplicates dropped)`` (partition values as
            in the store's paths).
        """
        import hashlib

        account, region, day = key.split("/")
        d = st.partition_dir(self.root, account, region, day)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        n = table.num_rows
        table = _first_copies(table)
        known = [st.file_event_ids(f) for f in sorted(d.glob("*.parquet"))]
        if known:
            dup = pc.is_in(table.column("event_id"), value_set=pa.chunked_array(known, pa.string()).combine_chunks())
            if pc.any(dup).as_py():  # the stored copies win: published files are never rewritten
                table = table.filter(pc.invert(dup))
        if not table.num_rows:
            return account, region, day, None, 0, n
        name = f"part-{self.run_id}-{wave:05d}.parquet"
        tmp = st.tmp_dir(self.root) / f"{self.run_id}-w{wave:05d}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.parquet"
        try:
            idx = pc.sort_indices(table, sort_keys=[("principal_arn", "ascending"), ("event_time", "ascending")])
            st.write_parquet(table.take(idx), tmp)
            if not st.lock_held_by(self.root, self.owner):
                raise st.StoreError(f"the ingest that started this Spark job no longer holds the lock of the store "
                                    f"{self.root}; its parts are not published")
            st.publish(tmp, d / name)
        finally:
            Path(tmp).unlink(missing_ok=True)  # (gone once published; a failed write leaves nothing behind)
        return account, region, day, name, table.num_rows, n - table.num_rows


def _first_copies(table: pa.Table) -> pa.Table:
    """The rows of ``table`` whose ``event_id`` was not met in an earlier row (order kept)."""
    ids = table.column("event_id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    first = pa.table({"id": ids, "i": pa.array(range(table.num_rows), pa.int64())}).group_by(
        "id", use_threads=False).aggregate([("i", "min")]).column("i_min")
    return table.take(first.take(pc.sort_indices(first)))


def _executor_task(task: _Task, s3: tuple) -> _TaskResult:
    """Download the task's S3 objects (threads, the executor's own client), then parse as a local worker does."""
    unread: list = []
    if any(o.bucket is not None and p is None for o, p in task.items):
        profile, endpoint, region, workers = s3
        client = _EXECUTOR_S3.get(s3)
        if client is None:
            client = _EXECUTOR_S3[s3] = make_s3_client(profile, endpoint, region, workers)
        local = [(o, p) for o, p in task.items if o.bucket is None or p is not None]
        remote = iter([o for o, p in task.items if o.bucket is not None and p is None])
        for obj, payload in _fetch(remote, client, workers, task.limit):
            if isinstance(payload, str):
                unread.append((obj, payload))
            else:
                local.append((obj, payload))
        task.items = local
    res = _result(task, partial(_process_task, task)) if task.items else _TaskResult(task.number, [], [])
    res.unread = unread
    return res


def _result(task: _Task, get: Callable[[], _TaskResult]) -> _TaskResult:
    """A task's result; when parsing met an unexpected error, its files are reported (and retried by the next run)
    and the run goes on. Errors of the machine (OSError such as a full disk, a broken worker pool) stop it."""
    try:
        return get()
    except (OSError, MemoryError, BrokenProcessPool):
        raise
    except Exception as e:
        reason = f"{R_INTERNAL}: {type(e).__name__}: {e}"[:200]
        return _TaskResult(task.number, [_FileResult(obj, reason=reason) for obj, _ in task.items], [])


def _new_pool(n_proc: int) -> ProcessPoolExecutor:
    """Parser processes: forked when this process runs no other thread (instant start, nothing re-imported),
    else started from a fork server (safe with threads, e.g. S3 downloads or a progress bar).

    With fork, the workers are created at the first submit; objects alive then are frozen out of the garbage
    collector (``gc.freeze``) so the children never touch, and copy, the parent's pages; the caller unfreezes.
    """
    import threading

    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    init = {"initializer": _worker_init, "initargs": (os.getpid(),)}
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        gc.freeze()
        return ProcessPoolExecutor(max_workers=n_proc, mp_context=multiprocessing.get_context("fork"), **init)
    if main_file and getattr(main, "__spec__", None) is None and not os.path.isfile(main_file):
        # e.g. `python - < script`: the fork server could not re-import the main module
        return ProcessPoolExecutor(max_workers=n_proc, mp_context=multiprocessing.get_context("fork"), **init)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["miner.ingest"])
    return ProcessPoolExecutor(max_workers=n_proc, mp_context=ctx, **init)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _worker_init(ingest_pid: int) -> None:
    """First thing in every parser process: make it die with the ingest process, however that ends (``kill -9``,
    OOM killer).

    Two guards: the kernel's parent-death signal (a forked worker's parent is the ingest process), and a thread
    that waits for the ingest process to end (a fork server's workers keep the fork server alive, so only watching
    the ingest process itself ends them). Forked workers never hold the store lock (see
    :func:`miner.store.write_lock`).
    """
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    threading.Thread(target=_exit_with, args=(ingest_pid,), name="miner-watch", daemon=True).start()


def _exit_with(pid: int) -> None:
    """Wait until process ``pid`` has ended (a pidfd where the kernel has them, else polling), then exit."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and st.pid_alive(pid):  # (checked after opening: the pid cannot be reused meanwhile)
        select.select([fd], [], [])
    else:
        while st.pid_alive(pid):
            time.sleep(0.5)
    os._exit(1)


_TASK_NO = [0]


def _next_task_number() -> int:
    _TASK_NO[0] += 1
    return _TASK_NO[0]


#: The manifest of ingested objects (re-exported from :func:`miner.store.read_manifest`).
read_manifest = st.read_manifest
