"""Gathers the right-sizing review: every role and user, ranked by unused privilege and its risk."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from miner.models import Window

REVIEW_KIND = "miner-review"
REVIEW_SCHEMA = 1

#: Weight of one unused granted action by access level, for the ranking score.
LEVEL_WEIGHTS = {"Permissions management": 5.0, "Tagging": 2.0, "Write": 2.0, "List": 1.0, "Read": 1.0}
HIGH_RISK_WEIGHT = 100.0
#: How many actions of each group an SCP or RCP blocks the review keeps (the group's ``count`` counts them all).
ORG_ACTIONS_KEPT = 50


# ----------------------------------------------------------------------------------------- IAM sources


@dataclass
class IamSource:
    """Where grants come from: every role and user it knows, and a way to read one principal's policies."""

    label: str
    inventory: list[dict]  # {"arn", "kind", "name", "account", "created", "last_used"}
    accounts: set[str]
    attached: Callable[[str], Any]  # principal ARN -> miner.iam.AttachedPolicies
    notes: list[str] = field(default_factory=list)
    org: Any = None  # miner.organizations.OrgSource: the SCPs and RCPs, when known
    offline: bool = False  # reads nothing over the network once made (principals can be reviewed in forked workers)


def _iso(v: Any) -> str | None:
    """A time as UTC ISO text (naive times are taken as UTC); ``None`` for missing values (None, "", NaN, NaT)."""
    if v is None or v == "" or v is pd.NaT or (isinstance(v, float) and pd.isna(v)):
        return None
    if isinstance(v, datetime):  # also pd.Timestamp, a datetime subclass
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return str(v)


def _inventory_entry(kind: str, e: dict, name_key: str) -> dict:
    """One inventory row of an IAM role or user as IAM describes it (snapshot detail or List* entry)."""
    arn = e.get("Arn") or ""
    last = (e.get("RoleLastUsed") or {}).get("LastUsedDate") if kind == "role" else e.get("PasswordLastUsed")
    return {"arn": arn, "kind": kind, "name": e.get(name_key), "account": _arn_account(arn),
            "created": _iso(e.get("CreateDate")), "last_used": _iso(last), "path": e.get("Path") or "/"}


def snapshot_source(path: str | Path) -> IamSource:
    """An IAM source over ``aws iam get-account-authorization-details`` output (a file or a directory).

    Args:
        path: the snapshot file or directory.

    Returns:
        The :class:`IamSource`.

    Raises:
        miner.iam.IamError: when the snapshot cannot be read.
    """
    from miner import iam, organizations

    path = Path(path)
    snaps = iam.load_snapshot(path)
    inventory: list[dict] = []
    for _, data in snaps:
        for kind, key, name_key in (("role", "RoleDetailList", "RoleName"), ("user", "UserDetailList", "UserName")):
            inventory += [_inventory_entry(kind, e, name_key) for e in data.get(key) or []]
    accounts = {inv["account"] for inv in inventory}
    return IamSource(f"snapshot {path}", inventory, accounts - {""},
                     lambda arn: iam.from_snapshot(path, arn, snapshots=snaps),
                     org=organizations.snapshot_source(path), offline=True)


def live_source(profile: str | None = None, endpoint_url: str | None = None, client=None) -> IamSource:
    """An IAM source read live through boto3 (``ListRoles``/``ListUsers``, then each principal's policies).

    Args:
        profile: an AWS CLI profile.
        endpoint_url: an alternative IAM endpoint (e.g. a moto server).
        client: a ready IAM client (tests).

    Returns:
        The :class:`IamSource` (one account: the caller's).

    Raises:
        miner.iam.IamError: when IAM cannot be listed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from miner import iam, organizations

    client = client or iam.iam_client(profile, endpoint_url)
    inventory: list[dict] = []
    try:
        for kind, op, key, name_key in (("role", "list_roles", "Roles", "RoleName"),
                                        ("user", "list_users", "Users", "UserName")):
            for page in client.get_paginator(op).paginate():
                inventory += [_inventory_entry(kind, e, name_key) for e in page.get(key) or []]
    except (ClientError, BotoCoreError) as e:
        raise iam.IamError(f"cannot list IAM roles and users: {e} (set credentials, --profile or --endpoint-url, "
                           f"or use --iam-snapshot)") from None
    accounts = {inv["account"] for inv in inventory}
    where = f"live IAM{' at ' + endpoint_url if endpoint_url else ''}{' (profile ' + profile + ')' if profile else ''}"
    return IamSource(where, inventory, accounts - {""}, lambda arn: iam.from_live(arn, client=client),
                     org=organizations.live_source(profile, endpoint_url))


# ----------------------------------------------------------------------------------------- scoring


def risk_score(unused_actions: list[str], high_risk_unused: int, catalog) -> float:
    """How much unused privilege a principal holds, weighted by how dangerous it is.

    Args:
        unused_actions: granted actions not used in the window (unobservable ones excluded).
        high_risk_unused: how many high-risk findings (granting statements) are unused or used far more broadly
            than granted.
        catalog: the IAM catalogue (for access levels).

    Returns:
        Sum of :data:`LEVEL_WEIGHTS` over the unused actions + :data:`HIGH_RISK_WEIGHT` per high-risk finding.
    """
    return _score(_service_weights(unused_actions, catalog), high_risk_unused)


def _score(weights: dict[str, tuple[int, float]], high_risk_unused: int) -> float:
    """:func:`risk_score` from :func:`_service_weights` (the weights are whole numbers: any order sums alike)."""
    return round(sum(w for _, w in weights.values()) + HIGH_RISK_WEIGHT * high_risk_unused, 1)


def _service_weights(unused_actions: list[str], catalog) -> dict[str, tuple[int, float]]:
    """Service -> (the highest :data:`_LEVEL_TIER` of its unused actions, their :data:`LEVEL_WEIGHTS` summed): what
    :func:`risk_score` and :func:`order_services_by_risk` need of the access levels."""
    return _weights(catalog.level_counts(list(unused_actions)))


def _weights(levels: dict[tuple[str, str | None], int]) -> dict[str, tuple[int, float]]:
    """:func:`_service_weights` from the unused actions counted per (service, access level) (an admin role has tens
    of thousands: :attr:`miner.diff.DiffReport.unused_levels` counts them once per policy set)."""
    out: dict[str, tuple[int, float]] = {}
    for (svc, level), n in levels.items():
        tier, weight = out.get(svc, (0, 0.0))
        out[svc] = (max(tier, _LEVEL_TIER.get(level or "", 0)), weight + n * LEVEL_WEIGHTS.get(level or "", 1.0))
    return out


#: Access levels that make an unused service riskier than its action count says (ordering of unused services).
_LEVEL_TIER = {"Permissions management": 2, "Write": 1, "Tagging": 1}


def finding_services(findings: list[dict]) -> set[str]:
    """The IAM services that high-risk findings name in their rules (``iam:PassRole on *`` names ``iam``).

    Args:
        findings: high-risk findings (each with ``rule`` and optionally ``rules``).

    Returns:
        Lower-case service prefixes (``* on *`` names none).
    """
    rules = [r for h in findings for r in (h.get("rules") or [h.get("rule")]) if r]
    return {m.lower() for r in rules for m in re.findall(r"([A-Za-z0-9-]+):", str(r))}


def order_services_by_risk(services: list[str], unused_actions: list[str], findings: list[dict], catalog) -> list[str]:
    """Unused services, riskiest first.

    Services a high-risk finding names come first, then those with an unused permissions-management action, then
    those with an unused write or tagging action; within a tier, the unused actions weighted by access level
    (:data:`LEVEL_WEIGHTS`, as in :func:`risk_score`), then the name.

    Args:
        services: the services to order (IAM prefixes).
        unused_actions: the principal's unused granted actions.
        findings: its high-risk findings.
        catalog: the IAM catalogue (for access levels).

    Returns:
        ``services`` in that order.
    """
    return _order_services(services, _service_weights(unused_actions, catalog), findings)


def _order_services(services: list[str], weights: dict[str, tuple[int, float]], findings: list[dict]) -> list[str]:
    """:func:`order_services_by_risk` from :func:`_service_weights`."""
    named = finding_services(findings)
    none = (0, 0.0)
    return sorted(services, key=lambda s: (s not in named, -weights.get(s, none)[0], -weights.get(s, none)[1], s))


def rank(principals: list[dict], grants_known: bool) -> list[dict]:
    """Sort principals for review and number them from 1 (in place on each dict's ``rank``).

    With grants known: highest score first (never-used principals break ties first). Without: never-used first,
    then the longest idle (oldest last activity), then the fewest events.

    Args:
        principals: principal entries (see :func:`build_review`).
        grants_known: whether scores are meaningful.

    Returns:
        The same dicts, sorted.
    """
    if grants_known:
        key = lambda p: (-(p.get("score") or 0.0), not p.get("never_used"), p.get("arn") or "")  # noqa: E731
    else:
        key = lambda p: (not p.get("never_used"), p.get("last_seen") or "", p.get("events", 0), p.get("arn") or "")  # noqa: E731
    out = sorted(principals, key=key)
    for i, p in enumerate(out, 1):
        p["rank"] = i
    return out


# ----------------------------------------------------------------------------------------- building the review


def _mapping_version() -> str:
    from miner import __version__, mapping

    for attr in ("MAPPING_VERSION", "VERSION", "__version__"):
        v = getattr(mapping, attr, None)
        if isinstance(v, str) and v:
            return v
    fn = getattr(mapping, "rules_version", None) or getattr(mapping, "version", None)
    if callable(fn):
        try:
            return str(fn())
        except Exception:  # noqa: BLE001 - a version string must never break a review
            pass
    return f"miner {__version__}"


def _arn_account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" else ""


def _kind(arn: str) -> str:
    from miner.usage import Principal

    return Principal(arn).kind


def _patterns(documents: list[tuple[str, dict]]) -> list[str]:
    """The action patterns a set of policies allows (``NotAction:...`` for NotAction statements)."""
    out = set()
    for _, doc in documents:
        raw = doc.get("Statement") or []
        for st in [raw] if isinstance(raw, dict) else raw:
            if str(st.get("Effect", "Allow")).lower() != "allow":
                continue
            if "NotAction" in st:
                na = st["NotAction"]
                out.add("NotAction:" + ",".join(sorted([na] if isinstance(na, str) else na)))
            acts = st.get("Action") or []
            out.update([acts] if isinstance(acts, str) else acts)
    return sorted(out, key=str.lower)


def _empty_usage() -> pd.DataFrame:
    from miner.usage import USAGE_COLUMNS

    return pd.DataFrame(columns=USAGE_COLUMNS)


def _finding_entry(h: dict) -> dict:
    """A high-risk finding of :func:`miner.diff.high_risk` as the review keeps it (one per granting statement)."""
    seen = sorted({r for res in (h.get("used_on") or {}).values() for r in res})
    # used_on lists a few resources per action; used_resources counts them all
    return {"rule": h["rule"], "action": h["rule"], "rules": h.get("rules") or [h["rule"]],
            "category": h.get("category"), "reason": h.get("reason"), "status": h.get("status"),
            "policy": h.get("policy"), "policy_kind": h.get("policy_kind"), "sid": h.get("sid"),
            "statement": h.get("statement"), "granted_on": h.get("granted_on"),
            "resource": "*" if h.get("on_all_resources") else "specific resources",
            "actions": len(h.get("actions") or []), "examples": list(h.get("actions") or [])[:5],
            "used_on": seen[:20], "used_resources": h.get("used_resources", len(seen)), "remedy": h.get("remedy")}


def _principal_entry(arn: str, meta: dict, inv: dict | None, iam_source: IamSource | None, used, activity: list,
                     data_sources: Callable[[str], set[str]], *, max_resources: int, wildcards: bool, catalog,
                     grants: dict | None, witness=None) -> dict:
    """One principal of the review from its usage (a :class:`miner.usage.Usage`, ``None`` without events in the
    window); ``grants`` caches the granted sets of :func:`miner.diff.compare`."""
    from miner import diff, iam, synthesize

    account = _arn_account(arn) or meta.get("principal_account") or ""
    name = meta.get("principal_name") or (inv or {}).get("name") or arn.rsplit("/", 1)[-1]
    entry: dict[str, Any] = {
        "arn": arn, "name": name, "kind": _kind(arn), "account": account,
        "principal_type": meta.get("principal_type") or ("Role" if _kind(arn) == "role" else "User"),
        "events": int(meta.get("events") or 0), "authorised": int(meta.get("authorised") or 0),
        "denied": int(meta.get("denied") or 0), "first_seen": _iso(meta.get("first_seen")),
        "last_seen": _iso(meta.get("last_seen")), "never_used": not meta.get("events"),
        "in_iam": None, "iam_last_used": (inv or {}).get("last_used"), "created": (inv or {}).get("created"),
        "service_linked": ((inv or {}).get("path") or "").startswith("/aws-service-role/"),
        "activity": activity, "services_used": [], "service_calls": {}, "used_actions": [],
        "granted": {"known": False}, "score": None,
    }
    if iam_source is not None and account in iam_source.accounts:
        entry["in_iam"] = inv is not None
    suggestion = None
    if used is None:
        authorised = denied = _empty_usage()
    else:
        u = used
        authorised, denied = u.authorised, u.denied
        entry["unmapped_events"] = int(u.unmapped["calls"].sum()) if len(u.unmapped) else 0
        if len(authorised):
            actions = list(authorised["action"])  # plain lists: a pandas step costs more than the work here
            entry["used_actions"] = sorted(set(actions))
            calls: dict[str, int] = {}
            for action, n in zip(actions, authorised["calls"].tolist()):
                service = action.split(":")[0]
                calls[service] = calls.get(service, 0) + n
            by_service = pd.Series(dict(sorted(calls.items())), dtype="int64").sort_values(ascending=False)
            entry["service_calls"] = {k: int(v) for k, v in by_service.items()}
            entry["services_used"] = sorted(by_service.index)
            try:
                suggestion = synthesize.synthesize(authorised, max_resources=max_resources, wildcards=wildcards,
                                                   catalog=catalog)
                entry["suggested_policy"] = suggestion.policies[0] if len(suggestion.policies) == 1 \
                    else suggestion.policies
                entry["suggested_actions"] = len(suggestion.actions)
            except ValueError as e:
                entry["suggest_error"] = str(e)
        else:
            entry["suggest_error"] = f"no authorised calls that map to IAM actions in the window ({u.why_no_policy()})"
    mine = used.denied_calls if used is not None and used.denied_calls is not None else None
    rows = zip(*(list(mine[c]) for c in ("action", "operations", "resource", "error_code", "calls", "last_seen"))) \
        if mine is not None and len(mine) else ()
    entry["denied_attempts"] = [
        {"action": action if isinstance(action, str) else None, "event": operations,
         "resource": resource if isinstance(resource, str) else None, "error_code": error_code, "count": int(calls),
         "last_seen": _iso(last_seen)}
        for action, operations, resource, error_code, calls, last_seen in rows]
    if entry["in_iam"]:
        try:
            attached = iam_source.attached(arn)
        except iam.IamError as e:
            entry["iam_error"] = str(e)
            return entry
        boundary = [attached.boundary.document] if attached.boundary and attached.boundary.document else None
        report = diff.compare(attached.documents, suggestion.policies if suggestion else [], authorised,
                              boundary=boundary, denied=denied if len(denied) else None,
                              data_sources=data_sources(account), principal_arn=arn, principal_account=account,
                              missing=attached.missing, source=attached.source, policies=attached.refs,
                              catalog=catalog, cache=grants,
                              org=iam_source.org.evaluator(arn, account) if iam_source.org else None)
        cls = report.classification
        status = report.statuses
        unused = sorted(a for a, st in status.items() if st == "unused")
        by_service: dict[str, dict[str, int]] = {}
        for (svc, st), n in report.service_counts.items():
            by_service.setdefault(svc, {})[st] = n
        policies = [p.label for p in attached.policies] + ([attached.boundary.label] if attached.boundary else [])
        entry["granted"] = {"known": True, "actions": report.granted_actions, "services": sorted(by_service),
                            "patterns": _patterns(attached.documents), "policies": policies,
                            "source": attached.source, "missing": list(attached.missing)}
        entry["used_granted"] = sorted(a for a, st in status.items() if st == "used")
        entry["unused_count"] = len(unused)
        entry["unobservable_count"] = sum(1 for st in status.values() if st == "unobservable")
        unobs = cls[cls["status"] == "unobservable"] if len(cls) else cls
        entry["unobservable"] = [{"action": r.action, "reason": r.reason} for r in unobs.head(20).itertuples(index=False)]
        entry["unused_by_service"] = {svc: c["unused"] for svc, c in sorted(by_service.items()) if c.get("unused")}
        entry["unused_sample"] = unused[:50]
        flagged = [_finding_entry(h) for h in report.high_risk]
        weights = _weights(report.unused_levels)
        entry["unused_services"] = _order_services(
            [svc for svc, c in by_service.items() if c.get("unused") and not c.get("used")], weights, flagged)
        # "unused" is a claim the logs support; a high-risk grant CloudTrail could not have seen is listed apart
        for status in ("unused", "used_broadly", "unobservable"):
            entry[f"high_risk_{status}"] = [h for h in flagged if h["status"] == status]
        ung = report.used_not_granted
        entry["used_not_granted"] = sorted({r.action for r in ung.itertuples(index=False) if r.outcome == "authorised"})
        entry["notes"] = list(report.notes)
        if report.org is not None:
            # each blocked group keeps its count and first actions (an allow-list SCP can block thousands)
            entry["organizations"] = {**report.org, "blocked": [{**b, "actions": b["actions"][:ORG_ACTIONS_KEPT]}
                                                                for b in report.org["blocked"]]}
            entry["blocked_count"] = report.count("blocked")
        entry["score"] = _score(weights, len(entry["high_risk_unused"]) + len(entry["high_risk_used_broadly"]))
        if witness is not None:  # IAM Access Advisor as a second witness (miner advisor): evidence per action
            from miner import evidence

            ev = evidence.classify_all(cls, evidence.calls_by_action(authorised), witness)
            entry["evidence"] = evidence.summary(ev, witness)
            entry["unused_services"] = evidence.rank_services(
                entry["unused_services"], [n["service"] for n in entry["evidence"]["never_accessed_services"]])
    return entry


#: The entry maker of the review being built, inherited by forked worker processes (:func:`_entries`).
_WORK: Callable[[str], dict] | None = None


def _entry_in_worker(arn: str) -> tuple[str, dict]:
    return arn, _WORK(arn)


def review_processes(asked: int | None, principals: int, iam_source: IamSource | None) -> int:
    """How many processes build the review's principal entries: ``asked`` (``--processes``), else the CPUs this
    process may use; 1 (in this process) where ``fork`` is missing (Windows, and macOS, where forking a process
    that holds threads is unsafe), for fewer than 2 principals, and with an IAM source that reads over the network
    (a live source's clients and lazily read state cannot be shared by forked processes).

    Args:
        asked: the number asked for, or ``None``.
        principals: how many principals the review holds.
        iam_source: where grants come from.

    Returns:
        The number of processes (1: no worker process).
    """
    if asked is None:
        asked = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if asked <= 1 or principals < 2 or not hasattr(os, "fork") or sys.platform != "linux":
        return 1
    if iam_source is not None and not iam_source.offline:
        return 1
    return min(asked, principals)


def _entries(arns: list[str], entry: Callable[[str], dict], progress: Callable[[str], None] | None,
             workers: int) -> list[dict]:
    """``entry`` of every principal, in ``arns`` order: in this process, or spread over ``workers`` forked processes
    (each takes the next principal when it is free). The workers inherit everything gathered so far (usage, grants
    source, catalogue) and send back each entry; when one fails, the principals not done are built here, so an
    error is raised as the one-process review would raise it."""
    global _WORK
    got: dict[str, dict] = {}
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        _WORK = entry
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for done in as_completed([pool.submit(_entry_in_worker, arn) for arn in arns]):
                    if done.exception() is None:
                        arn, got[arn] = done.result()
                        if progress:
                            progress(arn)
        except Exception:  # noqa: BLE001 - a worker died: what is missing is built below, in this process
            pass
        finally:
            _WORK = None
    out = []
    for arn in arns:
        if arn not in got:
            if progress:
                progress(arn)
            got[arn] = entry(arn)
        out.append(got[arn])
    return out


def _org_notes(org, principals: list[dict]) -> list[str]:
    """The review's notes on SCPs and RCPs: what was read, what they block, the calls they deny (errors)."""
    notes = list(org.notes)
    blocked = [(p, int(p.get("blocked_count") or 0)) for p in principals if p.get("blocked_count")]
    if blocked:
        policies = sorted({b["policy"] for p, _ in blocked for b in p["organizations"]["blocked"]})
        notes.append(f"SCPs and RCPs ({org.label}) block {sum(n for _, n in blocked):,} granted actions of "
                     f"{len(blocked)} principal(s) ({', '.join(policies)}): shown as blocked, not counted as unused "
                     f"nor as high-risk grants")
    calls = [(p, c) for p in principals for c in (p.get("organizations") or {}).get("blocked_calls") or []]
    if calls:
        notes.append(f"ERROR: {len(calls)} authorised (action, resource) pair(s) that an SCP or RCP denies, of "
                     + ", ".join(sorted({p['name'] for p, _ in calls})) + ": the calls should not exist (a policy "
                     "changed in the window, or the organization snapshot is not the one in force)")
    exempt = sorted({f"{p['name']} ({p['organizations']['exempt']})" for p in principals
                     if (p.get("organizations") or {}).get("exempt")})
    if exempt:
        notes.append("SCPs are not evaluated for " + ", ".join(exempt) + ": they do not apply there")
    return notes


def build_review(con, window: Window, *, iam_source: IamSource | None = None, store: str | Path | None = None,
                 account: str | None = None, max_resources: int | None = None, wildcards: bool = True,
                 catalog=None, now: datetime | None = None, progress: Callable[[str], None] | None = None,
                 advisor: pd.DataFrame | None = None, processes: int | None = None) -> dict:
    """Gather the right-sizing review of every role and user.

    Principals are the roles and users that acted in the window plus, with an IAM source, every role and user it
    lists (those with no events are removal candidates). For each: usage (``miner.usage``), the suggested
    policy (``miner.synthesize``), and with grants known the classification of each granted action as used,
    unused or unobservable and the high-risk unused grants (``miner.diff``). Ranked by :func:`risk_score`.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the review window.
        iam_source: where grants come from (:func:`snapshot_source`, :func:`live_source`), or ``None`` (usage only).
        store: the store path (shown in the header).
        account: only principals of this account.
        max_resources: the suggested policies' generalisation threshold (default: ``miner suggest``'s).
        wildcards: allow action wildcards in the suggested policies.
        catalog: the IAM catalogue (default: the pinned one).
        now: the generation time (default: the clock at call time).
        progress: called with a short message per principal.
        advisor: the store's IAM Access Advisor table (:func:`miner.advisor.read`): with it, each principal it
            reports on gets the evidence of each granted action (:mod:`miner.evidence`).
        processes: processes that build the principals' entries (:func:`review_processes`; default: the CPUs).

    Returns:
        The review dict (JSON-ready; the input of :mod:`miner.report` and of a later :func:`compare_reviews`).
    """
    from miner import __version__, usage
    from miner.synthesize import DEFAULT_MAX_RESOURCES

    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    now = now or datetime.now(timezone.utc)
    max_resources = DEFAULT_MAX_RESOURCES if max_resources is None else max_resources
    acting = usage.principals(con, window)
    active = acting[acting["principal_arn"].map(lambda a: _kind(a) in ("role", "user"))] if len(acting) else acting
    skipped = len(acting) - len(active)
    if account:
        active = active[active["principal_arn"].map(_arn_account) == account]
    metas = {r["principal_arn"]: r for r in active.to_dict("records")}
    inventory = {}
    if iam_source is not None:
        for inv in iam_source.inventory:
            if inv["arn"] and (not account or inv["account"] == account):
                inventory[inv["arn"].lower()] = inv
    acting_keys = {a.lower() for a in metas}
    arns = list(metas) + [inv["arn"] for key, inv in sorted(inventory.items()) if key not in acting_keys]
    timeline = usage.timeline(con, window)
    act: dict[str, list] = {}
    if len(timeline):
        daily = timeline.groupby(["principal_arn", "day"], sort=True)["events"].sum().reset_index()
        for r in daily.itertuples(index=False):
            act.setdefault(r.principal_arn, []).append([str(r.day)[:10], int(r.events)])
    # one pass over the store for every principal's calls, each distinct call shape mapped once
    usages = usage.collect_all(con, [usage.Principal(arn, m.get("principal_type"), m.get("principal_name"),
                                                     m.get("principal_account")) for arn, m in metas.items()
                                     if m.get("events")], window)
    grants: dict = {}  # granted sets per distinct set of attached documents
    by_account: dict[str, set[str]] | None = None  # every account's data-event sources, one query when first asked

    def data_sources(acct: str) -> set[str]:
        nonlocal by_account
        if by_account is None:
            by_account = usage.data_event_sources_by_account(con, window)
        return set(by_account.get(acct, ())) if acct else set().union(*by_account.values())

    principals = []
    witnesses = {}
    if advisor is not None and len(advisor):
        from miner.evidence import Witness

        witnesses = {str(a).lower(): Witness.of(rows, str(a))
                     for a, rows in advisor.groupby("principal_arn", sort=False)}
    # What is alive now (modules, the catalogue, the mapper's caches, every principal's usage) outlives the loop: kept
    # out of the cyclic collector's full passes (gc.freeze) while the loop builds tens of thousands of short-lived
    # objects per admin-like role, and handed back to it afterwards (gc.unfreeze), so nothing stays uncollectable
    import gc

    def entry(arn: str) -> dict:
        return _principal_entry(
            arn, metas.get(arn, {}), inventory.get(arn.lower()), iam_source, usages.get(arn), act.get(arn, []),
            data_sources, max_resources=max_resources, wildcards=wildcards, catalog=catalog, grants=grants,
            witness=witnesses.get(arn.lower()))

    workers = review_processes(processes, len(arns), iam_source)
    if workers > 1 and iam_source is not None:
        data_sources("")  # the store is queried here, before the fork: workers never touch the connection
        # the catalogue's every action and access level (a `*` grant's expansion, the score's weights): loaded once
        # here rather than once per worker
        catalog.access_levels(catalog.all_actions())
    gc.freeze()
    try:
        principals = _entries(arns, entry, progress, workers)
    finally:
        gc.unfreeze()
    known = iam_source is not None
    principals = rank(principals, known)
    notes = list(iam_source.notes) if iam_source else []
    if skipped:
        notes.append(f"{skipped} acting principals that are not IAM roles or users (AWS services, root, other "
                     f"accounts' callers) are not reviewed")
    outside = sorted({p["account"] for p in principals if p["in_iam"] is None} - {""}) if known else []
    if outside:
        notes.append("the IAM source does not cover account(s) " + ", ".join(outside) +
                     ": grants of their principals are unknown")
    if iam_source is not None and iam_source.org is not None:
        notes += _org_notes(iam_source.org, principals)
    errors = [f"{p['name']}: {p['iam_error']}" for p in principals if p.get("iam_error")]
    if errors:
        notes.append("grants could not be read for " + "; ".join(errors))
    summary = {
        "principals": len(principals),
        "active": sum(1 for p in principals if not p["never_used"]),
        "never_used": sum(1 for p in principals if p["never_used"]),
        "granted_actions": sum(int(p["granted"].get("actions") or 0) for p in principals),
        "unused_actions": sum(int(p.get("unused_count") or 0) for p in principals),
        "high_risk": sum(len(p.get("high_risk_unused") or []) + len(p.get("high_risk_used_broadly") or [])
                         for p in principals),
        "high_risk_unused": sum(len(p.get("high_risk_unused") or []) for p in principals),
        "high_risk_used_broadly": sum(len(p.get("high_risk_used_broadly") or []) for p in principals),
        "denied": sum(int(p["denied"]) for p in principals),
        "blocked_by_org": sum(int(p.get("blocked_count") or 0) for p in principals),
        "org_blocked_calls": sum(len((p.get("organizations") or {}).get("blocked_calls") or []) for p in principals),
    }
    extra = {}
    if witnesses:
        from miner.evidence import removal_candidates

        extra["removal_proven"] = removal_candidates(principals)
        summary["services_never_accessed"] = sum(len(c["services"]) for c in extra["removal_proven"])
        covered = sum(1 for p in principals if "evidence" in p)
        notes.append(f"IAM Access Advisor reports (miner advisor) cover {covered} of the principals: their granted "
                     f"actions carry evidence from both witnesses")
    return {
        "kind": REVIEW_KIND, "schema": REVIEW_SCHEMA,
        "generated_at": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "window": {"since": window.since.isoformat(), "until": window.until.isoformat(), "days": round(window.days, 2)},
        "store": str(store) if store is not None else None,
        "catalog_version": catalog.version, "mapping_version": _mapping_version(), "miner_version": __version__,
        "iam_source": iam_source.label if iam_source else None, "grants_known": known,
        "settings": {"max_resources": max_resources, "wildcards": wildcards, "account": account},
        "summary": summary, "notes": notes, "principals": principals, **extra,
    }


# ----------------------------------------------------------------------------------------- notebook helpers


def to_frame(review: dict) -> pd.DataFrame:
    """The ranked table of a review as a DataFrame (for notebooks).

    Args:
        review: the review dict.

    Returns:
        One row per principal in rank order. ``blocked``: granted actions an SCP or RCP blocks (not counted as
        unused); ``unused_proven``: those IAM Access Advisor proves unused (``None`` without its report).
    """
    rows = []
    for p in review.get("principals", []):
        g = p.get("granted") or {}
        rows.append({
            "rank": p.get("rank"), "name": p.get("name"), "kind": p.get("kind"), "account": p.get("account"),
            "score": p.get("score"), "events": p.get("events"), "granted": g.get("actions"),
            "used": len(p.get("used_actions") or []), "unused": p.get("unused_count"),
            "unobservable": p.get("unobservable_count"), "blocked": p.get("blocked_count", 0),
            "unused_proven": ((p.get("evidence") or {}).get("counts") or {}).get("unused_proven"),
            "high_risk_unused": ", ".join(h["rule"] for h in p.get("high_risk_unused") or []),
            "high_risk_used_broadly": ", ".join(h["rule"] for h in p.get("high_risk_used_broadly") or []),
            "unused_services": len(p.get("unused_services") or []), "last_seen": p.get("last_seen"),
            "denied": p.get("denied"), "never_used": p.get("never_used"), "arn": p.get("arn"),
        })
    return pd.DataFrame(rows)


def high_risk_frame(review: dict) -> pd.DataFrame:
    """High-risk findings of a review that a reviewer acts on (unused, or used far more broadly than granted), one
    row per (principal, granting statement) (for notebooks).

    Args:
        review: the review dict.

    Returns:
        Columns name, rule, category, status, policy, sid, actions (how many matching actions), remedy, reason, arn.
    """
    cols = ["name", "rule", "category", "status", "policy", "sid", "actions", "remedy", "reason", "arn"]
    rows = [{"name": p.get("name"), "arn": p.get("arn"), **{k: h.get(k) for k in cols if k not in ("name", "arn")}}
            for p in review.get("principals", [])
            for h in (p.get("high_risk_unused") or []) + (p.get("high_risk_used_broadly") or [])]
    return pd.DataFrame(rows, columns=cols)


def removal_proven_frame(review: dict) -> pd.DataFrame:
    """The removal candidates IAM Access Advisor proves (``miner advisor`` on the store): one row per (principal,
    granted service it saw no request to in its tracking period), most granted actions first (for notebooks).

    Args:
        review: the review dict.

    Returns:
        Columns name, service, actions (granted actions of the service), tracking_start, rank, arn; empty without
        Access Advisor's reports.
    """
    cols = ["name", "service", "actions", "tracking_start", "rank", "arn"]
    rows = [{"name": c.get("name"), "service": s["service"], "actions": int(s["actions"]),
             "tracking_start": c.get("tracking_start"), "rank": c.get("rank"), "arn": c.get("arn")}
            for c in review.get("removal_proven") or [] for s in c.get("services") or []]
    return pd.DataFrame(rows, columns=cols)


def denied_frame(review: dict) -> pd.DataFrame:
    """Denied attempts of a review, one row per (principal, action, resource, error) (for notebooks).

    Args:
        review: the review dict.

    Returns:
        Columns name, action, event, resource, error_code, count, last_seen, arn; most frequent first.
    """
    cols = ["name", "action", "event", "resource", "error_code", "count", "last_seen", "arn"]
    rows = [{"name": p.get("name"), "arn": p.get("arn"), **d} for p in review.get("principals", [])
            for d in p.get("denied_attempts") or []]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["count", "name"], ascending=[False, True], kind="stable").reset_index(drop=True)


def find(review: dict, name: str) -> dict:
    """One principal of a review by name or ARN (case-insensitive).

    Args:
        review: the review dict.
        name: a role or user name, or an ARN.

    Returns:
        The principal entry.

    Raises:
        KeyError: when no principal matches.
    """
    low = name.lower()
    for p in review.get("principals", []):
        if low in ((p.get("arn") or "").lower(), (p.get("name") or "").lower()):
            return p
    raise KeyError(f"no principal {name!r} in the review")


def store_window(con) -> Window:
    """The whole span of a store, in whole UTC days (for notebooks and backtests on old logs).

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.

    Returns:
        From the midnight before the first event to the midnight after the last one.
    """
    from miner import queries

    names = queries.run(con, "principal_names")
    first = pd.Timestamp(names["first_seen"].min()).tz_convert("UTC")
    last = pd.Timestamp(names["last_seen"].max()).tz_convert("UTC")
    return Window(first.normalize().to_pydatetime(), (last.normalize() + pd.Timedelta(days=1)).to_pydatetime())


def sample_logs_dir() -> Path | None:
    """The bundled ``sample_logs/`` of a source checkout (beside the package, or above the current directory).

    Returns:
        The directory, or ``None`` outside a checkout.
    """
    here = Path(__file__).resolve().parent.parent
    for base in (here, Path.cwd(), *Path.cwd().parents):
        if (base / "sample_logs").is_dir():
            return base / "sample_logs"
    return None


def notebook_iam_source(env: str = "MINER_IAM_SNAPSHOT") -> IamSource | None:
    """The IAM source a notebook should use: ``$MINER_IAM_SNAPSHOT``, else the sample logs' snapshots, else none.

    Args:
        env: the environment variable naming a snapshot file or directory.

    Returns:
        An :class:`IamSource`, or ``None`` (the review then covers usage only).
    """
    if os.environ.get(env):
        return snapshot_source(Path(os.environ[env]).expanduser())
    logs = sample_logs_dir()
    if logs is not None and (logs / "iam").is_dir() and not os.environ.get("MINER_STORE"):
        return snapshot_source(logs / "iam")
    return None


#: Temporary folders of this process, removed when it exits (a notebook's kernel shutting down): held here so that
#: they live as long as the kernel does.
_SCRATCH: list[tempfile.TemporaryDirectory] = []


def notebook_store(env: str = "MINER_STORE") -> Path:
    """The store a notebook should open: ``$MINER_STORE``, else the sample logs ingested into a temporary store (with
    the sample's IAM Access Advisor reports) that is removed when the kernel shuts down (a killed kernel leaves it in
    the system's temp folder).

    Args:
        env: the environment variable naming the store.

    Returns:
        The store path.

    Raises:
        FileNotFoundError: when the variable is unset and no ``sample_logs/`` is found.
    """
    if os.environ.get(env):
        value = os.environ[env]
        return value if value.startswith("s3://") else Path(value).expanduser()  # type: ignore[return-value]
    logs = sample_logs_dir()
    if logs is None:
        raise FileNotFoundError(f"set {env} to a store (miner ingest SOURCE --store DIR), or run from a checkout "
                                "that has sample_logs/")
    from miner import advisor, ingest

    _SCRATCH.append(tempfile.TemporaryDirectory(prefix="miner-notebook-", ignore_cleanup_errors=True))
    target = Path(_SCRATCH[-1].name) / "store"
    ingest.ingest([str(logs)], target)
    if (logs / "advisor").is_dir():  # the sample's IAM Access Advisor reports, as `miner advisor --snapshot` reads them
        advisor.write(target, advisor.load_snapshot(logs / "advisor"), now=datetime.now(timezone.utc))
    return target


def notebook_quarters(con, window: Window, current: dict, *, iam_source: IamSource | None = None,
                      store: str | Path | None = None, env: str = "MINER_PREVIOUS_REVIEW") -> tuple[dict, dict]:
    """Last quarter's review and this quarter's, for a notebook's quarter-over-quarter step.

    With ``$MINER_PREVIOUS_REVIEW``: that file and ``current``. Without: the window split at the midnight nearest its
    middle, a review of its first half standing for last quarter and of its second half for this quarter. (The
    first half against ``current``, which covers both halves, could only show usage that appeared.)

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        window: the window of ``current``.
        current: the review of ``window``.
        iam_source: where grants come from (as for :func:`build_review`).
        store: the store path (shown in the header).
        env: the environment variable naming a previous ``--format json`` review.

    Returns:
        ``(previous, current)`` review dicts, for :func:`compare_reviews`.

    Raises:
        ValueError: when the named file is not a miner review.
    """
    if os.environ.get(env):
        return load_review(Path(os.environ[env]).expanduser()), current
    half = (window.until - window.since) / 2
    mid = pd.Timestamp(window.since + half).round("D").to_pydatetime()
    mid = mid if window.since < mid < window.until else window.since + half
    return (build_review(con, Window(window.since, mid), iam_source=iam_source, store=store),
            build_review(con, Window(mid, window.until), iam_source=iam_source, store=store))


# ----------------------------------------------------------------------------------------- quarter over quarter


def load_review(path: str | Path) -> dict:
    """Read a previous review written with ``--format json``.

    Args:
        path: the JSON file.

    Returns:
        The review dict.

    Raises:
        ValueError: when the file is not a miner review.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the previous review {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != REVIEW_KIND:
        raise ValueError(f"{path} is not a miner review: write one with `miner review --format json --out FILE`")
    return doc


def _grant_set(p: dict) -> set[str] | None:
    g = p.get("granted") or {}
    if not g.get("known"):
        return None
    return set(g.get("patterns") or []) | {f"policy {n}" for n in g.get("policies") or []}


def compare_reviews(previous: dict, current: dict) -> dict:
    """What changed between two reviews: principals new and gone, grants added or removed, usage that appeared or stopped.

    Grants are compared as the allowed action patterns and the attached policy names (``policy <name>``); usage as
    the sets of used IAM actions.

    Args:
        previous: the older review dict.
        current: the newer review dict.

    Returns:
        A dict with ``previous`` (its generated time and window), ``new_principals``, ``gone_principals`` (ARNs),
        ``changed`` (one entry per principal present in both with any change) and ``summary`` counts.
    """
    old = {p["arn"]: p for p in previous.get("principals", [])}
    new = {p["arn"]: p for p in current.get("principals", [])}
    changed = []
    totals = {"grants_added": 0, "grants_removed": 0, "usage_appeared": 0, "usage_stopped": 0}
    for arn in sorted(old.keys() & new.keys()):
        a, b = old[arn], new[arn]
        entry: dict[str, Any] = {"arn": arn, "name": b.get("name") or a.get("name")}
        ga, gb = _grant_set(a), _grant_set(b)
        if ga is not None and gb is not None:
            entry["grants_added"] = sorted(gb - ga)
            entry["grants_removed"] = sorted(ga - gb)
        ua, ub = set(a.get("used_actions") or []), set(b.get("used_actions") or [])
        entry["usage_appeared"] = sorted(ub - ua)
        entry["usage_stopped"] = sorted(ua - ub)
        if bool(a.get("never_used")) != bool(b.get("never_used")):
            entry["status_change"] = "became idle" if b.get("never_used") else "became active"
        if (a.get("granted") or {}).get("actions") is not None and (b.get("granted") or {}).get("actions") is not None:
            entry["granted_delta"] = b["granted"]["actions"] - a["granted"]["actions"]
        for k in totals:
            totals[k] += len(entry.get(k) or [])
        if any(entry.get(k) for k in (*totals, "status_change")) or entry.get("granted_delta"):
            changed.append(entry)
    new_arns = sorted(new.keys() - old.keys())
    gone_arns = sorted(old.keys() - new.keys())
    notes = []
    if bool(previous.get("grants_known")) != bool(current.get("grants_known")):
        notes.append("grants are known in only one of the two reviews: grant changes are not compared")
    return {
        "previous": {"generated_at": previous.get("generated_at"), "window": previous.get("window"),
                     "store": previous.get("store")},
        "new_principals": new_arns,
        "gone_principals": gone_arns,
        "changed": changed,
        "notes": notes,
        "summary": {"new_principals": len(new_arns), "gone_principals": len(gone_arns),
                    "changed_principals": len(changed), **totals},
    }
