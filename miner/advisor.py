"""IAM Access Advisor: service- and action-level last access, read live or from a snapshot, kept in the store."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: The store's folder of Access Advisor reports: ``advisor/advisor-<run>.parquet``, one file per ``miner advisor`` run.
ADVISOR_DIR = "advisor"
#: How far back Access Advisor reports activity (IAM User Guide, "Refining permissions using last accessed
#: information": "IAM reports activity for the last 400 days, or less if your Region began supporting this feature
#: within the last year").
TRACKING_DAYS = 400
#: Job statuses of ``GetServiceLastAccessedDetails``.
DONE_STATUSES = ("COMPLETED", "FAILED")
#: Error codes that mean "slow down" (IAM's query protocol says ``Throttling``).
THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
                            "LimitExceeded", "LimitExceededException"})

#: The columns of the advisor table, one row per (principal, service) with ``action`` null, plus one row per tracked
#: action of a service Access Advisor reports at action level.
COLUMNS = ["account", "principal_arn", "service_namespace", "service_name", "action", "last_accessed",
           "last_accessed_region", "last_accessed_entity", "tracked", "tracking_start", "job_completed", "source"]


class AdvisorError(Exception):
    """A problem the user can fix: an unreadable snapshot, IAM cannot be read, a job that failed."""


@lru_cache(maxsize=1)
def schema() -> pa.Schema:
    """The Parquet schema of the advisor table (:data:`COLUMNS`).

    Returns:
        The pyarrow schema.
    """
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([
        pa.field("account", pa.string()),               # the principal's account id
        pa.field("principal_arn", pa.string()),         # the role or user the report is for
        pa.field("service_namespace", pa.string()),     # the IAM prefix (s3, ec2, ...)
        pa.field("service_name", pa.string()),          # as AWS names it (Amazon S3)
        pa.field("action", pa.string()),                # prefix:Action of a tracked action; null on the service row
        pa.field("last_accessed", ts),                  # null: not accessed in the tracking period
        pa.field("last_accessed_region", pa.string()),
        pa.field("last_accessed_entity", pa.string()),
        pa.field("tracked", pa.bool_()),                # service row: whether the report tracked its actions
        pa.field("tracking_start", ts),                 # job completion minus TRACKING_DAYS
        pa.field("job_completed", ts),
        pa.field("source", pa.string()),                # live IAM (endpoint) or the snapshot file
    ])


# ----------------------------------------------------------------------------------------- AWS response shapes


def _time(v: Any) -> datetime | None:
    """A time of a response (a datetime from boto3, ISO text from a JSON file) as an aware UTC datetime."""
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v, timezone.utc)
    text = str(v).strip().replace(" ", "T")
    try:
        t = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise AdvisorError(f"not a time: {str(v)[:60]!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def report_rows(arn: str, report: dict, *, source: str = "") -> list[dict]:
    """Rows of the advisor table from one ``GetServiceLastAccessedDetails`` response (its pages merged).

    Args:
        arn: the role or user the job was generated for.
        report: the response: ``JobStatus``, ``JobCompletionDate``, ``ServicesLastAccessed`` (each with
            ``ServiceNamespace``, ``LastAuthenticated``, ``LastAuthenticatedRegion``, ``LastAuthenticatedEntity`` and,
            for an ``ACTION_LEVEL`` job, ``TrackedActionsLastAccessed``).
        source: where it came from (shown in reports).

    Returns:
        One dict per service and per tracked action (:data:`COLUMNS`).

    Raises:
        AdvisorError: a job that is not complete, or a response without the fields AWS documents.
    """
    status = report.get("JobStatus")
    if status != "COMPLETED":
        err = report.get("Error") or {}
        raise AdvisorError(f"the Access Advisor job for {arn} is {status or 'of unknown status'}"
                           + (f": {err.get('Code')}: {err.get('Message')}" if err else ""))
    done = _time(report.get("JobCompletionDate"))
    if done is None:
        raise AdvisorError(f"the Access Advisor report for {arn} has no JobCompletionDate")
    start = done - timedelta(days=TRACKING_DAYS)
    services = report.get("ServicesLastAccessed")
    if not isinstance(services, list):
        raise AdvisorError(f"the Access Advisor report for {arn} has no ServicesLastAccessed list")
    acct = _account(arn)
    rows = []
    for s in services:
        ns = s.get("ServiceNamespace") if isinstance(s, dict) else None
        if not isinstance(ns, str) or not ns:
            raise AdvisorError(f"the Access Advisor report for {arn} lists a service without ServiceNamespace")
        tracked = s.get("TrackedActionsLastAccessed")
        base = {"account": acct, "principal_arn": arn, "service_namespace": ns, "service_name": s.get("ServiceName"),
                "tracking_start": start, "job_completed": done, "source": source}
        rows.append({**base, "action": None, "last_accessed": _time(s.get("LastAuthenticated")),
                     "last_accessed_region": s.get("LastAuthenticatedRegion"),
                     "last_accessed_entity": s.get("LastAuthenticatedEntity"), "tracked": isinstance(tracked, list)})
        for a in tracked if isinstance(tracked, list) else ():
            name = a.get("ActionName") if isinstance(a, dict) else None
            if not isinstance(name, str) or not name:
                continue
            rows.append({**base, "action": f"{ns}:{name}", "last_accessed": _time(a.get("LastAccessedTime")),
                         "last_accessed_region": a.get("LastAccessedRegion"),
                         "last_accessed_entity": a.get("LastAccessedEntity"), "tracked": True})
    return rows


def load_snapshot(path: str | Path) -> list[dict]:
    """Rows from JSON files of ``aws iam get-service-last-accessed-details`` output, each with the ``Arn`` the job
    was generated for added (a file holds one such object, a list of them, or ``{"Reports": [...]}``).

    Args:
        path: a file, or a folder of ``*.json`` files (read in name order).

    Returns:
        The rows (:func:`report_rows`).

    Raises:
        AdvisorError: a missing path, a folder without JSON files, or a file that is not such a report.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AdvisorError(f"--snapshot {path}: no such file or folder")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise AdvisorError(f"--snapshot {path}: no *.json files in the folder")
    rows: list[dict] = []
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise AdvisorError(f"cannot read the Access Advisor snapshot {f}: {e}") from None
        reports = doc.get("Reports") if isinstance(doc, dict) and "Reports" in doc else doc
        for r in reports if isinstance(reports, list) else [reports]:
            if not isinstance(r, dict) or not isinstance(r.get("Arn"), str):
                raise AdvisorError(f"{f}: not an Access Advisor snapshot (each report needs the \"Arn\" it was "
                                   f"generated for beside the GetServiceLastAccessedDetails fields)")
            try:
                rows += report_rows(r["Arn"], r, source=f"snapshot {f.name}")
            except AdvisorError as e:
                raise AdvisorError(f"{f}: {e}") from None
    return rows


# ----------------------------------------------------------------------------------------- live reads


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code") or "")


def call(fn: Callable[..., dict], *, sleep: Callable[[float], None] = time.sleep, attempts: int = 8,
         base: float = 1.0, cap: float = 30.0, **kwargs) -> dict:
    """One IAM call, retried with exponential backoff while IAM throttles (on top of botocore's own retries).

    Args:
        fn: the client method.
        sleep: waits (tests pass a recorder).
        attempts: how many tries in all.
        base: the first wait, in seconds (doubled per try, up to ``cap``).
        cap: the longest wait.
        **kwargs: the call's parameters.

    Returns:
        The response.

    Raises:
        botocore.exceptions.ClientError: anything but throttling, or throttling on the last try.
    """
    from botocore.exceptions import ClientError

    for i in range(attempts):
        try:
            return fn(**kwargs)
        except ClientError as e:
            if _code(e) not in THROTTLE_CODES or i == attempts - 1:
                raise
            sleep(min(cap, base * 2 ** i))
    raise AssertionError("unreachable")  # pragma: no cover


def list_principals(client, *, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Every role and user of the client's account (``ListRoles``/``ListUsers``, paginated with ``Marker``).

    Args:
        client: a boto3 IAM client.
        sleep: waits between throttled tries.

    Returns:
        Their ARNs, roles first, each in IAM's order.
    """
    arns: list[str] = []
    for op, key in (("list_roles", "Roles"), ("list_users", "Users")):
        marker = None
        while True:
            page = call(getattr(client, op), sleep=sleep, **({"Marker": marker} if marker else {}))
            arns += [e["Arn"] for e in page.get(key) or [] if e.get("Arn")]
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                break
    return arns


def fetch_report(client, job_id: str, *, sleep: Callable[[float], None] = time.sleep, poll: float = 2.0,
                 max_wait: float = 600.0) -> dict:
    """Wait for an Access Advisor job and read all of its report (pages merged through ``Marker``).

    Args:
        client: a boto3 IAM client.
        job_id: from ``GenerateServiceLastAccessedDetails``.
        sleep: waits between polls and throttled tries.
        poll: the first wait between polls, in seconds (grows by half each poll, up to 30 s).
        max_wait: give up after this many seconds of polling.

    Returns:
        The response with every page's ``ServicesLastAccessed``.

    Raises:
        AdvisorError: the job is still running after ``max_wait``.
    """
    waited, wait = 0.0, poll
    while True:
        first = call(client.get_service_last_accessed_details, sleep=sleep, JobId=job_id)
        if first.get("JobStatus") in DONE_STATUSES:
            break
        if waited >= max_wait:
            raise AdvisorError(f"the Access Advisor job {job_id} was still {first.get('JobStatus')} after "
                               f"{max_wait:.0f} s")
        sleep(wait)
        waited += wait
        wait = min(30.0, wait * 1.5)
    report = dict(first)
    services = list(first.get("ServicesLastAccessed") or [])
    page = first
    while page.get("IsTruncated") and page.get("Marker"):
        page = call(client.get_service_last_accessed_details, sleep=sleep, JobId=job_id, Marker=page["Marker"])
        services += page.get("ServicesLastAccessed") or []
    report["ServicesLastAccessed"] = services
    return report


def fetch(client, arns: Iterable[str], *, source: str = "live IAM", sleep: Callable[[float], None] = time.sleep,
          poll: float = 2.0, max_wait: float = 600.0, progress: Callable[[int, int, str], None] | None = None
          ) -> tuple[list[dict], list[str]]:
    """Generate an ``ACTION_LEVEL`` report for each principal, then read each one.

    All jobs are started first (IAM runs them meanwhile), then collected in order.

    Args:
        client: a boto3 IAM client.
        arns: the roles and users.
        source: where the rows say they came from.
        sleep: waits between polls and throttled tries.
        poll: the first wait between polls.
        max_wait: how long to wait for one job.
        progress: called as ``progress(done, total, arn)`` after each principal.

    Returns:
        The rows, and one line per principal whose report could not be had (the others are kept).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    arns = list(arns)
    jobs: list[tuple[str, str | None, str | None]] = []
    for arn in arns:
        try:
            resp = call(client.generate_service_last_accessed_details, sleep=sleep, Arn=arn, Granularity="ACTION_LEVEL")
            jobs.append((arn, resp["JobId"], None))
        except (ClientError, BotoCoreError, KeyError) as e:
            jobs.append((arn, None, f"{arn}: cannot start an Access Advisor job: {e}"))
    rows: list[dict] = []
    problems: list[str] = []
    for i, (arn, job, problem) in enumerate(jobs, 1):
        if job is not None:
            try:
                rows += report_rows(arn, fetch_report(client, job, sleep=sleep, poll=poll, max_wait=max_wait),
                                    source=source)
            except (ClientError, BotoCoreError) as e:
                problem = f"{arn}: cannot read its Access Advisor report: {e}"
            except AdvisorError as e:
                problem = str(e)
        if problem:
            problems.append(problem)
        if progress:
            progress(i, len(jobs), arn)
    return rows, problems


def iam_client(profile: str | None = None, endpoint_url: str | None = None, session=None):
    """A boto3 IAM client with the AWS sources' retries and timeouts (:func:`miner.aws.client_config`).

    Args:
        profile: an AWS CLI profile.
        endpoint_url: another IAM endpoint (a local test server).
        session: a boto3 session (an assumed role's), instead of the profile's.

    Returns:
        The client.
    """
    from miner import aws

    session = session or aws.session(profile, AdvisorError)
    return session.client("iam", endpoint_url=endpoint_url, region_name=session.region_name or "us-east-1",
                          config=aws.client_config())


def organisation_sessions(role_name: str, *, profile: str | None = None, endpoint_url: str | None = None,
                          sleep: Callable[[float], None] = time.sleep) -> tuple[list[tuple[str, Any]], list[str]]:
    """A boto3 session in every active account of the organisation, through ``sts:AssumeRole`` of ``role_name``
    (the caller's own account uses the caller's credentials).

    Args:
        role_name: the role to assume in each member account (e.g. ``OrganizationAccountAccessRole``).
        profile: the caller's profile (the management or a delegated administrator account).
        endpoint_url: another endpoint for Organizations and STS (a local test server).
        sleep: waits between throttled tries.

    Returns:
        ``(account, session)`` pairs, and one line per account that could not be entered.

    Raises:
        AdvisorError: the organisation's accounts cannot be listed.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from miner import aws

    base = aws.session(profile, AdvisorError)
    region = base.region_name or "us-east-1"
    org = base.client("organizations", endpoint_url=endpoint_url, region_name=region, config=aws.client_config())
    sts = base.client("sts", endpoint_url=endpoint_url, region_name=region, config=aws.client_config())
    try:
        me = call(sts.get_caller_identity, sleep=sleep)["Account"]
        accounts, token = [], None
        while True:
            page = call(org.list_accounts, sleep=sleep, **({"NextToken": token} if token else {}))
            accounts += [a["Id"] for a in page.get("Accounts") or [] if a.get("Status", "ACTIVE") == "ACTIVE"]
            token = page.get("NextToken")
            if not token:
                break
    except (ClientError, BotoCoreError) as e:
        raise AdvisorError(f"cannot list the organisation's accounts: {e} (run from the management account or a "
                           f"delegated administrator, or leave out --all-accounts)") from None
    out: list[tuple[str, Any]] = []
    problems: list[str] = []
    for acct in accounts:
        if acct == me:
            out.append((acct, base))
            continue
        try:
            creds = call(sts.assume_role, sleep=sleep, RoleArn=f"arn:aws:iam::{acct}:role/{role_name}",
                         RoleSessionName="miner-advisor")["Credentials"]
        except (ClientError, BotoCoreError) as e:
            problems.append(f"account {acct}: cannot assume {role_name}: {e}")
            continue
        out.append((acct, boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                                        aws_secret_access_key=creds["SecretAccessKey"],
                                        aws_session_token=creds["SessionToken"], region_name=region)))
    return out, problems


# ----------------------------------------------------------------------------------------- the store's table


@dataclass
class Written:
    """What :func:`write` published."""

    path: str
    rows: int
    principals: int
    services: int
    notes: list[str] = field(default_factory=list)


def write(store, rows: list[dict], *, now: datetime) -> Written:
    """Publish the rows as one new file of the store's advisor table (written to ``_tmp/``, then moved or PUT whole,
    under the store's writer lock); earlier runs' files stay (readers take each principal's latest report).

    Args:
        store: the store root (a folder or an ``s3://`` location); created when missing.
        rows: :func:`report_rows` rows (at least one).
        now: the run's time (names the file).

    Returns:
        The :class:`Written`.

    Raises:
        miner.store.StoreError: the store cannot be locked or written.
    """
    import pyarrow as pa

    from miner import store as st

    table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["principal_arn"], r["service_namespace"],
                                                              r["action"] or "")), schema=schema())
    run = st.new_run_id(now)
    with st.write_lock(store):
        tmp = st.tmp_dir(store) / f"advisor-{run}.parquet"
        st.write_parquet(table, tmp)
        final = st.root(store) / ADVISOR_DIR / f"advisor-{run}.parquet"
        st.publish(tmp, final)
        if not st.is_s3(store):
            try:
                (Path(store) / st.TMP_DIR).rmdir()
            except OSError:
                pass
    return Written(str(final), table.num_rows, len({r["principal_arn"] for r in rows}),
                   len({(r["principal_arn"], r["service_namespace"]) for r in rows}))


def files(store) -> list:
    """The advisor files of a store, oldest first.

    Args:
        store: the store root.

    Returns:
        Paths (or S3 locations); empty when the store holds none.
    """
    from miner import store as st

    if st.is_s3(store):
        return list((st.root(store) / ADVISOR_DIR).glob("*.parquet"))
    d = Path(store) / ADVISOR_DIR
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def read(store) -> pd.DataFrame:
    """The store's advisor table, each principal's latest report only (the one with the latest job completion).

    Args:
        store: the store root.

    Returns:
        A DataFrame with :data:`COLUMNS` (empty when ``miner advisor`` never ran on this store).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from miner import store as st

    found = files(store)
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    if st.is_s3(store):
        from miner import s3store

        tables = [s3store.read_small_parquet(f).cast(schema()) for f in found]
    else:
        tables = [pq.read_table(str(f)).cast(schema()) for f in found]
    df = pa.concat_tables(tables).to_pandas()
    latest = df.groupby("principal_arn")["job_completed"].transform("max")
    df = df[df["job_completed"] == latest]
    return df.drop_duplicates(["principal_arn", "service_namespace", "action"], keep="last").reset_index(drop=True)
