"""CloudTrail LookupEvents as an ingest source (``cloudtrail://REGION``): rate-limited, paginated, in day slices."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import orjson

from miner import aws
from miner import store as st
from miner.models import ACCOUNT_ID_SHAPE, REGION_SHAPE, Window

#: The scheme of a LookupEvents source: ``cloudtrail://us-east-1`` or ``cloudtrail://us-east-1,eu-west-1``.
SCHEME = "cloudtrail://"
#: How far back LookupEvents answers (AWS keeps management events this long in the event history).
MAX_DAYS = 90
#: LookupEvents' own limit of requests per second per account and region (``$MINER_LOOKUP_RATE`` overrides it).
DEFAULT_RATE = 2.0
#: Largest page LookupEvents returns.
MAX_RESULTS = 50
#: Threads per region: they share the region's rate limiter, so a second one only hides the latency of the first.
THREADS_PER_REGION = 2
#: Events handed to the parser at a time (a slice of a busy day is committed in several pieces).
CHUNK_EVENTS = 5000
#: A slice is recorded as finished only when it ended this long before the run started: CloudTrail makes events
#: visible to LookupEvents minutes after the call (not guaranteed), so a later run fetches a recent slice again.
SETTLE = timedelta(hours=1)
#: Manifest ``version`` of a finished slice's last piece (a re-run skips the slice), and of every other piece.
COMPLETE = "LookupEvents:complete"
PARTIAL = "LookupEvents:partial"

# Reasons a LookupEvents result is quarantined (skipped and counted; every other event of the slice is kept).
R_NO_EVENT = "LookupEvents result without CloudTrailEvent"
R_BAD_EVENT = "CloudTrailEvent that is not valid JSON (or nested too deeply)"
R_NOT_OBJECT = "CloudTrailEvent that is not a JSON object"

#: Errors that no retry or later run will fix: the run stops with one line (what was committed stays).
_FATAL = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
          "ExpiredToken", "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch",
          "UnauthorizedOperation", "OperationNotPermittedException"}

_UTC = timezone.utc


class LookupEventsError(Exception):
    """A LookupEvents source problem the user can fix (unknown region, no credentials, access denied): one line."""


def is_source(src: str) -> bool:
    """Whether an ingest source names LookupEvents (``cloudtrail://...``)."""
    return src.startswith(SCHEME)


def regions_of(src: str, *, known: Callable[[], set[str]] | None = None) -> list[str]:
    """The regions of a ``cloudtrail://REGION[,REGION...]`` source, checked.

    Args:
        src: the source text.
        known: the regions botocore knows for CloudTrail (default: :func:`known_regions`).

    Returns:
        The regions, in the order given, without repeats.

    Raises:
        LookupEventsError: no region, a region that is not a region's shape, or one botocore does not know.
    """
    names = [r.strip() for r in src[len(SCHEME):].strip("/").split(",") if r.strip()]
    if not names:
        raise LookupEventsError(f"no region in {src!r} (expected cloudtrail://REGION, e.g. cloudtrail://us-east-1)")
    regions = known() if known else known_regions()
    for r in names:
        if not REGION_SHAPE.fullmatch(r) or r not in regions:
            raise LookupEventsError(f"unknown region {r!r} in {src!r}: not a CloudTrail region known to botocore "
                                    f"(e.g. us-east-1; a region newer than the installed boto3 needs an upgrade)")
    return list(dict.fromkeys(names))


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """The regions of every partition that botocore's endpoint data lists for CloudTrail (read once: every source
    is checked before the run, and again when it runs)."""
    import boto3

    session = boto3.session.Session()
    out: set[str] = set()
    for partition in session.get_available_partitions():
        out.update(session.get_available_regions("cloudtrail", partition_name=partition))
    return frozenset(out)


def rate() -> float:
    """Requests per second per account and region: ``$MINER_LOOKUP_RATE`` or :data:`DEFAULT_RATE`.

    Raises:
        LookupEventsError: the variable is not a positive number.
    """
    text = os.environ.get("MINER_LOOKUP_RATE", "").strip()
    if not text:
        return DEFAULT_RATE
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise LookupEventsError(f"MINER_LOOKUP_RATE must be a positive number of requests per second (got {text!r})")
    return value


#: Requests are spaced this much more than ``1/rate`` apart, so that jitter on the way (a request delayed, the next
#: one not) never puts ``rate + 1`` of them into one second at AWS's end.
SLACK = 1.05


class RateLimiter:
    """A token bucket of one token refilled ``rate`` times a second, shared by the threads of one account and
    region: requests start at least ``SLACK/rate`` seconds apart, whichever thread sends them."""

    def __init__(self, per_second: float):
        self.interval = SLACK / per_second
        self.lock = threading.Lock()
        self.next = 0.0

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for the next token.

        Args:
            stop: set to give up waiting.

        Returns:
            False when ``stop`` was set meanwhile.
        """
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        delay = start - now
        if delay > 0:
            if stop is not None:
                return not stop.wait(delay)
            time.sleep(delay)
        return stop is None or not stop.is_set()


def make_client(region: str, profile: str | None = None, endpoint_url: str | None = None):
    """A boto3 CloudTrail client for one region: the standard credential chain, adaptive retries with backoff on
    ``ThrottlingException`` (:func:`miner.aws.client_config`).

    Args:
        region: the region whose event history is read.
        profile: a named profile of the AWS config (``--profile``).
        endpoint_url: a CloudTrail endpoint (``--cloudtrail-endpoint-url``), e.g. a local test server.

    Returns:
        ``(client, session)``.

    Raises:
        LookupEventsError: the profile does not exist.
    """
    session = aws.session(profile, LookupEventsError)
    cfg = aws.client_config(max_pool_connections=THREADS_PER_REGION + 2)
    return session.client("cloudtrail", region_name=region, endpoint_url=endpoint_url, config=cfg), session


def caller_account(session, region: str) -> str:
    """The account whose event history the credentials read (``sts:GetCallerIdentity``; needs no permission).

    Raises:
        LookupEventsError: no credentials, rejected credentials, STS unreachable, or an answer that is not an
            account id.
    """
    try:
        account = str(session.client("sts", region_name=region).get_caller_identity()["Account"])
    except Exception as e:
        raise error(e, "asking STS for the caller's account") from None
    if not ACCOUNT_ID_SHAPE.fullmatch(account):
        raise LookupEventsError(f"STS answered an account id that is not 12 digits: {account[:40]!r}")
    return account


def error(e: Exception, what: str) -> LookupEventsError:
    """A boto3/botocore exception as one clear line."""
    import botocore.exceptions as be

    if isinstance(e, LookupEventsError):
        return e
    common = aws.common_error(e, what, "AWS")
    if common:
        return LookupEventsError(common)
    if isinstance(e, be.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        msg = str(e.response.get("Error", {}).get("Message", ""))
        if code.startswith("AccessDenied") or code == "UnauthorizedOperation":
            return LookupEventsError(f"access denied while {what}: the credentials need cloudtrail:LookupEvents")
        if code in _FATAL:
            return LookupEventsError(f"the AWS credentials were rejected ({code}) while {what}")
        return LookupEventsError(f"AWS error {code} while {what}: {msg}")
    return LookupEventsError(f"{type(e).__name__} while {what}: {e}")


# ----------------------------------------------------------------------------------------------------------- slices


def _iso(t: datetime) -> str:
    return t.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Slice:
    """One piece of work: the events of one account and region in ``[start, end)`` (at most a UTC day)."""

    account: str
    region: str
    start: datetime
    end: datetime

    @property
    def uri(self) -> str:
        """The slice as the store's ``source_object`` and manifest ``source``:
        ``cloudtrail://ACCOUNT/REGION/START/END`` (UTC, whole seconds)."""
        return f"{SCHEME}{self.account}/{self.region}/{_iso(self.start)}/{_iso(self.end)}"

    @staticmethod
    def parse(uri: str) -> "Slice | None":
        """The slice a manifest ``source`` names, or ``None`` when it names no slice."""
        parts = uri[len(SCHEME):].split("/") if uri.startswith(SCHEME) else []
        if len(parts) != 4:
            return None
        try:
            start, end = (datetime.strptime(p, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_UTC) for p in parts[2:])
        except ValueError:
            return None
        return Slice(parts[0], parts[1], start, end)


def clip(window: Window | None, now: datetime) -> tuple[Window, str | None]:
    """The window LookupEvents can answer: at most :data:`MAX_DAYS` days before ``now`` (whole seconds), never past
    ``now``.

    Args:
        window: the window asked for (``None``: the last :data:`MAX_DAYS` days).
        now: the current time.

    Returns:
        The window, and a note when its start was clipped (``None`` otherwise).

    Raises:
        LookupEventsError: nothing of the window is within the last :data:`MAX_DAYS` days.
    """
    oldest = now - timedelta(days=MAX_DAYS)
    if oldest.microsecond:  # (whole seconds, as slices are named)
        oldest = oldest.replace(microsecond=0) + timedelta(seconds=1)
    if window is None:
        return Window(oldest, now), None
    since, until = max(window.since, oldest), min(window.until, now)  # (the future holds no events: no note)
    if since >= until:
        raise LookupEventsError(f"the window {window} is outside the last {MAX_DAYS} days that CloudTrail "
                                f"LookupEvents keeps ({Window(oldest, now)})")
    if since == window.since:
        return Window(since, until), None
    clipped = Window(since, until)
    return clipped, (f"LookupEvents answers only the last {MAX_DAYS} days: the window {window} was clipped to "
                     f"{clipped}")


def day_slices(window: Window, account: str, region: str) -> list[Slice]:
    """The window cut at UTC midnights, oldest first (the oldest events leave the event history first).

    Args:
        window: the (clipped) window.
        account: the account.
        region: the region.

    Returns:
        The slices.
    """
    out = []
    t = window.since.astimezone(_UTC)
    until = window.until.astimezone(_UTC)
    while t < until:
        midnight = datetime(t.year, t.month, t.day, tzinfo=_UTC) + timedelta(days=1)
        end = min(midnight, until)
        out.append(Slice(account, region, t, end))
        t = end
    return out


def finished_spans(store: Path) -> dict[tuple[str, str], list[tuple[datetime, datetime]]]:
    """The slices earlier runs finished, from the store's manifest: (account, region) -> [(start, end)].

    Args:
        store: the store root.

    Returns:
        The spans (empty for a new store).
    """
    out: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    for s, _ in _manifest_slices(store, COMPLETE):
        out.setdefault((s.account, s.region), []).append((s.start, s.end))
    return out


def _manifest_slices(store: Path, version: str | None = None) -> list[tuple[Slice, str]]:
    """Every slice in the manifest (of one ``version``, or all) with its version."""
    t = st.read_manifest(store)
    out = []
    for src, ver in zip(t.column("source").to_pylist(), t.column("version").to_pylist()):
        if src and src.startswith(SCHEME) and (version is None or ver == version):
            s = Slice.parse(src)
            if s is not None:
                out.append((s, ver))
    return out


def is_finished(s: Slice, spans: dict[tuple[str, str], list[tuple[datetime, datetime]]]) -> bool:
    """Whether one finished slice of an earlier run covers ``s``."""
    return any(a <= s.start and s.end <= b for a, b in spans.get((s.account, s.region), ()))


def stored_spans(store: Path, window: Window | None = None, account: str | None = None
                 ) -> list[tuple[str, str, datetime, datetime]]:
    """Which (account, region, time span) of the store came from LookupEvents (management events only).

    Args:
        store: the store root.
        window: only spans overlapping this window (clipped to it); ``None``: all.
        account: only this account; ``None``: all.

    Returns:
        ``(account, region, start, end)``, adjacent and overlapping slices merged, sorted.
    """
    merged: dict[tuple[str, str], list[list[datetime]]] = {}
    for s, _ in sorted(_manifest_slices(store), key=lambda x: (x[0].account, x[0].region, x[0].start)):
        if account is not None and s.account != account:
            continue
        start, end = s.start, s.end
        if window is not None:
            start, end = max(start, window.since), min(end, window.until)
            if start >= end:
                continue
        spans = merged.setdefault((s.account, s.region), [])
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [(a, r, x, y) for (a, r), spans in sorted(merged.items()) for x, y in spans]


# ----------------------------------------------------------------------------------------------------------- fetch


@dataclass
class Chunk:
    """Events of one slice ready for the parser: ``payload`` is ``{"Records": [...]}`` of the good records."""

    slice: Slice
    payload: bytes
    events: int  # records in the payload
    bad: dict[str, int]  # quarantined results by reason
    last: bool  # the slice's last piece
    complete: bool  # ... and the slice is finished (the manifest records it; a re-run skips it)


@dataclass
class Failed:
    """A slice that could not be read to its end (retried by the next run); what came before it is kept."""

    slice: Slice
    reason: str


@dataclass
class Stats:
    """Counters shared by the fetch threads (read by the progress display)."""

    requests: int = 0
    retries: int = 0
    events: int = 0
    covered: float = 0.0  # seconds of the slices' time read so far
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: float) -> None:
        """Add to counters (thread-safe)."""
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


@dataclass
class Page:
    """A tick after each page (progress only)."""


_DONE = object()


def decode(events: list[dict]) -> tuple[list[bytes], dict[str, int]]:
    """The records of a LookupEvents page: each result's ``CloudTrailEvent`` (the full record JSON), re-encoded.

    Args:
        events: the page's ``Events``.

    Returns:
        The records as JSON bytes, and the results quarantined by reason.
    """
    good: list[bytes] = []
    bad: dict[str, int] = {}
    for e in events:
        raw = e.get("CloudTrailEvent") if isinstance(e, dict) else None
        if not isinstance(raw, str):
            reason = R_NO_EVENT
        else:
            try:
                rec = orjson.loads(raw)
                reason = None if isinstance(rec, dict) else R_NOT_OBJECT
            except orjson.JSONDecodeError:
                reason = R_BAD_EVENT
        if reason:
            bad[reason] = bad.get(reason, 0) + 1
        else:
            good.append(orjson.dumps(rec))
    return good, bad


def _payload(records: list[bytes]) -> bytes:
    return b'{"Records":[' + b",".join(records) + b"]}"


def fetch_slice(client, limiter: RateLimiter, s: Slice, *, complete: bool, stats: Stats,
                stop: threading.Event) -> Iterator[Chunk | Page]:
    """Read one slice, newest page first (LookupEvents' order), through the region's rate limiter.

    ``EndTime`` is inclusive in LookupEvents; event times are whole seconds, so ``end - 1 s`` reads ``[start, end)``.

    Args:
        client: a CloudTrail client of the slice's region.
        limiter: the region's limiter.
        s: the slice.
        complete: whether the slice is finished (its last chunk says so).
        stats: counters to add to.
        stop: set to stop between pages.

    Yields:
        A :class:`Page` after each request and a :class:`Chunk` every :data:`CHUNK_EVENTS` records and at the end.

    Raises:
        botocore exceptions of the requests (after botocore's retries).
    """
    kw = {"StartTime": s.start, "EndTime": s.end - timedelta(seconds=1), "MaxResults": MAX_RESULTS}
    records: list[bytes] = []
    bad: dict[str, int] = {}
    seen_until = s.end
    while True:
        if not limiter.acquire(stop):
            return
        resp = client.lookup_events(**kw)
        events = resp.get("Events") or []
        good, skipped = decode(events)
        records += good
        for k, v in skipped.items():
            bad[k] = bad.get(k, 0) + v
        times = [e["EventTime"] for e in events if isinstance(e, dict) and isinstance(e.get("EventTime"), datetime)]
        oldest = max(s.start, min(times)) if times else seen_until
        stats.add(requests=1, retries=int(resp.get("ResponseMetadata", {}).get("RetryAttempts") or 0),
                  events=len(events), covered=max(0.0, (seen_until - oldest).total_seconds()))
        seen_until = min(seen_until, oldest)
        token = resp.get("NextToken")
        yield Page()
        if not token:
            break
        kw["NextToken"] = token
        if len(records) >= CHUNK_EVENTS:
            yield Chunk(s, _payload(records), len(records), bad, False, False)
            records, bad = [], {}
    stats.add(covered=max(0.0, (seen_until - s.start).total_seconds()))
    yield Chunk(s, _payload(records), len(records), bad, True, complete)


def fetch(work: dict[str, tuple[object, list[Slice]]], *, per_second: float, now: datetime,
          stats: Stats) -> Iterator[Chunk | Failed | Page]:
    """Read slices of several regions at once: :data:`THREADS_PER_REGION` threads per region, one
    :class:`RateLimiter` per region; each slice's chunks arrive in order.

    Args:
        work: region -> (CloudTrail client, slices to read, oldest first).
        per_second: requests per second per region.
        now: when the run started (decides which slices are finished, see :data:`SETTLE`).
        stats: counters to add to.

    Yields:
        :class:`Chunk`, :class:`Failed` and :class:`Page` items.

    Raises:
        LookupEventsError: credentials rejected or access denied (the other threads stop).
    """
    import botocore.exceptions as be

    out: queue.Queue = queue.Queue(maxsize=4 * THREADS_PER_REGION * max(1, len(work)))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def worker(client, limiter: RateLimiter, todo: queue.Queue) -> None:
        try:
            while not stop.is_set():
                try:
                    s = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    for item in fetch_slice(client, limiter, s, complete=s.end <= now - SETTLE, stats=stats,
                                            stop=stop):
                        if not put(item):
                            return
                except be.ClientError as e:
                    code = str(e.response.get("Error", {}).get("Code", ""))
                    if code in _FATAL or code.startswith("AccessDenied"):
                        put(error(e, f"reading the {s.region} event history"))
                        return
                    put(Failed(s, f"LookupEvents {code}"[:200]))
                except (be.NoCredentialsError, be.EndpointConnectionError, be.ConnectTimeoutError) as e:
                    put(error(e, f"reading the {s.region} event history"))
                    return
                except Exception as e:  # a broken connection after botocore's retries: the next run tries again
                    put(Failed(s, f"LookupEvents {type(e).__name__}: {e}"[:200]))
        finally:
            put(_DONE)

    threads = []
    for region, (client, slices) in work.items():
        todo: queue.Queue = queue.Queue()
        for s in slices:
            todo.put(s)
        limiter = RateLimiter(per_second)
        for i in range(min(THREADS_PER_REGION, len(slices))):
            threads.append(threading.Thread(target=worker, args=(client, limiter, todo), daemon=True,
                                            name=f"miner-lookup-{region}-{i}"))
    for t in threads:
        t.start()
    live = len(threads)
    try:
        while live:
            item = out.get()
            if item is _DONE:
                live -= 1
            elif isinstance(item, LookupEventsError):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
