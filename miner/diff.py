"""Compares attached policies with a suggested one: policy evaluation, granted sets, classification, risk, diff."""

from __future__ import annotations

import csv
import difflib
import fnmatch
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Iterable

import pandas as pd

from miner.patterns import covers
from miner.escape import visible

#: Services whose resources carry resource-based policies (a call the identity policies do not allow may have
#: been allowed by the resource's own policy).
RESOURCE_POLICY_SERVICES = frozenset({
    "s3", "kms", "sqs", "sns", "lambda", "secretsmanager", "ecr", "glacier", "es", "logs", "events", "backup",
    "dynamodb", "kinesis", "apigateway", "execute-api", "iam", "sts", "codeartifact", "elasticfilesystem",
    "s3-object-lambda", "ssm-incidents", "mediastore", "serverlessrepo", "ses", "glue", "cloudtrail", "bedrock",
})


# ----------------------------------------------------------------------------- statements and evaluation


def _as_list(v) -> list:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


@dataclass(frozen=True)
class Statement:
    """One normalised policy statement."""

    effect: str  # "Allow" | "Deny"
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] | None = None
    conditional: bool = False
    origin: str = ""

    def matches_action(self, action: str) -> bool:
        """True when the statement applies to ``action`` (Action or NotAction; case-insensitive)."""
        if self.not_actions is not None:
            return not any(action_matches(p, action) for p in self.not_actions)
        return any(action_matches(p, action) for p in self.actions)

    def matches_resource(self, resource: str) -> bool:
        """True when the statement applies to ``resource`` (Resource or NotResource)."""
        if self.not_resources is not None:
            return not any(resource_matches(p, resource) for p in self.not_resources)
        return any(resource_matches(p, resource) for p in self.resources)

    @property
    def all_resources(self) -> bool:
        """True when the statement covers every resource (``*``, or NotResource)."""
        return self.not_resources is not None or "*" in self.resources

    @property
    def removes_actions(self) -> bool:
        """True for an unconditional Deny on ``*``: its actions are denied on every resource."""
        return self.effect == "Deny" and not self.conditional and self.not_resources is None and "*" in self.resources


def statements(doc: dict | None, origin: str = "") -> list[Statement]:
    """The normalised statements of a policy document.

    Args:
        doc: a policy document (``Statement`` may be one object or a list).
        origin: a label kept on each statement (e.g. the policy name).

    Returns:
        The statements.
    """
    if not doc:
        return []
    raw = doc.get("Statement") or []
    raw = [raw] if isinstance(raw, dict) else raw
    out = []
    for s in raw:
        out.append(Statement(
            effect=str(s.get("Effect", "Allow")).capitalize(),
            actions=tuple(_as_list(s.get("Action"))),
            not_actions=tuple(_as_list(s["NotAction"])) if "NotAction" in s else None,
            resources=tuple(_as_list(s.get("Resource"))) if "NotResource" not in s else (),
            not_resources=tuple(_as_list(s["NotResource"])) if "NotResource" in s else None,
            conditional=bool(s.get("Condition")),
            origin=origin,
        ))
    return out


@lru_cache(maxsize=4096)
def _action_rx(pattern: str) -> re.Pattern:
    return re.compile(fnmatch.translate(pattern.lower()), re.S)


def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: ``*``/``?`` wildcards, case-insensitive.

    Args:
        pattern: an Action element, e.g. ``s3:Get*``.
        action: an action, e.g. ``s3:GetObject``.

    Returns:
        True when the pattern covers the action.
    """
    return _action_rx(pattern).match(action.lower()) is not None


def resource_matches(pattern: str, resource: str) -> bool:
    """IAM resource matching: ``*`` any run of characters (``/`` included), ``?`` one character, case-sensitive;
    ``${*}``, ``${?}`` and ``${$}`` are the literal characters (see :mod:`miner.patterns`).

    A policy variable such as ``${aws:username}`` is treated as matching anything (its value is not known).
    ``resource`` is a pattern too: a mapped resource holds logged names as escaped literals, and may hold a
    wildcard the mapping put there (an unknown IAM path, a secret's random suffix). It matches when ``pattern``
    covers every string it stands for; so ``*`` (the mapping could not derive a resource) matches only ``*``.

    Args:
        pattern: a Resource element.
        resource: a resource pattern, usually one ARN (:func:`miner.patterns.literal` of a concrete ARN), or ``*``.

    Returns:
        True when the pattern covers the resource.
    """
    return covers(pattern, resource)


def _allows(stmts: list[Statement], action: str, resource: str) -> bool:
    explicit_allow = False
    for s in stmts:
        if not (s.matches_action(action) and s.matches_resource(resource)):
            continue
        if s.effect == "Deny":
            if not s.conditional:  # a conditional Deny may not apply; read optimistically
                return False
        else:
            explicit_allow = True
    return explicit_allow


def is_allowed(docs: list[dict], action: str, resource: str, boundary: list[dict] | None = None) -> bool:
    """Would these identity policies allow ``action`` on ``resource``? (IAM evaluation without context.)

    An explicit unconditional Deny wins; otherwise some Allow must match. Conditions are assumed to hold for
    Allow statements and not to hold for Deny statements (the most generous reading). With a permissions
    boundary the boundary must allow the call too. Resource-based policies, SCPs and session policies are not
    considered.

    Args:
        docs: identity policy documents.
        action: the action, e.g. ``s3:GetObject``.
        resource: a resource ARN or ``*``.
        boundary: permissions boundary documents, if any.

    Returns:
        True when allowed.
    """
    return Evaluator(docs, boundary)(action, resource)


class Evaluator:
    """:func:`is_allowed` over fixed documents, parsing them once (for many checks)."""

    def __init__(self, docs: list[dict], boundary: list[dict] | None = None):
        self._stmts = [s for d in docs for s in statements(d)]
        self._boundary = [s for d in boundary for s in statements(d)] if boundary else None

    def __call__(self, action: str, resource: str) -> bool:
        """Would the documents allow ``action`` on ``resource``?

        Args:
            action: the action, e.g. ``s3:GetObject``.
            resource: a resource ARN or ``*``.

        Returns:
            True when allowed (see :func:`is_allowed`).
        """
        if not _allows(self._stmts, action, resource):
            return False
        return self._boundary is None or _allows(self._boundary, action, resource)


# ----------------------------------------------------------------------------- granted set


@dataclass(slots=True)
class Grant:
    """One granted action: the resource patterns it is allowed on and the policies that grant it."""

    action: str
    resources: set[str] = field(default_factory=set)  # "*" when NotResource or "*" applies
    sources: set[str] = field(default_factory=set)
    conditional: bool = True  # every granting statement has a Condition
    partially_denied: bool = False

    @property
    def all_resources(self) -> bool:
        """True when granted on every resource."""
        return "*" in self.resources


@lru_cache(maxsize=4)
def _every_action(catalog) -> frozenset[str]:
    return frozenset(catalog.all_actions())


def _catalog(catalog):
    """``catalog``, or the pinned IAM catalogue when it is ``None``."""
    if catalog is None:
        from miner.catalog import get_catalog

        return get_catalog()
    return catalog


def _expand(s: Statement, catalog) -> set[str]:
    if s.not_actions is not None:
        excluded = set().union(*(catalog.expand(p) for p in s.not_actions)) if s.not_actions else set()
        return set(_every_action(catalog) - excluded)
    if "*" in s.actions:
        return set(_every_action(catalog))
    return set().union(*(catalog.expand(p) for p in s.actions)) if s.actions else set()


def granted_set(docs: Iterable[tuple[str, dict]], boundary: list[dict] | None = None, catalog=None) -> dict[str, Grant]:
    """Expand policies to the actions they grant, through the catalogue.

    Allow statements add actions (Action wildcards and NotAction expanded; NotResource counts as all
    resources); an unconditional Deny on every resource removes actions, a narrower Deny marks them partially
    denied; a permissions boundary keeps only the actions it also allows.

    Args:
        docs: (label, document) pairs of the identity policies.
        boundary: permissions boundary documents, if any.
        catalog: the IAM catalogue (default: the pinned one).

    Returns:
        Canonical action -> :class:`Grant`.
    """
    catalog = _catalog(catalog)
    grants: dict[str, Grant] = {}
    denies: list[tuple[Statement, set[str]]] = []
    for label, doc in docs:
        for s in statements(doc, label):
            acts = _expand(s, catalog)
            if s.effect == "Deny":
                denies.append((s, acts))
                continue
            res = {"*"} if s.all_resources else set(s.resources)
            for a in acts:
                g = grants.get(a)
                if g is None:
                    grants[a] = Grant(a, set(res), {label}, s.conditional)
                else:
                    g.resources |= res
                    g.sources.add(label)
                    g.conditional = g.conditional and s.conditional
    for s, acts in denies:
        if s.conditional:
            continue
        for a in acts & grants.keys():
            if s.removes_actions:
                del grants[a]
            else:
                grants[a].partially_denied = True
    if boundary:
        allowed_by_boundary: set[str] = set()
        b_denied: set[str] = set()
        for doc in boundary:
            for s in statements(doc, "boundary"):
                acts = _expand(s, catalog)
                if s.effect == "Deny":
                    if s.removes_actions:
                        b_denied |= acts
                else:
                    allowed_by_boundary |= acts
        for a in list(grants):
            if a not in allowed_by_boundary or a in b_denied:
                del grants[a]
    return grants


def suggested_actions(policies: list[dict], catalog=None) -> set[str]:
    """The actions a (suggested) policy allows, expanded through the catalogue (no boundary, no per-resource detail).

    Args:
        policies: policy documents.
        catalog: the IAM catalogue.

    Returns:
        Canonical actions: those some Allow statement grants, minus those an unconditional Deny on every resource
        removes (as :func:`granted_set` counts them).
    """
    catalog = _catalog(catalog)
    allowed: set[str] = set()
    removed: set[str] = set()
    for doc in policies:
        for s in statements(doc):
            if s.effect != "Deny":
                allowed |= _expand(s, catalog)
            elif s.removes_actions:
                removed |= _expand(s, catalog)
    return allowed - removed


# ----------------------------------------------------------------------------- data files


def _data_rows(name: str) -> list[dict]:
    text = (resources.files("miner") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#")))


@lru_cache(maxsize=1)
def unobservable_rules() -> list[dict]:
    """Rows of ``miner/data/unobservable.csv``: action (glob), kind, event_source, comment, source."""
    return _data_rows("unobservable.csv")


@lru_cache(maxsize=1)
def high_risk_rules() -> list[dict]:
    """Rows of ``miner/data/high_risk.csv``: pattern, match, resource, requires, category, reason."""
    return _data_rows("high_risk.csv")


# ----------------------------------------------------------------------------- classification


def _service_of(pattern: str) -> str:
    return pattern.split(":", 1)[0].lower()


@lru_cache(maxsize=1)
def _unobservable_by_service() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for rule in unobservable_rules():
        out.setdefault(_service_of(rule["action"]), []).append(rule)
    return out


def unobservable_reason(action: str, data_sources: set[str]) -> str | None:
    """Why an action could not have been observed in the window, or ``None`` when it could.

    Args:
        action: a canonical action.
        data_sources: eventSources with data events in the store for the window
            (:func:`miner.usage.data_event_sources`).

    Returns:
        A reason, or ``None``.
    """
    for rule in _unobservable_by_service().get(_service_of(action), ()):
        if not action_matches(rule["action"], action):
            continue
        if rule["kind"] == "never_logged":
            return f"CloudTrail never logs it ({rule['comment']})"
        if rule["kind"] == "data_event" and rule["event_source"] not in data_sources:
            return f"data event not logged in the window ({rule['comment']}; no {rule['event_source']} data events)"
    return None


def classify(grants: dict[str, Grant], used: set[str], data_sources: set[str]) -> pd.DataFrame:
    """Classify each granted action as used, unused or unobservable.

    Args:
        grants: the granted set (:func:`granted_set`).
        used: actions seen in authorised calls in the window.
        data_sources: eventSources the trail logged data events for in the window.

    Returns:
        Columns action, service, status (``used``/``unused``/``unobservable``), reason, all_resources,
        conditional, sources (comma-joined policy labels); sorted by action.
    """
    used_low = {u.lower() for u in used}
    rows = []
    for a in sorted(grants):
        g = grants[a]
        if a.lower() in used_low:
            status, reason = "used", ""
        else:
            why = unobservable_reason(a, data_sources)
            status, reason = ("unobservable", why) if why else ("unused", "")
        rows.append((a, a.split(":", 1)[0], status, reason, g.all_resources, g.conditional, ",".join(sorted(g.sources))))
    return pd.DataFrame(rows, columns=["action", "service", "status", "reason", "all_resources", "conditional", "sources"])


def high_risk(grants: dict[str, Grant], classification: pd.DataFrame, catalog=None) -> list[dict]:
    """High-risk grants (``miner/data/high_risk.csv``) among the granted actions that were not used.

    Args:
        grants: the granted set.
        classification: the output of :func:`classify`.
        catalog: the IAM catalogue.

    Returns:
        One dict per rule that fires: pattern, category, reason, status (``unused`` or ``unobservable``),
        actions (the unused matching actions, sorted), on_all_resources.
    """
    catalog = _catalog(catalog)
    status = dict(zip(classification["action"], classification["status"])) if len(classification) else {}
    by_service: dict[str, list[str]] = {}
    for a in grants:
        by_service.setdefault(_service_of(a), []).append(a)
    out = []
    for rule in high_risk_rules():
        pattern, need_all = rule["pattern"], rule["resource"] == "*"
        svc = _service_of(pattern)
        pool = list(grants) if any(c in svc for c in "*?") else by_service.get(svc, [])
        matched = [a for a in pool if action_matches(pattern, a) and (not need_all or grants[a].all_resources)]
        if not matched:
            continue
        if rule["match"] == "all":
            universe = catalog.expand(pattern)
            if not universe or not universe <= set(matched):
                continue
        if rule["requires"] and not any(action_matches(rule["requires"], a)
                                        for a in by_service.get(_service_of(rule["requires"]), [])):
            continue
        idle = sorted(a for a in matched if status.get(a) in ("unused", "unobservable"))
        if not idle:
            continue
        st = "unused" if any(status.get(a) == "unused" for a in idle) else "unobservable"
        label = pattern + (f" + {rule['requires']}" if rule["requires"] else "") + (" on *" if need_all else "")
        out.append({"rule": label, "pattern": pattern, "category": rule["category"], "reason": rule["reason"],
                    "status": st, "actions": idle, "on_all_resources": need_all})
    return out


def likely_path(action: str, resource: str, *, principal_account: str | None, invoked_by: str | None,
                missing: list[str], boundary_blocks: bool = False) -> str:
    """The most likely reason a call that succeeded is not allowed by the attached identity policies.

    Args:
        action: the action.
        resource: the resource ARN (or ``*``).
        principal_account: the principal's account id.
        invoked_by: the service that made the call on the principal's behalf, if any.
        missing: policies whose documents could not be read.
        boundary_blocks: the identity policies allow it but the permissions boundary does not.

    Returns:
        A short explanation.
    """
    if boundary_blocks:
        return "allowed by the identity policies but outside the permissions boundary (boundary changed since?)"
    if missing:
        return f"via a policy whose document could not be read ({missing[0]})"
    if invoked_by:
        return f"via a service acting on the principal's behalf ({invoked_by}: forward access or a service-linked role)"
    parts = resource.split(":", 5)
    resource_account = parts[4] if len(parts) == 6 and parts[0] == "arn" else ""
    service = action.split(":", 1)[0]
    if resource_account and principal_account and resource_account != principal_account:
        return f"via the resource's policy (cross-account: the resource is in {resource_account})"
    if service in RESOURCE_POLICY_SERVICES and resource != "*":
        return "via a resource-based policy on the resource (or a policy attached after the window)"
    return "not explained by the attached policies (session policy, policy changed since, or a mapping gap)"


# ----------------------------------------------------------------------------- documents and diff


def normalise(doc: dict) -> dict:
    """A policy document in a canonical form: list-valued elements sorted, statements sorted, keys ordered.

    Args:
        doc: a policy document.

    Returns:
        The normalised document (Sids are kept; order-insensitive elements are sorted).
    """
    raw = doc.get("Statement") or []
    raw = [raw] if isinstance(raw, dict) else raw
    order = ["Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"]
    stmts = []
    for s in raw:
        n = {}
        for k in order + sorted(set(s) - set(order)):
            if k not in s:
                continue
            v = s[k]
            if k in ("Action", "NotAction"):
                v = sorted(set(_as_list(v)), key=str.lower)
            elif k in ("Resource", "NotResource"):
                v = sorted(set(_as_list(v)))
            elif k == "Condition" and isinstance(v, dict):
                v = {op: {key: sorted(_as_list(val)) if isinstance(val, list) else val
                          for key, val in sorted(kv.items())} for op, kv in sorted(v.items())}
            n[k] = v
        stmts.append(n)
    stmts.sort(key=lambda s: json.dumps({k: v for k, v in s.items() if k != "Sid"}, sort_keys=True) + str(s.get("Sid", "")))
    out = {"Version": doc.get("Version", "2012-10-17"), "Statement": stmts}
    return out


def _doc_lines(docs: list[tuple[str, dict]]) -> list[str]:
    lines = []
    for label, doc in sorted(docs, key=lambda d: d[0]):
        lines.append(f"# {label}")
        lines.extend(json.dumps(normalise(doc), indent=2, ensure_ascii=False).splitlines())
    return lines


def unified_diff(current: list[tuple[str, dict]], suggested: list[tuple[str, dict]]) -> list[str]:
    """A unified diff (difflib) of the normalised current and suggested documents.

    Args:
        current: (label, document) pairs attached now.
        suggested: (label, document) pairs suggested.

    Returns:
        The diff lines (empty when the normalised documents are identical).
    """
    return list(difflib.unified_diff(_doc_lines(current), _doc_lines(suggested), "current", "suggested", lineterm=""))


# ----------------------------------------------------------------------------- the comparison


@dataclass
class DiffReport:
    """What is attached vs. what was used vs. what is suggested."""

    principal_arn: str
    granted_actions: int
    granted_services: int
    suggested_actions: int
    classification: pd.DataFrame
    high_risk: list[dict]
    used_not_granted: pd.DataFrame
    diff: list[str]
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def reduction(self) -> float:
        """Share of granted actions the suggestion removes (0..1)."""
        if not self.granted_actions:
            return 0.0
        return max(0.0, 1 - self.suggested_actions / self.granted_actions)

    def count(self, status: str) -> int:
        """Number of granted actions with a classification status.

        Args:
            status: ``used``, ``unused`` or ``unobservable``.

        Returns:
            The count.
        """
        return int((self.classification["status"] == status).sum()) if len(self.classification) else 0

    def to_dict(self) -> dict:
        """A JSON-ready dict (for ``--format json``)."""
        cls = self.classification
        by = lambda st: cls[cls["status"] == st][["action", "reason"]].to_dict("records") if len(cls) else []  # noqa: E731
        ung = self.used_not_granted.copy()
        for c in ("first_seen", "last_seen"):
            if c in ung.columns:
                ung[c] = ung[c].astype(str)
        return {
            "principal": self.principal_arn,
            "source": self.source,
            "granted": {"actions": self.granted_actions, "services": self.granted_services},
            "suggested": {"actions": self.suggested_actions},
            "reduction": round(self.reduction, 4),
            "used": [r["action"] for r in by("used")],
            "unused": [r["action"] for r in by("unused")],
            "unobservable": by("unobservable"),
            "high_risk_unused": self.high_risk,
            "used_not_granted": ung.to_dict("records"),
            "diff": self.diff,
            "notes": self.notes,
        }


def compare(current: list[tuple[str, dict]], suggested: list[dict], usage: pd.DataFrame, *,
            boundary: list[dict] | None = None, denied: pd.DataFrame | None = None, data_sources: set[str] = frozenset(),
            principal_arn: str = "", principal_account: str | None = None, missing: list[str] = (),
            source: str = "", catalog=None) -> DiffReport:
    """Compare the attached policies with the suggested ones and the observed usage.

    Args:
        current: (label, document) pairs of the identity policies attached now.
        suggested: the suggested policy documents.
        usage: authorised usage rows (action, resource, calls, optionally invoked_by).
        boundary: permissions boundary documents.
        denied: denied usage rows (action, resource, calls), reported as "used but not granted: denied".
        data_sources: eventSources with data events in the window.
        principal_arn: the principal (for the report).
        principal_account: its account (to spot cross-account resources).
        missing: policies whose documents could not be read.
        source: where the attached policies came from (snapshot file, live endpoint).
        catalog: the IAM catalogue.

    Returns:
        The :class:`DiffReport`.
    """
    catalog = _catalog(catalog)
    grants = granted_set(current, boundary, catalog)
    used = set(usage["action"]) if len(usage) else set()
    cls = classify(grants, used, set(data_sources))
    risky = high_risk(grants, cls, catalog)
    identity = Evaluator([d for _, d in current])
    full = Evaluator([d for _, d in current], boundary)
    rows = []
    cols = set(usage.columns)
    for r in usage.itertuples(index=False):
        if full(r.action, r.resource) or (r.resource == "*" and r.action in grants):
            continue  # allowed (a "*" usage is a resource the mapping could not name: granted if the action is)
        blocked = identity(r.action, r.resource)
        inv = getattr(r, "invoked_by", None) if "invoked_by" in cols else None
        rows.append({"action": r.action, "resource": r.resource, "calls": int(getattr(r, "calls", 0) or 0),
                     "outcome": "authorised",
                     "likely_path": likely_path(r.action, r.resource, principal_account=principal_account,
                                                invoked_by=inv if isinstance(inv, str) and inv else None,
                                                missing=list(missing), boundary_blocks=blocked)})
    if denied is not None and len(denied):
        for r in denied.itertuples(index=False):
            if isinstance(r.action, str) and not full(r.action, r.resource):
                rows.append({"action": r.action, "resource": r.resource, "calls": int(getattr(r, "calls", 0) or 0),
                             "outcome": "denied", "likely_path": "denied: the calls failed (not granted)"})
    ung = pd.DataFrame(rows, columns=["action", "resource", "calls", "outcome", "likely_path"])
    ung = ung.sort_values(["outcome", "action", "resource"], kind="stable").reset_index(drop=True)
    notes = []
    if missing:
        notes.append("not read: " + "; ".join(missing))
    if any(g.conditional for g in grants.values()):
        notes.append("some grants carry Conditions; they are counted as granted")
    if any(g.partially_denied for g in grants.values()):
        notes.append("some grants are partly denied by Deny statements on specific resources")
    suggested_n = len(suggested_actions(suggested, catalog))
    labelled = [(f"suggested {i}" if len(suggested) > 1 else "suggested", d) for i, d in enumerate(suggested, 1)]
    return DiffReport(principal_arn, len(grants), len({a.split(":", 1)[0] for a in grants}), suggested_n, cls, risky,
                      ung, unified_diff(current, labelled), notes, source)


def render_text(report: DiffReport, *, attached: list[str] | None = None, limit: int = 15) -> str:
    """The human diff report (``miner suggest --diff``).

    Args:
        report: the report.
        attached: labels of the policies attached now (and the boundary), for the header.
        limit: how many rows to show per section.

    Returns:
        The text, control characters in logged values made visible (:func:`miner.escape.visible`).
    """
    out = [f"principal:  {report.principal_arn}"]
    if report.source:
        out.append(f"attached:   {report.source}: {', '.join(attached) if attached else 'nothing attached'}")
    out.append(f"granted {report.granted_actions:,} actions in {report.granted_services:,} services -> suggested "
               f"{report.suggested_actions:,} ({report.reduction:.1%} fewer)")
    out.append(f"  used {report.count('used'):,} / unused {report.count('unused'):,} / unobservable "
               f"{report.count('unobservable'):,} (could not have been seen in the window)")
    if report.high_risk:
        out += ["", "high-risk grants not used in the window:"]
        for h in report.high_risk:
            acts = h["actions"]
            shown = ", ".join(acts[:4]) + (f", ... ({len(acts) - 4} more)" if len(acts) > 4 else "")
            out.append(f"  ! {h['rule']} [{h['category']}, {h['status']}]: {h['reason']} ({shown})")
    cls = report.classification
    unused = cls[cls["status"] == "unused"] if len(cls) else cls
    if len(unused):
        out += ["", "unused grants by service:"]
        counts = unused.groupby("service")["action"].apply(list)
        for svc in sorted(counts.index, key=lambda s: (-len(counts[s]), s))[:limit]:
            acts = counts[svc]
            out.append(f"  {svc}: {len(acts)} ({', '.join(acts[:5])}{', ...' if len(acts) > 5 else ''})")
        if len(counts) > limit:
            out.append(f"  ... ({len(counts) - limit} more services)")
    unobs = cls[cls["status"] == "unobservable"] if len(cls) else cls
    if len(unobs):
        out += ["", "unobservable (not counted as unused; keep unless you know they are not needed):"]
        for reason, grp in unobs.groupby("reason", sort=True):
            acts = list(grp["action"])
            out.append(f"  {', '.join(acts[:5])}{f', ... ({len(acts) - 5} more)' if len(acts) > 5 else ''}: {reason}")
    ung = report.used_not_granted
    if len(ung):
        out += ["", "used but not granted by the attached identity policies:"]
        for r in ung.head(limit).itertuples(index=False):
            out.append(f"  {r.action} on {r.resource} ({r.calls:,} calls): {r.likely_path}")
        if len(ung) > limit:
            out.append(f"  ... ({len(ung) - limit} more)")
    for n in report.notes:
        out.append(f"note: {n}")
    out += ["", *(report.diff or ["(no difference between the normalised documents)"])]
    return "\n".join(map(visible, out)) + "\n"
