"""Shared data contracts between miner's pipeline stages (imports nothing from the package)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: Normalised columns of one stored CloudTrail record, in file order.
#: Hive partition keys (``account=``, ``region=``, ``date=``) are added by the store on top of these.
#: ``EVENT_FIELDS`` and ``EVENT_SCHEMA`` are built on first use (importing this module does not load pyarrow, so a
#: command's start-up, ``miner --help`` included, stays cheap).


@lru_cache(maxsize=1)
def _event_fields() -> list[tuple[str, pa.DataType, str]]:
    import pyarrow as pa

    return [
        ("event_id", pa.string(), "eventID; the dedupe key"),
        ("event_time", pa.timestamp("us", tz="UTC"), "eventTime in UTC (or @timestamp for re-exported records)"),
        ("event_source", pa.string(), "eventSource host, e.g. s3.amazonaws.com"),
        ("event_name", pa.string(), "eventName as logged (an API operation, not an IAM action)"),
        ("aws_region", pa.string(), "awsRegion"),
        ("account_id", pa.string(), "recipientAccountId (string: leading zeros kept)"),
        ("principal_arn", pa.string(), "who acted: the IAM role ARN for AssumedRole (sessionIssuer.arn, path kept), the user/root ARN, "
         "the service host for AWSService, the userId for IdentityCenterUser, 'ANONYMOUS_PRINCIPAL' for anonymous"),
        ("principal_type", pa.string(), "userIdentity.type (AssumedRole, IAMUser, Root, FederatedUser, AWSService, AWSAccount, ...)"),
        ("principal_name", pa.string(), "role or user name (sessionIssuer.userName / userName)"),
        ("principal_account", pa.string(), "userIdentity.accountId"),
        ("session_name", pa.string(), "session part of an assumed-role or federated ARN"),
        ("session_arn", pa.string(), "userIdentity.arn as logged"),
        ("access_key_id", pa.string(), "userIdentity.accessKeyId"),
        ("source_ip", pa.string(), "sourceIPAddress (may be a service host or 'AWS Internal')"),
        ("user_agent", pa.string(), "userAgent"),
        ("error_code", pa.string(), "errorCode (empty string stored as null)"),
        ("error_message", pa.string(), "errorMessage"),
        ("outcome", pa.string(), "outcome class: success, denied, not_found, throttled, dry_run, error"),
        ("read_only", pa.bool_(), "readOnly"),
        ("event_type", pa.string(), "eventType (AwsApiCall, AwsServiceEvent, AwsConsoleSignIn, ...)"),
        ("event_category", pa.string(), "eventCategory (Management, Data, NetworkActivity, Insight)"),
        ("management_event", pa.bool_(), "managementEvent"),
        ("request_parameters", pa.string(), "requestParameters as JSON text (null when absent)"),
        ("resources", pa.string(), "resources[] as JSON text (null when absent)"),
        ("invoked_by", pa.string(), "userIdentity.invokedBy"),
        ("vpc_endpoint_id", pa.string(), "vpcEndpointId"),
        ("partition", pa.string(), "AWS partition: aws, aws-us-gov or aws-cn"),
        ("event_version", pa.string(), "eventVersion"),
        ("source_object", pa.string(), "the file or s3:// object the record came from"),
    ]


@lru_cache(maxsize=1)
def _event_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(name, typ) for name, typ, _ in _event_fields()])


def __getattr__(name: str):
    """``EVENT_FIELDS`` ((name, Arrow type, description) of every stored column) and ``EVENT_SCHEMA``, lazily."""
    if name == "EVENT_FIELDS":
        return _event_fields()
    if name == "EVENT_SCHEMA":
        return _event_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PARTITION_KEYS = ("account", "region", "date")

#: Outcome classes (see DESIGN.md "Outcomes"). Authorised outcomes count towards a policy.
AUTHORISED_OUTCOMES = ("success", "not_found", "throttled", "dry_run", "error")

_DENIED = re.compile(r"(AccessDenied|UnauthorizedOperation|Unauthorized|AuthorizationError|Forbidden|"
                     r"AuthFailure|NotAuthorized|AccessDeniedException|VpceAccessDenied)", re.I)
_NOT_FOUND = re.compile(r"(NoSuch|NotFound|NotExist|DoesNotExist|ResourceNotFound|Invalid.*\.NotFound|NoSuchEntity)", re.I)
_THROTTLED = re.compile(r"(Throttl|TooManyRequests|RequestLimitExceeded|SlowDown|LimitExceeded)", re.I)


def classify_outcome(error_code: str | None, error_message: str | None = None) -> str:
    """Classify a CloudTrail error into an outcome class.

    Args:
        error_code: ``errorCode`` (``None`` or empty for success).
        error_message: ``errorMessage``; used when a console failure has no error code.

    Returns:
        One of ``success``, ``denied``, ``not_found``, ``throttled``, ``dry_run``, ``error``.
    """
    if not error_code:
        if error_message and "not authorized" in error_message.lower():
            return "denied"
        return "success"
    if "DryRunOperation" in error_code:
        return "dry_run"
    if _DENIED.search(error_code):
        return "denied"
    if _NOT_FOUND.search(error_code):
        return "not_found"
    if _THROTTLED.search(error_code):
        return "throttled"
    return "error"


def partition_of(region: str | None, arn: str | None = None) -> str:
    """The AWS partition of a region or ARN (``aws``, ``aws-us-gov`` or ``aws-cn``).

    Args:
        region: an AWS region name, e.g. ``us-gov-west-1``.
        arn: an ARN whose second field names the partition; it wins when present.

    Returns:
        The partition name; ``aws`` when nothing says otherwise.
    """
    if arn and arn.startswith("arn:"):
        part = arn.split(":", 2)[1]
        if part in ("aws", "aws-us-gov", "aws-cn", "aws-iso", "aws-iso-b"):
            return part
    if region:
        if region.startswith("us-gov-"):
            return "aws-us-gov"
        if region.startswith("cn-"):
            return "aws-cn"
    return "aws"


# Values a log record turns into a Hive partition (a directory name) must have one of these shapes; ingest skips a
# record whose value does not fit (README "Ingest", hostile input).
#: An AWS account id.
ACCOUNT_ID_SHAPE = re.compile(r"[0-9]{12}")
#: The documented fallback for other account (and region) values: short placeholder words of anonymised or test
#: logs (``redacted``, ``0000``, ``ANONYMOUS_PRINCIPAL``) keep their own partition.
ACCOUNT_PLACEHOLDER_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: An AWS region: ``us-east-1``, ``us-gov-west-1``, ``eusc-de-east-1``; anonymisers' shapes such as
#: ``us-north-2r`` or ``apiso-centralnorth-2r`` (a letter after the number) are accepted too.
REGION_SHAPE = re.compile(r"[a-z]{2,12}(?:-[a-z]{2,20}){1,3}-[0-9]{1,2}[a-z]?")
#: Event years accepted (the record's UTC day becomes the ``date=`` partition).
EVENT_YEARS = (1990, 2200)

_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt])(?:i?b)?|b)?$")


def parse_size(text: str) -> int:
    """A byte size such as ``256MiB``, ``1G``, ``500mb`` or ``1048576`` (units are powers of 1024).

    Args:
        text: the user's text.

    Returns:
        The size in bytes.

    Raises:
        ValueError: with a message a user can act on.
    """
    m = _SIZE.match(text.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"cannot read {text!r} as a size: use bytes or a unit, e.g. 256MiB, 1G")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


@dataclass(frozen=True)
class Window:
    """A half-open UTC time window ``[since, until)``."""

    since: datetime
    until: datetime

    @property
    def days(self) -> float:
        """Length of the window in days."""
        return (self.until - self.since).total_seconds() / 86400

    def __str__(self) -> str:
        return f"{self.since:%Y-%m-%d %H:%M}Z .. {self.until:%Y-%m-%d %H:%M}Z"


_REL = re.compile(r"^(\d+)\s*([dwhm])$")


def parse_age(text: str) -> timedelta | None:
    """A relative age such as ``90d``, ``12w``, ``6h`` or ``3m`` (30-day months), or ``None`` if ``text`` is not one.

    Args:
        text: the user's text.

    Returns:
        The age as a timedelta, or ``None``.
    """
    m = _REL.match(text.strip().lower())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "w": timedelta(weeks=n), "h": timedelta(hours=n), "m": timedelta(days=30 * n)}[unit]


def parse_when(text: str, now: datetime) -> datetime:
    """Parse a window bound: ``90d``/``12w``/``6h`` (relative to ``now``), ``today``, or an ISO date/time.

    Args:
        text: the user's text.
        now: the reference time (passed in, never defaulted).

    Returns:
        An aware UTC datetime.

    Raises:
        ValueError: with a message a user can act on.
    """
    t = text.strip().lower()
    age = parse_age(t)
    if age is not None:
        return now - age
    if t in ("now",):
        return now
    if t == "today":
        return datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    try:
        if len(t) == 10:
            d = date.fromisoformat(t)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time: use a date (2026-08-01), a timestamp "
                         f"(2026-08-01T12:00:00Z) or a relative age (90d, 12w, 6h)") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def make_window(since: str | None, until: str | None, now: datetime, default_days: int = 90) -> Window:
    """Build a window from user text; ``until`` defaults to ``now``, ``since`` to ``default_days`` before it.

    A bare date as ``until`` is inclusive (the whole day counts).

    Args:
        since: lower bound text or ``None``.
        until: upper bound text or ``None``.
        now: the reference time.
        default_days: the window length when ``since`` is not given.

    Returns:
        The window.

    Raises:
        ValueError: when a bound cannot be read or the window is empty.
    """
    end = parse_when(until, now) if until else now
    if until and len(until.strip()) == 10 and until.strip()[4] == "-":
        end = end + timedelta(days=1)
    start = parse_when(since, now) if since else end - timedelta(days=default_days)
    if start >= end:
        raise ValueError(f"the window is empty: --since {start:%Y-%m-%d %H:%M} is not before --until {end:%Y-%m-%d %H:%M}")
    return Window(start, end)


def default_store_path() -> Path:
    """Where the Parquet store lives unless ``--store`` says otherwise: ``$MINER_STORE`` or the XDG data dir."""
    env = os.environ.get("MINER_STORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "miner" / "store"


@dataclass
class SkippedInput:
    """A file or record that could not be used, and why."""

    source: str
    reason: str
    records: int = 0


@dataclass
class IngestSummary:
    """What one ``miner ingest`` run did."""

    files_seen: int = 0
    files_read: int = 0
    files_already_ingested: int = 0
    records_read: int = 0
    records_written: int = 0
    duplicates: int = 0
    records_skipped: int = 0
    skipped: list[SkippedInput] = field(default_factory=list)
    store: str = ""
    seconds: float = 0.0

    def skipped_by_reason(self) -> dict[str, int]:
        """Count skipped files/records by reason."""
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s.reason] = out.get(s.reason, 0) + 1
        return dict(sorted(out.items()))
