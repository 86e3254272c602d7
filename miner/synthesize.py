"""Least-privilege policy synthesis from observed (action, resource) usage, and Terraform/CloudFormation rendering."""

from __future__ import annotations

import json
import os
import re
from collections import namedtuple
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import pandas as pd

from miner.escape import hcl_string as _hcl_str
from miner.escape import json_text, visible, yaml_text
from miner.patterns import covers, is_literal, text_of
from miner.templates import ARN_SEPARATORS, S3_SEPARATORS, learn

#: The managed-policy size limit, in characters without whitespace (as IAM counts).
MANAGED_POLICY_LIMIT = 6144
#: The inline-policy size limit per role (all inline policies together).
INLINE_ROLE_LIMIT = 10240
#: Generalise a group of more than this many resources of one kind (per bucket, per type) by default.
DEFAULT_MAX_RESOURCES = 10

#: Service principals a role is passed to, for the ``iam:PassedToService`` condition, by the eventSource (and
#: optionally eventName) of the call that passed the role. Only services where the mapping is certain.
PASSED_TO_SERVICE = {
    "lambda.amazonaws.com": "lambda.amazonaws.com",
    "glue.amazonaws.com": "glue.amazonaws.com",
    "states.amazonaws.com": "states.amazonaws.com",
    "codebuild.amazonaws.com": "codebuild.amazonaws.com",
    "cloudformation.amazonaws.com": "cloudformation.amazonaws.com",
    "sagemaker.amazonaws.com": "sagemaker.amazonaws.com",
    "ec2.amazonaws.com": "ec2.amazonaws.com",
    "events.amazonaws.com": "events.amazonaws.com",
    "ecs.amazonaws.com": "ecs-tasks.amazonaws.com",
    "batch.amazonaws.com": "batch.amazonaws.com",
    "codepipeline.amazonaws.com": "codepipeline.amazonaws.com",
    "scheduler.amazonaws.com": "scheduler.amazonaws.com",
}

_LEVEL_ORDER = ["List", "Read", "Write", "Tagging", "Permissions management"]
_BOUNDARY = "/-_.:"


@dataclass(frozen=True)
class Generalisation:
    """Resources replaced by one wildcard pattern, and why."""

    pattern: str
    count: int
    examples: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Fallback:
    """An action granted on ``*``, and why."""

    action: str
    reason: str


@dataclass(frozen=True)
class Unproven:
    """Resources of an action seen only in calls that did not succeed (not found, throttled, other errors).

    Such a call was authorised, but says nothing about whether the resource exists, and its name may be whatever
    a caller sent: it never widens a grant. ``kept`` are granted exactly; ``left_out`` are not granted.
    """

    action: str
    kept: tuple[str, ...]
    left_out: tuple[str, ...]
    calls: int  # the calls that did not succeed on resources not already granted
    reason: str  # why ``left_out`` were left out ("" when none were)


@dataclass(frozen=True)
class ActionWildcard:
    """An action wildcard used in the policy and the observed actions it expands to in the pinned catalogue."""

    pattern: str
    expands_to: tuple[str, ...]


@dataclass
class Suggestion:
    """A suggested least-privilege policy (possibly split into several documents) and how it was built."""

    policies: list[dict]
    actions: tuple[str, ...]  # the observed actions the policy allows (sorted)
    generalisations: list[Generalisation] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    wildcards: list[ActionWildcard] = field(default_factory=list)
    unproven: list[Unproven] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    catalog_version: str = ""
    size_limit: int = MANAGED_POLICY_LIMIT

    @property
    def sizes(self) -> list[int]:
        """Characters of each policy document as IAM counts them (no whitespace)."""
        return [policy_size(p) for p in self.policies]

    @property
    def statements(self) -> list[dict]:
        """All statements of all documents."""
        return [s for p in self.policies for s in p["Statement"]]


def policy_size(doc: dict) -> int:
    """The size of a policy document as IAM counts it: JSON characters excluding whitespace.

    Args:
        doc: a policy document.

    Returns:
        The character count.
    """
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return len(text) - text.count(" ") - text.count("\t") - text.count("\r") - text.count("\n")


def _split_arn(arn: str) -> list[str] | None:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else None


def _cut(prefix: str) -> str:
    """Cut a common prefix back to just after its last separator (``orders-2026-0`` -> ``orders-2026-``)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] in _BOUNDARY:
            return prefix[: i + 1]
    return ""


def _kind(arn: str) -> tuple[tuple, str, str] | None:
    """The generalisation group of a resource ARN: (group key, pattern head, name within the group).

    Only literal ARNs are grouped; their names are patterns (logged text as literals), and the separators a
    prefix is cut at never occur inside an escape, so a cut prefix is a valid pattern.
    """
    parts = _split_arn(arn)
    if parts is None or not is_literal(arn):
        return None
    _, part, service, region, account, res = parts
    if service == "s3" and not region and not account:
        if "/" in res:
            bucket, key = res.split("/", 1)
            return ("s3-object", part, bucket), f"arn:{part}:s3:::{bucket}/", key
        return ("s3-bucket", part), f"arn:{part}:s3:::", res
    cut = min((i for i in (res.find("/"), res.find(":")) if i >= 0), default=-1)
    if cut >= 0:
        rtype, sep, name = res[:cut], res[cut], res[cut + 1:]
        return (service, part, region, account, rtype, sep), f"arn:{part}:{service}:{region}:{account}:{rtype}{sep}", name
    return (service, part, region, account, "", ""), f"arn:{part}:{service}:{region}:{account}:", res


def _group_label(key: tuple) -> str:
    if key[0] == "s3-object":
        return f"objects in bucket {text_of(key[-1])}"
    return {"s3-bucket": "buckets"}.get(key[0]) or \
        f"{key[0]} {key[4] or 'resource'} resources in account {key[3] or '-'}, {key[2] or 'global'}"


def _generalise(resources: Iterable[str], max_resources: int,
                templates: bool = True) -> tuple[dict[str, str], list[Generalisation]]:
    """Map resources to the patterns that generalise them: learned templates first, a common prefix last.

    Per group (the objects of one bucket, the buckets, the resources of one type in one account and region),
    :func:`miner.templates.learn` replaces only the segments that vary (dates, ids, hashes) and keeps every
    constant one; names with nothing to learn from stay exact. Only when a group still has more than
    ``max_resources`` patterns and names are the exact ones generalised to their common prefix (the last resort
    for sets with no structure). ``max_resources`` 0 never generalises.
    """
    groups: dict[tuple, tuple[str, list[tuple[str, str]]]] = {}
    for r in sorted(set(resources)):
        k = _kind(r)
        if k is not None:
            key, head, name = k
            groups.setdefault(key, (head, []))[1].append((r, name))
    mapping: dict[str, str] = {}
    notes: list[Generalisation] = []
    if max_resources <= 0:
        return mapping, notes
    for key in sorted(groups):
        head, members = groups[key]
        what = _group_label(key)
        by_text = {text_of(name): r for r, name in members}
        learned, exact = ([], sorted(by_text)) if not templates else \
            learn(list(by_text), S3_SEPARATORS if key[0] == "s3-object" else ARN_SEPARATORS, max_resources,
                  own_name_first=key[0] != "s3-object")
        for t in learned:
            pattern = head + t.pattern
            notes.append(Generalisation(pattern, len(t.members), tuple(by_text[m] for m in t.members[:3]),
                                        f"template from {len(t.members)} {what}: {t.why or 'names vary'}"))
            for m in t.members:
                mapping[by_text[m]] = pattern
        if len(learned) + len(exact) <= max_resources:
            continue
        rest = [(by_text[n], by_text[n][len(head):]) for n in exact]
        if key[0] == "s3-object":
            # Keys under a few top-level prefixes: one pattern per prefix; otherwise one for the bucket.
            tops: dict[str, list[tuple[str, str]]] = {}
            for r, name in rest:
                tops.setdefault(name.split("/", 1)[0] + ("/" if "/" in name else ""), []).append((r, name))
            subgroups = list(tops.values()) if 1 < len(tops) <= max_resources else [rest]
        else:
            subgroups = [rest]
        for sub in subgroups:
            if len(sub) <= 1:  # a lone name under its own prefix stays exact
                continue
            common = _cut(os.path.commonprefix([n for _, n in sub]))
            pattern = f"{head}{common}*"
            scope = f"common prefix {text_of(common)!r}" if common else "no common prefix"
            split = f", {len(subgroups)} top-level prefixes" if len(subgroups) > 1 else ""
            notes.append(Generalisation(pattern, len(sub), tuple(r for r, _ in sub[:3]),
                                        f"{len(rest)} {what} with no structure to learn > --max-resources "
                                        f"{max_resources}{split}: {len(sub)} with {scope}"))
            for r, _ in sub:
                mapping[r] = pattern
    return mapping, notes


def generalise(resources: Iterable[str], max_resources: int = DEFAULT_MAX_RESOURCES) -> dict[str, str]:
    """The pattern each resource is granted under, as :func:`synthesize` generalises them (templates, then prefixes).

    Args:
        resources: observed resource ARNs (patterns of logged names, as in the usage rows).
        max_resources: the generalisation threshold per resource group (0 = never generalise).

    Returns:
        resource -> pattern, for the resources that are generalised (the others stay as they are).
    """
    return _generalise(resources, max_resources)[0]


def _drop_covered(resources: set[str]) -> set[str]:
    """Remove resources already matched by a wildcard pattern in the same set (never all of them).

    ``r`` goes when another pattern covers it and is not covered back, or when the two cover each other (two
    spellings of one pattern) and the other sorts first: the kept ones are the maximal elements of a strict
    order, so a non-empty set stays non-empty.
    """
    if "*" in resources:
        return {"*"}
    patterns = [r for r in resources if not is_literal(r)]
    return {r for r in resources
            if not any(p != r and covers(p, r) and (p < r or not covers(r, p)) for p in patterns)}


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*|[a-z0-9]+")


def _name_prefixes(name: str) -> list[str]:
    """Word-boundary prefixes of an action name, shortest first, excluding the name itself."""
    out, acc = [], ""
    for w in _WORD.findall(name)[:-1]:
        acc += w
        out.append(acc)
    return out


def _action_key(action: str) -> tuple[str, str]:
    """The order of actions in a statement: by service, then case-insensitively."""
    return action.split(":")[0], action.lower()


def _compress_actions(actions: set[str], catalog) -> tuple[list[str], list[ActionWildcard]]:
    """Replace groups of actions by wildcards that expand, in the catalogue, to actions of ``actions`` alone."""
    by_service: dict[str, set[str]] = {}
    for a in actions:
        by_service.setdefault(a.split(":", 1)[0], set()).add(a)
    out: list[str] = []
    used: list[ActionWildcard] = []
    for service in sorted(by_service):
        observed = by_service[service]
        low = {a.lower() for a in observed}
        every = catalog.expand(f"{service}:*")
        if len(observed) >= 2 and every and {a.lower() for a in every} <= low:
            out.append(f"{service}:*")
            used.append(ActionWildcard(f"{service}:*", tuple(sorted(every))))
            continue
        covered: set[str] = set()
        for a in sorted(observed):
            if a in covered:
                continue
            for prefix in _name_prefixes(a.split(":", 1)[1]):
                pattern = f"{service}:{prefix}*"
                exp = catalog.expand(pattern)
                if len(exp) >= 2 and {e.lower() for e in exp} <= low:
                    out.append(pattern)
                    used.append(ActionWildcard(pattern, tuple(sorted(exp))))
                    covered |= {x for x in observed if x.lower() in {e.lower() for e in exp}}
                    break
        out.extend(sorted(observed - covered))
    return sorted(set(out), key=_action_key), used


def _camel(service: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", service) if w)


def _sid(actions: Iterable[str], catalog) -> str:
    """A readable Sid from content: the services and access levels, e.g. ``S3ReadWrite``."""
    acts = sorted(set(actions))
    services = sorted({a.split(":", 1)[0] for a in acts})
    levels = set()
    for a in acts:
        for e in (catalog.expand(a) if "*" in a or "?" in a else (a,)):
            info = catalog.info(e)
            levels.add(info.access_level if info else "Unknown")
    svc = "".join(_camel(s) for s in services[:3]) + ("More" if len(services) > 3 else "")
    lvl = "".join(_camel(level) for level in sorted(levels, key=lambda x: (_LEVEL_ORDER.index(x)
                                                                             if x in _LEVEL_ORDER else 9, x)))
    return (svc + lvl)[:100] or "Statement"


def _one_or_list(values: list[str]):
    return values[0] if len(values) == 1 else values


def _statement(sid: str, actions: list[str], resources: list[str], condition: dict | None) -> dict:
    stmt = {"Sid": sid, "Effect": "Allow", "Action": _one_or_list(actions), "Resource": _one_or_list(resources)}
    if condition:
        stmt["Condition"] = condition
    return stmt


def _as_list(v) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _document(statements: list[dict]) -> dict:
    """A policy document holding ``statements``."""
    return {"Version": "2012-10-17", "Statement": statements}


def _halve(stmt: dict, limit: int) -> list[dict]:
    """Halve a statement, by resources first and then by actions, until each part fits ``limit`` as is."""
    if policy_size(_document([stmt])) <= limit:
        return [stmt]
    res, acts = _as_list(stmt["Resource"]), _as_list(stmt["Action"])
    key, values = ("Resource", res) if len(res) > 1 else ("Action", acts)
    if len(values) < 2:
        raise ValueError(f"one statement ({stmt['Sid']}) does not fit in {limit:,} characters")
    mid = len(values) // 2
    return [p for half in (values[:mid], values[mid:]) for p in _halve(dict(stmt, **{key: _one_or_list(half)}), limit)]


def _split_oversized(stmt: dict, limit: int) -> list[dict]:
    """Split a statement that alone exceeds the size limit into parts Sid'd ``<Sid>Part<i>`` that each fit.

    The parts are cut to leave room for the ``Part<i>`` suffix their Sids get.
    """
    if policy_size(_document([stmt])) <= limit:
        return [stmt]
    reserve = 0
    while True:
        try:
            parts = _halve(stmt, limit - reserve)
        except ValueError:
            raise ValueError(f"one statement ({stmt['Sid']}) exceeds {limit:,} characters on its own") from None
        suffix = len(f"Part{len(parts)}")
        if suffix <= reserve:
            return [dict(p, Sid=f"{stmt['Sid']}Part{i}") for i, p in enumerate(parts, 1)]
        reserve = suffix


def _pack(statements: list[dict], limit: int) -> list[dict]:
    """First-fit packing of statements into as few documents as fit the size limit, in statement order."""
    docs: list[dict] = []
    for stmt in (p for s in statements for p in _split_oversized(s, limit)):
        for doc in docs:
            if policy_size(_document(doc["Statement"] + [stmt])) <= limit:
                doc["Statement"].append(stmt)
                break
        else:
            docs.append(_document([stmt]))
    return docs


#: Outcome classes that prove a resource exists and the call did what it asked (models.classify_outcome).
PROVEN_OUTCOMES = ("success", "dry_run")


def succeeded(outcomes) -> bool:
    """Did any of a usage row's calls succeed? (``outcomes`` as in ``usage_actions.sql``: ``success:12,not_found:1``.)

    Args:
        outcomes: the comma-joined ``class:count`` list; missing (``None``/NaN) counts as success.

    Returns:
        True when some call succeeded (or was a dry run that would have), or nothing is known.
    """
    if not isinstance(outcomes, str) or not outcomes:
        return True
    return _proven(outcomes)


@lru_cache(maxsize=1 << 12)
def _proven(outcomes: str) -> bool:
    """:func:`succeeded` of an outcomes text (few distinct ones repeat over a principal's usage rows)."""
    return any(part.split(":", 1)[0] in PROVEN_OUTCOMES for part in outcomes.split(","))


def _place_unproven(unproven: dict[str, dict[str, int]], per_action: dict[str, set[str]], general: dict[str, str],
                    exact: dict[str, set[str]], max_resources: int) -> list[Unproven]:
    """Decide which resources seen only in calls that did not succeed are granted, filling ``exact``.

    A resource already covered by the action's grant (from calls that succeeded) needs nothing. Of the rest, a
    group (the objects of one bucket, the resources of one type in one account and region) of at most
    ``max_resources`` is granted exactly, as literals; a larger group is left out, never generalised, so the
    volume of failed calls (whose names any caller can choose) cannot decide how broad a grant is. ``*`` from
    such calls is left out where calls that succeeded name resources.
    """
    out: list[Unproven] = []
    for action in sorted(unproven):
        granted = per_action.get(action, set())
        if granted == {"*"}:
            continue
        patterns = {general.get(r, r) for r in granted}
        rest = {r: n for r, n in unproven[action].items() if not any(covers(p, r) for p in patterns)}
        by_group: dict[tuple, list[str]] = {}
        for r in sorted(rest):
            k = _kind(r) if r != "*" else None
            by_group.setdefault(k[0] if k else ("-", r), []).append(r)
        kept, left = [], []
        for key, members in sorted(by_group.items(), key=lambda kv: kv[1][0]):
            if members == ["*"] or (0 < max_resources < len(members)):
                left.extend(members)
            else:
                kept.extend(members)
        if not kept and not left:
            continue
        exact.setdefault(action, set()).update(kept)
        calls = sum(rest.values())
        why = "" if not left else (
            "\"*\" would widen a grant that calls which succeeded scope to resources" if left == ["*"] else
            f"more than --max-resources {max_resources} of one kind: granting them would widen the grant")
        out.append(Unproven(action, tuple(kept), tuple(left), calls, why))
    return out


#: Characters of a one-statement document besides its action and resource (``{"Version":...,"Sid":"S",...}``), with
#: room to spare; and the most JSON writes for one character (``\u0001``).
_SMALL_STATEMENT = 200
_JSON_GROWTH = 6


def _drop_oversized(per_action: dict[str, set[str]], exact: dict[str, set[str]], limit: int) -> list[str]:
    """Leave out resources that alone would make a statement larger than the size limit; returns notes."""
    notes = []
    for action in sorted(per_action):
        for pool in (per_action[action], exact.get(action, set())):
            for r in sorted(pool):
                if _SMALL_STATEMENT + _JSON_GROWTH * (len(action) + len(r)) <= limit:
                    continue  # fits whatever JSON makes of its characters: no need to write it out
                size = policy_size(_document([_statement("S", [action], [r], None)]))
                if size > limit:
                    pool.discard(r)
                    notes.append(f"left out {action} on a resource of {len(r):,} characters "
                                 f"({text_of(r)[:60]!r}...): one statement with it alone exceeds {limit:,} characters")
    return notes


def _condition_pairs(value) -> frozenset | None:
    """``ec2:CreateAction=RunInstances,...`` as a set of (key, value) pairs; ``None`` (no condition) when empty."""
    if not isinstance(value, str) or not value:
        return None
    return frozenset(tuple(p.split("=", 1)) for p in value.split(",") if "=" in p) or None


def _by_condition(action: str, resources: set[str], general: dict[str, str], exact: set[str],
                  conds: dict[tuple[str, str], frozenset | None]) -> list[tuple[dict | None, set[str]]]:
    """The granted patterns of an action grouped by the condition they carry (from the usage ``conditions``).

    A pattern stands for the observed resources it replaced (all of the action's for ``*``); it carries a condition
    only when every one of them does, with the values of all: a call that carried none needs the grant without one.
    Each condition key gets its own statement, as the keys of one condition block must all hold.
    """
    members: dict[str, list[str]] = {}
    if resources == {"*"}:
        members["*"] = [r for a, r in conds if a == action]
    else:
        for r in resources:
            members.setdefault(general.get(r, r), []).append(r)
    for r in exact:
        members.setdefault(r, []).append(r)
    groups: dict[str, tuple[dict | None, set[str]]] = {}
    for pattern, rs in members.items():
        pairs: set | None = set()
        for r in rs:
            c = conds.get((action, r))
            pairs = None if c is None or pairs is None else pairs | c
        by_key: dict[str, list[str]] = {}
        for key, value in sorted(pairs or ()):
            by_key.setdefault(key, []).append(value)
        for key, values in by_key.items() or [("", [])]:
            cond = {"StringEquals": {key: _one_or_list(values)}} if key else None
            groups.setdefault(json.dumps(cond, sort_keys=True), (cond, set()))[1].add(pattern)
    return list(groups.values())


_Row = namedtuple("_Row", "action resource conditions outcomes calls reason implicit event_sources")


def _rows(usage: pd.DataFrame, columns: tuple[str, ...]) -> Iterable[_Row]:
    """The rows of ``usage`` as :data:`_Row` tuples (``None`` for an absent column). Cheaper than ``itertuples``,
    which builds a tuple class per call and reads every column, not only these."""
    n = len(usage)
    return map(_Row._make, zip(*(list(usage[c]) if c in usage.columns else [None] * n for c in columns)))


def synthesize(usage: pd.DataFrame, *, max_resources: int = DEFAULT_MAX_RESOURCES, wildcards: bool = True,
               passrole_condition: bool = True, size_limit: int = MANAGED_POLICY_LIMIT, catalog=None,
               templates: bool = True) -> Suggestion:
    """Build a minimised least-privilege policy that allows every observed (action, resource).

    Steps (DESIGN.md "Minimisation"): actions that cannot be scoped to resources, or whose resource could not be
    derived, go on ``*`` (recorded as fallbacks); within each resource group (objects of one bucket, buckets,
    resources of one type in one account and region) the segments that vary (dates, ids, hashes) become
    wildcards in a learned template and the constant ones are kept (:mod:`miner.templates`); a group that still
    has more than ``max_resources`` names with no structure becomes one wildcard on their common prefix; only
    calls that succeeded take part in generalisation; actions with identical resource sets share a statement; within a statement, action
    wildcards replace groups of actions when the wildcard expands, in the pinned catalogue, to those observed
    actions alone; the result is split into several documents when one would exceed ``size_limit``.
    Output is deterministic: sorted, with Sids derived from content.

    Args:
        usage: authorised usage, one row per (action, resource); columns ``action`` and ``resource``, optionally
            ``reason`` (why the resource is ``*``), ``implicit`` and ``event_sources`` (comma-joined eventSources
            of the calls that implied the action; used for the iam:PassRole condition), ``conditions``
            (``key=value,...`` the grant may carry, as in ``usage_actions.sql``: a ``StringEquals`` condition).
        max_resources: generalisation threshold per resource group (0 = never generalise).
        wildcards: allow action wildcards (``--no-wildcards`` turns them off).
        passrole_condition: add ``iam:PassedToService`` to iam:PassRole when every pass came from a known service.
        size_limit: characters per document (IAM's managed-policy limit by default).
        catalog: the IAM catalogue (default: the pinned one).
        templates: learn resource templates (``False``: only the common-prefix generalisation past
            ``max_resources``, as a baseline for backtests).

    Returns:
        The :class:`Suggestion`.

    Raises:
        ValueError: when ``usage`` holds no (action, resource) rows.
    """
    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    if usage is None or len(usage) == 0:
        raise ValueError("no authorised calls to build a policy from")
    cols = set(usage.columns)
    reasons: dict[str, str] = {}
    proven: dict[str, set[str]] = {}  # resources of calls that succeeded
    unproven: dict[str, dict[str, int]] = {}  # resources (-> calls) seen only in calls that did not succeed
    passed_to: dict[str, set[str]] = {}  # iam:PassRole resource -> service principals it was passed to ("?" unknown)
    conds: dict[tuple[str, str], frozenset | None] = {}  # (action, resource) -> (key, value) pairs; None: unconditional
    for row in _rows(usage, ("action", "resource", "conditions", "outcomes", "calls", "reason", "implicit",
                             "event_sources")):
        action = catalog.canonical(row.action) or row.action
        resource = row.resource if isinstance(row.resource, str) and row.resource else "*"
        pairs = _condition_pairs(row.conditions) if "conditions" in cols else None
        had = conds.get((action, resource), frozenset())
        conds[(action, resource)] = None if pairs is None or had is None else had | pairs
        if "outcomes" not in cols or succeeded(row.outcomes):
            proven.setdefault(action, set()).add(resource)
        else:
            calls = unproven.setdefault(action, {})
            calls[resource] = calls.get(resource, 0) + (int(row.calls) if "calls" in cols else 1)
        if resource == "*" and action not in reasons:
            reason = getattr(row, "reason", None) if "reason" in cols else None
            reasons[action] = reason if isinstance(reason, str) and reason else "no resource could be derived"
        if action == "iam:PassRole":
            implicit = "implicit" in cols and bool(row.implicit)
            via = row.event_sources if "event_sources" in cols and implicit and isinstance(row.event_sources, str) else ""
            passed_to.setdefault(resource, set()).update({PASSED_TO_SERVICE.get(v, "?") for v in via.split(",") if v}
                                                         or {"?"})
    fallbacks: list[Fallback] = []
    per_action: dict[str, set[str]] = {}
    for action in sorted(set(proven) | set(unproven)):
        info = catalog.info(action)
        if info is not None and not info.supports_resource_level:
            per_action[action] = {"*"}
            fallbacks.append(Fallback(action, "the action supports no resource-level permissions (IAM requires \"*\")"))
        elif "*" in proven.get(action, ()) or ("*" in unproven.get(action, {}) and not proven.get(action)):
            per_action[action] = {"*"}
            why = reasons.get(action, "no resource could be derived")
            fallbacks.append(Fallback(action, why if action in proven else f"{why} (in calls that did not succeed)"))
        else:
            per_action[action] = set(proven.get(action, ()))
    # Only resources of calls that succeeded decide how far a grant is generalised.
    general, generalisations = _generalise({r for a, rs in per_action.items() for r in rs if r != "*"}, max_resources,
                                           templates)
    exact: dict[str, set[str]] = {}  # unproven resources granted as they are (never through `general`)
    left_notes = _place_unproven(unproven, per_action, general, exact, max_resources)
    notes: list[str] = _drop_oversized(per_action, exact, size_limit)
    for action in [a for a, rs in per_action.items() if not rs and not exact.get(a)]:
        del per_action[action]  # every resource was left out (explained above)
    groups: dict[tuple, set[str]] = {}

    def add(action: str, resources: set[str], cond: dict | None) -> None:
        key = (tuple(sorted(_drop_covered(resources))), json.dumps(cond, sort_keys=True) if cond else "")
        groups.setdefault(key, set()).add(action)

    for action, resources in per_action.items():
        if action != "iam:PassRole" or not passrole_condition:
            for cond, patterns in _by_condition(action, resources, general, exact.get(action, set()), conds):
                add(action, patterns, cond)
            continue
        # One statement per set of services the roles were passed to (iam:PassedToService), when known.
        services_of: dict[str, set[str]] = {}
        if resources == {"*"}:
            services_of["*"] = set().union(*passed_to.values()) if passed_to else {"?"}
        else:
            for r in resources:
                services_of.setdefault(general.get(r, r), set()).update(passed_to.get(r, {"?"}))
            for r in exact.get(action, ()):
                services_of.setdefault(r, set()).update(passed_to.get(r, {"?"}))
        by_services: dict[tuple[str, ...], set[str]] = {}
        for pattern, services in services_of.items():
            by_services.setdefault(() if "?" in services else tuple(sorted(services)), set()).add(pattern)
        for services, patterns in by_services.items():
            cond = {"StringEquals": {"iam:PassedToService": _one_or_list(list(services))}} if services else None
            add(action, patterns, cond)
        if () in by_services:
            notes.append("iam:PassRole has no iam:PassedToService condition on "
                         f"{', '.join(sorted(by_services[()]))}: the service the role was passed to is not known")
    statements = []
    used_wildcards: list[ActionWildcard] = []
    for (resources, cond_key), actions in groups.items():
        if wildcards:
            listed, wc = _compress_actions(actions, catalog)
            used_wildcards.extend(wc)
        else:
            listed = sorted(actions, key=_action_key)
        cond = json.loads(cond_key) if cond_key else None
        statements.append((_sid(listed, catalog), listed, list(resources), cond))
    statements.sort(key=lambda s: (s[0], s[1], s[2], json.dumps(s[3], sort_keys=True)))
    seen: dict[str, int] = {}
    built = []
    for sid, listed, resources, cond in statements:
        seen[sid] = seen.get(sid, 0) + 1
        unique = sid if seen[sid] == 1 else f"{sid}{seen[sid]}"
        built.append(_statement(unique, listed, resources, cond))
    policies = _pack(built, size_limit)
    if len(policies) > 1:
        notes.append(f"split into {len(policies)} policies: one would exceed {size_limit:,} characters")
    total = sum(policy_size(p) for p in policies)
    if total > INLINE_ROLE_LIMIT:
        notes.append(f"{total:,} characters in all: too large for inline policies ({INLINE_ROLE_LIMIT:,} per role); "
                     f"attach them as managed policies")
    return Suggestion(policies, tuple(sorted(per_action)), generalisations, fallbacks,
                      sorted(set(used_wildcards), key=lambda w: w.pattern), left_notes, notes, catalog.version,
                      size_limit)


# ----------------------------------------------------------------------------- rendering


def to_json(suggestion: Suggestion) -> str:
    """IAM JSON: the document when there is one, else a JSON array of documents.

    Args:
        suggestion: the suggestion.

    Returns:
        The JSON text (2-space indent, trailing newline).
    """
    obj = suggestion.policies[0] if len(suggestion.policies) == 1 else suggestion.policies
    return json_text(obj, indent=2) + "\n"


def _ident(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "policy"
    return ident if not ident[0].isdigit() else f"p_{ident}"


def _hcl_list(values: list[str], indent: str) -> str:
    if len(values) <= 1:
        return "[" + ", ".join(_hcl_str(v) for v in values) + "]"
    inner = ",\n".join(f"{indent}  {_hcl_str(v)}" for v in values)
    return f"[\n{inner},\n{indent}]"


def _hcl_body(items: list[tuple[str, str] | list[str]], indent: str) -> list[str]:
    """Lines of an HCL block body as ``terraform fmt`` writes them.

    Args:
        items: ``(name, value)`` attributes and nested blocks (a list of lines, already indented).
        indent: the body's indentation.

    Returns:
        The lines: the ``=`` of consecutive one-line attributes aligned; a multi-line attribute or a block ends a run.
    """
    lines: list[str] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        width = max((len(k) for k, _ in run), default=0)
        lines.extend(f"{indent}{k.ljust(width)} = {v}" for k, v in run)
        run.clear()

    for item in items:
        if isinstance(item, tuple) and "\n" not in item[1]:
            run.append(item)
            continue
        flush()
        lines.extend([f"{indent}{item[0]} = {item[1]}"] if isinstance(item, tuple) else item)
    flush()
    return lines


def _hcl_statement(stmt: dict) -> list[str]:
    """One ``statement`` block of an ``aws_iam_policy_document``."""
    items: list = [("sid", _hcl_str(stmt["Sid"])), ("effect", _hcl_str(stmt["Effect"])),
                   ("actions", _hcl_list(sorted(_as_list(stmt["Action"]), key=str.lower), "    ")),
                   ("resources", _hcl_list(sorted(_as_list(stmt["Resource"])), "    "))]
    for test, kv in sorted((stmt.get("Condition") or {}).items()):
        for variable, values in sorted(kv.items()):
            items.append(["    condition {"] + _hcl_body([("test", _hcl_str(test)), ("variable", _hcl_str(variable)),
                                                         ("values", _hcl_list(_as_list(values), "      "))], "      ")
                         + ["    }"])
    return ["  statement {", *_hcl_body(items, "    "), "  }"]


#: Characters IAM allows in a policy name (``[\w+=,.@-]``, at most 128).
_POLICY_NAME = re.compile(r"[^A-Za-z0-9_+=,.@-]+")


def policy_name(principal: str, index: int | None = None) -> str:
    """The name of a suggested managed policy: ``<principal>-least-privilege`` (``-2`` for the second document).

    Args:
        principal: the role or user name.
        index: the document's number when the policy is split.

    Returns:
        A valid IAM policy name (other characters become ``-``; at most 128 characters).
    """
    suffix = "-least-privilege" + (f"-{index}" if index else "")
    return _POLICY_NAME.sub("-", principal)[: 128 - len(suffix)] + suffix


def to_terraform(suggestion: Suggestion, name: str = "policy", comment: str | None = None, *,
                 role: str | None = None, user: str | None = None, description: str | None = None) -> str:
    """Terraform: one ``data "aws_iam_policy_document"`` block per document, and for a role or user the
    ``aws_iam_policy`` holding it and its ``aws_iam_role_policy_attachment`` / ``aws_iam_user_policy_attachment``.

    The text is as ``terraform fmt`` writes it; every string is an HCL literal (:func:`miner.escape.hcl_string`).

    Args:
        suggestion: the suggestion.
        name: the principal's name (block labels are derived from it).
        comment: a line placed at the top as a ``#`` comment.
        role: the role name to attach the policies to.
        user: the user name to attach the policies to.
        description: the managed policies' description (at most 1,000 characters are kept).

    Returns:
        The HCL text.
    """
    base = _ident(name)
    out = [f"# {visible(comment)}"] if comment else []
    many = len(suggestion.policies) > 1
    for i, doc in enumerate(suggestion.policies, 1):
        label = f"{base}_{i}" if many else base
        out += [f'data "aws_iam_policy_document" "{label}" {{']
        for stmt in doc["Statement"]:
            out += _hcl_statement(stmt)
        out += ["}", ""]
        if not (role or user):
            continue
        attrs = [("name", _hcl_str(policy_name(role or user, i if many else None)))]
        if description:
            attrs.append(("description", _hcl_str(description[:1000])))
        attrs.append(("policy", f"data.aws_iam_policy_document.{label}.json"))
        kind, principal = ("role", role) if role else ("user", user)
        out += [f'resource "aws_iam_policy" "{label}" {{', *_hcl_body(attrs, "  "), "}", "",
                f'resource "aws_iam_{kind}_policy_attachment" "{label}" {{',
                *_hcl_body([(kind, _hcl_str(principal)), ("policy_arn", f"aws_iam_policy.{label}.arn")], "  "),
                "}", ""]
    return "\n".join(out)


def to_cloudformation(suggestion: Suggestion, name: str = "policy", *, roles: list[str] | None = None,
                      users: list[str] | None = None, description: str | None = None) -> str:
    """CloudFormation YAML: one ``AWS::IAM::ManagedPolicy`` per document.

    Args:
        suggestion: the suggestion.
        name: the principal's name (logical ids are derived from it).
        roles: role names to attach the policies to.
        users: user names to attach the policies to.
        description: the template and policy description.

    Returns:
        The YAML text.
    """
    base = _camel(name) or "Miner"
    base = base if base[0].isalpha() else f"P{base}"
    resources = {}
    for i, doc in enumerate(suggestion.policies, 1):
        logical = f"{base}LeastPrivilegePolicy" + ("" if len(suggestion.policies) == 1 else str(i))
        props: dict = {}
        if description:
            props["Description"] = description[:1000]
        props["PolicyDocument"] = doc
        if roles:
            props["Roles"] = list(roles)
        if users:
            props["Users"] = list(users)
        resources[logical] = {"Type": "AWS::IAM::ManagedPolicy", "Properties": props}
    template = {"AWSTemplateFormatVersion": "2010-09-09"}
    if description:
        template["Description"] = description[:1024]
    template["Resources"] = resources
    return yaml_text(template, sort_keys=False, default_flow_style=False, width=120)


# ----------------------------------------------------------------------------- summary


def _top(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _operations(frame: pd.DataFrame) -> list[str]:
    """``source:Name (calls)`` labels for an (event_source, event_name, calls) frame."""
    return [f"{str(s).split('.')[0]}:{n} ({int(c):,})" for s, n, c in
            zip(frame["event_source"], frame["event_name"], frame["calls"])]


def summary_lines(suggestion: Suggestion, *, principal_arn: str, window, events: int, authorised_events: int,
                  denied: pd.DataFrame | None = None, unmapped: pd.DataFrame | None = None,
                  no_permission: pd.DataFrame | None = None) -> list[str]:
    """The short human summary of a suggestion (for stderr; never part of the policy).

    Args:
        suggestion: the suggestion.
        principal_arn: the principal.
        window: the :class:`miner.models.Window` mined.
        events: all of the principal's events in the window.
        authorised_events: those that were authorised (the policy's input).
        denied: denied (action, resource) rows with ``calls`` (and ``outcomes``), if any.
        unmapped: operations that map to no IAM action (event_source, event_name, calls, and ``status``
            ``invalid`` with a ``note`` for requests that name resources AWS does not allow), if any.
        no_permission: operations that need no IAM permission (sts:GetCallerIdentity, console sign-in, service
            events), with the same columns, if any.

    Returns:
        Lines of text.
    """
    services = sorted({a.split(":", 1)[0] for a in suggestion.actions})
    sizes = suggestion.sizes
    lines = [
        f"principal:  {principal_arn}",
        f"window:     {window} ({window.days:.0f} days)",
        f"events:     {authorised_events:,} authorised used, of {events:,} in the window",
        f"actions:    {len(suggestion.actions)} in {len(services)} services -> {len(suggestion.policies)} "
        f"polic{'y' if len(sizes) == 1 else 'ies'} of {', '.join(f'{s:,}' for s in sizes)} chars "
        f"(limit {suggestion.size_limit:,})",
        f"catalogue:  {suggestion.catalog_version}",
    ]
    by_reason: dict[str, list[str]] = {}
    for f in suggestion.fallbacks:
        by_reason.setdefault(f.reason, []).append(f.action)
    for reason, acts in sorted(by_reason.items()):
        lines.append(f"on \"*\":     {_top(sorted(acts))}: {reason}")
    for g in suggestion.generalisations:
        lines.append(f"generalised: {g.pattern} <- {g.reason}")
    for w in suggestion.wildcards:
        lines.append(f"wildcard:   {w.pattern} = {', '.join(w.expands_to)} (every match was observed)")
    for u in suggestion.unproven:
        head = f"{u.action}: {u.calls:,} call{'s' * (u.calls != 1)} that did not succeed (not found, throttled, failed)"
        if u.kept:
            lines.append(f"failed:     {head}; {len(u.kept)} resource{'s' * (len(u.kept) != 1)} kept, granted "
                         f"exactly as literals, never generalised (the calls were authorised): {_top(list(u.kept), 3)}")
        if u.left_out:
            lines.append(f"failed:     {head}; {len(u.left_out)} resource{'s' * (len(u.left_out) != 1)} left out, "
                         f"not granted ({u.reason}): {_top(list(u.left_out), 3)}")
    for note in suggestion.notes:
        lines.append(f"note:       {note}")
    if unmapped is not None and len(unmapped):
        invalid = unmapped[unmapped["status"] == "invalid"] if "status" in unmapped.columns else unmapped.iloc[:0]
        gaps = unmapped.drop(invalid.index)
        if len(gaps):
            lines.append(f"unmapped:   {int(gaps['calls'].sum()):,} events of {len(gaps)} operations map to no IAM "
                         f"action (not in the policy): {_top(_operations(gaps))}")
        for row in invalid.itertuples(index=False):
            lines.append(f"invalid:    {int(row.calls):,} events of {str(row.event_source).split('.')[0]}:"
                         f"{row.event_name} (not in the policy): {row.note}")
    if no_permission is not None and len(no_permission):
        lines.append(f"no permission needed: {int(no_permission['calls'].sum()):,} events of {len(no_permission)} "
                     f"operations: {_top(_operations(no_permission))}")
    if denied is not None and len(denied):
        items = [f"{a} on {r} ({int(c):,})" for a, r, c in zip(denied["action"], denied["resource"], denied["calls"])]
        lines.append(f"denied:     {int(denied['calls'].sum()):,} calls were denied, never added to the policy: "
                     f"{_top(items)}")
    return lines
