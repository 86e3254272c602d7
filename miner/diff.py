"""Compares attached policies with a suggested one: policy evaluation, granted sets, classification, risk, diff."""

from __future__ import annotations

import csv
import difflib
import fnmatch
import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import cached_property, lru_cache
from importlib import resources
from typing import Iterable

import pandas as pd

from miner.patterns import VAR, covers, literal, text_of, tokens
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
    sid: str | None = None
    index: int = 0  # 1-based position in its document
    condition: tuple = ()  # ((operator, key, values), ...): see :func:`parse_condition`

    def __hash__(self) -> int:
        # the dataclass hash of every field, worked out once: statements key the dicts of a granted set, tens of
        # thousands of times for an admin role
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self)))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}  # a hash is only good in this process

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

    @property
    def name(self) -> str:
        """The statement's Sid, else its position (``#2``)."""
        return self.sid or f"#{self.index}"


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
    for i, s in enumerate(raw, 1):
        sid = s.get("Sid")
        out.append(Statement(
            effect=str(s.get("Effect", "Allow")).capitalize(),
            actions=tuple(_as_list(s.get("Action"))),
            not_actions=tuple(_as_list(s["NotAction"])) if "NotAction" in s else None,
            resources=tuple(_as_list(s.get("Resource"))) if "NotResource" not in s else (),
            not_resources=tuple(_as_list(s["NotResource"])) if "NotResource" in s else None,
            conditional=bool(s.get("Condition")),
            origin=origin,
            sid=sid if isinstance(sid, str) and sid else None,
            index=i,
            condition=parse_condition(s.get("Condition")),
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


# ----------------------------------------------------------------------------- conditions


class _Unknown:
    """A value the log does not show (the key is silent for some calls)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


#: A call value whose key the log does not record: the condition is read generously for it.
UNKNOWN = _Unknown()
#: A call value for a key the request context does not hold (the log shows it absent, e.g. no VPC endpoint).
ABSENT = None

#: Condition keys the diff evaluates from the store, and where each comes from (shown in reports).
EVALUATED_KEYS = {
    "aws:sourceip": "sourceIPAddress (absent for calls through a VPC endpoint; a service host name is silent)",
    "aws:sourcevpce": "vpcEndpointId (absent when the call did not come through a VPC endpoint)",
    "aws:requestedregion": "awsRegion",
    "aws:calledvia": "userIdentity.invokedBy (absent when the principal called directly)",
    "aws:calledviafirst": "userIdentity.invokedBy",
    "aws:calledvialast": "userIdentity.invokedBy",
    "aws:principalaccount": "the principal's account",
    "aws:principalarn": "the principal's ARN",
}
#: Keys the diff knows the log does not record (read generously, and said so).
SILENT_KEYS = {
    "aws:sourcevpc": "CloudTrail does not log the VPC id",
    "aws:multifactorauthpresent": "the store does not keep sessionContext.attributes.mfaAuthenticated",
    "aws:multifactorauthage": "the store does not keep sessionContext.attributes.mfaAuthenticated",
    "aws:securetransport": "the store does not keep tlsDetails",
}
_OPERATORS = {"stringequals": ("eq", False), "stringnotequals": ("eq", True),
               "stringequalsignorecase": ("ieq", False), "stringnotequalsignorecase": ("ieq", True),
               "stringlike": ("like", False), "stringnotlike": ("like", True),
               "arnequals": ("arn", False), "arnlike": ("arn", False), "arnnotequals": ("arn", True),
               "arnnotlike": ("arn", True), "ipaddress": ("ip", False), "notipaddress": ("ip", True),
               "bool": ("bool", False), "null": ("null", False)}


def parse_condition(cond) -> tuple:
    """A statement's Condition block as ``((operator, key, values), ...)``: keys lower-cased, values as strings.

    Args:
        cond: the ``Condition`` element (``{operator: {key: value or [values]}}``), or ``None``.

    Returns:
        The normalised pairs (empty for no condition); an unreadable block gives one pair with key ``""``, which
        :func:`condition_holds` reads generously.
    """
    if not cond:
        return ()
    if not isinstance(cond, dict):
        return (("?", "", ()),)
    out = []
    for op, kv in cond.items():
        if not isinstance(kv, dict):
            out.append((str(op), "", ()))
            continue
        for key, val in kv.items():
            vals = val if isinstance(val, list) else [val]
            out.append((str(op), str(key).lower(),
                        tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in vals)))
    return tuple(out)


def _parse_op(op: str) -> tuple[str | None, str | None, bool, bool]:
    """(set operator, base kind, negated, IfExists) of an operator name; base kind ``None`` when not supported."""
    low = op.lower()
    qualifier = None
    if ":" in low:
        qualifier, low = low.split(":", 1)
        if qualifier not in ("foranyvalue", "forallvalues"):
            return None, None, False, False
    if_exists = low.endswith("ifexists")
    if if_exists:
        low = low[: -len("ifexists")]
    kind, negated = _OPERATORS.get(low, (None, False))
    return qualifier, kind, negated, if_exists


def _like(pattern: str, value: str) -> bool | None:
    if any(t is VAR for t in tokens(pattern)):
        return None  # a policy variable: its value is not in the log
    return covers(pattern, literal(value))


def _arn_like(pattern: str, value: str) -> bool | None:
    """ArnLike/ArnEquals: each of the six colon-separated parts matched on its own (wildcards stay in their part)."""
    p, v = pattern.split(":", 5), value.split(":", 5)
    if len(p) != 6 or len(v) != 6:
        return pattern == value
    return _all(_like(a, b) for a, b in zip(p, v))


@lru_cache(maxsize=4096)
def _network(text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _match(kind: str, pattern: str, value: str) -> bool | None:
    """Does one policy value match one request value (positive form of the operator)? ``None``: cannot tell."""
    if kind in ("eq", "ieq"):
        if "${" in pattern:
            if any(t is VAR for t in tokens(pattern)):
                return None  # a policy variable: its value is not in the log
            pattern = text_of(pattern)
        return pattern == value if kind == "eq" else pattern.lower() == value.lower()
    if kind == "like":
        return _like(pattern, value)
    if kind == "arn":
        return _arn_like(pattern, value)
    if kind == "bool":
        return pattern.lower() == value.lower()
    if kind == "ip":
        net = _network(pattern)
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return None  # a service host name or "AWS Internal": the caller's address is not in the log
        return net is not None and ip.version == net.version and ip in net
    return None


def _fold(results, decisive: bool) -> bool | None:
    """Three-valued OR (``decisive`` True) or AND (``decisive`` False): ``None`` is unknown."""
    unknown = False
    for r in results:
        if r is decisive:
            return decisive
        unknown = unknown or r is None
    return None if unknown else not decisive


def _any(results) -> bool | None:
    return _fold(results, True)


def _all(results) -> bool | None:
    return _fold(results, False)


def _not(r: bool | None) -> bool | None:
    return None if r is None else not r


def condition_holds(op: str, key: str, values: tuple[str, ...], call_value) -> bool | None:
    """Does one condition (operator, key, policy values) hold for one call's value of the key?

    IAM's rules (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html):
    several policy values are ORed; a negated operator (``StringNotEquals``, ``NotIpAddress``, ``ArnNotLike``, ...)
    holds when no value matches; when the key is absent, a positive operator fails, a negated one holds, an
    ``...IfExists`` one holds, ``ForAllValues`` holds and ``ForAnyValue`` fails; ``Null`` tests the absence itself.
    A multivalued key (``aws:CalledVia``) is a tuple: ``ForAllValues`` needs every value to match, ``ForAnyValue``
    (and a plain operator) one. ``StringLike``/``ArnLike`` take ``*`` and ``?`` (and IAM's ``${*}`` escapes);
    ``ArnLike`` matches the six ARN parts one by one; ``IpAddress`` takes addresses and CIDRs, IPv4 and IPv6.

    Args:
        op: the operator as written, e.g. ``ForAnyValue:StringLike`` or ``IpAddressIfExists``.
        key: the condition key (lower case).
        values: the policy values.
        call_value: a string, a tuple (multivalued key), :data:`ABSENT` or :data:`UNKNOWN`.

    Returns:
        True or False; ``None`` when the log cannot tell (an :data:`UNKNOWN` value, a policy variable, an operator
        miner does not evaluate).
    """
    qualifier, kind, negated, if_exists = _parse_op(op)
    if kind is None or call_value is UNKNOWN:
        return None
    if kind == "null":
        want_absent = any(v.lower() == "true" for v in values)
        absent = call_value is ABSENT or call_value == ()
        return absent == want_absent
    if call_value is ABSENT or call_value == ():
        if if_exists or qualifier == "forallvalues":
            return True
        if qualifier == "foranyvalue":
            return False
        return negated
    items = call_value if isinstance(call_value, tuple) else (call_value,)

    def single(v: str) -> bool | None:
        r = _any(_match(kind, p, v) for p in values)
        return _not(r) if negated else r

    if qualifier == "forallvalues":
        return _all(single(v) for v in items)
    if qualifier == "foranyvalue":
        return _any(single(v) for v in items)
    if negated:  # a plain negated operator on a multivalued key: no value may match
        return _all(single(v) for v in items)
    return _any(single(v) for v in items)


@dataclass(frozen=True)
class ConditionCheck:
    """How one statement's Condition fared against the calls of one (action, resource).

    ``outcome`` is ``all`` (holds for every recorded call), ``none`` or ``some``, after reading generously what
    the log does not show (as holding for an Allow, as not holding for a Deny); ``generous`` names those keys
    with the reason, ``failing`` the (key, values) that made it fail for some calls.
    """

    statement: Statement
    outcome: str
    evaluated: tuple[str, ...] = ()
    generous: tuple[str, ...] = ()
    failing: tuple[tuple[str, tuple], ...] = ()


def _key_note(key: str) -> str:
    if key in SILENT_KEYS:
        return f"{key} ({SILENT_KEYS[key]})"
    if key in EVALUATED_KEYS:
        return f"{key} (not recorded for some calls)"
    return f"{key or '?'} (not evaluated by miner)"


def check_condition(s: Statement, context: dict) -> ConditionCheck:
    """Evaluate a statement's Condition against what the log records for a set of calls.

    Args:
        s: the statement (with a Condition).
        context: lower-case key -> frozenset of the distinct call values (see :func:`call_context`); a key not in
            it is silent.

    Returns:
        The :class:`ConditionCheck`; the pairs of the block are ANDed.
    """
    generous_as = s.effect != "Deny"  # an unknown reads as holding for an Allow, as not holding for a Deny
    outcomes, evaluated, generous, failing = [], [], [], []
    for op, key, values in s.condition:
        calls = context.get(key) if key in EVALUATED_KEYS else None
        supported = _parse_op(op)[1] is not None
        if calls is None or not supported:
            generous.append(_key_note(key) if supported else f"{key or '?'} ({op}: operator not evaluated)")
            outcomes.append({generous_as})
            continue
        results = {v: condition_holds(op, key, values, v) for v in calls}
        if None in results.values():
            generous.append(_key_note(key))
        seen = {generous_as if r is None else r for r in results.values()}
        evaluated.append(key)
        if False in seen:
            failing.append((key, tuple(sorted(("(absent)" if v is ABSENT else ",".join(v) if isinstance(v, tuple)
                                               else str(v)) for v, r in results.items() if r is False))))
        outcomes.append(seen)
    if any(o == {False} for o in outcomes):
        outcome = "none"
    elif all(o == {True} for o in outcomes):
        outcome = "all"
    else:
        outcome = "some"
    return ConditionCheck(s, outcome, tuple(dict.fromkeys(evaluated)), tuple(dict.fromkeys(generous)),
                          tuple(failing))


def _ip_value(ip) -> object:
    if not isinstance(ip, str) or not ip:
        return UNKNOWN
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN  # a service host name or "AWS Internal"
    return ip


def _values(v) -> list:
    """A list-valued usage cell (list, tuple, numpy array) as a list; ``None``/NaN as an empty list."""
    if v is None or v is pd.NA or isinstance(v, float):
        return []
    if isinstance(v, str):
        return [v]
    return [None if x is None or (isinstance(x, float) and x != x) else x for x in list(v)]


def call_context(row, *, principal_arn: str = "", principal_account: str | None = None) -> dict:
    """The condition-key values the log records for one usage row (one action on one resource).

    Args:
        row: a usage row (mapping or namedtuple) with ``regions`` and, when the store query provides them,
            ``source_ips`` (addresses of calls not made through a VPC endpoint), ``vpc_endpoints`` and ``invokers``
            (distinct values, ``None`` for calls without one).
        principal_arn: the principal (``aws:PrincipalArn``).
        principal_account: its account (``aws:PrincipalAccount``).

    Returns:
        Lower-case key -> frozenset of distinct call values (:data:`ABSENT`, :data:`UNKNOWN`, a string, or a
        tuple for ``aws:CalledVia``). Keys the row says nothing about are left out (silent).
    """
    get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
    ctx: dict[str, frozenset] = {}
    regions = get("regions")
    if isinstance(regions, str) and regions:
        ctx["aws:requestedregion"] = frozenset(regions.split(","))
    if principal_arn.startswith("arn:"):
        ctx["aws:principalarn"] = frozenset({principal_arn})
    if principal_account:
        ctx["aws:principalaccount"] = frozenset({principal_account})
    endpoints = _values(get("vpc_endpoints", None))
    if endpoints:  # the store query ran: every call shows its endpoint, or None for none
        ctx["aws:sourcevpce"] = frozenset(e if e else ABSENT for e in endpoints)
        ips = {_ip_value(ip) for ip in _values(get("source_ips", None))}
        if any(endpoints):
            ips.add(ABSENT)  # calls through a VPC endpoint carry no aws:SourceIp
        if ips:
            ctx["aws:sourceip"] = frozenset(ips)
    invokers = _values(get("invokers", None))
    if invokers:
        via = [i if isinstance(i, str) and i else None for i in invokers]
        ctx["aws:calledvia"] = frozenset((i,) if i else () for i in via)
        ctx["aws:calledviafirst"] = ctx["aws:calledvialast"] = frozenset(i or ABSENT for i in via)
    return ctx


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


@dataclass(frozen=True)
class Decision:
    """Whether policies allow one action on one resource for the calls the log recorded, and why.

    ``verdict`` is ``allowed`` (every recorded call), ``denied`` (none) or ``partly`` (some calls, or the log
    cannot tell which); ``checks`` lists each matching statement that has a Condition.
    """

    verdict: str
    checks: tuple[ConditionCheck, ...] = ()


def _decide(stmts: list[Statement], action: str, resource: str, context: dict) -> Decision:
    deny_some = allow_some = allow_all = False
    checks = []
    for s in stmts:
        if not (s.matches_action(action) and s.matches_resource(resource)):
            continue
        outcome = "all"
        if s.condition:
            check = check_condition(s, context)
            checks.append(check)
            outcome = check.outcome
        if s.effect == "Deny":
            if outcome == "all":
                return Decision("denied", tuple(checks))
            deny_some = deny_some or outcome == "some"
        else:
            allow_all = allow_all or outcome == "all"
            allow_some = allow_some or outcome == "some"
    if allow_all and not deny_some:
        verdict = "allowed"
    elif allow_all or allow_some:
        verdict = "partly"
    else:
        verdict = "denied"
    return Decision(verdict, tuple(checks))


def is_allowed(docs: list[dict], action: str, resource: str, boundary: list[dict] | None = None) -> bool:
    """Would these identity policies allow ``action`` on ``resource``? (IAM evaluation without context.)

    An explicit unconditional Deny wins; otherwise some Allow must match. Conditions are assumed to hold for
    Allow statements and not to hold for Deny statements (the most generous reading). With a permissions
    boundary the boundary must allow the call too. Resource-based policies, SCPs and session policies are not
    considered. :meth:`Evaluator.decide` evaluates conditions against what the log recorded.

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
    """:func:`is_allowed` over fixed documents, parsing them once (for many checks).

    ``docs`` are policy documents, or (label, document) pairs whose labels name the policy in
    :meth:`decide`'s condition checks.
    """

    def __init__(self, docs: list[dict] | list[tuple[str, dict]], boundary: list[dict] | None = None):
        pairs = [d if isinstance(d, tuple) else ("", d) for d in docs]
        self._stmts = [s for label, d in pairs for s in statements(d, label)]
        self._boundary = [s for d in boundary for s in statements(d, "boundary")] if boundary else None
        self._for_action: dict[str, tuple[list[Statement], list[Statement] | None]] = {}

    def _matching(self, action: str) -> tuple[list[Statement], list[Statement] | None]:
        """The statements (of the policies, of the boundary) whose Action or NotAction applies to ``action``, worked
        out once per action: a principal's usage names few actions on many resources."""
        got = self._for_action.get(action)
        if got is None:
            own = [s for s in self._stmts if s.matches_action(action)]
            bound = None if self._boundary is None else [s for s in self._boundary if s.matches_action(action)]
            got = self._for_action[action] = (own, bound)
        return got

    def __call__(self, action: str, resource: str) -> bool:
        """Would the documents allow ``action`` on ``resource``?

        Args:
            action: the action, e.g. ``s3:GetObject``.
            resource: a resource ARN or ``*``.

        Returns:
            True when allowed (see :func:`is_allowed`).
        """
        own, bound = self._matching(action)
        if not _allows(own, action, resource):
            return False
        return bound is None or _allows(bound, action, resource)

    @property
    def conditional(self) -> bool:
        """True when some statement (of the policies or the boundary) has a Condition."""
        return any(s.condition for s in self._stmts + (self._boundary or []))

    def decide(self, action: str, resource: str, context: dict) -> Decision:
        """Would the documents allow ``action`` on ``resource`` for the calls the log recorded?

        Conditions are evaluated against ``context`` (:func:`call_context`) for the keys it holds, and read
        generously (an Allow's hold, a Deny's do not) where the log is silent; the boundary must allow too.

        Args:
            action: the action.
            resource: a resource ARN or ``*``.
            context: lower-case condition key -> distinct call values.

        Returns:
            The :class:`Decision`.
        """
        mine, theirs = self._matching(action)
        own = _decide(mine, action, resource, context)
        if theirs is None or own.verdict == "denied":
            return own
        bound = _decide(theirs, action, resource, context)
        checks = own.checks + bound.checks
        if bound.verdict == "denied":
            return Decision("denied", checks)
        verdict = "allowed" if own.verdict == bound.verdict == "allowed" else "partly"
        return Decision(verdict, checks)


# ----------------------------------------------------------------------------- granted set


@dataclass(slots=True)
class Grant:
    """One granted action: the resource patterns it is allowed on and the policies that grant it."""

    action: str
    resources: set[str] = field(default_factory=set)  # "*" when NotResource or "*" applies
    sources: set[str] = field(default_factory=set)
    conditional: bool = True  # every granting statement has a Condition
    partially_denied: bool = False
    statements: list[Statement] = field(default_factory=list)  # the Allow statements that grant it

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
        excluded = set().union(*(catalog.expanded(p) for p in s.not_actions)) if s.not_actions else set()
        return set(_every_action(catalog) - excluded)
    if "*" in s.actions:
        return set(_every_action(catalog))
    return set().union(*(catalog.expanded(p) for p in s.actions)) if s.actions else set()


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
                    grants[a] = Grant(a, set(res), {label}, s.conditional, statements=[s])
                else:
                    g.resources |= res
                    g.sources.add(label)
                    g.conditional = g.conditional and s.conditional
                    g.statements.append(s)
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


@lru_cache(maxsize=1)
def _unobservable_services() -> frozenset[str]:
    """Services (lower-case) some unobservable rule names."""
    return frozenset(_unobservable_by_service())


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


@lru_cache(maxsize=1 << 17)
def _unobservable_reason(action: str, data_sources: frozenset[str]) -> str | None:
    """:func:`unobservable_reason`, remembered (a review asks it for every granted action of every principal)."""
    return unobservable_reason(action, data_sources)


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
    return _Classes(grants).of(used, data_sources).frame


_CLASS_COLUMNS = ["action", "service", "status", "reason", "all_resources", "conditional", "sources"]


class _Classes:
    """:func:`classify` for one granted set and many usages: what the grants alone decide (each action unused, or
    unobservable and why) is worked out once per set of data-event sources; :meth:`of` marks the used actions."""

    def __init__(self, grants: dict[str, Grant]):
        self._grants = grants
        self._actions = sorted(grants)
        self._at: dict[str, list[int]] = {}  # lower-cased action -> its positions
        for i, a in enumerate(self._actions):
            self._at.setdefault(a.lower(), []).append(i)
        self._unused: dict[frozenset, _Base] = {}

    @cached_property
    def _columns(self) -> dict[str, list]:
        """The classification's columns that the grants alone decide (the same for every set of data sources)."""
        labels: dict[frozenset, str] = {}  # a policy set's labels, joined once
        grants = [self._grants[a] for a in self._actions]
        return {"action": self._actions, "service": [a.split(":", 1)[0] for a in self._actions],
                "all_resources": ["*" in g.resources for g in grants], "conditional": [g.conditional for g in grants],
                "sources": [labels.get(k) or labels.setdefault(k, ",".join(sorted(k)))
                            for k in (frozenset(g.sources) for g in grants)]}

    def _base(self, sources: frozenset) -> "_Base":
        """The classification before any action is marked used (every action unused, or unobservable and why)."""
        acts = self._actions
        rules = _unobservable_services()
        whys = [_unobservable_reason(a, sources) if a.split(":", 1)[0].lower() in rules else None for a in acts]
        statuses = ["unobservable" if why else "unused" for why in whys]
        columns = self._columns
        if acts:  # column by column: the same frame as from rows, without a tuple per action
            frame = pd.DataFrame({**columns, "status": statuses, "reason": [why or "" for why in whys]},
                                 columns=_CLASS_COLUMNS)
        else:
            frame = pd.DataFrame([], columns=_CLASS_COLUMNS)
        return _Base(frame, dict(zip(acts, statuses)), Counter(zip(columns["service"], statuses)))

    def of(self, used: set[str], data_sources: set[str]) -> "_Marked":
        """The classification (as :func:`classify` returns it) with the used actions marked."""
        sources = frozenset(data_sources)
        base = self._unused.get(sources)
        if base is None:
            base = self._unused[sources] = self._base(sources)
        frame = base.frame.copy()
        status = dict(base.status)
        counts = Counter(base.counts)
        at = sorted(i for u in {u.lower() for u in used} for i in self._at.get(u, ()))
        marked = [self._actions[i] for i in at]
        if at:
            frame.iloc[at, _CLASS_COLUMNS.index("status")] = "used"
            frame.iloc[at, _CLASS_COLUMNS.index("reason")] = ""
            for a in marked:
                service = a.split(":", 1)[0]
                counts[(service, status[a])] -= 1
                counts[(service, "used")] += 1
                status[a] = "used"
        return _Marked(frame, status, +counts, base, frozenset(marked))


@dataclass
class _Base:
    """What :class:`_Classes` works out once per set of data-event sources."""

    frame: pd.DataFrame
    status: dict[str, str]  # action -> unused or unobservable
    counts: Counter  # (service, status) -> actions
    split: dict = field(default_factory=dict)  # id of an action list -> (the list, _by_status of it, its set)
    levels: Counter | None = None  # (service, access level) -> unused actions (see _Marked.unused_levels)


@dataclass
class _Marked:
    """A classification (:meth:`_Classes.of`): the frame, action -> status, (service, status) -> how many actions."""

    frame: pd.DataFrame
    status: dict[str, str]
    counts: Counter
    base: _Base
    used: frozenset[str]  # the actions marked used

    def unused_levels(self, catalog) -> Counter:
        """(service, access level) -> how many unused actions (the level ``None`` for an action the catalogue does
        not know): counted once before any action was marked used, then the few marked ones taken off."""
        base = self.base
        if base.levels is None:
            base.levels = catalog.level_counts([a for a, st in base.status.items() if st == "unused"])
        gone = [a for a in self.used if base.status.get(a) == "unused"]
        out = Counter(base.levels)
        if gone:
            out.subtract(catalog.level_counts(gone))
        return +out  # (base.levels holds positive counts only: "+" drops just what the marked ones emptied)

    def by_status(self, actions: list[str]) -> tuple[list[str], list[str], list[str]]:
        """:func:`_by_status` of ``actions`` (a list that lives as long as the granted set's), from its split before
        any action was marked used (worked out once) and the few marked ones."""
        got = self.base.split.get(id(actions))
        if got is None or got[0] is not actions:
            got = self.base.split[id(actions)] = (actions, _by_status(actions, self.base.status), set(actions))
        _, (unused, unobs, _), members = got
        hit = {a for a in self.used if a in members}
        if not hit:
            return list(unused), list(unobs), []
        return [a for a in unused if a not in hit], [a for a in unobs if a not in hit], [a for a in actions if a in hit]


_STATUS_ORDER = {"unused": 0, "used_broadly": 1, "unobservable": 2}
#: How many observed resources a finding lists per action (``used_resources`` counts them all).
USED_ON_SHOWN = 10


def _rule_label(rule: dict) -> str:
    return rule["pattern"] + (f" + {rule['requires']}" if rule["requires"] else "") + \
        (" on *" if rule["resource"] == "*" else "")


def _broader(s: Statement, resource: str) -> bool:
    """The statement grants ``resource`` through a pattern that stands for more than it (``*``, a wildcard)."""
    if s.not_resources is not None:
        return s.matches_resource(resource)
    return any(covers(p, resource) and not covers(resource, p) for p in s.resources)


def _shown(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _by_status(actions, status: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """``actions`` split by their status: (unused, unobservable, used), each in the given order."""
    out: dict[str, list[str]] = {"unused": [], "unobservable": [], "used": []}
    for a in actions:
        got = out.get(status.get(a))
        if got is not None:
            got.append(a)
    return out["unused"], out["unobservable"], out["used"]


def _finding(s: Statement, fired: dict[int, list[str]], rules: list[dict], by_status, observed: dict[str, set[str]],
             granted_by: list[str], ref: dict, acts: list[str] | None = None) -> dict | None:
    """The high-risk finding of one granting statement, or ``None`` when everything it grants was used in scope.
    ``by_status``: :func:`_by_status` over the granted actions' statuses; ``acts``: the actions the rules matched,
    sorted (worked out here when not given)."""
    if acts is None:
        acts = sorted({a for lst in fired.values() for a in lst})
    unused, unobs, used = by_status(acts)
    used_on: dict[str, list[str]] = {}
    for a in used:
        covered = sorted(r for r in observed.get(a.lower(), ()) if s.matches_resource(r))
        if covered and any(_broader(s, r) for r in covered):
            used_on[a] = covered
    st = "unused" if unused else "used_broadly" if used_on else "unobservable" if unobs else None
    if st is None:
        return None
    concern = {"unused": unused, "used_broadly": sorted(used_on), "unobservable": unobs}[st]
    wanted = set(concern)
    first = min(i for i, lst in fired.items() if not wanted.isdisjoint(lst))
    rule = rules[first]
    policy = ref.get("policy") or s.origin
    where = f"statement {s.name} of " + (policy if policy.startswith("arn:") else s.origin or policy)
    _, stmt_unobs, stmt_used = by_status(granted_by)
    stmt_unobs.sort()  # granted_by is in set order
    seen = sorted({r for lst in used_on.values() for r in lst})
    if st == "unused" and not stmt_used:
        remedy = f"remove {where}: none of its actions was used in the window" + \
            (f" (first check {_shown(stmt_unobs, 2)}: CloudTrail could not have logged it)" if stmt_unobs else "")
    elif st == "unused":
        named = {a for i, lst in fired.items() if rules[i]["match"] == "each" for a in lst}  # the pointed rules
        examples = [a for a in unused if a in named] + [a for a in unused if a not in named]  # unused is sorted
        remedy = f"narrow {where} to the {len(stmt_used)} action(s) it used (see the suggested policy); unused: " \
                 f"{_shown(examples)}"
    elif st == "used_broadly":
        remedy = f"{rule['remedy']} ({where}): used on {len(seen)} resource(s): {_shown(seen, 2)}"
    else:
        remedy = f"check whether {_shown(unobs)} is needed (CloudTrail could not have logged it); if not, " \
                 f"remove it from {where}"
    granted_on = ["NotResource: " + ", ".join(s.not_resources)] if s.not_resources is not None else list(s.resources)
    return {"rule": _rule_label(rule), "rules": [_rule_label(rules[i]) for i in sorted(fired)],
            "pattern": rule["pattern"], "category": rule["category"], "reason": rule["reason"], "status": st,
            "policy": policy, "policy_kind": ref.get("policy_kind"), "policy_label": s.origin, "sid": s.sid,
            "statement": s.index, "granted_on": granted_on, "conditional": s.conditional,
            "on_all_resources": s.all_resources, "actions": concern, "unused": unused, "unobservable": unobs,
            "used_on": {a: res[:USED_ON_SHOWN] for a, res in used_on.items()}, "used_resources": len(seen),
            "remedy": remedy}


def high_risk(grants: dict[str, Grant], classification: pd.DataFrame, catalog=None, *,
              observed: dict[str, set[str]] | None = None, policies: dict[str, dict] | None = None) -> list[dict]:
    """High-risk grants (``miner/data/high_risk.csv``): one finding per granting statement.

    A statement is flagged when a rule fires on an action it grants and that action was not used (``unused``),
    was used but the statement grants it on more than the observed resources (``*`` or a wildcard;
    ``used_broadly``), or could not have been seen (``unobservable``), in that order of precedence. Rules that
    overlap on one statement (``*``, ``iam:*``, ``iam:PassRole on *`` ...) make one finding, so the count is one a
    reviewer can act on: one per (principal, statement).

    Args:
        grants: the granted set.
        classification: the output of :func:`classify`.
        catalog: the IAM catalogue.
        observed: action -> the resources of its authorised calls (``*`` ignored: the resource is not known).
        policies: policy label -> ``{"policy": managed ARN or inline name, "policy_kind": ...}``
            (:attr:`miner.iam.AttachedPolicies.refs`); the label stands in when absent.

    Returns:
        Findings, unused first: rule (the first that fires), rules, category, reason, status, policy,
        policy_kind, policy_label, sid, statement (1-based), granted_on, conditional, on_all_resources, actions
        (those of the status), unused, unobservable, used_on (action -> the first :data:`USED_ON_SHOWN` resources
        it was used on through the statement, where it grants more), used_resources (how many in all), remedy.
    """
    fired, granted_by = _fired_rules(grants, _catalog(catalog))
    status = dict(zip(classification["action"].tolist(), classification["status"].tolist())) \
        if len(classification) else {}
    return _findings(fired, granted_by, status, observed, policies)


def _fired_rules(grants: dict[str, Grant], catalog) -> tuple[dict[Statement, dict[int, list[str]]],
                                                              dict[Statement, list[str]]]:
    """Which high-risk rules fire on which granting statement (rule index -> the actions it matched), and the
    actions each statement grants: all that :func:`high_risk` needs of the grants, whatever the usage."""
    by_service: dict[str, list[str]] = {}
    granted_by: dict[Statement, list[str]] = {}
    for a, g in grants.items():
        by_service.setdefault(_service_of(a), []).append(a)
        for s in g.statements:
            granted_by.setdefault(s, []).append(a)
    rules = high_risk_rules()
    fired: dict[Statement, dict[int, list[str]]] = {}
    for i, rule in enumerate(rules):
        pattern, need_all = rule["pattern"], rule["resource"] == "*"
        svc = _service_of(pattern)
        if pattern == "*":  # every action: no pattern to match
            matched = [a for a, g in grants.items() if not need_all or g.all_resources]
        else:
            pool = list(grants) if any(c in svc for c in "*?") else by_service.get(svc, [])
            matched = [a for a in pool if action_matches(pattern, a) and (not need_all or grants[a].all_resources)]
        if not matched:
            continue
        if rule["match"] == "all":
            universe = catalog.expanded(pattern)
            if not universe or not universe <= set(matched):
                continue
        if rule["requires"] and not any(action_matches(rule["requires"], a)
                                        for a in by_service.get(_service_of(rule["requires"]), [])):
            continue
        owners: dict[Statement, list[str]] = {}
        for a in matched:
            for s in grants[a].statements:
                if not need_all or s.all_resources:
                    owners.setdefault(s, []).append(a)
        if rule["match"] == "all":  # a full wildcard grant belongs to the statements that make it on their own
            whole = {s: lst for s, lst in owners.items() if universe <= set(lst)}
            owners = whole or owners
        for s, lst in owners.items():
            fired.setdefault(s, {})[i] = lst
    return fired, granted_by


def _findings(fired: dict[Statement, dict[int, list[str]]], granted_by: dict[Statement, list[str]],
              status: dict[str, str] | _Marked, observed: dict[str, set[str]] | None,
              policies: dict[str, dict] | None, matched: dict[Statement, list[str]] | None = None) -> list[dict]:
    """The findings of :func:`high_risk` from the rules that fired and each granted action's status (a dict, or the
    :class:`_Marked` classification); ``matched`` remembers each statement's sorted matched actions across calls on
    the same ``fired``."""
    by_status = status.by_status if isinstance(status, _Marked) else lambda acts: _by_status(acts, status)
    rules = high_risk_rules()
    observed = {a.lower(): {r for r in res if r != "*"} for a, res in (observed or {}).items()}
    refs = policies or {}
    matched = {} if matched is None else matched
    for s, by_rule in fired.items():
        if s not in matched:
            matched[s] = sorted({a for lst in by_rule.values() for a in lst})
    out = [f for s, by_rule in fired.items()
           if (f := _finding(s, by_rule, rules, by_status, observed, granted_by.get(s, []), refs.get(s.origin, {}),
                             matched[s]))]
    order = {_rule_label(r): i for i, r in enumerate(rules)}
    out.sort(key=lambda f: (_STATUS_ORDER[f["status"]], order[f["rule"]], f["policy_label"], f["statement"]))
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


#: Columns of :attr:`DiffReport.conditions`.
CONDITION_COLUMNS = ["action", "policy", "sid", "effect", "outcome", "evaluated", "generous", "failing"]
_OUTCOME_WORDS = {("Allow", "all"): "holds", ("Allow", "none"): "does not hold", ("Allow", "some"): "holds for some calls",
                  ("Deny", "all"): "applies", ("Deny", "none"): "does not apply", ("Deny", "some"): "applies to some calls"}


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
    conditions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CONDITION_COLUMNS))
    #: Evidence per granted action with IAM Access Advisor as a second witness (:mod:`miner.evidence`); ``None``
    #: when the store holds no Access Advisor report for the principal.
    evidence: pd.DataFrame | None = None
    witness: object = None  # the principal's miner.evidence.Witness
    org: dict | None = None  # the SCPs and RCPs: miner.organizations.OrgEvaluator.review's section
    #: :attr:`classification` as plain data: action -> status (in action order), and (service, status) -> how many
    #: granted actions (a review reads these for every principal; an admin role has tens of thousands of actions)
    statuses: dict[str, str] = field(default_factory=dict, repr=False)
    service_counts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    #: (service, access level) -> how many unused granted actions (level ``None``: not in the catalogue)
    unused_levels: dict[tuple[str, str | None], int] = field(default_factory=dict, repr=False)

    @property
    def reduction(self) -> float:
        """Share of granted actions the suggestion removes (0..1)."""
        if not self.granted_actions:
            return 0.0
        return max(0.0, 1 - self.suggested_actions / self.granted_actions)

    def count(self, status: str) -> int:
        """Number of granted actions with a classification status.

        Args:
            status: ``used``, ``unused``, ``unobservable`` or ``blocked`` (by an SCP or RCP).

        Returns:
            The count.
        """
        return int((self.classification["status"] == status).sum()) if len(self.classification) else 0

    def findings(self, status: str) -> list[dict]:
        """The high-risk findings with one status.

        Args:
            status: ``unused``, ``used_broadly`` or ``unobservable``.

        Returns:
            The findings (one per granting statement).
        """
        return [h for h in self.high_risk if h["status"] == status]

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
            "high_risk_unused": self.findings("unused"),
            "high_risk_used_broadly": self.findings("used_broadly"),
            "high_risk_unobservable": self.findings("unobservable"),
            "used_not_granted": ung.to_dict("records"),
            "conditions": self.conditions.to_dict("records"),
            "blocked": [r["action"] for r in by("blocked")],
            "organizations": self.org,
            "diff": self.diff,
            "notes": self.notes,
            **({"evidence": self._evidence_dict()} if self.witness is not None else {}),
        }

    def _evidence_dict(self) -> dict:
        from miner.evidence import records, summary

        return {**summary(self.evidence, self.witness), "actions": records(self.evidence)}


def _tuples(frame: pd.DataFrame):
    """``frame.itertuples(index=False)``, each column read at once (``tolist``) rather than value by value (which
    costs a Python step per value of an Arrow-backed column): the same named tuples, the same values."""
    from collections import namedtuple

    row = namedtuple("Pandas", [str(c) for c in frame.columns], rename=True)
    return map(row._make, zip(*(frame.iloc[:, i].tolist() for i in range(frame.shape[1]))))


def _observed(usage: pd.DataFrame) -> dict[str, set[str]]:
    """action -> the resources of its authorised calls."""
    out: dict[str, set[str]] = {}
    if len(usage):
        for a, r in zip(usage["action"].tolist(), usage["resource"].tolist()):
            if isinstance(a, str) and isinstance(r, str):
                out.setdefault(a, set()).add(r)
    return out


def _why_condition(decision: Decision) -> str:
    """Which Conditions kept recorded calls from being allowed, with the values the log shows."""
    parts = []
    for c in decision.checks:
        where = f"{c.statement.origin} statement {c.statement.name}".strip()
        if c.statement.effect == "Deny" and c.outcome != "none":
            parts.append(f"the Deny of {where} applies ({', '.join(c.evaluated) or 'its Condition'})")
        elif c.statement.effect != "Deny" and c.outcome != "all":
            parts.append(f"the Condition of {where} does not hold: " +
                         "; ".join(f"{k} = {_shown(list(v), 3)}" for k, v in c.failing))
    some = "for some calls: " if decision.verdict == "partly" else ""
    return some + ("; ".join(parts) or "a Condition does not hold") + \
        " (allowed another way, e.g. a resource policy, or the policy changed since)"


def _condition_rows(found: dict, action: str, decision: Decision) -> None:
    """Merge one row's condition checks into ``found`` ((action, policy, statement) -> aggregate)."""
    for c in decision.checks:
        s = c.statement
        agg = found.setdefault((action, s.origin, s.index), {"s": s, "outcomes": set(), "evaluated": {}, "generous": {},
                                                              "failing": {}})
        agg["outcomes"].add(c.outcome)
        agg["evaluated"].update(dict.fromkeys(c.evaluated))
        agg["generous"].update(dict.fromkeys(c.generous))
        for k, vals in c.failing:
            agg["failing"].setdefault(k, set()).update(vals)


def _conditions_frame(found: dict) -> pd.DataFrame:
    rows = []
    for (action, origin, _), agg in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        s, outs = agg["s"], agg["outcomes"]
        outcome = next(iter(outs)) if len(outs) == 1 else "some"
        rows.append((action, origin, s.name, s.effect, _OUTCOME_WORDS[(s.effect if s.effect == "Deny" else "Allow",
                                                                       outcome)],
                     list(agg["evaluated"]), list(agg["generous"]),
                     [f"{k} = {_shown(sorted(v), 3)}" for k, v in agg["failing"].items()]))
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


@dataclass
class _Attached:
    """What :func:`compare` derives from the attached documents alone."""

    grants: dict[str, Grant]
    identity: Evaluator  # the identity policies
    full: Evaluator  # with the boundary
    fired: dict[Statement, dict[int, list[str]]]  # see _fired_rules
    granted_by: dict[Statement, list[str]]
    classes: _Classes
    services: int  # how many services the grants span
    matched: dict = field(default_factory=dict)  # statement -> the actions its fired rules matched, sorted

    @cached_property
    def conditional(self) -> bool:
        """Some grant carries a Condition."""
        return any(g.conditional for g in self.grants.values())

    @cached_property
    def partially_denied(self) -> bool:
        """Some grant is partly denied."""
        return any(g.partially_denied for g in self.grants.values())


def _attached(current: list[tuple[str, dict]], boundary: list[dict] | None, catalog, cache: dict | None) -> _Attached:
    """The :class:`_Attached` of a set of documents, from ``cache`` when the same documents were seen before (the
    labels count: findings name the policy by them). Principals share it: nothing changes it but the classes'
    memory of what the grants alone decide."""
    key = json.dumps([list(current), boundary, catalog.version], sort_keys=True, default=str) \
        if cache is not None else None
    if key is not None and key in cache:
        return cache[key]
    grants = granted_set(current, boundary, catalog)
    found = _Attached(grants, Evaluator(list(current)), Evaluator(list(current), boundary),
                      *_fired_rules(grants, catalog), _Classes(grants), len({a.split(":", 1)[0] for a in grants}))
    if key is not None:
        cache[key] = found
    return found


def compare(current: list[tuple[str, dict]], suggested: list[dict], usage: pd.DataFrame, *,
            boundary: list[dict] | None = None, denied: pd.DataFrame | None = None, data_sources: set[str] = frozenset(),
            principal_arn: str = "", principal_account: str | None = None, missing: list[str] = (),
            source: str = "", policies: dict[str, dict] | None = None, catalog=None,
            cache: dict | None = None, org=None) -> DiffReport:
    """Compare the attached policies with the suggested ones and the observed usage.

    Conditions of the attached policies are evaluated against what the log records for each (action, resource)
    (:func:`call_context`: source IPs, VPC endpoints, regions, the calling service, the principal), and read
    generously where it is silent; :attr:`DiffReport.conditions` says which, per action.

    Args:
        current: (label, document) pairs of the identity policies attached now.
        suggested: the suggested policy documents.
        usage: authorised usage rows (action, resource, calls, optionally invoked_by and the context columns of
            :data:`miner.usage.USAGE_COLUMNS`).
        boundary: permissions boundary documents.
        denied: denied usage rows (action, resource, calls), reported as "used but not granted: denied".
        data_sources: eventSources with data events in the window.
        principal_arn: the principal (for the report).
        principal_account: its account (to spot cross-account resources).
        missing: policies whose documents could not be read.
        source: where the attached policies came from (snapshot file, live endpoint).
        policies: label -> ``{"policy": managed ARN or inline name, "policy_kind": ...}`` for the high-risk
            findings (:attr:`miner.iam.AttachedPolicies.refs`).
        catalog: the IAM catalogue.
        cache: a dict kept across calls (e.g. one per review): what the documents alone give (granted set, parsed
            statements, the high-risk rules that fire) is computed once per distinct set of documents and boundary.
        org: the SCPs and RCPs that apply (:meth:`miner.organizations.OrgSource.evaluator`): unused grants they
            block are ``blocked``, not unused (nor high-risk), and authorised calls they block are reported.

    Returns:
        The :class:`DiffReport`.
    """
    catalog = _catalog(catalog)
    attached = _attached(current, boundary, catalog, cache)
    grants, identity, full = attached.grants, attached.identity, attached.full
    used = set(usage["action"].tolist()) if len(usage) else set()
    marked = attached.classes.of(used, data_sources)
    cls, status, counts, levels = marked.frame, marked, marked.counts, None
    org_section = None
    if org is not None:  # before the findings: a grant an SCP blocks is no unused risk
        cls, blocked, org_section = org.review(grants, cls, marked.status, usage)
        if org_section["blocked"]:  # some statuses changed (in marked.status too): counted again from them
            status = blocked
            counts = Counter((a.split(":", 1)[0], st) for a, st in blocked.items())
            levels = catalog.level_counts([a for a, st in blocked.items() if st == "unused"])
    risky = _findings(attached.fired, attached.granted_by, status, _observed(usage), policies, attached.matched)
    with_conditions = full.conditional
    rows, found = [], {}
    cols = set(usage.columns)
    for r in _tuples(usage):
        inv = getattr(r, "invoked_by", None) if "invoked_by" in cols else None
        row = {"action": r.action, "resource": r.resource, "calls": int(getattr(r, "calls", 0) or 0),
               "outcome": "authorised"}
        star = r.resource == "*" and r.action in grants  # a resource the mapping could not name: granted if the action is
        if full(r.action, r.resource) or star:
            if with_conditions and not star:
                decision = full.decide(r.action, r.resource, call_context(r, principal_arn=principal_arn,
                                                                          principal_account=principal_account))
                _condition_rows(found, r.action, decision)
                if decision.verdict != "allowed":
                    rows.append({**row, "likely_path": _why_condition(decision)})
            continue
        rows.append({**row, "likely_path": likely_path(r.action, r.resource, principal_account=principal_account,
                                                       invoked_by=inv if isinstance(inv, str) and inv else None,
                                                       missing=list(missing),
                                                       boundary_blocks=identity(r.action, r.resource))})
    if denied is not None and len(denied):
        for r in _tuples(denied):
            if isinstance(r.action, str) and not full(r.action, r.resource):
                rows.append({"action": r.action, "resource": r.resource, "calls": int(getattr(r, "calls", 0) or 0),
                             "outcome": "denied", "likely_path": "denied: the calls failed (not granted)"})
    ung = pd.DataFrame(rows, columns=["action", "resource", "calls", "outcome", "likely_path"])
    ung = ung.sort_values(["outcome", "action", "resource"], kind="stable").reset_index(drop=True)
    conditions = _conditions_frame(found)
    notes = []
    if missing:
        notes.append("not read: " + "; ".join(missing))
    if attached.conditional:
        notes.append("some grants carry Conditions: counted as granted; evaluated against the calls where the log "
                     "records the keys (see conditions)")
    if attached.partially_denied:
        notes.append("some grants are partly denied by Deny statements on specific resources")
    suggested_n = len(suggested_actions(suggested, catalog))
    labelled = [(f"suggested {i}" if len(suggested) > 1 else "suggested", d) for i, d in enumerate(suggested, 1)]
    return DiffReport(principal_arn, len(grants), attached.services, suggested_n, cls, risky,
                      ung, unified_diff(current, labelled), notes, source, conditions, org=org_section,
                      statuses=marked.status, service_counts=counts,
                      unused_levels=marked.unused_levels(catalog) if levels is None else levels)


def _finding_lines(h: dict) -> list[str]:
    """Two lines per high-risk finding: what, where and why; then the remedy."""
    where = h["policy"] if str(h.get("policy", "")).startswith("arn:") else h.get("policy_label") or h.get("policy")
    rules = h.get("rules") or [h["rule"]]
    extra = f" (+{len(rules) - 1} overlapping rules)" if len(rules) > 1 else ""
    return [f"  ! {h['rule']}{extra} [{h['category']}] {where}, statement {h.get('sid') or '#' + str(h.get('statement'))}:"
            f" {h['reason']}",
            f"      remedy: {h['remedy']}"]


def _org_lines(org: dict | None, limit: int) -> list[str]:
    """The SCP and RCP sections of the text report: calls they deny (errors), grants they block, conditional ones."""
    if not org:
        return []
    out = []
    calls = org.get("blocked_calls") or []
    if calls:
        out += ["", f"ERROR: authorised calls an SCP or RCP denies ({len(calls)}): the calls should not exist "
                    "(a policy changed in the window, or the organization snapshot is not the one in force):"]
        for c in calls[:limit]:
            out.append(f"  {c['action']} on {c['resource']} ({c['calls']:,} calls): {c['reason']}")
        if len(calls) > limit:
            out.append(f"  ... ({len(calls) - limit} more)")
    for title, key in (("granted, but blocked by SCP or RCP (not unused risk; not counted as unused or high-risk)",
                        "blocked"),
                       ("granted, and an SCP or RCP Deny may block them (a Condition, or part of the resources: "
                        "not counted as blocked)", "conditional")):
        rows = org.get(key) or []
        if rows:
            out += ["", f"{title}:"]
            for b in rows[:limit]:
                acts, n = b.get("actions") or b.get("examples") or [], b["count"]
                out.append(f"  {b['kind']} {b['policy']} at {b['target']}: {n:,} action(s) "
                           f"({', '.join(acts[:5])}{', ...' if n > 5 else ''})")
    return out


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
               f"{report.count('unobservable'):,} (could not have been seen in the window)"
               + (f" / blocked by SCP or RCP {report.count('blocked'):,}" if report.org else ""))
    out += _org_lines(report.org, limit)
    for status, title in (("unused", "high-risk grants not used in the window"),
                          ("used_broadly", "high-risk grants used, but granted on more resources than the log shows"),
                          ("unobservable", "high-risk grants CloudTrail could not have seen used")):
        found = report.findings(status)
        if found:
            out += ["", f"{title} ({len(found)}, one per granting statement):"]
            for h in found:
                out += _finding_lines(h)
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
    cond = report.conditions
    if len(cond):
        out += ["", "conditions, evaluated against what the log records (read generously where it is silent):"]
        for r in cond.head(limit).itertuples(index=False):
            line = f"  {r.action}: {r.effect} {r.policy} statement {r.sid} {r.outcome}"
            if r.evaluated:
                line += f"; evaluated {', '.join(r.evaluated)}"
            if r.failing:
                line += f"; fails for {'; '.join(r.failing)}"
            if r.generous:
                line += f"; read generously: {', '.join(r.generous)}"
            out.append(line)
        if len(cond) > limit:
            out.append(f"  ... ({len(cond) - limit} more)")
    ung = report.used_not_granted
    if len(ung):
        out += ["", "used but not granted by the attached identity policies:"]
        for r in ung.head(limit).itertuples(index=False):
            out.append(f"  {r.action} on {r.resource} ({r.calls:,} calls): {r.likely_path}")
        if len(ung) > limit:
            out.append(f"  ... ({len(ung) - limit} more)")
    if report.witness is not None:
        from miner.evidence import text_lines

        out += text_lines(report.evidence, report.witness, limit=limit)
    for n in report.notes + list((report.org or {}).get("notes") or []):
        out.append(f"note: {n}")
    out += ["", *(report.diff or ["(no difference between the normalised documents)"])]
    return "\n".join(map(visible, out)) + "\n"
