"""Maps CloudTrail events to the IAM actions and resource ARNs that authorised them.

Public API (stable): :class:`MappedAction`, :class:`MappingResult`, :func:`map_event`, :func:`get_mapper`
(``get_mapper().map(...)``), plus :func:`map_frame` (vectorised, one row per event x action),
:func:`coverage`, :func:`load_rules` and :func:`rules_version`.

How an event is mapped (details in ``miner/data/mapping/*.csv``, one rule per row, each with a comment):

1. ``eventType`` decides first (``event_types.csv``): service events, sign-ins, insights are not API calls.
2. The event-source host gives candidate IAM prefixes: ``sources.csv`` exceptions, the host itself when it is a
   catalogue prefix, then botocore's models (``endpointPrefix``/``signingName``/``serviceId``).
3. The operation gives actions: a local AWS Service Reference copy when configured (it wins where it has an
   answer), then ``rules.csv`` (many-to-one, one-to-many, conditional and no-permission families), then the
   direct ``prefix:EventName`` catalogue action, then versioned names (``versioned.csv``) normalised only when
   the stripped name is a botocore operation and maps to a catalogue action.
4. Resources per action: ``resources[].ARN`` matched to the action's resource types by the catalogue's ARN
   templates, else ARNs given in the request, else templates filled from request parameters
   (``bindings.csv``), partial ARNs (``stack/name/*``) when only part is known, ``*`` with a reason otherwise.
5. Extra authorisations a request's content adds (``extras.csv``): tag on create (``ec2:CreateTags`` with an
   ``ec2:CreateAction`` condition, ``iam:TagUser``, ...), created resources the request cannot name (the volumes of
   ``ec2:RunInstances``); and ``iam:PassRole`` on every role a write request hands to a service (``passrole.csv``).
   A call on oneself (``iam:CreateAccessKey`` without a user name) gets the :data:`CALLER` resource, which
   ``miner.usage`` replaces by the caller's ARN.

Every emitted action exists in the pinned catalogue. Nothing is dropped: an event that maps to nothing has
status ``unmapped`` (or ``no_permission``/``service_event``/``not_api_call``) and a note saying why.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import itertools
import operator
import re
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote

from miner.catalog import ArnTemplate, Catalog, arn_templates, get_catalog
from miner.patterns import literal

# ----------------------------------------------------------------------------- public types

#: Event statuses: mapped (>= 1 action), no_permission (a call no IAM action authorises), service_event
#: (AwsServiceEvent: AWS did it), not_api_call (insight / VPC-endpoint records), unmapped (a gap: listed),
#: invalid (the request names a resource AWS does not allow, e.g. a bucket called ``*``: never used for an ARN).
STATUSES = ("mapped", "no_permission", "service_event", "not_api_call", "unmapped", "invalid")
#: How a resource was derived.
DERIVATIONS = ("record_arn", "template", "star")
#: The reason given when the action cannot be scoped to resources at all.
REASON_NO_RESOURCE_LEVEL = "action has no resource-level permissions"


@dataclass(frozen=True)
class MappedAction:
    """One IAM action an event needed, on one resource."""

    action: str  # canonical catalogue spelling, e.g. "s3:GetObject"
    resource: str  # an IAM resource pattern: an ARN whose logged parts are literals (miner.patterns.literal),
    #                possibly with wildcards for unknown parts; or "*"
    derivation: str  # "record_arn" | "template" | "star"
    reason: str | None = None  # why the resource is "*" or partial, or where it came from
    implicit: bool = False  # True for extra actions such as iam:PassRole
    resource_type: str | None = None  # the catalogue resource type the ARN was matched to
    condition_key: str | None = None  # a condition the grant may carry (extras.csv), e.g. "ec2:CreateAction" ...
    condition_value: str | None = None  # ... and its value, e.g. "RunInstances"


@dataclass(frozen=True)
class MappingResult:
    """What one event maps to."""

    status: str  # one of STATUSES
    actions: tuple[MappedAction, ...] = ()
    note: str | None = None
    via: str | None = None  # how the actions were found: direct | rule | versioned | service_reference


# ----------------------------------------------------------------------------- rules as data

DATA_DIR = Path(__file__).resolve().parent / "data" / "mapping"
RULE_FILES = ("sources.csv", "event_types.csv", "rules.csv", "versioned.csv", "passrole.csv", "bindings.csv",
              "names.csv", "extras.csv")
#: Resource strategies that rules.csv may name in its ``resource`` column (code, because they parse values).
STRATEGIES = ("copy_source", "s3_destination", "kms_reencrypt_source", "kms_reencrypt_destination", "partiql",
              "apigateway_rest", "caller")
#: Resource strategies that extras.csv may name (empty: derived as for any action, within ``resource_types``).
EXTRA_STRATEGIES = ("tag_specifications",)
#: Condition kinds that rules.csv and extras.csv may use in their ``when`` column (``has:key``, ``nonempty:key``,
#: ``eq:key=value``, ``partiql:VERB``; ``!`` negates, ``&`` joins).
CONDITIONS = ("has", "nonempty", "eq", "partiql", "copy_version")
#: The resource of a call on oneself (no user name: the calling IAM user), in ``arn:...:user/${miner:caller}``.
#: Logged text never forms ``${`` (see :func:`miner.patterns.literal`), so no record can forge it.
CALLER = "${miner:caller}"
#: Transforms that bindings.csv may name.
TRANSFORMS = ("", "arn_or_name", "lambda_function", "kms_key", "kms_alias", "secret_id", "sqs_queue",
              "iam_with_path", "strip_leading_slash", "log_group", "ecs_task_definition", "ec2_id",
              "bedrock_foundation_model", "bedrock_inference_profile")


@dataclass(frozen=True)
class Rule:
    """One row of rules.csv."""

    source: str
    event_name: str
    action: str
    resource: str
    when: str
    implicit: bool
    status: str
    comment: str
    line: int


@dataclass(frozen=True)
class Extra:
    """One row of extras.csv: an authorisation a request's content adds to its operation's own actions."""

    source: str
    event_name: str
    when: str
    action: str
    resource_types: tuple[str, ...]
    strategy: str
    condition_key: str
    condition_value: str  # may hold {event_name}: the operation's name
    accepts: str  # only operations whose botocore input has this member (a pattern then needs no list of names)
    comment: str
    line: int


@dataclass(frozen=True)
class Binding:
    """One row of bindings.csv: where a template variable's value comes from."""

    scope: str
    resource_type: str
    variable: str
    parameters: tuple[str, ...]
    transform: str
    comment: str


@dataclass
class Rules:
    """The mapping rules loaded from one directory of CSV files."""

    directory: str
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    event_types: dict[str, tuple[str, str]] = field(default_factory=dict)
    exact: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)
    patterns: dict[str, list[Rule]] = field(default_factory=dict)
    versioned: list[tuple[str, re.Pattern, str]] = field(default_factory=list)
    passrole: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> {name_lower: comment}
    bindings: dict[tuple[str, str, str], Binding] = field(default_factory=dict)
    names: dict[tuple[str, str, str], tuple[re.Pattern, str]] = field(default_factory=dict)  # valid request values
    extras: dict[tuple[str, str], list[Extra]] = field(default_factory=dict)  # (source, event name lower) -> rows
    extra_patterns: dict[str, list[Extra]] = field(default_factory=dict)  # source -> rows whose event name is a pattern
    rows: dict[str, list[dict]] = field(default_factory=dict)
    version: str = ""

    def all_rules(self) -> list[Rule]:
        """Every rules.csv row, in file order."""
        out = [r for rs in self.exact.values() for r in rs] + [r for rs in self.patterns.values() for r in rs]
        return sorted(out, key=lambda r: r.line)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)
                if any((v or "").strip() for v in row.values())]


@lru_cache(maxsize=4)
def load_rules(directory: str | None = None) -> Rules:
    """Load the rule files (cached per directory).

    Args:
        directory: a folder holding the files named in :data:`RULE_FILES`; default: the packaged rules.

    Returns:
        The parsed :class:`Rules`; ``version`` is a hash of the files' bytes.

    Raises:
        ValueError: when a row is malformed (unknown strategy/transform/status/condition, bad regex).
    """
    root = Path(directory) if directory else DATA_DIR
    rules = Rules(str(root))
    digest = hashlib.sha256()
    for name in RULE_FILES:
        path = root / name
        digest.update(name.encode() + b"\0" + path.read_bytes())
        rules.rows[name] = _read_csv(path)
    rules.version = "rules " + digest.hexdigest()[:12]
    for row in rules.rows["sources.csv"]:
        rules.sources[row["event_source"].lower()] = tuple(p.strip().lower() for p in row["iam_prefixes"].split(";") if p.strip())
    for row in rules.rows["event_types.csv"]:
        rules.event_types[row["event_type"]] = (row["status"], row["comment"])
    for i, row in enumerate(rules.rows["rules.csv"], start=2):
        rule = Rule(row["source"].lower(), row["event_name"], row["action"], row["resource"], row["when"],
                    row["implicit"].lower() in ("true", "1", "yes"), row["status"], row["comment"], i)
        if rule.resource and rule.resource not in STRATEGIES:
            raise ValueError(f"rules.csv line {i}: unknown resource strategy {rule.resource!r}")
        if rule.status and rule.status not in STATUSES:
            raise ValueError(f"rules.csv line {i}: unknown status {rule.status!r}")
        bad = [kind for _neg, kind, _arg in _conditions(rule.when) if kind not in CONDITIONS]
        if bad:
            raise ValueError(f"rules.csv line {i}: unknown condition {bad[0]!r} in {rule.when!r}")
        if any(ch in rule.event_name for ch in "*?["):
            rules.patterns.setdefault(rule.source, []).append(rule)
        else:
            rules.exact.setdefault((rule.source, rule.event_name.lower()), []).append(rule)
    for row in rules.rows["versioned.csv"]:
        try:
            rx = re.compile(row["pattern"])
        except re.error as e:
            raise ValueError(f"versioned.csv: bad pattern {row['pattern']!r}: {e}") from None
        if "op" not in rx.groupindex:
            raise ValueError(f"versioned.csv: pattern {row['pattern']!r} has no (?P<op>...) group")
        rules.versioned.append((row["source"].lower(), rx, row["comment"]))
    for row in rules.rows["passrole.csv"]:
        rules.passrole.setdefault(row["kind"], {})[row["name"].lower()] = row["comment"]
    for row in rules.rows["bindings.csv"]:
        if row["transform"] not in TRANSFORMS:
            raise ValueError(f"bindings.csv: unknown transform {row['transform']!r}")
        b = Binding(row["scope"].lower(), row["resource_type"].lower(), row["variable"],
                    tuple(p.strip() for p in row["parameters"].split("|") if p.strip()), row["transform"], row["comment"])
        rules.bindings[(b.scope, b.resource_type, b.variable)] = b
    for i, row in enumerate(rules.rows["names.csv"], start=2):
        try:
            rx = re.compile(row["pattern"], re.S)
        except re.error as e:
            raise ValueError(f"names.csv line {i}: bad pattern {row['pattern']!r}: {e}") from None
        rules.names[(row["scope"].lower(), row["resource_type"].lower(), row["variable"])] = (rx, row["comment"])
    for i, row in enumerate(rules.rows["extras.csv"], start=2):
        extra = _extra_row(row, i)
        if any(ch in extra.event_name for ch in "*?["):
            rules.extra_patterns.setdefault(extra.source, []).append(extra)
        else:
            rules.extras.setdefault((extra.source, extra.event_name.lower()), []).append(extra)
    return rules


def _extra_row(row: dict, i: int) -> Extra:
    """One extras.csv row, checked (the catalogue checks, that actions, types and keys exist, are tests)."""
    types = tuple(t.strip() for t in row["resource_types"].split("|") if t.strip())
    extra = Extra(row["source"].lower(), row["event_name"], row["when"], row["action"], types, row["resource"],
                  row["condition_key"], row["condition_value"], row["accepts"], row["comment"], i)
    where = f"extras.csv line {i}"
    if extra.strategy and extra.strategy not in EXTRA_STRATEGIES:
        raise ValueError(f"{where}: unknown resource strategy {extra.strategy!r}")
    if not extra.strategy and not types:
        raise ValueError(f"{where}: name the resource_types the extra action is authorised on")
    bad = [kind for _neg, kind, _arg in _conditions(extra.when) if kind not in CONDITIONS]
    if bad:
        raise ValueError(f"{where}: unknown condition {bad[0]!r} in {extra.when!r}")
    if bool(extra.condition_key) != bool(extra.condition_value) or any(c in extra.condition_value for c in ",="):
        raise ValueError(f"{where}: a condition needs a key and one value (without ',' or '=')")
    if not extra.comment:
        raise ValueError(f"{where}: every row says where it comes from")
    return extra


def rules_version(directory: str | None = None) -> str:
    """A version string for the mapping rules in use (a hash of the data files).

    Args:
        directory: the rules folder (default: the packaged rules).

    Returns:
        E.g. ``rules 1a2b3c4d5e6f``.
    """
    return load_rules(directory).version


# ----------------------------------------------------------------------------- request context

_MAX_NODES = 5000


def _loads(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if not text or text == "null":
            return None
        try:
            import orjson

            value = orjson.loads(text)
        except Exception:
            return None
        if isinstance(value, str):  # double-encoded JSON (seen in real data)
            return _loads(value)
    return value


def _arn_of(entry: Any) -> str | None:
    """A resources[] entry's ARN as a pattern: the logged ARN as a literal, or an ARNPrefix as a literal + ``*``."""
    if isinstance(entry, str):
        return literal(entry) if entry.startswith("arn:") else None
    if not isinstance(entry, dict):
        return None
    for key in ("ARN", "arn", "Arn"):
        if isinstance(entry.get(key), str) and entry[key].startswith("arn:"):
            return literal(entry[key])
    for key in ("ARNPrefix", "arnPrefix", "arnprefix"):
        if isinstance(entry.get(key), str) and entry[key].startswith("arn:"):
            return literal(entry[key]) + "*"
    return None


class EventContext:
    """One event's request parameters, record ARNs and location, with lazy lookups.

    Request values (:meth:`values`, :meth:`lookup`, :meth:`items`) are raw, as logged; ``record_arns``,
    :attr:`param_arns` and :meth:`location` are already patterns (logged text made literal), ready for an ARN.
    """

    def __init__(self, params: Any, resources: Any, account: str, region: str, partition: str):
        params = _loads(params)
        self.params: dict = params if isinstance(params, dict) else ({"_": params} if params is not None else {})
        res = _loads(resources)
        if isinstance(res, dict):
            res = [res]
        self.record_arns: list[str] = list(dict.fromkeys(a for a in (_arn_of(e) for e in (res or [])) if a))
        self.account = literal(account or "")
        self.region = literal(region or "")
        self.partition = literal(partition or "aws")
        self._index: dict[str, list] | None = None
        self._items: list[tuple[str, Any]] = []
        self._param_arns: list[str] | None = None
        self.used: list[str] = []  # parameter names a derivation read
        self.invalid: list[tuple[str, str, str]] = []  # (variable, value, rule) request values AWS does not allow

    @property
    def index(self) -> dict[str, list]:
        """Lower-case key -> every value found under that key at any depth (breadth first)."""
        if self._index is None:
            index: dict[str, list] = {}
            queue = deque([self.params])
            seen = 0
            while queue and seen < _MAX_NODES:
                node = queue.popleft()
                seen += 1
                if isinstance(node, dict):
                    for k, v in node.items():
                        if isinstance(v, dict) and set(v) <= {"tag", "content"} and "content" in v:
                            v = v["content"]  # EC2's {"tag": 1, "content": "vpc-..."} wrapper
                        index.setdefault(str(k).lower(), []).append(v)
                        self._items.append((str(k), v))
                        if isinstance(v, (dict, list)):
                            queue.append(v)
                elif isinstance(node, list):
                    queue.extend(x for x in node if isinstance(x, (dict, list)))
            self._index = index
        return self._index

    def has(self, key: str) -> bool:
        """True when the key occurs anywhere with a value that is not null (an empty string counts: S3 flags)."""
        return any(v is not None for v in self.index.get(key.lower(), ()))

    def values(self, key: str) -> list[str]:
        """Scalar values under a key (anywhere; ``a.b`` for a path from the root), lists flattened; only empty
        strings are skipped (a name of spaces is a name, and must not read as a missing value that becomes ``*``)."""
        if "." in key:
            nodes: list = [self.params]
            for part in key.split("."):
                nxt = []
                for n in nodes:
                    for x in (n if isinstance(n, list) else [n]):
                        if isinstance(x, dict):
                            for k, v in x.items():
                                if k.lower() == part.lower():
                                    nxt.append(v)
                nodes = nxt
            raw = nodes
        else:
            raw = self.index.get(key.lower(), [])
        out: list[str] = []
        for v in raw:
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, (str, int)) and not isinstance(x, bool) and str(x) != "":
                    out.append(str(x))
        return list(dict.fromkeys(out))

    def lookup(self, keys: Iterable[str], opaque: bool = False) -> tuple[str | None, list[str]]:
        """The first key (in order) that has values, and its values (``opaque``: the caller only copies them into
        resource strings; see :class:`_SlotContext`)."""
        for key in keys:
            vals = self.values(key)
            if vals:
                self.used.append(key)
                return key, vals
        return None, []

    @property
    def param_arns(self) -> list[str]:
        """Every ARN-looking string value in the request parameters, each as a literal pattern."""
        if self._param_arns is None:
            out = []
            for vals in self.index.values():
                for v in vals:
                    for x in (v if isinstance(v, list) else [v]):
                        if isinstance(x, str) and x.startswith("arn:") and len(out) < 200:
                            out.append(literal(x))
            self._param_arns = list(dict.fromkeys(out))
        return self._param_arns

    def location(self) -> dict[str, str]:
        """The template context variables of the event: Partition, Region and Account."""
        return {"Partition": self.partition, "Region": self.region, "Account": self.account}

    def items(self) -> list[tuple[str, Any]]:
        """Every (key as logged, value) pair at any depth, breadth first."""
        _ = self.index
        return self._items

    # Hooks at every decision that reads a request value or a record ARN beyond copying it (see _SlotContext):
    # here they only compute.
    slotted = False

    def decide(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``: a decision on values (a :class:`_SlotContext` decides on its real values and records it)."""
        return fn(*args)

    def commute(self, fn: Callable, arg: Any) -> Any:
        """``fn(arg)``: a computation whose result flows on (a :class:`_SlotContext` checks it commutes with filling
        its slots)."""
        return fn(arg)

    def distinct(self, items: list) -> None:
        """Nothing: a :class:`_SlotContext` records that ``items`` (deduplicated) stay distinct once filled."""

    def read(self, value: Any) -> None:
        """Nothing: a :class:`_SlotContext` gives up when a value is read outside the hooks above."""


# ----------------------------------------------------------------------------- value transforms

_ID_VALUE = re.compile(r"^[\w+=,.@/:-]+$")


@dataclass(frozen=True)
class Value:
    """A bound value: a variable's text, or a whole ARN; a pattern, with logged text made literal."""

    text: str
    is_arn: bool = False


# Transforms take a raw request value and return patterns: every logged piece goes through literal().

def _t_arn_or_name(v: str, ctx: EventContext) -> list[Value]:
    return [Value(literal(v), v.startswith("arn:"))]


def _t_lambda_function(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        arn = literal(v)
    else:
        parts = v.split(":")
        if len(parts) >= 3 and parts[1] == "function":  # 123456789012:function:name[:qualifier]
            arn = f"arn:{ctx.partition}:lambda:{ctx.region}:{literal(parts[0])}:function:{literal(':'.join(parts[2:]))}"
        else:
            arn = f"arn:{ctx.partition}:lambda:{ctx.region}:{ctx.account}:function:{literal(v)}"
    _, quals = ctx.lookup(["qualifier"])
    if quals and arn.count(":") == 6:
        arn = f"{arn}:{literal(quals[0])}"
    return [Value(arn, True)]


_KEY_ID = re.compile(r"^(mrk-)?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$|^mrk-[0-9a-f]{32}$", re.I)


def _t_kms_key(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)] if ":key/" in v else []
    if v.startswith("alias/"):
        return []  # an alias does not name the key; the record's resources[] usually does
    return [Value(v)] if _KEY_ID.match(v) or _ID_VALUE.match(v) else []


def _t_kms_alias(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)] if ":alias/" in v else []
    return [Value(literal(v[len("alias/"):] if v.startswith("alias/") else v))]


def _t_secret_id(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    return [Value(f"{literal(v)}-??????")]  # secret ARNs end in -<6 random characters>


_QUEUE_URL = re.compile(r"^https?://(?:sqs\.)?([a-z0-9-]+)?\.?(?:queue\.)?amazonaws\.com(?:\.cn)?/(\d+|[^/]+)/([^/?#]+)", re.I)


def _t_sqs_queue(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    m = _QUEUE_URL.match(v)
    if m:
        region = literal(m.group(1)) if m.group(1) else ctx.region
        if region in ("sqs", "queue"):
            region = ctx.region
        return [Value(f"arn:{ctx.partition}:sqs:{region}:{literal(m.group(2))}:{literal(m.group(3))}", True)]
    if v.startswith("http"):
        return []
    return [Value(literal(v))]


def _t_iam_with_path(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    _, paths = ctx.lookup(["path"])
    if paths:
        path = paths[0].strip("/")
        return [Value(literal(f"{path}/{v}" if path else v))]
    if "/" in v:
        return [Value(literal(v))]
    return [Value(literal(v)), Value(f"*/{literal(v)}")]  # the path is unknown: the name at the root or under any path


def _t_strip_leading_slash(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    return [Value(literal(v.lstrip("/")))]


def _t_log_group(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        m = re.match(r"^(arn:[^:]+:logs:[^:]*:[^:]*:log-group:[^:]+)", v)
        return [Value(literal(m.group(1)), True)] if m else []
    return [Value(literal(v))]


def _t_ecs_task_definition(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    family = literal(v.split(":")[0])
    rev = literal(v.split(":")[1]) if ":" in v else "*"
    return [Value(f"arn:{ctx.partition}:ecs:{ctx.region}:{ctx.account}:task-definition/{family}:{rev}", True)]


_EC2_ID = re.compile(r"^([a-z]+(?:-[a-z]+)*)-[0-9A-Za-z]+$")


def _t_ec2_id(v: str, ctx: EventContext) -> list[Value]:
    """EC2 ids keep their type in a prefix (vpc-, subnet-, eni-, fl-, nat-, tgw-): checked by the caller's variable."""
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    return [Value(v)] if _EC2_ID.match(v) else []


#: EC2 template variable -> id prefix a value must have (a flow log's ResourceId may be a VPC, subnet or ENI).
_EC2_PREFIXES = {"VpcId": "vpc-", "SubnetId": "subnet-", "NetworkInterfaceId": "eni-", "VpcFlowLogId": "fl-",
                 "NatGatewayId": "nat-", "TransitGatewayId": "tgw-", "TransitGatewayAttachmentId": "tgw-attach-",
                 "InstanceId": "i-", "SecurityGroupId": "sg-", "VolumeId": "vol-", "SnapshotId": "snap-",
                 "ImageId": "ami-", "InternetGatewayId": "igw-", "RouteTableId": "rtb-"}
_REGION_GROUPS = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")


def _t_bedrock_foundation_model(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    return [] if v.startswith(_REGION_GROUPS) else [Value(literal(v))]


def _t_bedrock_inference_profile(v: str, ctx: EventContext) -> list[Value]:
    if v.startswith("arn:"):
        return [Value(literal(v), True)]
    return [Value(literal(v))] if v.startswith(_REGION_GROUPS) else []


_TRANSFORM_FUNCS: dict[str, Callable[[str, EventContext], list[Value]]] = {
    "": _t_arn_or_name, "arn_or_name": _t_arn_or_name, "lambda_function": _t_lambda_function,
    "kms_key": _t_kms_key, "kms_alias": _t_kms_alias, "secret_id": _t_secret_id, "sqs_queue": _t_sqs_queue,
    "iam_with_path": _t_iam_with_path, "strip_leading_slash": _t_strip_leading_slash, "log_group": _t_log_group,
    "ecs_task_definition": _t_ecs_task_definition, "ec2_id": _t_ec2_id,
    "bedrock_foundation_model": _t_bedrock_foundation_model, "bedrock_inference_profile": _t_bedrock_inference_profile,
}


#: Transforms that only copy a value into a resource string (``literal(v)``, ``literal(v) + "-??????"``), given a
#: value that is not an ARN: the only ones a value of a :class:`_SlotContext` slot may pass through.
_OPAQUE_TRANSFORMS = frozenset({"", "arn_or_name", "secret_id", "log_group"})


# ----------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class Step:
    """One action a plan emits, with how to find its resources and when it applies."""

    action: str
    strategy: str = ""
    when: str = ""
    implicit: bool = False
    extra: tuple = ()
    types: tuple[str, ...] = ()  # only these resource types of the action (extras.csv)
    condition: tuple[str, ...] = ()  # (condition key, value) the grant carries (extras.csv)
    added: bool = False  # from extras.csv: applies on top of the operation's own actions


@dataclass(frozen=True)
class Plan:
    """The mapping of one (event source, event name, event type), computed once and cached."""

    status: str
    steps: tuple[Step, ...] = ()
    note: str | None = None
    via: str | None = None
    prefix: str = ""


_PARTIQL_VERB = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|EXISTS)\b", re.I)
_PARTIQL_TABLE = re.compile(
    r"""(?:\bFROM|\bINTO|^\s*UPDATE)\s+("(?:[^"]|"")+"|[A-Za-z0-9_.\-]+)(?:\s*\.\s*("(?:[^"]|"")+"|[A-Za-z0-9_.\-]+))?""",
    re.I,
)


def _partiql_verb(stmt: str) -> str | None:
    """The action verb of a PartiQL statement (``EXISTS`` reads, so it is ``SELECT``), or ``None``."""
    m = _PARTIQL_VERB.match(stmt)
    if not m:
        return None
    verb = m.group(1).upper()
    return "SELECT" if verb == "EXISTS" else verb


def _partiql_verbs(ctx: EventContext) -> set[str]:
    return {v for v in (_partiql_verb(s) for s in ctx.values("statement")) if v}  # (module-level map is map_event)


def _conditions(cond: str) -> list[tuple[bool, str, str]]:
    """The parts of a rules.csv ``when`` value as (negated, kind, argument): ``!has:versionId`` -> (True, has, versionId)."""
    out = []
    for part in (p.strip() for p in cond.split("&") if p.strip()):
        kind, _, arg = part.lstrip("!").partition(":")
        out.append((part.startswith("!"), kind, arg))
    return out


@lru_cache(maxsize=4096)
def _parsed_conditions(cond: str) -> tuple[tuple[bool, str, str], ...]:
    """:func:`_conditions`, parsed once per distinct ``when`` value."""
    return tuple(_conditions(cond))


def _when(cond: str, ctx: EventContext) -> bool:
    if not cond:
        return True
    for neg, kind, arg in _parsed_conditions(cond):
        if kind == "has":
            ok = ctx.has(arg)
        elif kind == "nonempty":  # present with content: tags: [] tags nothing
            ok = any(v not in (None, "", [], {}) for v in ctx.index.get(arg.lower(), ()))
        elif kind == "eq":
            key, _, value = arg.partition("=")
            ok = value in ctx.values(key)
        elif kind == "partiql":
            ok = arg.upper() in _partiql_verbs(ctx)
        elif kind == "copy_version":  # x-amz-copy-source names a specific version: bucket/key?versionId=...
            _, vals = ctx.lookup(["x-amz-copy-source", "copySource", "CopySource"])
            ok = any("versionid=" in str(v).lower() for v in vals)
        else:
            raise ValueError(f"unknown condition {kind!r} in {cond!r}")
        if ok == neg:
            return False
    return True


class Mapper:
    """Maps events to actions and resources; plans are cached per (source, name, type), results per input."""

    def __init__(self, catalog: Catalog | None = None, rules: Rules | None = None, service_reference=None,
                 models=None):
        """Create a mapper.

        Args:
            catalog: the IAM catalogue (default: the pinned one).
            rules: mapping rules (default: the packaged CSV files).
            service_reference: a :class:`miner.servicereference.ServiceReference` whose answers win, or ``None``.
            models: a :class:`miner.servicereference.BotocoreModels` (default: the process-wide one).
        """
        self.catalog = catalog or get_catalog()
        self.rules = rules or load_rules()
        self.service_reference = service_reference
        self._models = models
        self._plans: dict[tuple, Plan] = {}
        self._results: dict[tuple, MappingResult] = {}
        self._static: dict[tuple, MappingResult] = {}
        self._prefix_cache: dict[str, tuple[str, ...]] = {}
        self._best_cache: dict[tuple[str, str], frozenset] = {}
        self._slot_heads: dict[tuple, tuple | bool] = {}
        self._slot_texts: dict[tuple, list[tuple[re.Pattern, tuple, tuple[dict, Any], frozenset]]] = {}

    # -- versions ---------------------------------------------------------------------------
    @property
    def models(self):
        """botocore's service models (loaded on first use)."""
        if self._models is None:
            from miner.servicereference import get_botocore_models

            self._models = get_botocore_models()
        return self._models

    @property
    def version(self) -> str:
        """Catalogue + rules (+ service reference) versions, for reports."""
        parts = [self.catalog.version, self.rules.version]
        if self.service_reference is not None:
            parts.append(f"service reference {self.service_reference.version}")
        return "; ".join(parts)

    # -- prefixes ---------------------------------------------------------------------------
    def cheap_prefixes(self, key: str) -> tuple[str, ...]:
        """IAM prefixes for an event-source key without loading botocore (sources.csv, then the key itself)."""
        out = list(self.rules.sources.get(key, ()))
        if key in self.catalog.prefixes:
            out.append(key)
        return tuple(p for p in dict.fromkeys(out) if p in self.catalog.prefixes)

    def prefixes(self, key: str) -> tuple[str, ...]:
        """Every candidate IAM prefix for an event-source key, best first (botocore models included)."""
        if key not in self._prefix_cache:
            out = list(self.cheap_prefixes(key))
            for model in self.models.models_for_host(key):
                out.extend(p for p in model.prefix_candidates() if p in self.catalog.prefixes)
            self._prefix_cache[key] = tuple(dict.fromkeys(out))
        return self._prefix_cache[key]

    # -- plans ------------------------------------------------------------------------------
    def plan(self, event_source: str, event_name: str, event_type: str | None = None) -> Plan:
        """The cached plan of an event kind (see the module docstring for the order of the steps).

        Args:
            event_source: ``eventSource`` host.
            event_name: ``eventName``.
            event_type: ``eventType`` when known.

        Returns:
            The :class:`Plan`: a status, and for ``mapped`` the steps (actions) to apply to each event.
        """
        k = (event_source, event_name, event_type)
        p = self._plans.get(k)
        if p is None:
            p = self._plans[k] = self._make_plan(event_source, event_name, event_type)
        return p

    def _make_plan(self, event_source: str, event_name: str, event_type: str | None) -> Plan:
        from miner.servicereference import host_key

        if event_type:
            status, comment = self.rules.event_types.get(event_type, ("", ""))
            if status:
                return Plan(status, note=f"{event_type}: {comment}", via="event_type")
        key = host_key(event_source)
        name = (event_name or "").strip()
        if not key or not name:
            return Plan("unmapped", note="the record has no event source or event name")
        cheap = self.cheap_prefixes(key)
        found = self._resolve(key, name, cheap)
        if found is None:
            more = tuple(p for p in self.prefixes(key) if p not in cheap)
            found = self._resolve(key, name, more) if more else None
            cheap = cheap + more
        if found is None:
            found = self._resolve_versioned(key, name, cheap)
        if found is not None:
            return found
        tried = ", ".join(f"{p}:{name}" for p in cheap) or f"no IAM prefix known for {key}"
        return Plan("unmapped", note=f"no catalogue action or rule for {event_source} {name} (tried {tried})",
                    prefix=cheap[0] if cheap else "")

    def _resolve(self, key: str, name: str, prefixes: tuple[str, ...]) -> Plan | None:
        found = self._resolve_actions(key, name, prefixes)
        if found is not None and found.status == "mapped":
            found = self._with_extras(found, key, name, prefixes)
        return found

    def _with_extras(self, plan: Plan, key: str, name: str, prefixes: tuple[str, ...]) -> Plan:
        """The plan plus a step per extras.csv row of the operation (``{event_name}`` in a value becomes ``name``)."""
        rows: dict[int, Extra] = {}
        for src in (key, *prefixes):
            for r in self.rules.extras.get((src, name.lower()), ()):
                rows[r.line] = r
            for r in self.rules.extra_patterns.get(src, ()):
                if fnmatch.fnmatchcase(name, r.event_name):
                    rows[r.line] = r
        if not rows:
            return plan
        primary = {s.action for s in plan.steps if not s.implicit}
        steps = list(plan.steps)
        for r in (rows[line] for line in sorted(rows)):
            if r.accepts and not self._accepts(key, name, r.accepts):
                continue  # the operation cannot carry it (EC2 Describe* take no TagSpecifications): plans stay static
            action = self.catalog.canonical(r.action)
            if action:  # tests guarantee every extras action exists
                cond = (r.condition_key, r.condition_value.replace("{event_name}", name)) if r.condition_key else ()
                steps.append(Step(action, r.strategy, r.when, action not in primary, types=r.resource_types,
                                  condition=cond, added=True))
        return Plan(plan.status, tuple(steps), plan.note, plan.via, plan.prefix)

    def _accepts(self, key: str, operation: str, member: str) -> bool:
        """Does botocore's model of the operation take ``member`` in its input?"""
        found = self.models.operation(key, operation)
        return found is not None and member in found[1].input_members

    def _resolve_actions(self, key: str, name: str, prefixes: tuple[str, ...]) -> Plan | None:
        # 1. a local AWS Service Reference copy wins where it has an answer
        if self.service_reference is not None:
            for p in prefixes:
                acts = self.service_reference.authorized_actions(p, name)
                if not acts:
                    continue
                known = [c for c in (self.catalog.canonical(a) for a in acts) if c]
                if not known:
                    continue
                builtin = {s.action: s for s in (self._rule_steps(key, name, prefixes)[0] or ())}
                steps = tuple(Step(a, builtin[a].strategy if a in builtin else "", "",
                                   a.split(":")[0] != p) for a in dict.fromkeys(known))
                dropped = [a for a in acts if not self.catalog.canonical(a)]
                note = f"service reference: {', '.join(acts)}" + (f" (not in the catalogue: {', '.join(dropped)})" if dropped else "")
                return Plan("mapped", steps, note, "service_reference", p)
        # 2. rules.csv
        steps, status, note, p = self._rule_steps(key, name, prefixes)
        if status:
            return Plan(status, note=note, via="rule", prefix=p)
        if steps:
            return Plan("mapped", steps, None, "rule", p)
        # 3. the catalogue action of the same name
        for p in prefixes:
            canon = self.catalog.canonical(f"{p}:{name}")
            if canon:
                return Plan("mapped", (Step(canon),), None, "direct", p)
        return None

    def _rule_steps(self, key: str, name: str, prefixes: tuple[str, ...]):
        for src in (key, *prefixes):
            rows = self.rules.exact.get((src, name.lower()))
            if not rows:
                rows = [r for r in self.rules.patterns.get(src, ()) if fnmatch.fnmatchcase(name, r.event_name)]
            if not rows:
                continue
            status_rows = [r for r in rows if r.status]
            if status_rows:
                return None, status_rows[0].status, status_rows[0].comment, src
            steps = []
            for r in rows:
                if "{http_method}" in r.action:
                    cands = self._apigateway_candidates(key, name)
                    if not cands:
                        continue
                    action = self.catalog.canonical(r.action.replace("{http_method}", cands[0][1]))
                    if action:
                        steps.append(Step(action, r.resource, r.when, r.implicit, tuple(cands)))
                    continue
                action = self.catalog.canonical(r.action)
                if action:  # tests guarantee every rule action exists
                    steps.append(Step(action, r.resource, r.when, r.implicit))
            if steps:
                return tuple(steps), "", None, src
        return None, "", None, ""

    def _apigateway_candidates(self, key: str, name: str) -> list[tuple]:
        out = []
        for model in self.models.models_for_host(key):
            op = model.operations.get(name)
            if op and op.http_method:
                method = {"HEAD": "GET", "OPTIONS": "GET"}.get(op.http_method.upper(), op.http_method.upper())
                out.append((model.name, method, op.request_uri, op.uri_members))
        return out

    def _resolve_versioned(self, key: str, name: str, prefixes: tuple[str, ...]) -> Plan | None:
        for src, rx, _comment in self.rules.versioned:
            if src != "*" and src != key and src not in prefixes:
                continue
            m = rx.fullmatch(name)
            if not m or not m.group("op") or m.group("op") == name:
                continue
            op = m.group("op")
            if self.models.operation(key, op) is None:
                continue  # not a real operation: never invent names
            found = self._resolve(key, op, prefixes or self.prefixes(key))
            if found is not None and found.status == "mapped":
                return Plan("mapped", found.steps, f"versioned name {name} -> {op}", "versioned", found.prefix)
        return None

    # -- mapping many events ----------------------------------------------------------------
    def map_many(self, inputs: Iterable[tuple]) -> list[MappingResult]:
        """Map distinct events, each as :meth:`map` would, mapping one event per shape structure.

        Events whose mapping can differ only in request values that flow into resource strings (an S3 bucket and
        key, a table name) share a structure: one of them is mapped with a slot character in place of each such
        value, and every event of the structure gets that result with its own values filled in. Every decision
        the mapping takes on a slotted value (a name rule, an ARN template match, a dedup, a parent ARN) is
        recorded, re-checked on each event's own values, and an event whose checks differ is mapped on its own;
        see :class:`_SlotContext`.

        Args:
            inputs: tuples of :meth:`map`'s positional arguments (event_source, event_name, request_parameters,
                resources, account, region, partition, event_type).

        Returns:
            One :class:`MappingResult` per input, in order; equal to ``[self.map(*i) for i in inputs]``.
        """
        inputs = list(inputs)
        out: list[MappingResult | None] = [None] * len(inputs)
        groups: dict[tuple, list[tuple[int, tuple]]] = {}
        skeletons: dict[tuple, tuple[dict, Any]] = {}
        for i, args in enumerate(inputs):
            found = self._structure_by_text(*args)
            by_text = found is not None
            if not by_text:
                found = self._structure(*args)
            if found is None:
                out[i] = self.map(*args)
                continue
            key, skeleton, slots = found
            members = groups.setdefault(key, [])
            if members and not by_text:  # a structure seen twice: later events of it are recognised by their text
                self._learn_text(args, key, skeleton, slots)
            members.append((i, slots))
            skeletons.setdefault(key, skeleton)
        for key, members in groups.items():
            if len(members) == 1:
                out[members[0][0]] = self.map(*inputs[members[0][0]])
                continue
            shared = self._map_structure(key, skeletons[key], members[0][1])
            for i, slots in members:
                out[i] = (shared(slots) if shared else None) or self.map(*inputs[i])
        return out  # type: ignore[return-value]

    def _structure(self, event_source, event_name, request_parameters=None, resources=None, account="", region="",
                   partition="", event_type=None) -> tuple[tuple, tuple[dict, Any], tuple] | None:
        """(structure key, (slotted request parameters, slotted resources), slot values) of an event, or ``None``
        when it is mapped on its own."""
        if not isinstance(request_parameters, str) or not (resources is None or isinstance(resources, str)) or \
                _may_hold_slot(request_parameters) or (resources is not None and _may_hold_slot(resources)):
            return None  # no request value to slot, or text that may hold a slot character
        head = (event_source, event_name, event_type, account, region, partition)
        try:
            found = self._slot_heads.get(head)
        except TypeError:  # pragma: no cover - unhashable exotic input
            return None
        if found is None:
            found = self._slot_heads[head] = self._slot_head(*head)
        if not found:
            return None
        params = _loads(request_parameters)
        if not isinstance(params, dict):
            return None
        slots: list[str] = []
        skeleton = _slot_params(params, self._slot_fixed, slots)
        if not slots or len(slots) > _SLOT_LIMIT:
            return None
        res = _slot_arns(_loads(resources), slots)
        import orjson

        try:
            key = (*found, orjson.dumps(skeleton), orjson.dumps(res))
        except TypeError:  # pragma: no cover - orjson refuses what it cannot write
            return None
        return key, (skeleton, res), tuple(slots)

    def _structure_by_text(self, event_source, event_name, request_parameters=None, resources=None, account="",
                           region="", partition="", event_type=None) -> tuple[tuple, tuple[dict, Any], tuple] | None:
        """:meth:`_structure` of an event whose texts match a structure already seen (:func:`_text_pattern`), else
        ``None``."""
        try:
            patterns = self._slot_texts.get((event_source, event_name, event_type, account, region, partition))
        except TypeError:  # pragma: no cover - unhashable exotic input
            return None
        if not patterns or not isinstance(request_parameters, str) or \
                not (resources is None or isinstance(resources, str)) or _may_hold_slot(request_parameters) or \
                (resources is not None and _may_hold_slot(resources)):
            return None
        text = request_parameters + "\x00" + (resources if resources is not None else "\x01")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return None  # a lone surrogate: the JSON reader refuses the text, so the event is mapped as it reads
        for rx, key, skeleton, fixed in patterns:
            m = rx.fullmatch(text)
            if m is not None:
                values = m.groups()
                if len(set(values)) == len(values) and all(_slottable(v) and v not in fixed for v in values):
                    return key, skeleton, values
                return None
        return None

    def _learn_text(self, args: tuple, key: tuple, skeleton: tuple[dict, Any], slots: tuple) -> None:
        """Remember the text pattern of a structure from one of its events (one per structure, 16 per event kind)."""
        params, resources = args[2], args[3]
        try:
            patterns = self._slot_texts.setdefault((args[0], args[1], args[7], *args[4:7]), [])
        except TypeError:  # pragma: no cover - unhashable exotic input
            return
        if len(patterns) >= 16 or any(known == key for _rx, known, _s, _f in patterns):
            return
        rx = _text_pattern(params, resources, skeleton, slots)
        if rx is not None:
            fixed = {v for v in _leaves(skeleton[0]) if not _has_slot(v)}
            patterns.append((rx, key, skeleton, frozenset(fixed)))

    @cached_property
    def _slot_fixed(self) -> tuple[frozenset, tuple[str, ...]]:
        """The request keys whose values the rules read beyond copying, never slotted (:func:`_slot_fixed_keys`;
        worked out once, the rules do not change)."""
        return _slot_fixed_keys(self.rules)

    def _slot_head(self, event_source, event_name, event_type, account, region, partition) -> tuple | bool:
        """(event_source, event_name, event_type, account, region, partition) as :meth:`map` reads them when events
        of this kind may share structures, else False."""
        if any(_has_slot(x) for x in (event_source, event_name, event_type, account, region, partition)
               if isinstance(x, str)):
            return False  # a slot character outside the values: filling it in would change it
        plan = self.plan(event_source, event_name, event_type)
        if plan.status != "mapped" or any(s.strategy for s in plan.steps):
            return False  # results that do not read values are cached by map(); strategies parse values
        if not partition:
            from miner.models import partition_of

            partition = partition_of(region or "")
        return event_source, event_name, event_type, "" if account is None else str(account), region or "", partition

    def _map_structure(self, key: tuple, skeleton: tuple[dict, Any],
                       slots: tuple) -> Callable[[tuple], MappingResult | None] | None:
        """Map a structure once (``slots``: one event's slot values); returns a function that fills in another
        event's values (``None`` where its checks differ), or ``None`` when the structure cannot be shared."""
        source, name, etype, account, region, partition, _params, _resources = key
        ctx = _SlotContext(skeleton[0], skeleton[1], account, region, partition, slots)
        result, _static = self._apply(self.plan(source, name, etype), ctx)
        if ctx.unsafe or result.status == "invalid":
            return None
        guards = ctx.guards
        if _SLOT_CHARS.search(result.note or "") or any(
                _SLOT_CHARS.search(x) for a in result.actions
                for x in (a.action, a.resource_type, a.condition_key, a.condition_value) if x):
            return None  # only resources and reasons are filled in

        fillers = [(i, _filler(a.resource), _filler(a.reason)) for i, a in enumerate(result.actions)]
        fillers = [(i, r, w) for i, r, w in fillers if r or w]

        def fill(values: tuple) -> MappingResult | None:
            for guard in guards:
                if not guard(values):
                    return None
            if not fillers:
                return result
            actions = list(result.actions)
            for i, resource, reason in fillers:
                a = actions[i]
                actions[i] = MappedAction(a.action, resource(values) if resource else a.resource, a.derivation,
                                          reason(values) if reason else a.reason, a.implicit, a.resource_type,
                                          a.condition_key, a.condition_value)
            return MappingResult(result.status, tuple(actions), result.note, result.via)

        return fill

    # -- mapping one event ------------------------------------------------------------------
    def map(self, event_source: str, event_name: str, request_parameters=None, resources=None,
            account: str = "", region: str = "", partition: str = "", event_type: str | None = None) -> MappingResult:
        """Map one event.

        Args:
            event_source: ``eventSource`` host, e.g. ``s3.amazonaws.com``.
            event_name: ``eventName`` as logged.
            request_parameters: ``requestParameters`` as a dict, JSON text or ``None``.
            resources: ``resources`` as a list, JSON text or ``None``.
            account: the recipient account id (string).
            region: ``awsRegion``.
            partition: ``aws``, ``aws-us-gov`` or ``aws-cn``; empty: inferred from the region.
            event_type: ``eventType`` when known (``AwsApiCall`` is assumed otherwise).

        Returns:
            The :class:`MappingResult` (cached per distinct input).
        """
        plan = self.plan(event_source, event_name, event_type)
        if plan.status != "mapped":
            return MappingResult(plan.status, (), plan.note, plan.via)
        account = "" if account is None else str(account)
        region = region or ""
        if not partition:  # not logged: the region says (us-gov-*, cn-*), as at ingest
            from miner.models import partition_of

            partition = partition_of(region)
        static_key = (event_source, event_name, event_type, account, region, partition)
        if static_key in self._static:
            return self._static[static_key]
        try:
            key = (event_source, event_name, event_type, _hashable(request_parameters), _hashable(resources),
                   account, region, partition)
        except TypeError:  # pragma: no cover - unhashable exotic input
            key = None
        if key is not None and key in self._results:
            return self._results[key]
        ctx = EventContext(request_parameters, resources, account, region, partition)
        result, static = self._apply(plan, ctx)
        if static:
            self._static[static_key] = result
        elif key is not None:
            if len(self._results) > 500_000:
                self._results.clear()
            self._results[key] = result
        return result

    def _apply(self, plan: Plan, ctx: EventContext) -> tuple[MappingResult, bool]:
        active = [s for s in plan.steps if _when(s.when, ctx)]
        if all(s.added for s in active):
            conds = ", ".join(sorted({s.when for s in plan.steps if not s.added}))
            return MappingResult("unmapped", (), f"no rule applies: the record lacks what the rules need ({conds})",
                                 plan.via), False
        out: list[MappedAction] = []
        static = all(not s.when and not s.strategy for s in plan.steps)
        for step in active:
            got, step_static = self._extra_resources(step, ctx) if step.added else self._resources(step, ctx)
            static = static and step_static
            out.extend(got)
        extra = self._passrole(active, ctx)
        if extra is None:
            static = False
        else:
            out.extend(extra)
            if extra:
                static = False
        if ctx.invalid:
            return MappingResult("invalid", (), _invalid_note(ctx.invalid), plan.via), False
        seen, uniq = set(), []
        for a in out:
            k = (a.action, a.resource, a.condition_key, a.condition_value)
            if k not in seen:
                seen.add(k)
                uniq.append(a)
        if ctx.slotted:
            ctx.distinct([(a.action, a.resource, a.condition_key, a.condition_value) for a in uniq])
        return MappingResult("mapped", tuple(uniq), plan.note, plan.via), static

    # -- resources --------------------------------------------------------------------------
    def _extra_resources(self, step: Step, ctx: EventContext) -> tuple[list[MappedAction], bool]:
        """The pairs of an extras.csv step: its strategy's, else derived as usual within its resource types; a type
        the request cannot name (it is being created) is any resource of that type in the account/region."""
        if step.strategy:
            got, static = _STRATEGY_FUNCS[step.strategy](self, step, ctx), False
        else:
            got, static = self._resources(step, ctx)
            if any(a.resource == "*" for a in got):
                info = self.catalog.info(step.action)
                got = [MappedAction(step.action, tmpls[0].fill(ctx.location()), "template",
                                    f"partial: the request creates the {rt.name}, whose name is not in the request: "
                                    f"any {rt.name} in the account/region", step.implicit, rt.name)
                       for rt in (info.resource_types if info else ()) if rt.name in step.types
                       for tmpls in [arn_templates(rt.arn_template)] if tmpls] or got
        if step.condition:
            got = [replace(a, condition_key=step.condition[0], condition_value=step.condition[1]) for a in got]
        return got, static

    def _resources(self, step: Step, ctx: EventContext) -> tuple[list[MappedAction], bool]:
        """The (action, resource) pairs of one step, and whether they are the same for every event."""
        if step.strategy:
            got = _STRATEGY_FUNCS[step.strategy](self, step, ctx)
            if got:
                return got, False
        info = self.catalog.info(step.action)
        if info is not None and step.types:
            info = replace(info, resource_types=tuple(rt for rt in info.resource_types if rt.name in step.types))
        if info is None or not info.resource_types:
            return [MappedAction(step.action, "*", "star", REASON_NO_RESOURCE_LEVEL, step.implicit)], True
        prefix = step.action.split(":")[0]
        complete: list[tuple[str, str, str, str, ArnTemplate]] = []  # (type, arn, derivation, reason, template)
        partial: dict[str, list[tuple[str, str]]] = {}
        needs: list[str] = []
        typed = [(rt, arn_templates(rt.arn_template)) for rt in info.resource_types]
        typed = [(rt, t) for rt, t in typed if t]
        pending = []
        for rt, tmpls in typed:  # 1. ARNs the record or the request names
            got = [(a, "record_arn", "ARN from the record's resources[]") for a in ctx.record_arns
                   if ctx.decide(self._fits, a, tmpls, prefix)]
            if not got:
                got = [(a, "template", "ARN given in the request parameters") for a in ctx.param_arns
                       if self._fits(a, tmpls, prefix)]
            if got:
                complete.extend((rt.name, arn, der, why, _template_of(arn, tmpls, ctx)) for arn, der, why in got)
            else:
                pending.append((rt, tmpls))
        for rt, tmpls in pending:  # 2. templates filled from request parameters
            # once something is complete, an optional type only counts when it can be filled completely
            quick = bool(complete) and not rt.required
            full, part, missing = self._fill(prefix, rt.name, tmpls, ctx, rt.required, quick)
            if part:
                partial[rt.name] = part
            if missing:
                needs.append(f"{rt.name} ({', '.join(missing)})")
            for arn, der, why in full:
                complete.append((rt.name, arn, der, why, _template_of(arn, tmpls, ctx)))
        if complete:
            # a call on a sub-resource (table/t/index/i) is authorised on it, not on its parent (table/t)
            if len(complete) > 1:
                keep = ctx.decide(_not_parents, tuple(c[1] for c in complete))
                complete = [c for c, k in zip(complete, keep) if k]
            out = [MappedAction(step.action, arn, der, why, step.implicit, rtype) for rtype, arn, der, why, _t in complete]
            have = {c[0] for c in complete}
            have_tmpls = [c[4].template for c in complete]
            have_vars = {v for c in complete for v in c[4].identifying_variables}
            for rt in info.resource_types:
                if not rt.required or rt.name in have:
                    continue
                tmpls = arn_templates(rt.arn_template)
                if not tmpls or any(h.startswith(t.template + "/") or t.template.startswith(h + "/")
                                    for h in have_tmpls for t in tmpls):
                    continue  # satisfied by a sub- or parent resource already emitted
                if all(set(t.identifying_variables) <= have_vars for t in tmpls):
                    continue  # an alternative form identified by the same value (bedrock model kinds), not a second resource
                if rt.name in partial:
                    out.extend(MappedAction(step.action, arn, "template", why, step.implicit, rt.name)
                               for arn, why in partial[rt.name])
                    continue
                out.append(MappedAction(step.action, tmpls[0].fill(ctx.location()), "template",
                                        f"partial: required {rt.name} not in the request, any {rt.name} "
                                        f"in the account/region", step.implicit, rt.name))
            return out, False
        if partial:
            return [MappedAction(step.action, arn, "template", why, step.implicit, rtype)
                    for rtype, items in partial.items() for arn, why in items], False
        types = ", ".join(rt.name for rt in info.resource_types)
        why = f"could not derive a resource ARN ({types}) from the record" + (f": needs {'; '.join(needs[:3])}" if needs else "")
        return [MappedAction(step.action, "*", "star", why, step.implicit)], False

    def _ranked(self, service: str, prefix: str) -> tuple[ArnTemplate, ...]:
        k = ("\0ranked", service, prefix)
        got = self._best_cache.get(k)
        if got is None:
            tm = {t.template: t for _n, t in itertools.chain(self.catalog.service_templates(service),
                                                             self.catalog.service_templates(prefix))}
            got = self._best_cache[k] = tuple(sorted(tm.values(), key=lambda t: -t.specificity))
        return got

    def _best(self, arn: str, prefix: str) -> frozenset:
        """Templates (strings) that match an ARN with the highest specificity among its service's and ``prefix``'s."""
        k = (arn, prefix)
        got = self._best_cache.get(k)
        if got is None:
            service = arn.split(":", 3)[2] if arn.count(":") >= 3 else ""
            best, spec = set(), -1
            for t in self._ranked(service, prefix):
                if t.specificity < spec:
                    break
                if t.pattern.fullmatch(arn) is not None:
                    best.add(t.template)
                    spec = t.specificity
            got = frozenset(best)
            if len(self._best_cache) > 200_000:
                self._best_cache.clear()
            self._best_cache[k] = got
        return got

    def _fits(self, arn: str, tmpls: tuple[ArnTemplate, ...], prefix: str) -> bool:
        if not any(t.pattern.fullmatch(arn) for t in tmpls):
            return False
        best = self._best(arn, prefix)
        return any(t.template in best for t in tmpls)

    def _binding(self, prefix: str, rtype: str, var: str) -> Binding | None:
        b = self.rules.bindings
        for k in ((prefix, rtype.lower(), var), (prefix, "*", var), ("*", rtype.lower(), var), ("*", "*", var)):
            if k in b:
                return b[k]
        return None

    def name_rule(self, prefix: str, rtype: str, var: str) -> tuple[re.Pattern, str] | None:
        """The names.csv rule for a template variable's request values (most specific scope first), if any."""
        n = self.rules.names
        for k in ((prefix, rtype.lower(), var), (prefix, "*", var), ("*", rtype.lower(), var), ("*", "*", var)):
            if k in n:
                return n[k]
        return None

    def valid(self, prefix: str, rtype: str, var: str, value: str, ctx: EventContext) -> bool:
        """Is a raw request value a name AWS allows for the variable? A value that is not is recorded on ``ctx``.

        Whole ARNs are not checked here: they are used as literals, so they can name nothing but themselves.
        """
        rule = self.name_rule(prefix, rtype, var)
        if rule is None or value.startswith("arn:") or ctx.decide(_fullmatches, rule[0], value):
            return True
        ctx.invalid.append((var, value, rule[1]))
        return False

    def _bind(self, prefix: str, rtype: str, var: str, ctx: EventContext) -> tuple[str | None, list[Value]]:
        b = self._binding(prefix, rtype, var)
        if b is not None:
            keys, transform = b.parameters, b.transform
        else:  # generic: the variable's own name (singular, plural, *List), then names made from the type
            keys, transform = _generic_keys(var, rtype), ""
        key, raw = ctx.lookup(keys, opaque=transform in _OPAQUE_TRANSFORMS)
        out: list[Value] = []
        for v in raw[:50]:
            if self.valid(prefix, rtype, var, v, ctx):
                out.extend(_TRANSFORM_FUNCS[transform](v, ctx))
        if prefix == "ec2" and var in _EC2_PREFIXES:
            out = [v for v in out if v.is_arn or ctx.decide(str.startswith, v.text, _EC2_PREFIXES[var])]
        return key, out

    def _fill(self, prefix: str, rtype: str, tmpls: tuple[ArnTemplate, ...], ctx: EventContext, required: bool = False,
              quick: bool = False):
        """Fill a type's templates: (complete ARNs, partial ARNs, missing variables); ``quick`` stops at a gap."""
        full: list[tuple[str, str, str]] = []
        partial: list[tuple[str, str]] = []
        missing_any: list[str] = []
        for t in tmpls:
            base = ctx.location()
            anchored = False
            for arn in itertools.chain(ctx.record_arns, ctx.param_arns):
                m = ctx.commute(t.match_prefix, arn)
                if m:
                    base.update(m)
                    anchored = True
                    break
            ids = t.identifying_variables
            options: dict[str, list[str]] = {}
            keys_used = []
            for var in ids:
                if var in base:
                    continue
                key, vals = self._bind(prefix, rtype, var, ctx)
                arns = [v.text for v in vals if v.is_arn and t.match(v.text) is not None]
                if arns and len(ids) == 1:
                    full.extend((a, "template", f"ARN from request parameter {key}") for a in arns)
                    break
                texts = [v.text for v in vals if not v.is_arn]
                if not texts:
                    for v in vals:  # an ARN of this type given where a name was expected: take its values
                        m = t.match(v.text) if v.is_arn else None
                        if m and m.get(var):
                            texts.append(m[var])
                if texts:
                    options[var] = texts
                    keys_used.append(key)
                elif quick:
                    break
            else:
                missing = [v for v in ids if v not in base and v not in options]
                known = [v for v in ids if v in base or v in options]
                if not ids:  # e.g. glue's catalog, arn:...:glue:<region>:<account>:catalog: one per account
                    if required:
                        full.append((t.fill(base), "template", "the account's only resource of this type"))
                    continue
                combos = [dict(zip(options, c)) for c in itertools.islice(itertools.product(*options.values()), 100)]
                src = "record ARN and " if anchored else ""
                if not missing:
                    for c in combos:
                        full.append((t.fill({**base, **c}), "template",
                                     f"built from {src}request parameters ({', '.join(k for k in keys_used if k)})"
                                     if keys_used else "built from the record's resources[]"))
                elif known:
                    for c in combos:
                        partial.append((t.fill({**base, **c}), f"partial: {', '.join(missing)} not in the request"))
                    missing_any.extend(missing)
                else:
                    missing_any.extend(missing)
        full, partial = list(dict.fromkeys(full)), list(dict.fromkeys(partial))
        if ctx.slotted:
            ctx.distinct(full)
            ctx.distinct(partial)
        return full, partial, list(dict.fromkeys(missing_any))

    # -- implicit iam:PassRole --------------------------------------------------------------
    def _passrole(self, steps: list[Step], ctx: EventContext) -> list[MappedAction] | None:
        """PassRole extras; ``None`` means the request may pass a role (so results depend on parameters)."""
        pr = self.rules.passrole
        primary = [s.action for s in steps if not s.implicit]
        excluded = pr.get("exclude_action", {})
        if not primary or any(a.lower() in excluded for a in primary):
            return []
        levels = set()
        for a in primary:
            info = self.catalog.info(a)
            levels.update(info.access_levels if info else ())
        if levels and levels <= {"Read", "List"}:
            return []
        exact = pr.get("param", {})
        name_ok = pr.get("param_or_name", {})
        suffixes = tuple(pr.get("param_suffix", {}))
        profiles = pr.get("instance_profile", {})
        passrole = self.catalog.canonical("iam:PassRole") or "iam:PassRole"
        out: list[MappedAction] = []
        for orig, value in ctx.items():
            key = orig.lower()
            if key in profiles:
                ctx.read(value)
                label = value
                if isinstance(value, dict):
                    label = value.get("arn") or value.get("Arn") or value.get("name") or value.get("Name")
                if label:
                    out.append(MappedAction(passrole, f"arn:{ctx.partition}:iam::{ctx.account}:role/*", "template",
                                            f"instance profile {label} passes its role; the record does not name "
                                            f"the role, so any role in the account", True, "role"))
                continue
            if not (key in exact or key in name_ok or key.endswith(suffixes)):
                continue
            ctx.read(value)
            for v in (value if isinstance(value, list) else [value]):
                if not isinstance(v, str):
                    continue
                if v.startswith("arn:") and ":role/" in v and ":iam:" in v:
                    out.append(MappedAction(passrole, literal(v), "template",
                                            f"role passed in request parameter {orig}", True, "role"))
                elif key in name_ok and re.fullmatch(r"[\w+=,.@-]{1,64}", v):
                    for rn in (v, f"*/{v}"):
                        out.append(MappedAction(passrole, f"arn:{ctx.partition}:iam::{ctx.account}:role/{rn}",
                                                "template", f"role name passed in request parameter {orig} "
                                                "(path unknown)", True, "role"))
        return out if out else None


def _invalid_note(invalid: list[tuple[str, str, str]]) -> str:
    """The note of an event whose request names a resource AWS does not allow (values shown as Python literals)."""
    var, value, rule = invalid[0]
    shown = repr(value if len(value) <= 80 else value[:80] + "...")
    more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
    return f"the request names {var} {shown}{more}, which AWS does not allow ({rule}): not used to build an ARN"


@lru_cache(maxsize=None)
def _generic_keys(var: str, rtype: str) -> tuple[str, ...]:
    """Parameter names tried for a variable without a bindings.csv row.

    ``FunctionName`` -> functionName(s|List); generic variables (``ResourceId``, ``Id``, ``Name``) also try the
    resource type's own name: type ``resolver-query-log-config`` -> resolverQueryLogConfigId.
    """
    base = var[0].lower() + var[1:]
    keys = [base, base + "s", base + "List"]
    words = [w for w in re.split(r"[^A-Za-z0-9]+", rtype) if w]
    if words:
        camel = words[0][0].lower() + words[0][1:] + "".join(w[0].upper() + w[1:] for w in words[1:])
        suffixes = ("Id", "Identifier") if var.endswith("Id") else ("Name",) if var.endswith("Name") else ()
        for suffix in suffixes:
            keys += [camel + suffix, camel + suffix + "s"]
    return tuple(dict.fromkeys(keys))


def _template_of(arn: str, tmpls: tuple[ArnTemplate, ...], ctx: EventContext) -> ArnTemplate:
    """The first of a type's templates that the ARN matches (the first template when none does)."""
    return tmpls[ctx.decide(_template_index, arn, tmpls)] if len(tmpls) > 1 else tmpls[0]


def _template_index(arn: str, tmpls: tuple[ArnTemplate, ...]) -> int:
    """The index of the first of a type's templates that the ARN matches (0 when none does)."""
    return next((i for i, t in enumerate(tmpls) if t.match(arn) is not None), 0)


def _not_parents(arns: tuple[str, ...]) -> tuple[bool, ...]:
    """Per ARN: False when another ARN of the list is a sub-resource of it (``table/t`` beside ``table/t/index/i``)."""
    return tuple(not any(o != a and o.startswith(a + "/") for o in arns) for a in arns)


def _fullmatches(rx: re.Pattern, value: str) -> bool:
    return rx.fullmatch(value) is not None


def _hashable(value: Any):
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# ----------------------------------------------------------------------------- resource strategies

def _s_copy_source(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    key, vals = ctx.lookup(["x-amz-copy-source", "copySource", "CopySource"])
    out = []
    for v in vals[:1]:
        src = unquote(v).split("?", 1)[0].lstrip("/")
        if src.startswith("arn:"):  # an access point's object: arn:...:accesspoint/<name>/object/<key>
            arn = literal(src)
        elif "/" in src:
            bucket, obj = src.split("/", 1)
            if not mapper.valid("s3", "object", "BucketName", bucket, ctx):
                continue
            arn = f"arn:{ctx.partition}:s3:::{literal(bucket)}/{literal(obj)}"
        else:
            continue
        out.append(MappedAction(step.action, arn, "template", f"source object from {key}", step.implicit, "object"))
    return out


def _s_s3_destination(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    _, buckets = ctx.lookup(["bucketName", "bucket"])
    _, keys = ctx.lookup(["key"])
    if buckets and keys and mapper.valid("s3", "object", "BucketName", buckets[0], ctx):
        return [MappedAction(step.action, f"arn:{ctx.partition}:s3:::{literal(buckets[0])}/{literal(keys[0])}",
                             "template", "destination object from bucketName and key", step.implicit, "object")]
    return []


def _kms_key_arns(values: list[str], ctx: EventContext) -> list[str]:
    out = []
    for v in values:
        for val in _t_kms_key(v, ctx):
            out.append(val.text if val.is_arn else f"arn:{ctx.partition}:kms:{ctx.region}:{ctx.account}:key/{val.text}")
    return out


def _s_kms_source(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    _, vals = ctx.lookup(["sourceKeyId"])
    arns = _kms_key_arns(vals, ctx)
    derivation, why = "template", "source key from sourceKeyId"
    if not arns:
        dest = set(_kms_key_arns(ctx.lookup(["destinationKeyId"])[1], ctx))
        arns = [a for a in ctx.record_arns if ":key/" in a and a not in dest]
        derivation, why = "record_arn", "source key: the record's key ARN that is not the destination key"
    return [MappedAction(step.action, a, derivation, why, step.implicit, "key") for a in arns]


def _s_kms_destination(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    arns = _kms_key_arns(ctx.lookup(["destinationKeyId"])[1], ctx)
    return [MappedAction(step.action, a, "template", "destination key from destinationKeyId", step.implicit, "key")
            for a in arns]


def _unquote_ident(s: str) -> str:
    s = s.strip()
    return s[1:-1].replace('""', '"') if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _s_partiql(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    verb = step.when.partition(":")[2].upper() if step.when.startswith("partiql:") else ""
    out = []
    for stmt in ctx.values("statement"):
        got = _partiql_verb(stmt)
        if not got or (verb and got != verb):
            continue
        t = _PARTIQL_TABLE.search(stmt)
        if not t:
            continue
        table, index = _unquote_ident(t.group(1)), _unquote_ident(t.group(2)) if t.group(2) else None
        if not mapper.valid("dynamodb", "table", "TableName", table, ctx) or \
                (index is not None and not mapper.valid("dynamodb", "index", "IndexName", index, ctx)):
            continue
        table, index = literal(table), literal(index) if index is not None else None
        region, account = ctx.region, ctx.account
        for arn in ctx.record_arns:  # the record's table ARN carries the table's own region/account
            mm = re.match(r"^arn:[^:]+:dynamodb:([^:]*):([^:]*):table/([^/]+)$", arn)
            if mm and mm.group(3) == table:
                region, account = mm.group(1), mm.group(2)
        arn = f"arn:{ctx.partition}:dynamodb:{region}:{account}:table/{table}" + (f"/index/{index}" if index else "")
        out.append(MappedAction(step.action, arn, "template", "table from the PartiQL statement", step.implicit,
                                "index" if index else "table"))
    return list({a.resource: a for a in out}.values())


def _s_apigateway(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    cands = list(step.extra)
    if not cands:
        return []

    def present(c):
        return sum(1 for _ph, member in c[3] if ctx.values(member))

    cands.sort(key=lambda c: (-(present(c) == len(c[3])), -present(c)))
    _model, method, uri, members = cands[0]
    values = {}
    for placeholder, member in members:
        vals = ctx.values(member)
        values[placeholder] = quote(vals[0], safe="") if vals else "*"
    path = re.sub(r"\{([^}+]+)\+?\}", lambda m: values.get(m.group(1), "*"), uri.split("?", 1)[0])
    if path.startswith("/v2/"):
        path = path[3:]
    action = mapper.catalog.canonical(f"apigateway:{method}") or step.action
    return [MappedAction(action, f"arn:{ctx.partition}:apigateway:{ctx.region}::{path}", "template",
                         f"API Gateway: HTTP {method} on the request path (botocore)", step.implicit)]


def _s_caller(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    """A call on oneself: naming no user (nor AllUsers), it acts on the calling IAM user, shown as :data:`CALLER`."""
    if ctx.values("userName") or any(":user/" in a for a in ctx.record_arns) or \
            any(v not in (None, False, "false", "") for v in ctx.index.get("allusers", ())):
        return []  # the request or the record names a user (or every user): derived as usual
    return [MappedAction(step.action, f"arn:{ctx.partition}:iam::{ctx.account}:user/{CALLER}", "template",
                         "the request names no user: the call acts on the calling IAM user", step.implicit, "user")]


def _tagged_types(params: Any) -> list[str]:
    """The resource types a request's tag specifications tag (``tagSpecificationSet.items[].resourceType`` with tags),
    outside ``launchTemplateData`` (tags a launch template applies later, at launch)."""
    out: list[str] = []
    stack, seen = [(params, False)], 0
    while stack and seen < _MAX_NODES:
        node, in_spec = stack.pop()
        seen += 1
        if isinstance(node, list):
            stack.extend((x, in_spec) for x in reversed(node))  # in request order
        elif isinstance(node, dict):
            rtype = node.get("resourceType", node.get("ResourceType"))
            if in_spec and isinstance(rtype, str) and \
                    any(str(k).lower().startswith("tag") and v not in (None, "", [], {}) for k, v in node.items()):
                out.append(rtype)
            for k, v in reversed(node.items()):
                key = str(k).lower()
                if key != "launchtemplatedata" and isinstance(v, (dict, list)):
                    stack.append((v, in_spec or key.startswith("tagspecification")))
    return list(dict.fromkeys(out))


def _s_tag_specifications(mapper: Mapper, step: Step, ctx: EventContext) -> list[MappedAction]:
    """Tag on create: the action on every resource type the request tags; the resources are being created, so any
    resource of that type in the account/region (a logged type only selects a catalogue type, it is never written)."""
    info = mapper.catalog.info(step.action)
    types = {rt.name.lower(): rt for rt in (info.resource_types if info else ())}
    out = []
    for name in _tagged_types(ctx.params):
        rt = types.get(name.lower())
        tmpls = arn_templates(rt.arn_template) if rt else ()
        if tmpls:
            out.append(MappedAction(step.action, tmpls[0].fill(ctx.location()), "template",
                                    f"tags the {rt.name} the request creates (its tag specifications): any {rt.name} "
                                    f"in the account/region", step.implicit, rt.name))
    return out


_STRATEGY_FUNCS: dict[str, Callable[[Mapper, Step, EventContext], list[MappedAction]]] = {
    "copy_source": _s_copy_source, "s3_destination": _s_s3_destination, "kms_reencrypt_source": _s_kms_source,
    "kms_reencrypt_destination": _s_kms_destination, "partiql": _s_partiql, "apigateway_rest": _s_apigateway,
    "caller": _s_caller, "tag_specifications": _s_tag_specifications,
}


# ----------------------------------------------------------------------------- mapping by shape structure

#: Slot characters stand for request values in a :class:`_SlotContext`: one private-use character per value.
_SLOT_BASE = 0xE000
_SLOT_LIMIT = 0x1900
_SLOT_CHARS = re.compile("[\ue000-\uf8ff]")
#: A value is slotted only without these: IAM wildcard characters and ``${`` change what ``literal`` writes
#: around it, and a slot character in a value could not be told from a slot.
_UNSLOTTABLE = re.compile("[*?${}\ue000-\uf8ff]")


def _slot_fixed_keys(rules: Rules) -> tuple[frozenset, tuple[str, ...]]:
    """(keys, key suffixes), lower case, whose values are read beyond copying (``eq:``/``partiql``/``copy_version``
    conditions, iam:PassRole parameters): never slotted, nor anything under them."""
    keys: set[str] = set()
    for when in [r.when for r in rules.all_rules()] + [e.when for es in (*rules.extras.values(),
                                                                          *rules.extra_patterns.values()) for e in es]:
        for _neg, kind, arg in _conditions(when):
            if kind == "eq":
                keys.add(arg.partition("=")[0].lower())
            elif kind == "partiql":
                keys.add("statement")
            elif kind == "copy_version":
                keys.update(("x-amz-copy-source", "copysource"))
    for kind in ("param", "param_or_name", "instance_profile"):
        keys.update(rules.passrole.get(kind, {}))
    return frozenset(keys), tuple(rules.passrole.get("param_suffix", {}))


def _has_slot(text: str) -> bool:
    """Does ``text`` hold a slot character? (ASCII text cannot: answered without a search.)"""
    return not text.isascii() and _SLOT_CHARS.search(text) is not None


#: JSON text that may decode to a slot character: one written raw, or a ``\uE...``/``\uF...`` escape.
_SLOT_IN_JSON = re.compile(r"[\ue000-\uf8ff]|\\u[eEfF]")


def _may_hold_slot(text: str) -> bool:
    """May JSON ``text`` decode to a slot character?"""
    if text.isascii():
        return "\\u" in text and _SLOT_IN_JSON.search(text) is not None
    return _SLOT_IN_JSON.search(text) is not None


def _slottable(text: str) -> bool:
    """A non-empty value that is not an ARN and holds no :data:`_UNSLOTTABLE` character."""
    if not text or text.startswith("arn:"):
        return False
    if text.isascii():
        return not ("*" in text or "?" in text or "$" in text or "{" in text or "}" in text)
    return _UNSLOTTABLE.search(text) is None


def _slot_params(params: dict, fixed: tuple[frozenset, tuple[str, ...]], slots: list[str]) -> dict:
    """A copy of ``params`` (holding no slot character) with each slottable value replaced by a slot character (the
    values are appended to ``slots``).

    Slottable (:func:`_slottable`): a non-empty string that is not an ARN, holds no :data:`_UNSLOTTABLE` character,
    occurs once among the request's scalar values (so no dedup differs) and is not under a key of
    :func:`_slot_fixed_keys`.
    """
    keys, suffixes = fixed
    counts: dict[str, int] = {}
    candidates: list[tuple[Any, Any, str]] = []  # (container copy, key or index, value)

    def leaf(node: Any, out: Any, at: Any, free: bool) -> Any:
        if type(node) is str:
            counts[node] = counts.get(node, 0) + 1
            if free and _slottable(node):
                candidates.append((out, at, node))
            return node
        if isinstance(node, dict):
            return walk_dict(node, free)
        if isinstance(node, list):
            copy: list = [None] * len(node)
            for i, v in enumerate(node):
                copy[i] = leaf(v, copy, i, free)
            return copy
        if isinstance(node, (int, str)) and not isinstance(node, bool):  # a str subclass is never slotted
            text = str(node)
            counts[text] = counts.get(text, 0) + 1
        return node

    def walk_dict(node: dict, free: bool) -> dict:
        copy: dict = {}
        for k, v in node.items():
            low = str(k).lower()
            here = free and low not in keys and not low.endswith(suffixes)
            if type(v) is str:  # inline of leaf(): most values are
                counts[v] = counts.get(v, 0) + 1
                if here and _slottable(v):
                    candidates.append((copy, k, v))
                copy[k] = v
            else:
                copy[k] = leaf(v, copy, k, here)
        return copy

    skeleton = walk_dict(params, True)
    for out, at, value in candidates:
        if counts[value] == 1:
            out[at] = chr(_SLOT_BASE + len(slots))
            slots.append(value)
    return skeleton


def _slot_arns(resources: Any, slots: list[str]) -> Any:
    """A copy of a record's ``resources`` (holding no slot character) whose ARNs have the slotted values in their
    resource part replaced by their slot characters (longest value first); partition, service, region and account
    are kept."""
    order = [(v, chr(_SLOT_BASE + i)) for i, v in enumerate(slots)]
    if len(order) > 1:
        order.sort(key=lambda p: -len(p[0]))

    def arn(text: str) -> str:
        if not text.startswith("arn:"):
            return text
        parts = text.split(":", 5)
        if len(parts) < 6:
            return text
        tail = parts[5]
        for value, char in order:
            if value in tail:
                tail = tail.replace(value, char)
        return text if tail is parts[5] else text[:len(text) - len(parts[5])] + tail

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return arn(node)
        if isinstance(node, dict):
            return {k: (arn(v) if v.startswith("arn:") else v) if type(v) is str else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(resources)


#: A JSON string literal (its raw content in group 1), and what follows a key.
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_AFTER_KEY = re.compile(r"\s*:")


def _leaves(node: Any, strings: bool = False) -> list[str]:
    """The scalar values of parsed JSON in document order as :meth:`EventContext.values` reads them (integers as
    text), or only its strings (``strings``)."""
    if isinstance(node, dict):
        return [x for v in node.values() for x in _leaves(v, strings)]
    if isinstance(node, list):
        return [x for v in node for x in _leaves(v, strings)]
    if isinstance(node, str) or (not strings and isinstance(node, int) and not isinstance(node, bool)):
        return [str(node)]
    return []


def _text_pattern(params: str, resources: str | None, skeleton: tuple[dict, Any],
                  slots: tuple) -> re.Pattern | None:
    """A regular expression over ``params + "\\x00" + resources`` (``"\\x01"`` for none) that matches the texts of
    the events of a structure: the texts of this event with each slotted value captured (in request parameters) or
    referred back to (in record ARNs), or ``None`` when the texts cannot be read that way (escapes around values,
    keys given twice).

    A text that matches holds the same JSON around other values at the same places, so it parses to the skeleton
    with those values in its slots; the caller still checks the values are slottable.
    """
    pieces: list[str] = []
    for part, tree, captured in ((params, skeleton[0], True), (resources, skeleton[1], False)):
        if pieces:
            pieces.append(re.escape("\x00"))
        if part is None:
            pieces.append(re.escape("\x01"))
            continue
        tokens = [m for m in _JSON_STRING.finditer(part) if not _AFTER_KEY.match(part, m.end())]
        values = _leaves(tree, strings=True)
        if len(tokens) != len(values):
            return None  # a key given twice, or text the JSON reader took otherwise
        pos = 0
        for m, value in zip(tokens, values):
            pieces.append(re.escape(part[pos:m.start()]))
            pos = m.end()
            if not _has_slot(value):
                pieces.append(re.escape(m.group(0)))
            elif "\\" in m.group(1) or (captured and len(value) != 1):
                return None
            elif captured:  # the value, raw: no quote, backslash or control character, so it reads as written
                pieces.append('"(?P<s%d>[^"\\\\\\x00-\\x1f]+)"' % (ord(value) - _SLOT_BASE))
            else:
                pieces.append('"' + "".join("(?P=s%d)" % (ord(c) - _SLOT_BASE) if _has_slot(c) else re.escape(c)
                                            for c in value) + '"')
        pieces.append(re.escape(part[pos:]))
    try:
        rx = re.compile("".join(pieces), re.S)
    except (re.error, RecursionError, OverflowError):
        return None
    m = rx.fullmatch(params + "\x00" + (resources if resources is not None else "\x01"))
    return rx if m is not None and m.groups() == tuple(slots) else None


def _filler(obj: Any) -> Callable[[tuple], Any] | None:
    """A function giving ``obj`` (strings, tuples, lists, dicts of them) with its slot characters replaced by the
    values of a slot tuple, or ``None`` when ``obj`` holds no slot character (worked out once, applied per event)."""
    if isinstance(obj, str):
        if not _has_slot(obj):
            return None
        fmt = _SLOT_CHARS.sub(lambda m: "{%d}" % (ord(m.group()) - _SLOT_BASE),
                              obj.replace("{", "{{").replace("}", "}}")).format
        return lambda values: fmt(*values)
    if isinstance(obj, (tuple, list, dict)):
        items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj))
        parts = [(k, _filler(v)) for k, v in items]
        if not any(f for _k, f in parts):
            return None
        if isinstance(obj, dict):
            return lambda values: {k: f(values) if f else obj[k] for k, f in parts}
        fills = [(f, v) for (_k, f), v in zip(parts, obj)]
        if isinstance(obj, list):
            return lambda values: [f(values) if f else v for f, v in fills]
        return lambda values: tuple([f(values) if f else v for f, v in fills])
    return None


def _slots_in(obj: Any) -> set[int]:
    """The slot numbers in ``obj`` (strings, tuples, lists, dicts of them)."""
    if isinstance(obj, str):
        return {ord(c) - _SLOT_BASE for c in _SLOT_CHARS.findall(obj)}
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return set().union(*[_slots_in(x) for x in obj])
    return set()


def _once_per_values(check: Callable[[tuple], bool], about: Any) -> Callable[[tuple], bool]:
    """``check``, computed once per distinct combination of the values of the slots ``about`` holds (a check on a
    bucket's ARN is the same for every key of the bucket)."""
    key = operator.itemgetter(*sorted(_slots_in(about)))
    seen: dict[Any, bool] = {}

    def once(values: tuple) -> bool:
        k = key(values)
        got = seen.get(k)
        if got is None:
            got = seen[k] = check(values)
        return got

    return once


def _apart(a: Any, b: Any) -> bool:
    """True when ``a`` and ``b`` (strings or tuples of them, with slot characters) differ whatever non-empty values
    fill their slots: a component differs without slots, or one holds the other's slots and more characters."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) != len(b) or any(_apart(x, y) for x, y in zip(a, b))
    if not (isinstance(a, str) and isinstance(b, str)):
        return a != b
    sa, sb = _SLOT_CHARS.findall(a), _SLOT_CHARS.findall(b)
    if not sa and not sb:
        return a != b
    fa, fb = len(a) - len(sa), len(b) - len(sb)  # characters that are not slots
    if sorted(sa) == sorted(sb):
        return fa != fb
    big, small, fbig, fsmall = (sa, sb, fa, fb) if len(sa) >= len(sb) else (sb, sa, fb, fa)
    rest = list(big)
    for c in small:
        if c not in rest:
            return False
        rest.remove(c)
    return fbig >= fsmall  # the bigger one has the same slots, more of them (each non-empty), and no fewer others


class _SlotContext(EventContext):
    """An event context whose slottable request values are slot characters, mapped once for a shape structure.

    Slotted values are copied into resource strings as they are (``literal`` of a value without ``*?${}`` is the
    value); every other use goes through a hook: :meth:`decide` takes the decision on the real values of the
    event the structure was built from and records a guard that the decision is the same for another event's
    values; :meth:`commute` and :meth:`distinct` record that a computation on slotted text gives, once filled,
    what it gives on filled text. A slotted value read anywhere else (a condition, a parsing transform, a
    strategy, iam:PassRole) makes the structure :attr:`unsafe`: its events are then mapped one by one.
    """

    slotted = True

    def __init__(self, params: dict, resources: Any, account: str, region: str, partition: str, slots: tuple):
        self.slots = slots
        self.guards: list[Callable[[tuple], bool]] = []
        self.unsafe = False
        self._opaque = False
        super().__init__(params, resources, account, region, partition)
        self.distinct(self.record_arns)

    def values(self, key: str) -> list[str]:
        """:meth:`EventContext.values`; a slotted value outside an opaque :meth:`lookup` makes the context unsafe."""
        out = super().values(key)
        if not self._opaque and any(_has_slot(v) for v in out):
            self.unsafe = True
        return out

    def lookup(self, keys: Iterable[str], opaque: bool = False) -> tuple[str | None, list[str]]:
        """:meth:`EventContext.lookup`, whose values may be slotted when ``opaque`` (the caller copies them)."""
        self._opaque = opaque
        try:
            return super().lookup(keys)
        finally:
            self._opaque = False

    def decide(self, fn: Callable, *args: Any) -> Any:
        """``fn`` on the real values; a guard checks another event's values give the same answer."""
        fill = _filler(args)
        if fill is None:
            return fn(*args)
        answer = fn(*fill(self.slots))
        self.guards.append(_once_per_values(lambda values: fn(*fill(values)) == answer, args))
        return answer

    def commute(self, fn: Callable, arg: Any) -> Any:
        """``fn`` on slotted text; guards check that filling its result equals ``fn`` on filled text."""
        got = fn(arg)
        fill = _filler(arg)
        if fill is None:
            return got
        fill_got = _filler(got) or (lambda values: got)
        self._guard(_once_per_values(lambda values: fill_got(values) == fn(fill(values)), arg))
        return got

    def distinct(self, items: list) -> None:
        """Guards check that the (distinct) ``items`` stay distinct once filled, unless no values can make two of
        them equal (:func:`_apart`)."""
        items = tuple(items)
        if len(items) < 2 or all(_apart(a, b) for i, a in enumerate(items) for b in items[i + 1:]):
            return
        fill = _filler(items)
        if fill is not None:
            n = len(items)
            self._guard(_once_per_values(lambda values: len(set(fill(values))) == n, items))

    def read(self, value: Any) -> None:
        """A value read outside the hooks: unsafe when slotted."""
        if _filler(value) is not None:
            self.unsafe = True

    def _guard(self, check: Callable[[tuple], bool]) -> None:
        if not check(self.slots):
            self.unsafe = True
        self.guards.append(check)


# ----------------------------------------------------------------------------- module-level API

@lru_cache(maxsize=8)
def _mapper_for(service_reference: str | None) -> Mapper:
    ref = None
    if service_reference:
        from miner.servicereference import load_service_reference

        ref = load_service_reference(service_reference)
    return Mapper(service_reference=ref)


def get_mapper(service_reference: str | None = None) -> Mapper:
    """The process-wide mapper (created on first use; plans and results are cached in it).

    Args:
        service_reference: a directory of AWS Service Reference files whose answers take precedence over the
            built-in rules; default ``$MINER_SERVICE_REFERENCE``; ``""`` forces fully offline built-in rules.

    Returns:
        A cached :class:`Mapper`; call ``.map(...)`` on it.
    """
    from miner.servicereference import service_reference_dir

    return _mapper_for(service_reference_dir(service_reference))


def service_prefix(event_source: str | None) -> str:
    """The IAM prefix of an event source, as the mapping resolves it: ``monitoring.amazonaws.com`` -> ``cloudwatch``.

    Args:
        event_source: an ``eventSource`` host.

    Returns:
        The best IAM prefix (``sources.csv``, the catalogue, then botocore's models), else the host's service part.
    """
    from miner.servicereference import host_key

    key = host_key(event_source)
    mapper = get_mapper()
    found = mapper.cheap_prefixes(key) or mapper.prefixes(key)
    return found[0] if found else key


def map_event(event_source: str, event_name: str, request_parameters=None, resources=None,
              account: str = "", region: str = "", partition: str = "", event_type: str | None = None) -> MappingResult:
    """Map one CloudTrail event to the IAM actions and resources that authorised it.

    Args:
        event_source: ``eventSource`` host.
        event_name: ``eventName``.
        request_parameters: dict, JSON text or ``None``.
        resources: list, JSON text or ``None``.
        account: recipient account id.
        region: ``awsRegion``.
        partition: ``aws``/``aws-us-gov``/``aws-cn``; empty: inferred from the region.
        event_type: ``eventType`` if known.

    Returns:
        The :class:`MappingResult`.
    """
    return get_mapper().map(event_source, event_name, request_parameters, resources, account, region, partition,
                            event_type)


def map(*args, **kwargs) -> MappingResult:  # noqa: A001 - kept from the placeholder API
    """Alias of :func:`map_event`."""
    return map_event(*args, **kwargs)


#: Input columns of :func:`map_frame` (``event_type`` is optional).
FRAME_INPUTS = ("event_source", "event_name", "request_parameters", "resources", "account_id", "aws_region", "partition")
#: Columns :func:`map_frame` adds.
FRAME_OUTPUTS = ("action", "resource", "derivation", "reason", "implicit", "resource_type", "condition_key",
                 "condition_value", "status", "note", "via")


def _values_at(column, positions) -> list:
    """The values of a pandas column at ``positions`` as Python objects (missing ones as ``None`` or NaN); Arrow-backed
    text is taken in Arrow (``astype(object)`` builds its values one by one)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
        return pa.array(column.array).take(pa.array(positions)).to_pylist()
    return column.iloc[positions].astype(object).tolist()


def map_frame(df, mapper: Mapper | None = None):
    """Map a DataFrame of events: one output row per (input row x mapped action).

    Identical input tuples are mapped once. Rows that map to no action (unmapped, no_permission, service
    events) are kept as one row with ``action`` null and their ``status``/``note``, so nothing is dropped.

    Args:
        df: a pandas DataFrame with columns :data:`FRAME_INPUTS` (``event_type`` used when present); other
            columns are passed through.
        mapper: the mapper to use (default :func:`get_mapper`).

    Returns:
        A new DataFrame: the input columns (rows repeated per action, in input order, keeping the input's
        index labels so ``out.index`` names the input row) plus :data:`FRAME_OUTPUTS`.
    """
    import numpy as np
    import pandas as pd

    mapper = mapper or get_mapper()
    n = len(df)
    cols = [c for c in FRAME_INPUTS + ("event_type",) if c in df.columns]
    for required in ("event_source", "event_name"):
        if required not in df.columns:
            raise KeyError(f"map_frame needs a {required!r} column")
    code = np.zeros(n, dtype=np.int64)
    for c in cols:  # combine per-column codes, re-factorising to keep the key small
        try:
            col_codes, _ = pd.factorize(df[c], use_na_sentinel=True)
        except TypeError:  # dicts/lists given instead of JSON text
            col_codes, _ = pd.factorize(df[c].map(_hashable), use_na_sentinel=True)
        col_codes = col_codes.astype(np.int64) + 1
        code = code * (int(col_codes.max(initial=0)) + 1) + col_codes
        code, _ = pd.factorize(code)
        code = code.astype(np.int64)
    uniq_codes, first = np.unique(code, return_index=True)
    na = pd.NA

    def clean(values: list) -> list:  # missing values (None, NaN, NA) as None
        return [None if v is None or v is na or (isinstance(v, float) and v != v) else v for v in values]

    none = [None] * len(first)
    firsts = {c: clean(_values_at(df[c], first)) for c in cols}  # only the rows that get mapped
    inputs = zip(*(firsts.get(c, none) for c in ("event_source", "event_name", "request_parameters", "resources",
                                                 "account_id", "aws_region", "partition", "event_type")))
    rows: list[tuple] = []  # one per output row, in FRAME_OUTPUTS order
    counts = np.zeros(len(uniq_codes), dtype=np.int64)
    results = mapper.map_many((src, name, params, res, acct or "", region or "", part or "", etype)
                              for src, name, params, res, acct, region, part, etype in inputs)
    for u, r in enumerate(results):
        if r.actions:
            counts[u] = len(r.actions)
            rows.extend((a.action, a.resource, a.derivation, a.reason, a.implicit, a.resource_type, a.condition_key,
                         a.condition_value, r.status, r.note, r.via) for a in r.actions)
        else:
            counts[u] = 1
            rows.append((None, None, None, None, False, None, None, None, r.status, r.note, r.via))
    res_cols = dict(zip(FRAME_OUTPUTS, (list(c) for c in zip(*rows)))) if rows else {c: [] for c in FRAME_OUTPUTS}
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else np.zeros(0, dtype=np.int64)
    code_to_u = np.empty(int(code.max(initial=-1)) + 1, dtype=np.int64)
    code_to_u[uniq_codes] = np.arange(len(uniq_codes))
    u_of_row = code_to_u[code] if n else np.zeros(0, dtype=np.int64)
    row_counts = counts[u_of_row] if n else np.zeros(0, dtype=np.int64)
    if n and (row_counts == 1).all():
        out = df.copy()  # one output row per input row: no repeat needed
        pos = starts[u_of_row]
    else:
        out_rows = np.repeat(np.arange(n), row_counts)
        offsets = np.arange(len(out_rows)) - np.repeat(np.cumsum(row_counts) - row_counts, row_counts)
        pos = starts[u_of_row[out_rows]] + offsets if n else np.zeros(0, dtype=np.int64)
        out = df.take(out_rows)
    import pyarrow as pa

    take = pa.array(pos, type=pa.int64())
    str_dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    for c in FRAME_OUTPUTS:
        if c == "implicit":
            out[c] = np.array(res_cols[c], dtype=bool)[pos]
        else:
            out[c] = pd.array(pa.array(res_cols[c], type=pa.string()).take(take), dtype=str_dtype)
    return out


# ----------------------------------------------------------------------------- coverage

@dataclass
class Coverage:
    """Mapping coverage of a set of events: per (event source, event name), and a summary."""

    by_event: Any  # pandas DataFrame
    summary: dict

    def unmapped(self):
        """Only the gaps: rows whose status is ``unmapped``."""
        return self.by_event[self.by_event["status"].str.contains("unmapped")].reset_index(drop=True)

    def to_dict(self, unmapped_only: bool = False) -> dict:
        """A JSON-ready dict.

        Args:
            unmapped_only: keep only the gaps (status ``unmapped``).

        Returns:
            ``{"summary": ..., "events": [row, ...]}`` with ``actions`` as lists.
        """
        df = self.unmapped() if unmapped_only else self.by_event
        rows = df.to_dict(orient="records")
        for r in rows:
            r["actions"] = list(r["actions"])
        return {"summary": self.summary, "events": rows}


_SHAPE_COLS = FRAME_INPUTS + ("event_type",)


def _shapes_from_frame(df):
    import pandas as pd

    df = df.copy()
    for c in _SHAPE_COLS + ("outcome", "principal_type"):
        if c not in df.columns:
            df[c] = None
    keys = list(_SHAPE_COLS + ("outcome", "principal_type"))
    if "events" in df.columns:
        return df
    g = df[keys].astype(object).where(df[keys].notna(), "\x00")
    shapes = g.groupby(keys, sort=False, dropna=False).size().reset_index(name="events")
    shapes = shapes.replace("\x00", None)
    return pd.DataFrame(shapes)


def classify_shapes(shapes, mapper: Mapper | None = None):
    """Map event shapes (``event_shapes.sql`` rows) and say, per shape, how its primary actions got their resources.

    Args:
        shapes: a pandas DataFrame of event shapes (an ``events`` count column; ``outcome`` when known).
        mapper: the mapper (default :func:`get_mapper`).

    Returns:
        ``shapes`` (index reset) plus ``klass`` (record_arn, template, star, no_resource_level), ``status``, ``note``,
        ``actions`` (a sorted tuple of the primary actions) and ``denied``.
    """
    shapes = shapes.reset_index(drop=True)
    shapes["_shape"] = range(len(shapes))
    mapped = map_frame(shapes, mapper)
    prim = mapped[~mapped["implicit"] & mapped["action"].notna()]
    res_level = prim[prim["reason"] != REASON_NO_RESOURCE_LEVEL]
    star_shapes = set(res_level.loc[res_level["resource"] == "*", "_shape"])
    tmpl_shapes = set(res_level.loc[res_level["derivation"] == "template", "_shape"])
    rl_shapes = set(res_level["_shape"])
    acts = prim.groupby("_shape")["action"].agg(lambda s: tuple(sorted(set(s))))

    def klass(i):
        if i not in rl_shapes:
            return "no_resource_level"
        if i in star_shapes:
            return "star"
        return "template" if i in tmpl_shapes else "record_arn"

    shapes["klass"] = [klass(i) for i in shapes["_shape"]]
    status_of = mapped.groupby("_shape")["status"].first()
    note_of = mapped.groupby("_shape")["note"].first()
    shapes["status"] = shapes["_shape"].map(status_of)
    shapes["note"] = shapes["_shape"].map(note_of)
    shapes["actions"] = shapes["_shape"].map(acts).apply(lambda v: v if isinstance(v, tuple) else ())
    shapes["denied"] = shapes["outcome"].eq("denied") if "outcome" in shapes else False
    return shapes.drop(columns="_shape")


def coverage(con_or_df, since: datetime | None = None, until: datetime | None = None,
             mapper: Mapper | None = None) -> Coverage:
    """How well the events of a store (or a DataFrame) map to IAM actions and resources.

    Args:
        con_or_df: a DuckDB connection with the store's ``events`` view (aggregated by ``queries/event_shapes.sql``),
            a :class:`miner.engine.SparkConnection`, or a pandas DataFrame of events (columns as in the store; an ``events`` count column marks shapes).
        since: window start (UTC, inclusive); default: the beginning of time.
        until: window end (UTC, exclusive); default: far future.
        mapper: the mapper (default :func:`get_mapper`).

    Returns:
        A :class:`Coverage`. ``by_event`` columns: event_source, event_name, events, status (``a; b`` when shapes
        differ), actions, record_arn/template/star/no_resource_level (event counts by how the primary actions'
        resources were derived), denied, note. ``summary`` holds totals and shares, including those of
        authorised, non-service API calls (the target population).
    """
    import pandas as pd

    since = since or datetime(1970, 1, 1, tzinfo=timezone.utc)
    until = until or datetime(2200, 1, 1, tzinfo=timezone.utc)
    if hasattr(con_or_df, "classified_shapes"):  # miner.engine.SparkConnection: classified on the executors
        shapes = con_or_df.classified_shapes(since, until, mapper=mapper)
    else:
        if hasattr(con_or_df, "execute"):
            from miner import queries

            shapes = queries.run(con_or_df, "event_shapes", since=since, until=until)
        else:
            shapes = _shapes_from_frame(con_or_df)
        shapes = classify_shapes(shapes, mapper)
    rows = []
    for (src, name), g in shapes.groupby(["event_source", "event_name"], dropna=False, sort=True):
        w = g["events"].astype("int64")
        by_k = {k: int(w[g["klass"] == k].sum()) for k in ("record_arn", "template", "star", "no_resource_level")}
        mapped_w = g["status"] == "mapped"
        rows.append({
            "event_source": src, "event_name": name, "events": int(w.sum()),
            "status": "; ".join(sorted(set(g["status"]))),
            "actions": tuple(sorted({a for t in g["actions"] for a in t})),
            "record_arn": by_k["record_arn"], "template": by_k["template"], "star": by_k["star"],
            "no_resource_level": int(w[(g["klass"] == "no_resource_level") & mapped_w].sum()),
            "denied": int(w[g["denied"]].sum()) if "denied" in g else 0,
            "note": next((x for x in g["note"] if isinstance(x, str) and x), None),
        })
    by_event = pd.DataFrame(rows, columns=["event_source", "event_name", "events", "status", "actions", "record_arn",
                                           "template", "star", "no_resource_level", "denied", "note"])
    by_event = by_event.sort_values(["events", "event_source", "event_name"], ascending=[False, True, True]).reset_index(drop=True)

    def shares(mask) -> dict:
        s = shapes[mask]
        w = s["events"].astype("int64")
        total = int(w.sum())
        by_status = {st: int(w[s["status"] == st].sum()) for st in STATUSES if (s["status"] == st).any()}
        need = by_status.get("mapped", 0) + by_status.get("unmapped", 0)
        rl = s["klass"].isin(["record_arn", "template", "star"]) & (s["status"] == "mapped")
        narrow = s["klass"].isin(["record_arn", "template"]) & (s["status"] == "mapped")
        return {
            "events": total,
            "by_status": by_status,
            "mapped_share": round(by_status.get("mapped", 0) / need, 6) if need else None,
            "resource_level_events": int(w[rl].sum()),
            "narrow_share": round(int(w[narrow].sum()) / int(w[rl].sum()), 6) if int(w[rl].sum()) else None,
            "record_arn_events": int(w[(s["klass"] == "record_arn") & (s["status"] == "mapped")].sum()),
            "template_events": int(w[(s["klass"] == "template") & (s["status"] == "mapped")].sum()),
            "star_events": int(w[(s["klass"] == "star") & (s["status"] == "mapped")].sum()),
        }

    everything = shares(pd.Series(True, index=shapes.index))
    ptype = shapes["principal_type"] if "principal_type" in shapes else pd.Series(None, index=shapes.index)
    etype = shapes["event_type"] if "event_type" in shapes else pd.Series(None, index=shapes.index)
    target = (~shapes["denied"]) & (ptype.fillna("") != "AWSService") & (etype.fillna("AwsApiCall") == "AwsApiCall")
    summary = {
        "versions": (mapper or get_mapper()).version,
        **everything,
        "authorised_non_service_api_calls": shares(target),
        "unmapped_event_kinds": int((by_event["status"].str.contains("unmapped")).sum()),
        "event_kinds": int(len(by_event)),
    }
    return Coverage(by_event, summary)
