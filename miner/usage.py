"""What a principal did: runs the usage queries over the store and maps call shapes to IAM actions and resources."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from miner import queries
from miner.models import Window

#: The columns that decide what an event maps to (one mapping per distinct combination).
SHAPE_KEY = ["event_source", "event_name", "request_parameters", "resources", "account_id", "aws_region", "partition",
             "event_type"]

#: The request context of the calls, as arrays of distinct values per (action, resource): what policy Conditions are
#: evaluated against (``miner.diff.call_context``).
CONTEXT_COLUMNS = ["source_ips", "vpc_endpoints", "invokers"]


#: Columns of the per-(action, resource) usage frame returned by :func:`aggregate`.
USAGE_COLUMNS = ["action", "resource", "outcome_class", "calls", "first_seen", "last_seen", "regions", "accounts",
                 "operations", "event_sources", "outcomes", "derivation", "reason", "implicit", "invoked_by",
                 "data_event", "conditions", *CONTEXT_COLUMNS]


class PrincipalError(ValueError):
    """The principal the user named is unknown, ambiguous, or has no events in the window (a user mistake)."""


@dataclass(frozen=True)
class Principal:
    """One acting principal, as stored in the ``events`` table."""

    arn: str
    type: str | None = None
    name: str | None = None
    account: str | None = None

    @property
    def kind(self) -> str:
        """``role``, ``user``, ``root`` or ``other`` (from the ARN)."""
        res = self.arn.split(":", 5)[-1] if self.arn.startswith("arn:") else ""
        if res.startswith("role/"):
            return "role"
        if res.startswith("user/"):
            return "user"
        if res == "root":
            return "root"
        return "other"

    @property
    def short_name(self) -> str:
        """The principal's name: the stored name, else the last path segment of the ARN."""
        return self.name or self.arn.rsplit("/", 1)[-1]


@dataclass
class Usage:
    """A principal's activity in a window, mapped to IAM actions."""

    principal: Principal
    window: Window
    actions: pd.DataFrame  # USAGE_COLUMNS, authorised and denied rows (see ``outcome_class``)
    unmapped: pd.DataFrame  # event_source, event_name, status, calls, note: events that map to no IAM action
    #                         (status ``unmapped``: a mapping gap; ``invalid``: the request names a resource AWS
    #                         does not allow, so it is never used to build an ARN)
    no_permission: pd.DataFrame  # the same for calls that need no permission (no_permission, service_event, ...)
    events: int = 0  # every event of the principal in the window
    authorised_events: int = 0
    denied_events: int = 0
    #: DENIED_COLUMNS: the denied calls per (action, resource, error code), those that map to no action included
    #: (``action`` null); most frequent first
    denied_calls: pd.DataFrame | None = None
    #: outcome class -> its rows of ``actions`` (index reset), when the maker cut them already (:func:`collect_all`
    #: does, for every principal at once); else :attr:`authorised` and :attr:`denied` filter ``actions``
    by_class: dict[str, pd.DataFrame] | None = field(default=None, repr=False, compare=False)

    @property
    def authorised(self) -> pd.DataFrame:
        """The (action, resource) rows of authorised calls: the input of a suggested policy."""
        return self._of_class("authorised")

    @property
    def denied(self) -> pd.DataFrame:
        """The (action, resource) rows of denied calls: reported, never added to a policy."""
        return self._of_class("denied")

    def _of_class(self, outcome_class: str) -> pd.DataFrame:
        if self.by_class is not None and outcome_class in self.by_class:
            return self.by_class[outcome_class]
        return self.actions[self.actions["outcome_class"] == outcome_class].reset_index(drop=True)

    def why_no_policy(self) -> str:
        """What the calls were, when none is an authorised call that maps to an IAM action (no policy to suggest).

        Returns:
            e.g. ``3 calls mapping to no IAM action (a mapping gap: miner coverage --unmapped lists them), 2 calls
            needing no IAM permission``: each cause with its count.
        """
        def calls(frame: pd.DataFrame, status: str | None = None) -> int:
            if not len(frame):
                return 0
            return int(frame.loc[frame["status"] == status, "calls"].sum() if status else frame["calls"].sum())

        causes = [(calls(self.unmapped, "unmapped"), "mapping to no IAM action (a mapping gap: miner coverage "
                                                     "--unmapped lists them)"),
                  (calls(self.unmapped, "invalid"), "naming a resource AWS does not allow (invalid, never used to "
                                                    "build an ARN)"),
                  (self.denied_events, "denied"),
                  (calls(self.no_permission), "needing no IAM permission")]
        parts = [f"{n:,} call{'s' if n != 1 else ''} {what}" for n, what in causes if n]
        return ", ".join(parts) or "no calls"


def _params(window: Window, **extra: Any) -> dict[str, Any]:
    return {"since": window.since, "until": window.until, **extra}


def principals(con, window: Window, *, name: str | None = None, principal_arn: str | None = None) -> pd.DataFrame:
    """The principals that acted in a window (``queries/principals.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window.
        name: only principals with this ``principal_name``.
        principal_arn: only this principal.

    Returns:
        One row per principal: principal_arn, principal_type, principal_name, principal_account, events,
        authorised, denied, first_seen, last_seen, services, accounts, regions; busiest first.
    """
    return queries.run(con, "principals", **_params(window, principal_name=name, principal_arn=principal_arn))


def _arn_account(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" else None


def _in_account(found: pd.DataFrame, account: str) -> pd.DataFrame:
    """The rows whose principal belongs to ``account`` (by principal_account or the account in the ARN)."""
    return found[(found["principal_account"] == account) | (found["principal_arn"].map(_arn_account) == account)]


def _matches_name(row: pd.Series, name: str, kind: str | None) -> bool:
    arn = row["principal_arn"] or ""
    if kind and f":{kind}/" not in arn:
        return False
    low = name.lower()
    return (row["principal_name"] or "").lower() == low or arn.rsplit("/", 1)[-1].lower() == low


def resolve_principal(con, window: Window, *, role: str | None = None, user: str | None = None,
                      principal: str | None = None, account: str | None = None,
                      looked_up: pd.DataFrame | None = None) -> Principal:
    """Find the one principal the user means.

    A role or user name matches ``principal_name`` or the last path segment of a role/user ARN (case-insensitive,
    as IAM names are); an ARN matches ``principal_arn`` exactly.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window (a principal must have events in it).
        role: a role name or role ARN.
        user: a user name or user ARN.
        principal: any principal ARN as stored (role, user, root, service host, ...).
        account: restrict name matches to this account id.
        looked_up: the ``principal_lookup`` rows of the name or ARN as given (stripped), when already read (by
            ``miner.jobs``' early read); otherwise they are read here.

    Returns:
        The principal. It has events on the days the window touches (``queries/principal_lookup.sql``); whether
        any fall inside the window's exact bounds shows in :func:`collect`.

    Raises:
        PrincipalError: nothing given, unknown (with close names), ambiguous (lists the ARNs), or no events in
            the window (says when the principal was last seen).
    """
    given = [x for x in (role, user, principal) if x]
    if len(given) != 1:
        raise PrincipalError("name exactly one principal: --role NAME|ARN, --user NAME|ARN or --principal ARN")
    text = given[0].strip()
    kind = "role" if role else "user" if user else None
    is_arn = text.startswith("arn:") or bool(principal)

    def lookup(name: str | None = None, arn: str | None = None) -> pd.DataFrame:
        return queries.run(con, "principal_lookup", **_params(window, principal_name=name, principal_arn=arn))

    if is_arn:
        found = lookup(arn=text) if looked_up is None else looked_up
    else:
        found = lookup(name=text) if looked_up is None else looked_up
        if found.empty:  # names are case-insensitive in IAM; fall back to the whole store's identities
            every = queries.run(con, "principal_names")
            hits = every[every.apply(_matches_name, axis=1, args=(text, kind))] if len(every) else every
            found = pd.concat([lookup(arn=a) for a in hits["principal_arn"]]) if len(hits) else found
    if not is_arn and len(found):
        found = found[found.apply(_matches_name, axis=1, args=(text, kind))]
    if account and len(found):
        found = _in_account(found, account)
    if found.empty:
        raise PrincipalError(_not_found_message(con, window, text, kind, account, is_arn))
    if len(found) > 1:
        arns = "\n  ".join(f"{a} ({n:,} events)" for a, n in zip(found["principal_arn"], found["events"]))
        raise PrincipalError(f"{text!r} matches {len(found)} principals:\n  {arns}\n"
                             f"name one with --account ACCOUNT_ID or --principal ARN")
    row = found.iloc[0]
    return Principal(str(row["principal_arn"]), row["principal_type"], row["principal_name"], row["principal_account"])


def _not_found_message(con, window: Window, text: str, kind: str | None, account: str | None, is_arn: bool) -> str:
    every = queries.run(con, "principal_names")
    what = {"role": "role", "user": "user"}.get(kind or "", "principal")
    where = f" in account {account}" if account else ""
    if len(every):
        if is_arn:
            same = every[every["principal_arn"] == text]
        else:
            same = every[every.apply(_matches_name, axis=1, args=(text, kind))]
            if account:
                same = _in_account(same, account)
        if len(same):
            last = pd.to_datetime(same["last_seen"]).max()
            first = pd.to_datetime(same["first_seen"]).min()
            return (f"{what} {text!r}{where} has no events in the window {window} (it has events from "
                    f"{first:%Y-%m-%d} to {last:%Y-%m-%d}): widen --since/--until")
    pool = every if not kind else every[every["principal_arn"].str.contains(f":{kind}/", regex=False, na=False)]
    names = sorted(set(pool["principal_arn"]) if is_arn else {n for n in pool["principal_name"] if n})
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    if not close and not is_arn:
        lowered = {n.lower(): n for n in names}
        close = [lowered[n] for n in difflib.get_close_matches(text.lower(), list(lowered), n=5, cutoff=0.5)]
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    listing = "" if close else f" (run `miner principals` to list the {len(names)} known)"
    return f"unknown {what} {text!r}{where}: no such principal in the store{hint}{listing}"


def call_shapes(con, principal_arn: str | None, window: Window) -> pd.DataFrame:
    """Distinct call shapes in a window, of one principal or of every principal (``queries/usage_by_principal.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        principal_arn: the principal, or ``None`` for every principal (one pass over the store).
        window: the time window.

    Returns:
        One row per distinct (principal_arn, SHAPE_KEY, outcome, event_category) with events, first_seen,
        last_seen, invoked_by and :data:`CONTEXT_COLUMNS`; ordered by principal, then shape.
    """
    return queries.run_arrow(con, "usage_by_principal", **_params(window, principal_arn=principal_arn)).to_pandas()


def _mapper():
    from miner import mapping

    return mapping


_MAP_COLUMNS = ["status", "action", "resource", "derivation", "reason", "implicit", "condition_key", "condition_value",
                "note"]


def map_shapes(shapes: pd.DataFrame) -> pd.DataFrame:
    """Map call shapes to IAM actions; each distinct SHAPE_KEY is mapped once.

    Uses ``mapping.map_frame`` when the mapping module provides it (it maps each distinct input tuple once),
    else ``mapping.map_event`` once per distinct shape.

    Args:
        shapes: rows with the SHAPE_KEY columns (and any others, kept).

    Returns:
        One row per (input row x mapped action) with the input columns plus ``status``, ``action``,
        ``resource``, ``derivation``, ``reason``, ``implicit``, ``condition_key``, ``condition_value`` (a condition
        the grant carries, e.g. ``ec2:CreateAction``), ``note``; events that map to nothing keep one row
        with ``action`` null and ``status`` ``unmapped`` or ``no_permission`` (or ``service_event``, ...).
    """
    if shapes.empty:
        return shapes.assign(**{c: pd.Series(dtype=object) for c in _MAP_COLUMNS})
    shapes = shapes.reset_index(drop=True)
    mapping = _mapper()
    map_frame = getattr(mapping, "map_frame", None)
    if map_frame is not None:
        frame = map_frame(shapes)
        frame = frame[list(shapes.columns) + _MAP_COLUMNS].reset_index(drop=True)
        frame["implicit"] = frame["implicit"].fillna(False).astype(bool)
        return frame
    shape_id = shapes.groupby(SHAPE_KEY, dropna=False, sort=False).ngroup()
    keys = shapes.loc[~shape_id.duplicated(), SHAPE_KEY].copy()
    keys["_shape"] = shape_id[keys.index].to_numpy()
    mapped = _map_each(mapping, keys.reset_index(drop=True))
    joined = shapes.assign(_shape=shape_id.to_numpy()).merge(mapped, on="_shape", how="left", sort=False)
    return joined.drop(columns="_shape")


def _map_each(mapping, keys: pd.DataFrame) -> pd.DataFrame:
    """Map distinct shapes (SHAPE_KEY + ``_shape``) one by one with ``mapping.map_event``."""
    rows = []
    for shape, src, name, params, res, acct, region, part, etype in zip(
            keys["_shape"], keys["event_source"], keys["event_name"], keys["request_parameters"], keys["resources"],
            keys["account_id"], keys["aws_region"], keys["partition"], keys["event_type"]):
        result = mapping.map_event(src, name, params, res, account=acct or "", region=region or "",
                                   partition=part or "aws", event_type=etype)
        if result.status == "mapped" and result.actions:
            for a in result.actions:
                rows.append((shape, "mapped", a.action, a.resource, a.derivation, a.reason, bool(a.implicit),
                             a.condition_key, a.condition_value, result.note))
        else:
            status = result.status if result.status != "mapped" else "unmapped"
            rows.append((shape, status, None, None, None, None, False, None, None, result.note))
    return pd.DataFrame(rows, columns=["_shape"] + _MAP_COLUMNS)


def resolve_caller(mapped: pd.DataFrame, principal_arn: str | pd.Series) -> pd.DataFrame:
    """Write the caller into the resources of calls on oneself (``iam:CreateAccessKey`` without a user name).

    The mapping gives them the resource ``arn:...:user/${miner:caller}`` (:data:`miner.mapping.CALLER`). Made by an
    IAM user (or the root user), the call acts on that principal, so the resource becomes its ARN, as a literal.
    Made by anything else (an assumed role, a federated user), AWS refuses it, as there is no user to act on: the
    row becomes ``invalid``, with a note, and is never granted.

    Args:
        mapped: the output of :func:`map_shapes`.
        principal_arn: the principal of every row, or a Series of one per row (aligned with ``mapped``).

    Returns:
        ``mapped`` itself when no row is a call on oneself, else a copy with those rows resolved.
    """
    from miner.mapping import CALLER
    from miner.patterns import literal

    if mapped.empty or "resource" not in mapped.columns:
        return mapped
    mask = mapped["resource"].astype(object).map(lambda r: isinstance(r, str) and CALLER in r).astype(bool)
    if not mask.any():
        return mapped
    out = mapped.copy()
    arns = principal_arn if isinstance(principal_arn, pd.Series) else pd.Series(principal_arn, index=out.index)
    arns = arns.astype(object).where(arns.notna(), "")
    kinds = arns.map(lambda a: Principal(a).kind)
    is_self = mask & kinds.isin(["user", "root"])
    out.loc[is_self, "resource"] = arns[is_self].map(literal)
    other = mask & ~is_self
    if other.any():
        out.loc[other, "note"] = [f"the request names no user, so the call acts on the caller, and {a or 'the caller'} "
                                  f"is not an IAM user: AWS refuses it (nothing to grant)" for a in arns[other]]
        out.loc[other, "status"] = "invalid"
        for c in ("action", "resource", "derivation", "reason", "condition_key", "condition_value"):
            out.loc[other, c] = None
    return out


def aggregate(mapped: pd.DataFrame, *, by_principal: bool = False) -> pd.DataFrame:
    """Re-aggregate mapped call shapes by (action, resource, outcome class) (``queries/usage_actions.sql``).

    Args:
        mapped: the output of :func:`map_shapes` over ``usage_by_principal`` rows (rows without a ``principal_arn``
            column are taken as one principal's).
        by_principal: keep the principals apart (a leading ``principal_arn`` column); else ``mapped`` is taken to
            hold one principal's shapes.

    Returns:
        USAGE_COLUMNS: ``calls`` (events), first/last seen, and comma-joined sorted ``regions``, ``accounts``,
        ``operations`` (``source-prefix:eventName``), ``event_sources`` (eventSource hosts), ``outcomes``
        (``success:12,not_found:1``), ``derivation``; ``reason`` (one, for ``*`` resources); ``implicit`` (every
        call implied the action, e.g. iam:PassRole); ``invoked_by``; ``data_event`` (logged as a data event);
        ``conditions`` (``key=value`` pairs the grant may carry, e.g. ``ec2:CreateAction=RunInstances``; null when
        some call needs the grant without one); :data:`CONTEXT_COLUMNS` (arrays of distinct values, a ``None``
        element for calls without one).
        Sorted by (principal,) outcome class, action and resource.
    """
    import duckdb

    columns = ["principal_arn", *USAGE_COLUMNS] if by_principal else USAGE_COLUMNS
    if mapped.empty:
        return pd.DataFrame(columns=columns)
    needed = ["principal_arn", "action", "resource", "events", "first_seen", "last_seen", "aws_region", "account_id",
              "event_source", "event_name", "outcome", "event_category", "derivation", "reason", "implicit",
              "invoked_by", "status", "condition_key", "condition_value", *CONTEXT_COLUMNS]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for c in ("condition_key", "condition_value"):
            if c not in mapped.columns:
                mapped = mapped.assign(**{c: None})
        if "principal_arn" not in mapped.columns:
            mapped = mapped.assign(principal_arn="")
        con.register("mapped", _with_context(mapped[[c for c in needed if c in mapped.columns]]))
        return queries.run(con, "usage_actions")[columns]
    finally:
        con.close()


def _with_context(frame: pd.DataFrame):
    """``frame`` as an Arrow table whose :data:`CONTEXT_COLUMNS` are lists of strings (all null when absent: shapes
    from elsewhere may lack the request context, which is then unknown). DuckDB reads Arrow lists natively; from
    pandas it converts each array element by element, which tripled the cost of ``usage_actions.sql``."""
    import pyarrow as pa

    lists = pa.list_(pa.string())
    table = pa.Table.from_pandas(frame.drop(columns=[c for c in CONTEXT_COLUMNS if c in frame.columns]),
                                 preserve_index=False)
    for c in CONTEXT_COLUMNS:
        values = pa.array(list(frame[c]), type=lists, from_pandas=True) if c in frame.columns else \
            pa.nulls(len(frame), lists)
        table = table.append_column(c, values)
    return table


def collect(con, principal: Principal, window: Window, *, shapes: pd.DataFrame | None = None) -> Usage:
    """Everything a principal did in a window, mapped to IAM actions.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`, or a :class:`miner.engine.SparkConnection`.
        principal: the principal (see :func:`resolve_principal`).
        window: the time window.
        shapes: the principal's :func:`call_shapes` in the window, when already read.

    Returns:
        The :class:`Usage` (authorised and denied (action, resource) rows, unmapped and permission-free calls).
    """
    parts = usage_parts(shapes) if shapes is not None else _parts(con, principal.arn, None, window)
    return _assemble(parts, [principal], window)[principal.arn]


def collect_all(con, principals: list[Principal], window: Window) -> dict[str, Usage]:
    """Everything each of several principals did in a window, as :func:`collect` gives it for one, set-based.

    One query reads every principal's call shapes in one pass over the store; each distinct shape is mapped once
    for all the principals that made it, and one aggregation keeps the principals apart.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`, or a :class:`miner.engine.SparkConnection`.
        principals: the principals.
        window: the time window.

    Returns:
        Principal ARN -> its :class:`Usage` (one per principal given; empty for a principal with no calls).
    """
    return _assemble(_parts(con, None, {p.arn for p in principals}, window), principals, window)


@dataclass
class UsageParts:
    """The mapped, aggregated usage of one or more principals, before it is cut into one :class:`Usage` each.

    An engine that maps call shapes where they are stored (:meth:`miner.engine.SparkConnection.usage_parts`) returns
    these four instead of the call shapes, so no call shape reaches the driver.
    """

    aggregated: pd.DataFrame  # :func:`aggregate`'s by-principal rows (sorted by principal, outcome class, ...)
    side: pd.DataFrame  # the mapped rows of SIDE_STATUSES or of denied calls, in call-shape order
    totals: dict[str, int]  # principal ARN -> events
    denied: dict[str, int]  # principal ARN -> denied events


#: Statuses of mapped rows summarised per operation (:attr:`Usage.unmapped`, :attr:`Usage.no_permission`).
UNMAPPED_STATUSES = ("unmapped", "invalid")
FREE_STATUSES = ("no_permission", "service_event", "not_api_call")
SIDE_STATUSES = UNMAPPED_STATUSES + FREE_STATUSES


def _parts(con, principal_arn: str | None, wanted: set[str] | None, window: Window) -> UsageParts:
    """The :class:`UsageParts` of one principal (``principal_arn``) or of the ``wanted`` ones, on either engine."""
    if hasattr(con, "usage_parts"):  # another engine (miner.engine.SparkConnection) maps the shapes where they are
        return con.usage_parts(window, principal_arn=principal_arn, principals=wanted)
    shapes = call_shapes(con, principal_arn, window)
    if wanted is not None and len(shapes) and not shapes["principal_arn"].isin(wanted).all():
        shapes = shapes[shapes["principal_arn"].isin(wanted)]
    return usage_parts(shapes)


def map_and_resolve(shapes: pd.DataFrame) -> pd.DataFrame:
    """:func:`map_shapes` then :func:`resolve_caller` over call shapes of any principals (``call_shapes`` rows).

    Args:
        shapes: ``usage_by_principal`` rows.

    Returns:
        One row per (shape x mapped action), as :func:`map_shapes` gives it, calls on oneself resolved.
    """
    mapped = map_shapes(shapes)
    if len(mapped):
        mapped = resolve_caller(mapped, mapped["principal_arn"])
    return mapped


def side_rows(mapped: pd.DataFrame) -> pd.DataFrame:
    """The mapped rows the per-operation and denied summaries read: :data:`SIDE_STATUSES` and denied calls.

    Args:
        mapped: :func:`map_and_resolve` rows.

    Returns:
        Those rows, in their order.
    """
    if mapped.empty:
        return mapped
    return mapped[mapped["status"].isin(SIDE_STATUSES) | (mapped["outcome"] == "denied")]


def usage_parts(shapes: pd.DataFrame) -> UsageParts:
    """Map call shapes and aggregate them per principal (the DuckDB engine's way: all in this process).

    Args:
        shapes: ``usage_by_principal`` rows of one or more principals.

    Returns:
        The :class:`UsageParts`.
    """
    mapped = map_and_resolve(shapes)
    totals: dict[str, int] = {}
    denied: dict[str, int] = {}
    if len(shapes):
        totals = shapes.groupby("principal_arn")["events"].sum().to_dict()
        denied = shapes[shapes["outcome"] == "denied"].groupby("principal_arn")["events"].sum().to_dict()
    return UsageParts(aggregate(mapped, by_principal=True), side_rows(mapped), totals, denied)


_OPERATION_COLUMNS = ["event_source", "event_name", "status", "calls", "note"]
#: Columns of :attr:`Usage.denied_calls`.
DENIED_COLUMNS = ["action", "resource", "error_code", "calls", "first_seen", "last_seen", "operations"]


def _by_operation(mapped: pd.DataFrame, statuses: tuple[str, ...]) -> pd.DataFrame:
    """Calls with one of ``statuses`` per (principal, event source, event name, status): calls, the first note."""
    rows = mapped[mapped["status"].isin(statuses)] if len(mapped) else mapped  # one row per such shape
    if rows.empty:
        return pd.DataFrame(columns=["principal_arn", *_OPERATION_COLUMNS])
    return (rows.groupby(["principal_arn", "event_source", "event_name", "status"], sort=True, dropna=False)
            .agg(calls=("events", "sum"), note=("note", "first")).reset_index()
            .sort_values(["principal_arn", "calls", "event_source", "event_name"], ascending=[True, False, True, True],
                         kind="stable")
            .reset_index(drop=True))


def _runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end positions of the runs of equal values in ``keys`` (arrays of one length, compared together)."""
    n = len(keys[0])
    change = np.zeros(max(n - 1, 0), dtype=bool)
    for k in keys:
        change |= k[1:] != k[:-1]
    starts = np.flatnonzero(np.concatenate([[True], change])) if n else np.zeros(0, dtype=int)
    return starts, np.append(starts[1:], n).astype(int)


def _split(frame: pd.DataFrame, columns: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """``frame``, sorted by ``principal_arn``, cut into one frame per principal (``columns`` kept, index reset), and
    the empty frame for a principal with no rows. Slices, not copies: each principal's rows are contiguous."""
    if frame.empty:
        return {}, pd.DataFrame(columns=columns)
    arns = frame["principal_arn"].to_numpy(dtype=object)
    starts, ends = _runs(arns)
    if len(set(arns[starts])) != len(starts):
        raise ValueError("rows are not sorted by principal_arn")
    body = frame[columns]
    return {arns[a]: body.iloc[a:b].reset_index(drop=True) for a, b in zip(starts, ends)}, body.iloc[:0]


def _by_class(frame: pd.DataFrame) -> dict[str, dict[str, pd.DataFrame]]:
    """Per principal, outcome class -> its rows of :func:`aggregate`'s ``by_principal`` output (sorted by principal
    and outcome class, so each is a slice)."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    if frame.empty:
        return out
    arns = frame["principal_arn"].to_numpy(dtype=object)
    classes = frame["outcome_class"].to_numpy(dtype=object)
    body = frame[USAGE_COLUMNS]
    empty = body.iloc[:0]
    for a, b in zip(*_runs(arns, classes)):
        out.setdefault(arns[a], {"authorised": empty, "denied": empty})[classes[a]] = \
            body.iloc[a:b].reset_index(drop=True)
    return out


def _joined(group: np.ndarray, values: pd.Series, groups: int) -> list[str]:
    """Per group id (0 .. groups-1), the distinct non-empty string values joined sorted with ``,``."""
    keep = values.map(lambda v: isinstance(v, str) and bool(v)).to_numpy(dtype=bool)
    pairs = pd.DataFrame({"g": group[keep], "v": values.to_numpy(dtype=object)[keep]}).drop_duplicates()
    pairs = pairs.sort_values(["g", "v"], kind="stable")
    out = [""] * groups
    several = pairs["g"].duplicated(keep=False).to_numpy()
    for g, v in zip(pairs["g"].to_numpy()[~several], pairs["v"].to_numpy()[~several]):
        out[g] = v  # most groups hold one value: no join
    for g, vs in pairs[several].groupby("g", sort=False)["v"]:
        out[g] = ",".join(vs)
    return out


def _denied_by_action(m: pd.DataFrame) -> pd.DataFrame:
    """Mapped denied call shapes per (principal_arn, action, resource, error_code): calls, first_seen, last_seen,
    operations (``source-prefix:eventName``, sorted, comma-joined), and ``error_message`` (the first) when the
    shapes carry it; sorted by principal, most calls first, then action."""
    operations = m["event_source"].str.split(".").str[0] + ":" + m["event_name"]
    key = ["principal_arn", "action", "resource", "error_code"]
    g = m.groupby(key, dropna=False, sort=True)
    aggs = {"calls": ("events", "sum"), "first_seen": ("first_seen", "min"), "last_seen": ("last_seen", "max")}
    if "error_message" in m.columns:
        aggs["error_message"] = ("error_message", "first")
    out = g.agg(**aggs).reset_index()
    out["operations"] = _joined(g.ngroup().to_numpy(), operations, len(out))
    out["calls"] = out["calls"].astype("int64")
    return out.sort_values(["principal_arn", "calls", "action"], ascending=[True, False, True], kind="stable") \
        .reset_index(drop=True)


def _assemble(parts: UsageParts, principals: list[Principal], window: Window) -> dict[str, Usage]:
    """The :class:`Usage` of each principal from the mapped, aggregated usage of all of them."""
    aggregated, mapped = parts.aggregated, parts.side
    actions, no_actions = _split(aggregated, USAGE_COLUMNS)
    classes = _by_class(aggregated)
    unmapped, no_unmapped = _split(_by_operation(mapped, UNMAPPED_STATUSES), _OPERATION_COLUMNS)
    free, no_free = _split(_by_operation(mapped, FREE_STATUSES), _OPERATION_COLUMNS)
    refusals = mapped[mapped["outcome"] == "denied"] if len(mapped) else mapped
    denied_calls, no_denied_calls = _split(_denied_by_action(refusals) if len(refusals) else refusals.iloc[:0],
                                           DENIED_COLUMNS)
    totals, denied = parts.totals, parts.denied
    out = {}
    for p in principals:
        total, refused = int(totals.get(p.arn, 0)), int(denied.get(p.arn, 0))
        out[p.arn] = Usage(p, window, actions.get(p.arn, no_actions), unmapped.get(p.arn, no_unmapped),
                           free.get(p.arn, no_free), events=total, authorised_events=total - refused,
                           denied_events=refused, denied_calls=denied_calls.get(p.arn, no_denied_calls),
                           by_class=classes.get(p.arn, {"authorised": no_actions, "denied": no_actions}))
    return out


def denied_calls(con, window: Window, principal_arn: str | None = None) -> pd.DataFrame:
    """Denied calls in a window, mapped to the IAM actions that were missing (``queries/denied_calls.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window.
        principal_arn: one principal, or ``None`` for all.

    Returns:
        One row per (principal_arn, action, resource, error_code): calls, first_seen, last_seen, operations,
        error_message (one example); ``action`` is null for calls that map to no IAM action.
    """
    rows = queries.run(con, "denied_calls", **_params(window, principal_arn=principal_arn))
    cols = ["principal_arn", "action", "resource", "error_code", "calls", "first_seen", "last_seen", "operations",
            "error_message"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    m = map_shapes(rows)
    return _denied_by_action(resolve_caller(m, m["principal_arn"]))[cols]


def timeline(con, window: Window, principal_arn: str | None = None) -> pd.DataFrame:
    """Events per day by principal, service and outcome (``queries/usage_timeline.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window.
        principal_arn: one principal, or ``None`` for all.

    Returns:
        Columns day, principal_arn, service, outcome, events.
    """
    return queries.run(con, "usage_timeline", **_params(window, principal_arn=principal_arn))


def sources(con, principal_arn: str, window: Window, limit: int = 10) -> pd.DataFrame:
    """Where a principal's calls came from: top (source_ip, user_agent) pairs (``queries/usage_sources.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        principal_arn: the principal.
        window: the time window.
        limit: how many rows.

    Returns:
        Columns source_ip, user_agent, events, first_seen, last_seen; busiest first.
    """
    return queries.run(con, "usage_sources", **_params(window, principal_arn=principal_arn, limit=int(limit)))


def data_event_sources(con, window: Window, account: str | None = None) -> set[str]:
    """The eventSources the trail logged data events for in a window (``queries/data_events.sql``).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window.
        account: one recipient account, or ``None`` for all.

    Returns:
        eventSource hosts, e.g. ``{"s3.amazonaws.com"}``.
    """
    return set(queries.run(con, "data_events", **_params(window, account=account))["event_source"].dropna())


def data_event_sources_by_account(con, window: Window) -> dict[str, set[str]]:
    """:func:`data_event_sources` of every recipient account, from one query.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the time window.

    Returns:
        account -> eventSource hosts (accounts without data events are absent).
    """
    rows = queries.run(con, "data_events", **_params(window, account=None))
    out: dict[str, set[str]] = {}
    for acct, src in zip(rows["account"].tolist(), rows["event_source"].tolist()):
        if isinstance(src, str):
            out.setdefault(acct, set()).add(src)
    return out
