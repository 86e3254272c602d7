"""Organizations SCPs and RCPs that apply to an account: read live or from a snapshot, evaluated against grants and calls."""

from __future__ import annotations

import csv
import fnmatch
import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources as _resources
from pathlib import Path
from typing import Callable, Iterable

from miner.diff import Statement, statements
from miner.iam import IamError, _paginate as _pages, decode_document
from miner.patterns import covers

SCP = "SERVICE_CONTROL_POLICY"
RCP = "RESOURCE_CONTROL_POLICY"
#: The snapshot file ``--iam-snapshot DIR`` picks up next to the IAM snapshot files.
SNAPSHOT_NAME = "organizations.json"
#: How a finding names each policy type.
KIND = {SCP: "SCP", RCP: "RCP"}
#: Error codes of an Organizations caller that may not read the policies (a member account, no organization).
NO_ACCESS = frozenset({"AccessDeniedException", "AccessDenied", "AWSOrganizationsNotInUseException",
                       "UnrecognizedClientException", "InvalidClientTokenId"})


class OrgError(IamError):
    """The organization's policies could not be read (a malformed snapshot)."""


@lru_cache(maxsize=1)
def rcp_services() -> frozenset[str]:
    """The IAM service prefixes RCPs restrict (``miner/data/rcp_services.csv``).

    Returns:
        Lower-case prefixes, e.g. ``s3``, ``kms``.
    """
    text = (_resources.files("miner") / "data" / "rcp_services.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return frozenset(r["service"].strip().lower() for r in rows)


# ----------------------------------------------------------------------------- the organization of an account


@dataclass(frozen=True)
class OrgPolicy:
    """One SCP or RCP and its document."""

    id: str
    name: str
    type: str  # SCP | RCP
    document: dict
    aws_managed: bool = False

    @property
    def label(self) -> str:
        """``Name (p-id)``: how findings name the policy."""
        return f"{self.name} ({self.id})"


@dataclass(frozen=True)
class Level:
    """One node of the path from the root to an account (the root, an OU, the account) and what is attached to it."""

    target: str
    kind: str  # "root" | "ou" | "account"
    name: str
    scps: tuple[OrgPolicy, ...] = ()
    rcps: tuple[OrgPolicy, ...] = ()

    @property
    def label(self) -> str:
        """e.g. ``OU Prod (ou-ab12-prod0001)``."""
        word = {"root": "root", "ou": "OU", "account": "account"}[self.kind]
        return f"{word} {self.name} ({self.target})" if self.name and self.name != self.target else f"{word} {self.target}"


@dataclass
class AccountOrg:
    """The SCPs and RCPs that apply to one account: one :class:`Level` per node from the root down to the account."""

    account: str
    levels: list[Level]
    management: bool = False


@dataclass
class OrgSource:
    """Where SCPs and RCPs come from: a snapshot, or Organizations read live (per account, on first use)."""

    label: str
    reader: Callable[[str], AccountOrg | None]  # account id -> its organization, None when not in it
    notes: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)  # account -> AccountOrg | None
    _verdicts: dict = field(default_factory=dict, repr=False)  # (account, exemption) -> OrgEvaluator verdicts

    def account(self, account: str) -> AccountOrg | None:
        """The organization of an account (read once).

        Args:
            account: the 12-digit account id.

        Returns:
            The :class:`AccountOrg`, or ``None`` when the account is not in the organization or it cannot be read.
        """
        if account not in self._cache:
            self._cache[account] = self.reader(account) if account else None
        return self._cache[account]

    def evaluator(self, principal_arn: str, account: str) -> OrgEvaluator | None:
        """The evaluator for one principal, or ``None`` when its account is not in the organization.

        Args:
            principal_arn: the role or user ARN.
            account: its account.

        Returns:
            An :class:`OrgEvaluator`.
        """
        org = self.account(account)
        return OrgEvaluator(self, org, principal_arn) if org is not None else None


# ----------------------------------------------------------------------------- snapshot


def _policy(entry: dict, where: str) -> tuple[OrgPolicy, list[str]]:
    summary = entry.get("PolicySummary") if isinstance(entry, dict) else None
    if not isinstance(summary, dict) or not summary.get("Id"):
        raise OrgError(f"{where}: a Policies entry has no PolicySummary.Id")
    ptype = summary.get("Type") or SCP
    if ptype not in KIND:
        raise OrgError(f"{where}: policy {summary['Id']} has Type {ptype!r}, not {SCP} or {RCP}")
    try:
        doc = decode_document(entry.get("Content"))
    except IamError as e:
        raise OrgError(f"{where}: policy {summary['Id']}: {e}") from None
    targets = entry.get("Targets") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise OrgError(f"{where}: policy {summary['Id']}: Targets must be a list of target ids")
    return OrgPolicy(str(summary["Id"]), str(summary.get("Name") or summary["Id"]), ptype, doc,
                     bool(summary.get("AwsManaged"))), targets


def parse_snapshot(data: dict, where: str = "organizations snapshot") -> tuple[Callable[[str], AccountOrg | None], str]:
    """Read an organizations snapshot (the format of ``docs/organizations.md``).

    Args:
        data: the parsed JSON.
        where: the file, for error messages.

    Returns:
        (account id -> :class:`AccountOrg` or ``None``, the organization id).

    Raises:
        OrgError: when the snapshot is malformed (a missing parent, a cycle, a bad policy).
    """
    if not isinstance(data, dict) or not isinstance(data.get("Accounts"), list):
        raise OrgError(f"{where} is not an organizations snapshot (no Accounts list)")
    org = data.get("Organization") or {}
    management = str(org.get("MasterAccountId") or org.get("ManagementAccountId") or "")
    nodes: dict[str, tuple[str, str, str | None]] = {}  # id -> (kind, name, parent)
    for kind, key in (("root", "Roots"), ("ou", "OrganizationalUnits"), ("account", "Accounts")):
        for n in data.get(key) or []:
            if not isinstance(n, dict) or not n.get("Id"):
                raise OrgError(f"{where}: an entry of {key} has no Id")
            nodes[str(n["Id"])] = (kind, str(n.get("Name") or n["Id"]), n.get("ParentId") if kind != "root" else None)
    attached: dict[str, list[OrgPolicy]] = {}
    for entry in data.get("Policies") or []:
        pol, targets = _policy(entry, where)
        for t in targets:
            attached.setdefault(t, []).append(pol)

    def read(account: str) -> AccountOrg | None:
        if nodes.get(account, ("",))[0] != "account":
            return None
        chain, node, seen = [], account, set()
        while node is not None:
            if node in seen or node not in nodes:
                raise OrgError(f"{where}: the parents of account {account} do not lead to a root "
                               f"({'cycle at' if node in seen else 'unknown parent'} {node})")
            seen.add(node)
            kind, name, parent = nodes[node]
            pols = sorted(attached.get(node, []), key=lambda p: p.id)
            chain.append(Level(node, kind, name, tuple(p for p in pols if p.type == SCP),
                               tuple(p for p in pols if p.type == RCP)))
            node = parent
        if chain[-1].kind != "root":
            raise OrgError(f"{where}: the parents of account {account} do not lead to a root")
        return AccountOrg(account, chain[::-1], management=account == management)

    for n, (kind, _, _) in nodes.items():  # a broken path fails now, with the file named, not at first use
        if kind == "account":
            read(n)
    return read, str(org.get("Id") or "")


def snapshot_source(path: str | Path) -> OrgSource | None:
    """The SCPs and RCPs of an organizations snapshot next to an IAM snapshot (``DIR/organizations.json``, or that
    name beside a snapshot file), or ``None`` when there is none.

    Args:
        path: the IAM snapshot file or directory (``--iam-snapshot``), or the organizations snapshot itself.

    Returns:
        The :class:`OrgSource`, or ``None``.

    Raises:
        OrgError: when the file exists but cannot be read.
    """
    path = Path(path)
    file = path / SNAPSHOT_NAME if path.is_dir() else path if path.name == SNAPSHOT_NAME else path.parent / SNAPSHOT_NAME
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OrgError(f"cannot read organizations snapshot {file}: {e}") from None
    read, org_id = parse_snapshot(data, str(file))
    return OrgSource(f"snapshot {file}" + (f" ({org_id})" if org_id else ""), read)


def to_snapshot(orgs: Iterable[AccountOrg], organization: dict | None = None) -> dict:
    """An organizations snapshot (the format :func:`snapshot_source` reads) of some accounts' organizations.

    Args:
        orgs: the accounts' :class:`AccountOrg` (e.g. read live).
        organization: ``{"Id", "MasterAccountId"}`` of the organization.

    Returns:
        The JSON-ready dict.
    """
    nodes: dict[str, dict] = {}
    policies: dict[str, tuple[OrgPolicy, set[str]]] = {}
    for org in orgs:
        parent = None
        for lv in org.levels:
            nodes.setdefault(lv.target, {"kind": lv.kind, "Id": lv.target, "Name": lv.name, "ParentId": parent})
            for p in lv.scps + lv.rcps:
                policies.setdefault(p.id, (p, set()))[1].add(lv.target)
            parent = lv.target
    by = lambda kind: [{k: v for k, v in n.items() if k != "kind" and not (kind == "root" and k == "ParentId")}  # noqa: E731
                       for n in sorted(nodes.values(), key=lambda n: n["Id"]) if n["kind"] == kind]
    return {"Organization": dict(organization or {}), "Roots": by("root"), "OrganizationalUnits": by("ou"),
            "Accounts": by("account"),
            "Policies": [{"PolicySummary": {"Id": p.id, "Name": p.name, "Type": p.type, "AwsManaged": p.aws_managed},
                          "Content": json.dumps(p.document), "Targets": sorted(t)}
                         for p, t in (policies[k] for k in sorted(policies))]}


def read_snapshot_live(profile: str | None = None, endpoint_url: str | None = None,
                       accounts: Iterable[str] | None = None, client=None,
                       progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[str]]:
    """An organizations snapshot (the file :func:`snapshot_source` reads) read live: every account of the
    organization (``ListAccounts``) or the ones given, each with its parents up to the root and the SCPs and RCPs
    attached on the way, as :func:`live_source` reads them.

    Args:
        profile: an AWS CLI profile (the management account's, or a delegated administrator's).
        endpoint_url: an alternative endpoint (e.g. a moto server).
        accounts: only these 12-digit account ids.
        client: a ready Organizations client (tests).
        progress: called with (accounts read, accounts in all).

    Returns:
        (the JSON-ready snapshot, notes: accounts not in the organization, policy types not enabled).

    Raises:
        OrgError: when the organization cannot be read (no organization, no access, no credentials, unreachable).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    def failed(e: Exception) -> OrgError:
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            return OrgError(f"cannot read the organization: Organizations said {err.get('Code') or 'an error'}"
                            f"{': ' + err['Message'] if err.get('Message') else ''} (run with the management "
                            f"account's or a delegated administrator's credentials)")
        return OrgError(f"cannot reach Organizations: {e}")

    try:
        c = client or org_client(profile, endpoint_url)
        info = c.describe_organization()["Organization"]
        ids = list(dict.fromkeys(accounts)) if accounts else \
            sorted(a["Id"] for a in _pages(c, "list_accounts", "Accounts"))
    except (ClientError, BotoCoreError) as e:
        raise failed(e) from None
    except IamError as e:  # a missing profile, no credentials (miner.iam's one-line errors)
        raise OrgError(str(e)) from None
    src = live_source(client=c)
    found = []
    for i, account in enumerate(ids, 1):
        got = src.account(account)
        if got is not None:
            found.append(got)
        if progress:
            progress(i, len(ids))
        if any(n.startswith("SCPs and RCPs not read") for n in src.notes):
            raise OrgError(next(n for n in src.notes if n.startswith("SCPs and RCPs not read")))
    snap = to_snapshot(found, {k: info[k] for k in ("Id", "MasterAccountId") if info.get(k)})
    return snap, list(src.notes)


# ----------------------------------------------------------------------------- live


def org_client(profile: str | None = None, endpoint_url: str | None = None):
    """A boto3 Organizations client (Organizations is global: signed for us-east-1).

    Args:
        profile: an AWS CLI profile name.
        endpoint_url: an alternative endpoint (e.g. a moto server).

    Returns:
        The client.
    """
    import boto3

    session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    return session.client("organizations", endpoint_url=endpoint_url, region_name="us-east-1")


def live_source(profile: str | None = None, endpoint_url: str | None = None, client=None) -> OrgSource:
    """SCPs and RCPs read through Organizations, per account on first use: ``ListParents`` up to the root,
    ``ListPoliciesForTarget`` for the account, each OU and the root, ``DescribePolicy`` for each document.

    A caller that may not read them (a member account, no organization, no credentials) gets one note on the
    source and no policies: the diff goes on without them.

    Args:
        profile: an AWS CLI profile.
        endpoint_url: an alternative endpoint (e.g. a moto server).
        client: a ready Organizations client (tests).

    Returns:
        The :class:`OrgSource`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"live Organizations{' at ' + endpoint_url if endpoint_url else ''}"
    state: dict = {"client": client, "management": None, "off": False, "docs": {}, "disabled": set()}
    source = OrgSource(where, lambda account: None)

    def give_up(why: str) -> None:
        state["off"] = True
        source.notes.append(f"SCPs and RCPs not read ({why}): run with the management account's or a delegated "
                            f"administrator's credentials, or put an {SNAPSHOT_NAME} in the --iam-snapshot folder")

    def policies(c, target: str, ptype: str) -> tuple[OrgPolicy, ...]:
        try:
            found = _pages(c, "list_policies_for_target", "Policies", TargetId=target, Filter=ptype)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "PolicyTypeNotEnabledException":
                raise
            if ptype not in state["disabled"]:
                state["disabled"].add(ptype)
                source.notes.append(f"{KIND[ptype]}s are not enabled in the organization: none evaluated")
            return ()
        out = []
        for s in sorted(found, key=lambda s: s["Id"]):
            if s["Id"] not in state["docs"]:
                content = c.describe_policy(PolicyId=s["Id"])["Policy"].get("Content")
                state["docs"][s["Id"]] = decode_document(content)
            out.append(OrgPolicy(s["Id"], s.get("Name") or s["Id"], ptype, state["docs"][s["Id"]],
                                 bool(s.get("AwsManaged"))))
        return tuple(out)

    def read(account: str) -> AccountOrg | None:
        if state["off"]:
            return None
        try:
            c = state["client"] = state["client"] or org_client(profile, endpoint_url)
            if state["management"] is None:
                state["management"] = c.describe_organization()["Organization"].get("MasterAccountId") or ""
            chain = [(account, "account")]
            while chain[-1][1] != "ROOT":
                parents = _pages(c, "list_parents", "Parents", ChildId=chain[-1][0])
                if not parents:
                    break
                chain.append((parents[0]["Id"], parents[0]["Type"]))
            levels = []
            for target, ptype in reversed(chain):
                kind = {"ROOT": "root", "ORGANIZATIONAL_UNIT": "ou"}.get(ptype, "account")
                name = "Root" if kind == "root" else target
                if kind == "ou":
                    name = c.describe_organizational_unit(OrganizationalUnitId=target)["OrganizationalUnit"].get(
                        "Name") or target
                levels.append(Level(target, kind, name, policies(c, target, SCP), policies(c, target, RCP)))
            return AccountOrg(account, levels, management=account == state["management"])
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ChildNotFoundException", "AccountNotFoundException", "TargetNotFoundException"):
                source.notes.append(f"account {account} is not in the organization: no SCPs or RCPs apply to it")
                return None
            give_up(f"Organizations said {code or 'an error'}"
                    f"{': ' + e.response['Error'].get('Message', '') if e.response.get('Error', {}).get('Message') else ''}")
        except BotoCoreError as e:
            give_up(f"cannot reach Organizations: {e}")
        except IamError as e:
            give_up(f"a policy document could not be read: {e}")
        return None

    source.reader = read
    return source


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Verdict:
    """What the SCPs or RCPs say about one action on one resource pattern.

    ``verdict`` is ``allowed``, ``blocked`` (an unconditional Deny covers it, or a level has no Allow for it) or
    ``conditional`` (a Deny with a Condition, or on part of the resources, may block it: not counted as a block).
    """

    verdict: str
    kind: str = ""  # "SCP" | "RCP"
    policy: str = ""  # Name (p-id); for a level without an Allow, the policies attached there
    policy_id: str = ""
    target: str = ""  # the level it is attached to
    statement: str = ""
    reason: str = ""

    def as_dict(self) -> dict:
        """The JSON-ready fields (``verdict`` left out)."""
        return {"kind": self.kind, "policy": self.policy, "policy_id": self.policy_id, "target": self.target,
                "statement": self.statement, "reason": self.reason}


ALLOWED = Verdict("allowed")


def _prefix(pattern: str) -> str:
    """The literal start of a pattern, up to its first wildcard or policy variable."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?"), pattern.find("${")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def _may_overlap(a: str, b: str) -> bool:
    """Could two resource patterns match a common resource? (Approximated by their literal starts.)"""
    pa, pb = _prefix(a), _prefix(b)
    if pa == a and pb == b:
        return a == b
    return pa.startswith(pb) or pb.startswith(pa)


def _reach(s: Statement, resource: str) -> str:
    """How much of ``resource`` (a pattern) a statement's Resource or NotResource covers: ``full``, ``part`` or
    ``none``."""
    pats = s.not_resources if s.not_resources is not None else s.resources
    if any(covers(p, resource) for p in pats):
        return "none" if s.not_resources is not None else "full"
    if any(_may_overlap(p, resource) for p in pats):
        return "part"
    return "full" if s.not_resources is not None else "none"


@lru_cache(maxsize=4096)
def _actions_rx(patterns: tuple[str, ...]) -> re.Pattern:
    """One regular expression for a statement's Action (or NotAction) patterns: what
    :meth:`miner.diff.Statement.matches_action` tests pattern by pattern, in one match."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns) or "(?!)", re.S)


def _matches_action(s: Statement, action: str) -> bool:
    """:meth:`miner.diff.Statement.matches_action`, with one match per statement (SCPs are asked for every granted
    action of every principal)."""
    if s.not_actions is not None:
        return _actions_rx(s.not_actions).match(action.lower()) is None
    return _actions_rx(s.actions).match(action.lower()) is not None


def _names_whole(pattern: str, service: str) -> bool:
    """Does an Action/NotAction pattern name every action of ``service`` (a lower-case IAM prefix)?"""
    return pattern == "*" or pattern.lower() == f"{service}:*"


def _may_name(pattern: str, service: str) -> bool:
    """Could an Action/NotAction pattern name some action of ``service``? (By its service part; a pattern without
    a colon, such as ``*`` or ``s3*``, may name any.)"""
    return ":" not in pattern or fnmatch.fnmatchcase(service, pattern.lower().split(":", 1)[0])


def _may_name_service(s: Statement, service: str) -> bool:
    """Could the statement match some action of ``service``? An Action's patterns narrow it by their service part;
    a NotAction leaves out a service only when it names the whole of it."""
    if s.not_actions is not None:
        return not any(_names_whole(p, service) for p in s.not_actions)
    return any(_may_name(p, service) for p in s.actions)


def _for_service(stmts: list[Statement], service: str, memo: dict) -> list[Statement]:
    """The statements of ``stmts`` that may match an action of ``service`` (memoised in ``memo`` per list and
    service): an SCP statement names a few services, and a principal is granted actions of hundreds."""
    key = (id(stmts), service)
    got = memo.get(key)
    if got is None:
        got = memo[key] = [s for s in stmts if _may_name_service(s, service)]
    return got


def _whole_service(stmts: list[Statement], service: str) -> bool:
    """Does every statement match every action of ``service`` (an Action of ``*`` or ``<service>:*``)? Then
    :func:`_judge` says the same of each of the service's actions (``FullAWSAccess``, a Deny of ``*`` under a
    Condition, a NotAction that names other services ...), and one verdict serves them all."""
    def whole(s: Statement) -> bool:
        if s.not_actions is not None:  # none of its patterns may name an action of the service
            return not any(_may_name(p, service) for p in s.not_actions)
        return any(_names_whole(p, service) for p in s.actions)

    return all(whole(s) for s in stmts)


def _judge(stmts: list[Statement], action: str, resource: str, need_allow: bool,
           reach_memo: dict | None = None) -> tuple[str, Statement | None]:
    """One level's policies on one action and resource pattern: (``blocked`` | ``no_allow`` | ``conditional`` |
    ``allowed``, the statement that decides). ``reach_memo`` keeps :func:`_reach` per (statement, resource)."""
    maybe = allow = None
    allow_full = False
    for s in stmts:
        if not _matches_action(s, action):
            continue
        if reach_memo is None:
            reach = _reach(s, resource)
        else:
            key = (id(s), resource)
            reach = reach_memo.get(key)
            if reach is None:
                reach = reach_memo[key] = _reach(s, resource)
        if reach == "none":
            continue
        if s.effect == "Deny":
            if reach == "full" and not s.conditional:
                return "blocked", s
            maybe = maybe or s
        elif reach == "full" and not s.conditional:
            allow_full = True
        else:
            allow = allow or s
    if need_allow and not allow_full:
        return ("conditional", allow) if allow is not None else ("no_allow", None)
    return ("conditional", maybe) if maybe is not None else ("allowed", None)


_FULL_ACCESS = ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},)


class OrgEvaluator:
    """The SCPs (of the principal's account) and RCPs (of the resource's account) for one principal.

    SCPs: an action is allowed only when every level (the root, each OU, the account) has an Allow for it and no
    Deny matches; a level with nothing attached counts as ``FullAWSAccess``. They do not apply to service-linked
    roles nor to the management account. RCPs: only their Deny statements count (``RCPFullAWSAccess`` cannot be
    detached), for actions of :func:`rcp_services` on resources of member accounts; not for service-linked roles.
    A Deny with a Condition, or on part of the resources, is ``conditional``, never a block.
    """

    def __init__(self, source: OrgSource, org: AccountOrg, principal_arn: str):
        self.source, self.org, self.principal_arn = source, org, principal_arn
        self.service_linked = ":role/aws-service-role/" in principal_arn
        self.exempt = "a service-linked role" if self.service_linked else \
            "the management account" if org.management else None
        self._levels = [(lv, self._stmts(lv.scps)) for lv in org.levels]
        # verdicts depend only on the account and on whether SCPs apply: principals that share both share them
        self._cache: dict[tuple, Verdict] = source._verdicts.setdefault((org.account, self.exempt), {})
        self._rcp: dict[str, list[tuple[Level, list[Statement]]] | None] = {}
        self._made: dict[tuple, Verdict] = {}
        # statements per (level, service) and statement reaches per resource; keyed by id() of lists and
        # statements this evaluator holds for its whole life
        self._memo: dict[tuple, object] = {}
        self.policies: dict[str, OrgPolicy] = {p.id: p for lv in org.levels for p in lv.scps + lv.rcps}

    @staticmethod
    def _stmts(pols: tuple[OrgPolicy, ...]) -> list[Statement]:
        """The statements of one level's SCPs; ``FullAWSAccess`` (the default) when none is attached."""
        docs = [(p.id, p.document) for p in pols] or [("", d) for d in _FULL_ACCESS]
        return [s for pid, d in docs for s in statements(d, pid)]

    def _verdict(self, kind: str, lv: Level, outcome: str, s: Statement | None, pols: tuple[OrgPolicy, ...]) -> Verdict:
        """The verdict of one level's deciding statement (the same for every action it decides: made once)."""
        key = (kind, lv.target, outcome, id(s))
        if key not in self._made:
            self._made[key] = self._make(kind, lv, outcome, s, pols)
        return self._made[key]

    def _make(self, kind: str, lv: Level, outcome: str, s: Statement | None, pols: tuple[OrgPolicy, ...]) -> Verdict:
        if outcome == "no_allow":
            names = ", ".join(p.label for p in pols)
            return Verdict("blocked", kind, names, ",".join(p.id for p in pols), lv.label, "",
                           f"no {kind} attached to {lv.label} allows it ({names})")
        pol = self.policies.get(s.origin) if s is not None else None
        label, pid = (pol.label, pol.id) if pol else ("FullAWSAccess (default)", "")
        what = "denies it" if outcome == "blocked" else \
            ("may deny it (a Condition, or part of the resources)" if s is not None and s.effect == "Deny"
             else "allows it only under a Condition or on part of the resources")
        return Verdict(outcome, kind, label, pid, lv.label, s.name if s else "",
                       f"statement {s.name if s else '?'} of {kind} {label} (attached to {lv.label}) {what}")

    def scp(self, action: str, resource: str = "*") -> Verdict:
        """The SCPs' verdict on one action and resource pattern.

        Args:
            action: the action.
            resource: a resource ARN or pattern (``*`` for every resource).

        Returns:
            The :class:`Verdict` (``allowed`` when SCPs do not apply to the principal).
        """
        if self.exempt:
            return ALLOWED
        key = ("scp", action, resource)
        if key not in self._cache:
            self._cache[key] = self._walk("SCP", self._levels, action, resource)
        return self._cache[key]

    def _walk(self, kind: str, levels: list[tuple[Level, list[Statement]]], action: str, resource: str) -> Verdict:
        """The verdict of the levels (root first) of one policy type: the first block, else the first conditional."""
        found = ALLOWED
        service = action.split(":", 1)[0].lower()
        need_allow = kind == "SCP"
        for lv, stmts in levels:
            outcome, s = _judge(_for_service(stmts, service, self._memo), action, resource, need_allow=need_allow,
                                reach_memo=self._memo)
            pols = lv.scps if kind == "SCP" else lv.rcps
            if outcome in ("blocked", "no_allow"):
                return self._verdict(kind, lv, outcome, s, pols)
            if outcome == "conditional" and found.verdict == "allowed":
                found = self._verdict(kind, lv, outcome, s, pols)
        return found

    def _rcp_levels(self, account: str) -> list[tuple[Level, list[Statement]]] | None:
        if account not in self._rcp:
            org = self.org if account == self.org.account else self.source.account(account)
            self._rcp[account] = None if org is None or org.management else \
                [(lv, [s for p in lv.rcps for s in statements(p.document, p.id)]) for lv in org.levels]
            if org is not None:
                self.policies.update((p.id, p) for lv in org.levels for p in lv.rcps)
        return self._rcp[account]

    def rcp(self, action: str, resource: str = "*") -> Verdict:
        """The RCPs' verdict on one action and resource (those of the resource's account; S3 ARNs name none: the
        principal's account stands in).

        Args:
            action: the action.
            resource: a resource ARN or pattern.

        Returns:
            The :class:`Verdict` (``allowed`` for services RCPs do not cover, service-linked roles, resources of the
            management account or of accounts outside the organization).
        """
        if self.service_linked or action.split(":", 1)[0].lower() not in rcp_services():
            return ALLOWED
        account = self._rcp_account(resource)
        key = ("rcp", action, resource, account)
        if key not in self._cache:
            self._cache[key] = self._walk("RCP", self._rcp_levels(account) or [], action, resource)
        return self._cache[key]

    def _rcp_account(self, resource: str) -> str:
        """The account whose RCPs apply to a resource (S3 ARNs name none: the principal's account stands in)."""
        parts = resource.split(":", 5)
        return parts[4] if len(parts) == 6 and parts[4] and "*" not in parts[4] else self.org.account

    def _rcp_accounts(self, service: str, resources: tuple[str, ...]) -> tuple[str, ...]:
        """The accounts whose RCPs apply to ``service`` on these resources (none when RCPs do not apply)."""
        if self.service_linked or service not in rcp_services():
            return ()
        return tuple(sorted({self._rcp_account(r) for r in resources}))

    def _uniform(self, service: str, resources: tuple[str, ...]) -> bool:
        """Do the SCPs and RCPs say the same of every action of ``service`` on these resources (every statement
        that may apply matches the whole service, :func:`_whole_service`)? Kept per service and resources."""
        accounts = self._rcp_accounts(service, resources)
        key = ("uniform", service, accounts)  # (the resources matter only by the account whose RCPs apply)
        got = self._memo.get(key)
        if got is None:
            levels = [] if self.exempt else list(self._levels)
            for a in accounts:
                levels += self._rcp_levels(a) or []
            got = self._memo[key] = all(_whole_service(_for_service(st, service, self._memo), service)
                                        for _, st in levels)
        return got

    def judge(self, action: str, resources: Iterable[str]) -> Verdict:
        """The SCPs' then the RCPs' verdict on an action granted (or called) on some resource patterns: blocked
        when blocked on every one of them.

        Args:
            action: the action.
            resources: the resource patterns (a grant's, or one call's resource).

        Returns:
            The first blocking :class:`Verdict`, else a conditional one, else :data:`ALLOWED`.
        """
        key = ("judge", action, tuple(sorted(set(resources))) or ("*",))
        if key in self._cache:
            return self._cache[key]
        service = action.split(":", 1)[0].lower()
        if self._uniform(service, key[2]):  # one verdict for every action of the service on these resources
            whole = ("judge-service", service, key[2])
            if whole not in self._cache:
                self._cache[whole] = self._judge_each(action, key[2])
            return self._cache[whole]
        accounts = self._rcp_accounts(service, key[2])
        if len(accounts) <= 1 and self._any_resource(action, service, accounts):
            # one verdict for the action on every resource of the account (thousands of objects called)
            each = ("judge-action", action, accounts)
            if each not in self._cache:
                self._cache[each] = self._judge_each(action, key[2][:1])
            return self._cache[each]
        self._cache[key] = self._judge_each(action, key[2])
        return self._cache[key]

    def _any_resource(self, action: str, service: str, accounts: tuple[str, ...]) -> bool:
        """Is every statement that matches ``action`` (SCPs, and the RCPs of ``accounts``) written for every
        resource (a Resource of ``*``, no NotResource)? Then :func:`_judge` says the same of the action on any
        resource, and one verdict serves them all. Kept per action and accounts."""
        key = ("any-resource", action, accounts)
        got = self._memo.get(key)
        if got is None:
            levels = [] if self.exempt else list(self._levels)
            for a in accounts:
                levels += self._rcp_levels(a) or []
            got = self._memo[key] = all(s.not_resources is None and "*" in s.resources
                                        for _, st in levels for s in _for_service(st, service, self._memo)
                                        if _matches_action(s, action))
        return got

    def judge_grants(self, grants: dict) -> dict[str, Verdict]:
        """:meth:`judge` of every grant, each service and resource set judged once where the policies say the same
        of all its actions (:meth:`_uniform`): a principal with ``*`` is granted some 20,000 actions.

        Args:
            grants: action -> grant (with its ``resources``), as :func:`miner.diff.granted_set` makes them.

        Returns:
            action -> :class:`Verdict`.
        """
        groups: dict[tuple, list[str]] = {}
        every = ("*",)
        for a, g in grants.items():
            r = g.resources  # most grants are on "*": no sort for them
            res = every if not r or (len(r) == 1 and "*" in r) else tuple(sorted(set(r)))
            key = (a.partition(":")[0].lower(), res)
            got = groups.get(key)
            if got is None:
                groups[key] = [a]
            else:
                got.append(a)
        out: dict[str, Verdict] = {}
        for (service, res), acts in groups.items():
            if self._uniform(service, res):
                out.update(dict.fromkeys(acts, self.judge(acts[0], res)))
            else:
                out.update((a, self.judge(a, res)) for a in acts)
        return out

    def _judge_each(self, action: str, resources: tuple[str, ...]) -> Verdict:
        """:meth:`judge` of the resources one by one."""
        found = []
        for r in resources:
            s = self.scp(action, r)
            v = s if s.verdict == "blocked" else self.rcp(action, r)
            found.append(v if v.verdict != "allowed" else s)
        some = next((v for v in found if v.verdict != "allowed"), ALLOWED)
        if some.verdict == "blocked" and not all(v.verdict == "blocked" for v in found):  # on some resources only
            some = replace(some, verdict="conditional", reason=some.reason + " on some of the granted resources")
        return some

    def review(self, grants: dict, classification, status: dict[str, str], usage) -> tuple:
        """Mark the grants SCPs or RCPs block and find the calls they deny.

        A granted action that was not used (unused or unobservable) and that an SCP or RCP blocks becomes
        ``blocked``: not unused risk, so not in the high-risk findings nor the score. An authorised call an SCP or RCP
        blocks unconditionally is an error worth reporting (the call should not exist).

        Args:
            grants: the granted set (:func:`miner.diff.granted_set`).
            classification: :func:`miner.diff.classify`'s frame (a copy: it is changed in place).
            status: action -> status, changed in place.
            usage: the authorised usage rows (action, resource, calls).

        Returns:
            (classification, status, the JSON-ready ``organizations`` section of the report).
        """
        blocked: dict[tuple, list[str]] = {}
        conditional: dict[tuple, list[str]] = {}
        keys: dict[tuple, tuple] = {}  # a verdict's JSON key, made once per verdict
        verdicts = self.judge_grants(grants)
        for a in sorted(a for a, v in verdicts.items() if v is not ALLOWED and v.verdict != "allowed"):
            v = verdicts[a]
            k = keys.get(id(v))
            if k is None:
                k = keys[id(v)] = tuple(v.as_dict().items())
            if v.verdict == "blocked" and status.get(a) in ("unused", "unobservable"):
                status[a] = "blocked"
                blocked.setdefault(k, []).append(a)
            elif v.verdict == "conditional":
                conditional.setdefault(k, []).append(a)
        if blocked and len(classification):
            gone = {a for acts in blocked.values() for a in acts}
            # (a set and a list: Series.isin hashes Arrow-backed text several times slower)
            mask = [a in gone for a in classification["action"].tolist()]
            classification.loc[mask, "status"] = "blocked"
            why = {a: f"blocked by {dict(k)['kind']} {dict(k)['policy']}" for k, acts in blocked.items() for a in acts}
            classification.loc[mask, "reason"] = classification.loc[mask, "action"].map(why)
        calls: dict[tuple, int] = {}
        if len(usage):
            for a, r, n in zip(usage["action"].tolist(), usage["resource"].tolist(),
                               (usage["calls"] if "calls" in usage.columns else [0] * len(usage)).tolist()):
                if isinstance(a, str) and isinstance(r, str):
                    v = self.judge(a, [r])
                    if v.verdict == "blocked":
                        key = (a, r, tuple(v.as_dict().items()))
                        calls[key] = calls.get(key, 0) + int(n or 0)
        section = {
            "source": self.source.label, "account": self.org.account, "management_account": self.org.management,
            "service_linked_role": self.service_linked,
            "scps_apply": self.exempt is None, "rcps_apply": not self.service_linked,
            "exempt": self.exempt,
            "levels": [{"target": lv.target, "kind": lv.kind, "name": lv.name, "scps": [p.label for p in lv.scps],
                        "rcps": [p.label for p in lv.rcps]} for lv in self.org.levels],
            "blocked": [{**dict(k), "count": len(acts), "actions": acts} for k, acts in
                        sorted(blocked.items(), key=lambda kv: (-len(kv[1]), dict(kv[0])["policy"]))],
            "conditional": [{**dict(k), "count": len(acts), "examples": acts[:5]} for k, acts in
                            sorted(conditional.items(), key=lambda kv: (-len(kv[1]), dict(kv[0])["policy"]))],
            "blocked_calls": [{"action": a, "resource": r, "calls": n, **dict(k)}
                              for (a, r, k), n in sorted(calls.items(), key=lambda kv: (kv[0][0], kv[0][1]))],
            "notes": self.notes(),
        }
        return classification, status, section

    def notes(self) -> list[str]:
        """What the evaluation could not see or left out, for the report."""
        out = []
        if self.exempt:
            out.append(f"SCPs do not apply to {self.exempt}: not evaluated for {self.principal_arn}"
                       + ("; RCPs do not apply to it either" if self.service_linked else ""))
        return out

