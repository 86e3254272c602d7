"""The jobs of the command line as library calls: principals, usage, suggest, review and backtest, one call each."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from miner import models
from miner.models import Window

if TYPE_CHECKING:
    import pandas as pd

    from miner.diff import DiffReport
    from miner.iam import AttachedPolicies
    from miner.review import IamSource
    from miner.synthesize import Suggestion
    from miner.usage import Principal, Usage


class JobError(Exception):
    """A mistake the user can fix (an unknown principal, an empty window, an unreadable IAM snapshot): one line."""


#: The window's default length, in days.
DEFAULT_DAYS = 90
#: A window reaching this far past the store's first or last day of data gets a note saying which part holds data.
COVERAGE_SLACK = timedelta(days=1)
#: "Every time there is": the window of a backtest's principal lookup.
EVERYTHING = Window(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc))


# ----------------------------------------------------------------------------------------- windows


def _clock_relative(text: str | None) -> bool:
    """Whether a window bound is counted from the current time (absent, an age such as ``90d``, or ``now``)."""
    return text is None or models.parse_age(text) is not None or text.strip().lower() == "now"


def parse_window(since: str | None, until: str | None, *, now: datetime | None = None,
                 default_days: int = DEFAULT_DAYS) -> tuple[Window, str | None]:
    """A window from ``--since``/``--until`` text whose edges do not move with the current minute.

    Bounds counted from the clock (no ``--until``, an age such as ``90d``, ``now``) are counted from the current
    time rounded up to the next full hour, so every run within the hour mines the same window (and gives the same
    output).

    Args:
        since: the lower bound text (a date, a timestamp or an age), or ``None`` (``default_days`` before ``until``).
        until: the upper bound text, or ``None`` (now); a bare date counts as the whole day.
        now: the current time (default: the clock, read at call time).
        default_days: the window length when ``since`` is not given.

    Returns:
        The window, and a note saying which time the clock-relative bounds were counted from (``None`` when no
        bound depends on the clock).

    Raises:
        JobError: when a bound cannot be read or the window is empty.
    """
    clock = now or datetime.now(timezone.utc)
    hour = clock.replace(minute=0, second=0, microsecond=0)
    anchor = hour if hour == clock else hour + timedelta(hours=1)
    midnight = f"{clock:%Y-%m-%d}T00:00:00Z"  # "today" is the clock's day, even when the hour rounds past midnight
    since, until = (midnight if t is not None and t.strip().lower() == "today" else t for t in (since, until))
    try:
        win = models.make_window(since, until, anchor, default_days)
    except ValueError as e:
        raise JobError(str(e)) from None
    relative = _clock_relative(until) or (since is not None and _clock_relative(since))
    note = (f"the window's clock-relative edges count from {anchor:%Y-%m-%d %H:%M}Z (now, rounded up to the hour, so "
            f"runs within the hour see the same window)") if relative else None
    return win, note


def window_coverage(store: str | Path, window: Window) -> str | None:
    """Say which part of a window holds data when the window reaches well past the store's first or last day.

    Args:
        store: the store root.
        window: the window asked for.

    Returns:
        A note such as ``the store holds events from 2026-08-01 to 2026-09-14: only 2026-09-04 15:00Z ..
        2026-09-15 00:00Z of the window 2026-09-04 15:00Z .. 2026-12-03 15:00Z holds data (10 of 90 days)``, or
        ``None`` when the window lies within a day of the store's days.
    """
    from miner.store import data_days

    days = data_days(store)
    if days is None:
        return None
    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=timezone.utc)
    end = datetime(days[1].year, days[1].month, days[1].day, tzinfo=timezone.utc) + timedelta(days=1)
    if window.since >= first - COVERAGE_SLACK and window.until <= end + COVERAGE_SLACK:
        return None
    held = f"the store holds events from {days[0]} to {days[1]}"
    lo, hi = max(window.since, first), min(window.until, end)
    if lo >= hi:
        return f"{held}: none in the window {window}"
    return (f"{held}: only {lo:%Y-%m-%d %H:%M}Z .. {hi:%Y-%m-%d %H:%M}Z of the window {window} holds data "
            f"({(hi - lo).total_seconds() / 86400:.0f} of {window.days:.0f} days)")


def evidence_notes(store: str | Path, window: Window | None = None, account: str | None = None) -> list[str]:
    """Say which parts of a window's evidence are management events only (read through CloudTrail LookupEvents,
    ``miner ingest cloudtrail://REGION``), where data events could not be observed.

    Args:
        store: the store root.
        window: the window (``None``: all of the store).
        account: only this account's evidence (``None``: every account).

    Returns:
        One note, or none when no part of the window came from LookupEvents.
    """
    from miner import lookup

    spans = lookup.stored_spans(store, window, account)
    if not spans:
        return []
    where = "; ".join(f"account {a} {r} {s:%Y-%m-%d %H:%M}Z .. {e:%Y-%m-%d %H:%M}Z" for a, r, s, e in spans)
    return [f"management events only from CloudTrail LookupEvents ({where}): data events (S3 object-level, Lambda "
            f"Invoke, DynamoDB items, ...) are not in that evidence, so a granted data-event action counts as "
            f"unobservable, not unused, unless trail files of the account hold data events of its service in the "
            f"window"]


# ----------------------------------------------------------------------------------------- store and principals


def connect(store: str | Path, engine: str = "duckdb", master: str | None = None):
    """A connection over the store on one engine: DuckDB (file footers cached: a job reads the same ones several
    times) or Apache Spark (:mod:`miner.engine`).

    Args:
        store: the store root.
        engine: ``duckdb`` (default) or ``spark``.
        master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE`` selects Spark Connect).

    Returns:
        The connection, for :func:`miner.queries.run` and the :mod:`miner.usage` functions.

    Raises:
        JobError: when there is no store, or it holds no events.
        miner.engine.EngineError: an unknown engine, or Spark is not installed or cannot start.
    """
    from miner.store import StoreError
    from miner.store import connect as open_store

    try:
        if engine != "duckdb":
            from miner import engine as engines

            return engines.connect(store, engine, master=master)
        return open_store(store)
    except StoreError as e:
        raise JobError(str(e)) from None


def _other_kind(con, name: str, kind: str, account: str | None) -> str | None:
    """The ARN of a stored principal of the other kind (user for role, role for user) with this name, if any."""
    from miner import queries

    other = "user" if kind == "role" else "role"
    for arn in queries.run(con, "principal_names")["principal_arn"]:
        if f":{other}/" in arn and arn.rsplit("/", 1)[-1].lower() == name.lower() and \
                (not account or arn.split(":")[4] == account):
            return arn
    return None


class _Prefetch:
    """``suggest``'s two store reads, started early: the principal lookup of the name or ARN as given, then, when it
    finds exactly one principal (in ``account`` when given), that principal's call shapes. They run on a cursor of
    their own in a thread while the caller imports pandas and readies the mapper (DuckDB leaves the GIL while it
    reads), so the command's latency is its queries more than its start-up. Whatever the caller then decides (the
    name matches case-insensitively, the principal cannot hold a policy ...) it decides as without this; it uses a
    result only where it would have run the same query with the same parameters."""

    def __init__(self, con, window: Window, given: str | None, account: str | None, by_arn: bool = False):
        import threading

        self.lookup = self.shapes = None  # pyarrow Tables
        self.arn: str | None = None
        self._cur = con.cursor()
        text = (given or "").strip()
        self.thread = threading.Thread(target=self._run, args=(window, text, account, by_arn), name="miner-prefetch",
                                       daemon=True)
        if text:
            self.thread.start()

    def _run(self, window: Window, text: str, account: str | None, by_arn: bool) -> None:
        from miner import queries

        params = {"since": window.since, "until": window.until}
        try:
            arn = text if by_arn or text.startswith("arn:") else None
            found = queries.run_arrow(self._cur, "principal_lookup", **params, principal_name=None if arn else text,
                                      principal_arn=arn)
            self.lookup = found
            rows = [r for r in found.select(["principal_arn", "principal_account"]).to_pylist()
                    if not account or r["principal_account"] == account or f":{account}:" in r["principal_arn"]]
            if len(rows) == 1:
                self.shapes = queries.run_arrow(self._cur, "usage_by_principal", **params,
                                                principal_arn=rows[0]["principal_arn"])
                self.arn = rows[0]["principal_arn"]
        except Exception:  # noqa: BLE001 - an interrupted or failed read: the caller runs its queries itself
            self.shapes = None

    def join(self) -> None:
        """Wait for the reads."""
        if self.thread.is_alive():
            self.thread.join()

    def close(self) -> None:
        """Stop a read still running (the job failed first) and release the cursor."""
        if self.thread.is_alive():
            self._cur.interrupt()
            self.thread.join()
        self._cur.close()


def resolve(con, window: Window, *, role: str | None = None, user: str | None = None, principal: str | None = None,
            account: str | None = None, looked_up: pd.DataFrame | None = None) -> Principal:
    """The principal named by ``--role``, ``--user`` or ``--principal`` (:func:`miner.usage.resolve_principal`).

    Args:
        con: a connection from :func:`connect`.
        window: the principal must have events on the days the window touches.
        role: a role name or ARN.
        user: a user name or ARN.
        principal: any stored principal ARN.
        account: the account, when a name exists in several.
        looked_up: the ``principal_lookup`` rows of the name or ARN as given, when already read.

    Returns:
        The principal.

    Raises:
        JobError: unknown (with close names, or the right option when the name is a user given as ``--role`` or
            the reverse), ambiguous, or without events in the window.
    """
    from miner import usage

    try:
        return usage.resolve_principal(con, window, role=role, user=user, principal=principal, account=account,
                                       looked_up=looked_up)
    except usage.PrincipalError as e:
        name, kind = (role, "role") if role else (user, "user") if user else (None, None)
        if name and not name.startswith("arn:") and str(e).startswith("unknown"):
            other = _other_kind(con, name.strip(), kind, account)
            if other:
                flag = "--user" if kind == "role" else "--role"
                raise JobError(f"{name!r} is not a {kind} but the {flag[2:]} {other}: use {flag} {name}") from None
        raise JobError(str(e)) from None


def no_identity_policy(who: Principal) -> str | None:
    """Why a principal cannot hold an identity policy (so no policy can be suggested for it), or ``None``.

    Args:
        who: the principal.

    Returns:
        One line (an AWS service, a cross-account copy, the root user, ...), or ``None`` for a role or user.
    """
    arn, kind = who.arn, who.kind
    if kind in ("role", "user"):
        return None
    if arn.startswith("AWSAccount:"):
        acct = arn.split(":", 1)[1]
        return (f"{arn} stands for calls made from account {acct} (this account's copy of a cross-account call): "
                f"the identity policy belongs to the calling role or user in {acct}; mine that account's trail")
    if kind == "root":
        return f"{arn} is the root user: identity policies cannot restrict it (use an SCP, and stop using root)"
    if arn.startswith("identitycenter:"):
        return (f"{arn} is an IAM Identity Center user: its permissions come from permission sets, whose roles are "
                f"AWSReservedSSO_*: suggest for that role")
    if arn == "ANONYMOUS_PRINCIPAL":
        return "ANONYMOUS_PRINCIPAL made unsigned calls: no identity holds a policy for them (resource policies did)"
    if who.type == "AWSService" or arn.endswith(".amazonaws.com"):
        return (f"{arn} is an AWS service principal: it acts with its own permissions or a role it is given, never "
                f"with an identity policy of yours: suggest for that role")
    return f"{arn} is not an IAM role or user: it cannot hold an identity policy"


# ----------------------------------------------------------------------------------------- IAM sources


@dataclass(frozen=True)
class Grants:
    """Where the policies attached today come from: an authorization-details snapshot, live IAM, or nowhere.

    The same choice for ``suggest --diff``, ``review`` and ``backtest``: ``--iam-snapshot`` or ``--live``
    (``--profile``/``--endpoint-url`` imply ``--live``).
    """

    snapshot: Path | None = None
    live: bool = False
    profile: str | None = None
    endpoint_url: str | None = None

    @property
    def is_live(self) -> bool:
        """Whether grants are read live from IAM."""
        return self.live or bool(self.profile or self.endpoint_url)

    @property
    def given(self) -> bool:
        """Whether any source of grants was chosen."""
        return self.snapshot is not None or self.is_live

    def check(self) -> None:
        """The mistakes found without reading anything: a snapshot and live IAM both chosen, a snapshot path that
        does not exist (:meth:`open` says the same; this says it before the store is opened).

        Raises:
            JobError: on either.
        """
        if self.snapshot is not None and self.is_live:
            raise JobError("--iam-snapshot reads grants from a file and --live/--profile/--endpoint-url from IAM: "
                           "give one of them")
        if self.snapshot is not None and not Path(self.snapshot).exists():
            raise JobError(f"no IAM snapshot at {self.snapshot}")

    def open(self, *, inventory: bool = True) -> IamSource | None:
        """Open the source (a snapshot is read now, so a bad path fails before any mining).

        Args:
            inventory: list every role and user (live IAM: ``ListRoles``/``ListUsers``); one principal's policies
                need no listing.

        Returns:
            A :class:`miner.review.IamSource`, or ``None`` when no source was chosen.

        Raises:
            JobError: both a snapshot and live IAM chosen, an unreadable snapshot, or IAM cannot be listed.
        """
        from miner import iam, organizations, review

        self.check()
        try:
            if self.snapshot is not None:
                return review.snapshot_source(Path(self.snapshot))
            if not self.is_live:
                return None
            if inventory:
                return review.live_source(self.profile, self.endpoint_url)
        except iam.IamError as e:
            raise JobError(str(e)) from None
        where = f"live IAM{' at ' + self.endpoint_url if self.endpoint_url else ''}"
        return review.IamSource(label=where, inventory=[], accounts=set(),
                                attached=lambda arn: iam.from_live(arn, profile=self.profile,
                                                                   endpoint_url=self.endpoint_url),
                                org=organizations.live_source(self.profile, self.endpoint_url))


def _attached(source: IamSource, arn: str) -> AttachedPolicies:
    from miner import iam

    try:
        return source.attached(arn)
    except iam.IamError as e:
        raise JobError(str(e)) from None


def organizations_snapshot(*, profile: str | None = None, endpoint_url: str | None = None,
                           accounts: Iterable[str] | None = None,
                           progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[str]]:
    """The organization's SCPs and RCPs read live into the snapshot ``--iam-snapshot`` reads beside the IAM files
    (:func:`miner.organizations.read_snapshot_live`).

    Args:
        profile: an AWS CLI profile (the management account's, or a delegated administrator's).
        endpoint_url: an alternative Organizations endpoint.
        accounts: only these account ids (default: every account of the organization).
        progress: called with (accounts read, accounts in all).

    Returns:
        (the snapshot, notes).

    Raises:
        JobError: an account id that is not 12 digits, or the organization cannot be read.
    """
    from miner import organizations

    accounts = list(accounts or [])
    bad = [a for a in accounts if not (len(a) == 12 and a.isdigit())]
    if bad:
        raise JobError(f"--account takes 12-digit account ids, not {', '.join(repr(a) for a in bad)}")
    try:
        return organizations.read_snapshot_live(profile, endpoint_url, accounts or None, progress=progress)
    except organizations.OrgError as e:
        raise JobError(str(e)) from None


# ----------------------------------------------------------------------------------------- principals and usage


@dataclass
class Listing:
    """The principals that acted in a window (:func:`principals`)."""

    window: Window
    frame: pd.DataFrame  # miner.usage.principals columns, plus name; services as IAM prefixes
    notes: list[str] = field(default_factory=list)


def _name(arn: str, stored: Any) -> str:
    """A principal's name for a narrow column: its role or user name, else its ARN (services, accounts)."""
    if not arn.startswith("arn:"):
        return arn
    return stored if isinstance(stored, str) and stored else arn.rsplit("/", 1)[-1]


def coverage(store: str | Path, since: datetime | None = None, until: datetime | None = None, *, mapper=None,
             engine: str = "duckdb", spark_master: str | None = None):
    """How well the stored events of a window map to IAM actions and resources (:func:`miner.mapping.coverage`).

    Args:
        store: the store root.
        since: window start (default: the beginning of time).
        until: window end (default: far future).
        mapper: the mapper (default: the built-in rules, or ``$MINER_SERVICE_REFERENCE``'s).
        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).

    Returns:
        The :class:`miner.mapping.Coverage`.

    Raises:
        JobError: no store, or it holds no events.
    """
    from miner import mapping

    return mapping.coverage(connect(store, engine, spark_master), since, until, mapper=mapper)


def principals(store: str | Path, window: Window, *, engine: str = "duckdb",
               spark_master: str | None = None) -> Listing:
    """The principals that acted in a window, with the services they used named by IAM prefix.

    Args:
        store: the store root.
        window: the window.

        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).
    Returns:
        The :class:`Listing`.

    Raises:
        JobError: no store, or no events in the window.
    """
    from miner import mapping, usage

    con = connect(store, engine, spark_master)
    df = usage.principals(con, window)
    coverage = window_coverage(store, window)
    if df.empty:
        raise JobError(f"no events in the window {window}: widen --since/--until"
                       + (f" ({coverage})" if coverage else ""))
    hosts = [[s for s in list(services) if isinstance(s, str) and s] for services in df["services"]]
    prefix = {s: mapping.service_prefix(s) for s in {s for row in hosts for s in row}}
    df["services"] = [sorted({prefix[s] for s in row}) for row in hosts]
    df.insert(1, "name", [_name(a, n) for a, n in zip(df["principal_arn"], df["principal_name"])])
    return Listing(window, df, [coverage] if coverage else [])


@dataclass
class Activity:
    """What one principal did in a window (:func:`usage`)."""

    principal: Principal
    window: Window
    usage: Usage
    sources: pd.DataFrame  # top (source_ip, user_agent) pairs
    notes: list[str] = field(default_factory=list)

    def summary(self, frame: pd.DataFrame | None = None) -> pd.DataFrame:
        """Usage rows summarised by action and resource template (:func:`summarise`).

        Args:
            frame: the rows (default: the authorised ones).

        Returns:
            The summary.
        """
        return summarise(self.usage.authorised if frame is None else frame)


#: Columns of :func:`summarise`.
SUMMARY_COLUMNS = ["action", "resource", "resources", "calls", "first_seen", "last_seen", "regions", "outcomes"]


def _merged_counts(values: Iterable[str]) -> str:
    """``success:3,error:1`` strings added up key by key."""
    total: dict[str, int] = {}
    for text in values:
        for part in str(text or "").split(","):
            key, _, n = part.rpartition(":")
            if key:
                total[key] = total.get(key, 0) + int(n or 0)
    return ",".join(f"{k}:{v}" for k, v in sorted(total.items()))


def summarise(frame: pd.DataFrame, max_resources: int | None = None) -> pd.DataFrame:
    """(action, resource) usage rows grouped by action and the resource template ``suggest`` would grant.

    Hundreds of keys of one bucket become one row (``bucket/invoices/????/??/*.pdf``) that counts them.

    Args:
        frame: usage rows (:data:`miner.usage.USAGE_COLUMNS`).
        max_resources: the generalisation threshold (default: ``miner suggest``'s).

    Returns:
        :data:`SUMMARY_COLUMNS`: ``resources`` counts the distinct resources of the row, ``calls`` their calls.
    """
    import pandas as pd

    from miner import synthesize

    limit = synthesize.DEFAULT_MAX_RESOURCES if max_resources is None else max_resources
    rows = []
    for action, grp in frame.groupby("action", sort=True):
        patterns = synthesize.generalise(grp["resource"].dropna(), limit)
        key = grp["resource"].map(lambda r: patterns.get(r, r))
        for pattern, g in grp.groupby(key, sort=True, dropna=False):
            regions = sorted({r for v in g["regions"] for r in str(v or "").split(",") if r})
            rows.append((action, pattern, int(g["resource"].nunique()), int(g["calls"].sum()), g["first_seen"].min(),
                         g["last_seen"].max(), ",".join(regions), _merged_counts(g["outcomes"])))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def usage(store: str | Path, window: Window, *, role: str | None = None, user: str | None = None,
          principal: str | None = None, account: str | None = None, top: int = 5, engine: str = "duckdb",
          spark_master: str | None = None) -> Activity:
    """What one principal did in a window: its calls mapped to IAM actions, and where they came from.

    Args:
        store: the store root.
        window: the window.
        role: a role name or ARN.
        user: a user name or ARN.
        principal: any stored principal ARN.
        account: the account, when a name exists in several.
        top: how many (source IP, user agent) pairs to keep.

        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).
    Returns:
        The :class:`Activity`.

    Raises:
        JobError: no store, or the principal is unknown, ambiguous or idle in the window.
    """
    from miner import usage as mod

    con = connect(store, engine, spark_master)
    who = resolve(con, window, role=role, user=user, principal=principal, account=account)
    used = mod.collect(con, who, window)
    return Activity(who, window, used, mod.sources(con, who.arn, window, top),
                    [n for n in [window_coverage(store, window)] if n])


# ----------------------------------------------------------------------------------------- suggest


@dataclass
class Suggested:
    """A suggested policy, what it was mined from, and with grants known the diff against what is attached."""

    principal: Principal
    window: Window
    usage: Usage
    suggestion: Suggestion
    summary: list[str]  # what it was mined from (for stderr; never part of the policy)
    notes: list[str] = field(default_factory=list)
    attached: AttachedPolicies | None = None
    report: DiffReport | None = None

    @property
    def description(self) -> str:
        """The policy's description (Terraform, CloudFormation)."""
        return f"Least-privilege policy for {self.principal.arn} mined by miner from CloudTrail {self.window}"

    def policy(self, fmt: str = "json") -> str:
        """The policy as IAM JSON, Terraform or CloudFormation, attached to the principal in the latter two.

        Args:
            fmt: ``json``, ``terraform`` or ``cloudformation``.

        Returns:
            The text.
        """
        from miner import synthesize as syn

        who = self.principal
        role = who.short_name if who.kind == "role" else None
        user = who.short_name if who.kind == "user" else None
        if fmt == "terraform":
            return syn.to_terraform(self.suggestion, who.short_name, self.description, role=role, user=user,
                                    description=self.description)
        if fmt == "cloudformation":
            return syn.to_cloudformation(self.suggestion, who.short_name, description=self.description,
                                         roles=[role] if role else None, users=[user] if user else None)
        if fmt != "json":
            raise ValueError(f"unknown policy format {fmt!r}")
        return syn.to_json(self.suggestion)

    @property
    def attached_labels(self) -> list[str]:
        """The policies attached now (and the boundary), as the report names them."""
        a = self.attached
        if a is None:
            return []
        return [p.label for p in a.policies] + ([f"boundary {a.boundary.name}"] if a.boundary else [])

    @property
    def unused(self) -> int:
        """How many granted actions were not used (0 without a diff)."""
        return self.report.count("unused") if self.report is not None else 0

    def report_text(self) -> str:
        """The diff report as text (logged values made visible).

        Returns:
            The text; empty without a diff.
        """
        from miner.diff import render_text

        return render_text(self.report, attached=self.attached_labels) if self.report is not None else ""

    def report_dict(self) -> dict:
        """The diff report, JSON-ready (the policy and how it was generalised included).

        Returns:
            The dict; empty without a diff.
        """
        if self.report is None:
            return {}
        s = self.suggestion
        return {**self.report.to_dict(), "attached": self.attached_labels,
                "window": {"since": self.window.since.isoformat(), "until": self.window.until.isoformat()},
                "catalog": s.catalog_version, "policies": s.policies,
                "generalisations": [asdict(g) for g in s.generalisations],
                "fallbacks": [asdict(f) for f in s.fallbacks]}


def suggest(store: str | Path, window: Window, *, role: str | None = None, user: str | None = None,
            principal: str | None = None, account: str | None = None, max_resources: int | None = None,
            wildcards: bool = True, grants: Grants | None = None, engine: str = "duckdb",
            spark_master: str | None = None) -> Suggested:
    """A least-privilege policy from a principal's authorised calls; with grants, the diff against what is attached.

    Args:
        store: the store root.
        window: the window to mine.
        role: a role name or ARN.
        user: a user name or ARN.
        principal: a stored principal ARN.
        account: the account, when a name exists in several.
        max_resources: generalise more than this many resources of one kind (0: never; default ``suggest``'s).
        wildcards: allow action wildcards.
        grants: where the attached policies come from; given, the result carries the diff report.

        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).
    Returns:
        The :class:`Suggested`.

    Raises:
        JobError: a user mistake (no store, unknown principal, one that cannot hold an identity policy, no
            authorised call to mine, an unreadable snapshot, a principal IAM does not know).
    """
    if max_resources is not None and max_resources < 0:
        raise JobError("--max-resources must be 0 or more")
    if grants is not None:
        grants.check()
    con = connect(store, engine, spark_master)
    # the store is read in a thread from here on, while this one imports pandas and readies the mapper
    ahead = _Prefetch(con, window, role or user or principal, account, by_arn=bool(principal)) \
        if engine == "duckdb" else None
    try:
        from miner import diff, iam, synthesize as syn, usage as mod
        from miner import __version__
        from miner.mapping import get_mapper, rules_version

        max_resources = syn.DEFAULT_MAX_RESOURCES if max_resources is None else max_resources
        source = grants.open(inventory=False) if grants is not None else None  # a bad snapshot fails before mining
        get_mapper()
        looked_up = shapes = None
        if ahead is not None:
            ahead.join()
            looked_up = ahead.lookup.to_pandas() if ahead.lookup is not None else None
        who = resolve(con, window, role=role, user=user, principal=principal, account=account, looked_up=looked_up)
        why = no_identity_policy(who)
        if why:
            raise JobError(f"{why}; no policy to suggest")
        if ahead is not None and ahead.shapes is not None and ahead.arn == who.arn:
            shapes = ahead.shapes.to_pandas()
    finally:
        if ahead is not None:
            ahead.close()
    used = mod.collect(con, who, window, shapes=shapes)
    coverage = window_coverage(store, window)
    account = who.account or iam.principal_parts(who.arn)[0]
    notes = ([coverage] if coverage else []) + evidence_notes(store, window, account)
    if not used.events:
        raise JobError(f"{who.arn} has no events in the window {window}: widen --since/--until"
                       + (f" ({coverage})" if coverage else ""))
    authorised = used.authorised
    if authorised.empty:
        raise JobError(f"{who.arn} made no authorised calls that map to IAM actions in the window {window} "
                       f"({used.why_no_policy()}): no policy to suggest")
    suggestion = syn.synthesize(authorised, max_resources=max_resources, wildcards=wildcards)
    summary = syn.summary_lines(suggestion, principal_arn=who.arn, window=window, events=used.events,
                                authorised_events=used.authorised_events, denied=used.denied, unmapped=used.unmapped,
                                no_permission=used.no_permission)
    summary.append(f"mapping:    {rules_version()} (miner {__version__})")
    result = Suggested(who, window, used, suggestion, summary, notes)
    if source is None:
        return result
    attached = _attached(source, who.arn)
    data_sources = mod.data_event_sources(con, window, account=account)
    boundary = [attached.boundary.document] if attached.boundary and attached.boundary.document else None
    result.attached = attached
    org = source.org.evaluator(who.arn, account) if source.org is not None else None
    result.report = diff.compare(attached.documents, suggestion.policies, authorised, boundary=boundary,
                                 denied=used.denied, data_sources=data_sources, principal_arn=who.arn,
                                 principal_account=who.account, missing=attached.missing, source=attached.source,
                                 policies=attached.refs, org=org)
    _add_evidence(result.report, store, authorised)
    result.notes += source.org.notes if source.org is not None else []
    return result


def advisor_table(store: str | Path) -> pd.DataFrame | None:
    """The store's IAM Access Advisor table (:func:`miner.advisor.read`), or ``None`` when ``miner advisor`` never
    wrote to it.

    Args:
        store: the store root.

    Returns:
        Each principal's latest report, or ``None``.

    Raises:
        JobError: the table cannot be read.
    """
    from miner import advisor

    try:
        frame = advisor.read(store)
    except (OSError, ValueError) as e:  # pyarrow's errors are ValueErrors/OSErrors
        raise JobError(f"cannot read the store's Access Advisor table ({advisor.ADVISOR_DIR}/): {e}") from None
    return frame if len(frame) else None


def _add_evidence(report: DiffReport, store: str | Path, authorised: pd.DataFrame) -> None:
    """Give a diff report the evidence of each granted action when the store holds the principal's Access Advisor
    report (otherwise the report stays as it was)."""
    from miner import evidence

    witness = evidence.Witness.of(advisor_table(store), report.principal_arn)
    if witness is not None:
        report.witness = witness
        report.evidence = evidence.classify_all(report.classification, evidence.calls_by_action(authorised), witness)


# ----------------------------------------------------------------------------------------- review


@dataclass
class Reviewed:
    """A right-sizing review (:func:`review`) and, against a previous one, what changed."""

    review: dict  # miner.review.build_review's dict; its notes include :attr:`notes`
    changes: dict | None = None
    notes: list[str] = field(default_factory=list)  # the window's coverage of the store

    def render(self, fmt: str = "html") -> str:
        """The review as ``html``, ``md``, ``csv`` or ``json`` (:func:`miner.report.render`).

        Args:
            fmt: the format.

        Returns:
            The text.
        """
        from miner import report

        return report.render(self.review, fmt, self.changes)

    def summary_line(self) -> str:
        """One line for stderr: how many principals, how much unused privilege, what changed."""
        rv, ch = self.review, self.changes
        s = rv["summary"]
        grants = (f", {s['unused_actions']:,} unused granted actions, {s['high_risk']} high-risk grants "
                  f"(unused or used far more broadly than granted)"
                  if rv["grants_known"] else " (grants unknown: no --iam-snapshot or --live)")
        changed = (f"; {ch['summary']['changed_principals']} changed, {ch['summary']['new_principals']} new, "
                   f"{ch['summary']['gone_principals']} gone since the previous review") if ch else ""
        since, until = (rv["window"][k][:16].replace("T", " ") for k in ("since", "until"))
        return (f"reviewed {s['principals']} principals in {since}Z .. {until}Z: "
                f"{s['active']} active, {s['never_used']} never used{grants}{changed}")


def review(store: str | Path, window: Window, *, grants: Grants | None = None, account: str | None = None,
           max_resources: int | None = None, wildcards: bool = True,
           previous: str | Path | dict | None = None, engine: str = "duckdb",
           spark_master: str | None = None, processes: int | None = None) -> Reviewed:
    """The quarterly right-sizing review of every role and user (:func:`miner.review.build_review`).

    Args:
        store: the store root.
        window: the review window.
        grants: where grants come from (without: usage only).
        account: only principals of this account.
        max_resources: the suggested policies' generalisation threshold.
        wildcards: allow action wildcards in the suggested policies.
        previous: a previous ``--format json`` review (a path or its dict): the result says what changed.
        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).
        processes: processes that build the principals' entries (default: the CPUs available; forked workers, with
            the DuckDB engine and an offline grants source only: :func:`miner.review.review_processes`).

    Returns:
        The :class:`Reviewed`.

    Raises:
        JobError: no store, an unreadable previous review or IAM source, or nobody to review.
    """
    from miner import review as mod

    if isinstance(previous, (str, Path)):
        try:
            previous = mod.load_review(previous)
        except ValueError as e:
            raise JobError(str(e)) from None
    source = (grants or Grants()).open(inventory=True)
    con = connect(store, engine, spark_master)
    rv = mod.build_review(con, window, iam_source=source, store=store, account=account,
                          max_resources=max_resources, wildcards=wildcards, advisor=advisor_table(store),
                          processes=1 if engine == "spark" else processes)
    coverage = window_coverage(store, window)
    if not rv["principals"]:
        raise JobError(f"no roles or users acted in the window {window} and no IAM source lists any: widen "
                       f"--since/--until" + (f" ({coverage})" if coverage else ""))
    notes = ([coverage] if coverage else []) + evidence_notes(store, window, account)
    rv["notes"].extend(notes)
    return Reviewed(rv, mod.compare_reviews(previous, rv) if previous else None, notes)


# ----------------------------------------------------------------------------------------- backtest


def _days(value: float | str, option: str) -> float:
    from miner import backtest

    if not isinstance(value, str):
        return float(value)
    try:
        return backtest.parse_days(value)
    except ValueError as e:
        raise JobError(f"{option}: {e}") from None


def _levels(value: Iterable[int] | str) -> list[int]:
    try:
        levels = [int(x) for x in (value.split(",") if isinstance(value, str) else value) if str(x).strip()]
    except ValueError as e:
        raise JobError(f"--max-resources takes integers such as 1,10,50 ({e})") from None
    if not levels or min(levels) < 0:
        raise JobError("--max-resources takes integers >= 0 such as 1,10,50")
    return sorted(set(levels), reverse=True)


def backtest_settings(levels: Iterable[int] | str) -> list:
    """The settings a backtest compares for these ``--max-resources`` levels (wildcards off and on, service-level).

    Args:
        levels: ``--max-resources`` values, or their comma-separated text.

    Returns:
        :class:`miner.backtest.Setting` objects, the defaults first.

    Raises:
        JobError: when a level is not an integer >= 0.
    """
    from miner import backtest

    mr = _levels(levels)
    known = {s.max_resources for s in backtest.default_settings() if not s.service_level}
    settings = [s for s in backtest.default_settings() if s.service_level or s.max_resources in mr]
    return settings + [backtest.Setting(f"{'wildcards' if wc else 'no-wildcards'}, max-resources {m}", wc, m)
                       for wc in (False, True) for m in mr if m not in known]


def backtest(store: str | Path, *, role: str | None = None, user: str | None = None, principal: str | None = None,
             account: str | None = None, every: bool = False, train: float | str = 60, test: float | str = 30,
             until: datetime | None = None, max_resources: Iterable[int] | str = (1, 10, 50),
             min_days: float | str = 30, grants: Grants | None = None,
             progress: Callable[[int, int, str | None], None] | None = None, engine: str = "duckdb",
             spark_master: str | None = None) -> dict:
    """Backtest suggested policies: mine a training window, replay the test window after it, per setting.

    Args:
        store: the store root.
        role: a role name or ARN (one principal).
        user: a user name or ARN.
        principal: a stored principal ARN.
        account: the account, when a name exists in several.
        every: every IAM role and user with enough history instead of one principal.
        train: the training window, in days or as text (``60d``).
        test: the test window, in days or as text.
        until: the end of the test window (default: the midnight after the principal's last event).
        max_resources: the ``--max-resources`` levels to compare.
        min_days: with ``every``, the history a principal needs before its anchor.
        grants: where the attached policies come from (scored as a baseline row).
        progress: with ``every``, called as ``progress(done, total, principal_arn)``.

        engine: the query engine, ``duckdb`` (default) or ``spark`` (:mod:`miner.engine`).
        spark_master: with ``spark``, the master URL (default ``local[*]``; ``$SPARK_REMOTE``: Spark Connect).
    Returns:
        :func:`miner.backtest.run_backtest`'s dict, or with ``every`` :func:`miner.backtest.run_backtest_all`'s.

    Raises:
        JobError: a user mistake (unreadable lengths, a principal with ``every``, an unknown principal, windows the
            store cannot fill).
    """
    from miner import backtest as mod
    from miner import usage as umod

    train_days, test_days = _days(train, "--train"), _days(test, "--test")
    history = _days(min_days, "--min-days")
    settings = backtest_settings(max_resources)
    grants = grants or Grants()
    if every and (role or user or principal or account):
        raise JobError("--all backtests every principal: leave out --role, --user, --principal and --account")
    source = grants.open(inventory=every)
    con = connect(store, engine, spark_master)
    if every:
        known = {inv["arn"] for inv in source.inventory} if source is not None else set()

        def current_for(arn: str) -> list[dict] | None:
            from miner import iam

            if arn not in known:
                return None
            try:
                return [d for _, d in source.attached(arn).documents]
            except iam.IamError:
                return None

        try:
            return mod.run_backtest_all(con, train_days=train_days, test_days=test_days, until=until,
                                        min_days=history, settings=settings,
                                        current_for=current_for if source is not None else None, progress=progress)
        except ValueError as e:
            raise JobError(str(e)) from None
    who = resolve(con, EVERYTHING, role=role, user=user, principal=principal, account=account)
    why = no_identity_policy(who)
    if why:
        raise JobError(f"{why}; nothing to backtest")
    if until is None:
        last = umod.principals(con, EVERYTHING, principal_arn=who.arn)["last_seen"].max()
        until = mod.default_anchor(last.to_pydatetime())
    try:
        train_w, test_w = mod.split_windows(until, train_days, test_days)
        current = [d for _, d in _attached(source, who.arn).documents] if source is not None else None
        return mod.run_backtest(con, who, train_w, test_w, settings=settings, current=current)
    except ValueError as e:
        raise JobError(str(e)) from None


# ----------------------------------------------------------------------------------------- Access Advisor


@dataclass
class AdvisorRun:
    """What :func:`advisor` read and wrote."""

    source: str
    rows: int
    principals: int
    services: int
    never_accessed: int  # (principal, service) pairs with no access in the tracking period
    path: str
    problems: list[str] = field(default_factory=list)  # principals or accounts whose report could not be had

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def advisor(store: str | Path, *, snapshot: str | Path | None = None, profile: str | None = None,
            endpoint_url: str | None = None, all_accounts: bool = False,
            assume_role: str = "OrganizationAccountAccessRole", now: datetime | None = None,
            progress: Callable[[int, int, str], None] | None = None, sleep: Callable[[float], None] | None = None,
            poll: float = 2.0) -> AdvisorRun:
    """Read IAM Access Advisor's service- and action-level last-accessed reports of every role and user into the
    store's advisor table (:mod:`miner.advisor`).

    Args:
        store: the store root (created when missing).
        snapshot: a file or folder of ``get-service-last-accessed-details`` output (offline); else live IAM.
        profile: the AWS profile of live reads.
        endpoint_url: another endpoint for IAM (and Organizations/STS with ``all_accounts``), e.g. a test server.
        all_accounts: every account of the organisation (Organizations ``ListAccounts``, then ``sts:AssumeRole``).
        assume_role: with ``all_accounts``, the role name to assume in each member account.
        now: the run's time (default: the clock at call time; names the file).
        progress: called as ``progress(done, total, principal_arn)``.
        sleep: waits between polls and throttled tries (default ``time.sleep``).
        poll: the first wait between polls of a job, in seconds.

    Returns:
        The :class:`AdvisorRun`.

    Raises:
        JobError: an unreadable snapshot, IAM or Organizations cannot be read, or no report was had at all.
    """
    import time

    from botocore.exceptions import BotoCoreError, ClientError

    from miner import advisor as adv

    now = now or datetime.now(timezone.utc)
    sleep = sleep or time.sleep
    problems: list[str] = []
    try:
        if snapshot is not None:
            if profile or endpoint_url or all_accounts:
                raise JobError("--snapshot reads reports from files: leave out --profile, --endpoint-url and "
                               "--all-accounts")
            source = f"snapshot {snapshot}"
            rows = adv.load_snapshot(snapshot)
        else:
            sessions = [(None, None)]
            if all_accounts:
                sessions, problems = adv.organisation_sessions(assume_role, profile=profile,
                                                               endpoint_url=endpoint_url, sleep=sleep)
            source = f"live IAM{' at ' + endpoint_url if endpoint_url else ''}"
            rows = []
            for account, session in sessions:
                client = adv.iam_client(profile, endpoint_url, session=session)
                try:
                    arns = adv.list_principals(client, sleep=sleep)
                except (ClientError, BotoCoreError) as e:
                    if not all_accounts:
                        raise JobError(f"cannot list IAM roles and users: {e} (set credentials, --profile or "
                                       f"--endpoint-url, or use --snapshot)") from None
                    problems.append(f"account {account}: cannot list IAM roles and users: {e}")
                    continue
                got, bad = adv.fetch(client, arns, source=source, sleep=sleep, poll=poll, progress=progress)
                rows += got
                problems += bad
    except adv.AdvisorError as e:
        raise JobError(str(e)) from None
    if not rows:
        raise JobError("no Access Advisor report was read" + (": " + "; ".join(problems[:3]) if problems else
                                                              " (no roles or users)"))
    written = adv.write(store, rows, now=now)
    never = sum(1 for r in rows if r["action"] is None and r["last_accessed"] is None)
    return AdvisorRun(source, written.rows, written.principals, written.services, never, written.path, problems)
