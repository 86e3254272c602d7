"""The IAM policies attached to a role or user today: read live through boto3 or from an authorization-details snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote


class IamError(Exception):
    """The attached policies could not be read (unknown principal, bad snapshot, no credentials)."""


@dataclass(frozen=True)
class PolicySource:
    """One policy document that applies to a principal, and where it comes from."""

    name: str
    kind: str  # "managed" | "inline" | "group-managed" | "group-inline" | "boundary"
    document: dict | None  # None when the document could not be read
    arn: str | None = None
    group: str | None = None

    @property
    def label(self) -> str:
        """A short human label, e.g. ``managed ReadOnlyAccess`` or ``inline (group devs) s3-access``."""
        via = f" (group {self.group})" if self.group else ""
        kind = self.kind.replace("group-", "")
        return f"{kind}{via} {self.name}"

    @property
    def ref(self) -> dict:
        """How a finding names the policy: ``{"policy": managed ARN or inline name, "policy_kind", "group"}``."""
        return {"policy": self.arn or self.name, "policy_kind": self.kind, "group": self.group}


@dataclass
class AttachedPolicies:
    """Everything that grants (or bounds) a principal's permissions in IAM."""

    principal_arn: str
    kind: str  # "role" | "user"
    name: str
    policies: list[PolicySource] = field(default_factory=list)
    boundary: PolicySource | None = None
    source: str = ""
    groups: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # policies whose documents could not be read

    @property
    def documents(self) -> list[tuple[str, dict]]:
        """(label, document) of every readable identity policy (the boundary excluded)."""
        return [(p.label, p.document) for p in self.policies if p.document is not None]

    @property
    def refs(self) -> dict[str, dict]:
        """label -> :attr:`PolicySource.ref` of every policy (for :func:`miner.diff.compare`)."""
        return {p.label: p.ref for p in self.policies}


def decode_document(doc: Any) -> dict:
    """A policy document as a dict, from a dict, JSON text or URL-encoded JSON text (as the IAM API returns it).

    Args:
        doc: the document in any of those forms.

    Returns:
        The parsed document.

    Raises:
        IamError: when it is not a JSON object.
    """
    if isinstance(doc, dict):
        return _checked(doc)
    if isinstance(doc, (bytes, str)):
        text = doc.decode() if isinstance(doc, bytes) else doc
        for candidate in (text, unquote(text)):
            try:
                obj = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return _checked(obj)
    raise IamError(f"not a policy document: {str(doc)[:80]!r}")


_LIST_FIELDS = ("Action", "NotAction", "Resource", "NotResource")


def _checked(doc: dict) -> dict:
    """The document itself when its statements have the shape IAM accepts; else :class:`IamError` saying why."""
    raw = doc.get("Statement") or []
    for s in [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else [raw]:
        if not isinstance(s, dict):
            raise IamError(f"malformed policy document: a Statement is {type(s).__name__}, not an object: {str(s)[:80]!r}")
        for key in _LIST_FIELDS:
            value = s.get(key)
            if value is not None and not isinstance(value, str) and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise IamError(f"malformed policy document: {key} must be a string or a list of strings, "
                               f"got {str(value)[:80]!r}")
    return doc


def principal_parts(arn: str) -> tuple[str, str, str]:
    """(account, kind, name) of an IAM role or user ARN (the name without its path).

    Args:
        arn: e.g. ``arn:aws:iam::111122223333:role/service-role/orders-api-task``.

    Returns:
        e.g. ``("111122223333", "role", "orders-api-task")``.

    Raises:
        IamError: for ARNs that are not IAM roles or users (root, services, sessions).
    """
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam":
        raise IamError(f"{arn!r} is not an IAM role or user ARN: --diff needs a role or a user")
    res = parts[5]
    kind = res.split("/", 1)[0]
    if kind not in ("role", "user") or "/" not in res:
        raise IamError(f"{arn!r} is not an IAM role or user ARN: --diff needs a role or a user")
    return parts[4], kind, res.rsplit("/", 1)[1]


# ----------------------------------------------------------------------------- snapshot


def load_snapshot(path: Path) -> list[tuple[str, dict]]:
    """Read ``aws iam get-account-authorization-details`` output: one JSON file, or a directory of them.

    Args:
        path: a file, or a directory holding one ``*.json`` file per account.

    Returns:
        (file name, parsed JSON) pairs, sorted by file name.

    Raises:
        IamError: when the path is missing, holds no JSON files, or a file is not such output.
    """
    path = Path(path)
    if not path.exists():
        raise IamError(f"no IAM snapshot at {path}")
    # organizations.json beside the account files is the SCP/RCP snapshot (miner.organizations), not IAM's
    files = sorted(f for f in path.glob("*.json") if f.name != "organizations.json") if path.is_dir() else [path]
    if not files:
        raise IamError(f"no *.json files in {path}: expected `aws iam get-account-authorization-details` output")
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IamError(f"cannot read IAM snapshot {f}: {e}") from None
        if not isinstance(data, dict) or not any(k in data for k in ("RoleDetailList", "UserDetailList", "Policies")):
            raise IamError(f"{f} is not `aws iam get-account-authorization-details` output "
                           f"(no RoleDetailList/UserDetailList/Policies)")
        out.append((f.name, data))
    return out


def _default_version(policy: dict) -> dict | None:
    versions = policy.get("PolicyVersionList") or []
    default = policy.get("DefaultVersionId")
    for v in versions:
        if v.get("IsDefaultVersion") or (default and v.get("VersionId") == default):
            return decode_document(v["Document"]) if v.get("Document") is not None else None
    return None


def from_snapshot(path: Path, principal_arn: str, *,
                  snapshots: list[tuple[str, dict]] | None = None) -> AttachedPolicies:
    """The policies attached to a role or user, from a snapshot file or directory.

    Managed policy documents come from the snapshot's ``Policies`` list (default version); AWS managed policies
    are there only when the snapshot was taken with ``--filter AWSManagedPolicy`` too: otherwise they are
    listed in ``missing``.

    Args:
        path: the snapshot file or directory (see :func:`load_snapshot`).
        principal_arn: the role or user ARN.
        snapshots: the snapshot as :func:`load_snapshot` read it (to read many principals from one reading).

    Returns:
        The :class:`AttachedPolicies`.

    Raises:
        IamError: when the principal is not in the snapshot.
    """
    account, kind, name = principal_parts(principal_arn)
    # Prefer the file named after the account, then any file holding the principal.
    snaps = sorted(load_snapshot(path) if snapshots is None else snapshots, key=lambda s: (account not in s[0], s[0]))
    list_key = "RoleDetailList" if kind == "role" else "UserDetailList"
    name_key = "RoleName" if kind == "role" else "UserName"
    for fname, data in snaps:
        for entry in data.get(list_key) or []:
            arn = entry.get("Arn") or ""
            if arn.lower() == principal_arn.lower() or (not arn and entry.get(name_key, "").lower() == name.lower()):
                return _attached_from_snapshot(data, entry, principal_arn, kind, fname)
    names = sorted({e.get(name_key, "") for _, d in snaps for e in d.get(list_key) or []})
    import difflib

    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise IamError(f"{kind} {principal_arn} is not in the IAM snapshot {path}{hint}")


def _attached_from_snapshot(data: dict, entry: dict, principal_arn: str, kind: str, fname: str) -> AttachedPolicies:
    managed = {p.get("Arn"): p for p in data.get("Policies") or []}
    groups = {g.get("GroupName"): g for g in data.get("GroupDetailList") or []}
    out = AttachedPolicies(principal_arn, kind, entry.get("RoleName") or entry.get("UserName") or "",
                           source=f"snapshot {fname}")

    def managed_document(arn: str) -> dict | None:
        pol = managed.get(arn)
        return _default_version(pol) if pol else None

    def add_managed(arn: str, pname: str, kind_: str, group: str | None = None) -> None:
        doc = managed_document(arn)
        if doc is None:
            out.missing.append(f"{pname} ({arn}): document not in the snapshot")
        out.policies.append(PolicySource(pname, kind_, doc, arn, group))

    def add_inline(pol: dict, kind_: str, group: str | None = None) -> None:
        pname = pol.get("PolicyName", "")
        try:
            doc = decode_document(pol.get("PolicyDocument"))
        except IamError as e:
            raise IamError(f"inline policy {pname!r} in {fname}: {e}") from None
        out.policies.append(PolicySource(pname, kind_, doc, None, group))

    for att in entry.get("AttachedManagedPolicies") or []:
        add_managed(att.get("PolicyArn", ""), att.get("PolicyName", ""), "managed")
    for pol in entry.get("RolePolicyList" if kind == "role" else "UserPolicyList") or []:
        add_inline(pol, "inline")
    if kind == "user":
        for gname in entry.get("GroupList") or []:
            out.groups.append(gname)
            g = groups.get(gname)
            if g is None:
                out.missing.append(f"group {gname}: not in the snapshot")
                continue
            for att in g.get("AttachedManagedPolicies") or []:
                add_managed(att.get("PolicyArn", ""), att.get("PolicyName", ""), "group-managed", gname)
            for pol in g.get("GroupPolicyList") or []:
                add_inline(pol, "group-inline", gname)
    pb = entry.get("PermissionsBoundary") or {}
    if pb.get("PermissionsBoundaryArn"):
        arn = pb["PermissionsBoundaryArn"]
        doc = managed_document(arn)
        if doc is None:
            out.missing.append(f"permissions boundary {arn}: document not in the snapshot")
        out.boundary = PolicySource(arn.rsplit("/", 1)[-1], "boundary", doc, arn)
    return out


# ----------------------------------------------------------------------------- live


def iam_client(profile: str | None = None, endpoint_url: str | None = None, region: str | None = None):
    """A boto3 IAM client.

    Args:
        profile: an AWS CLI profile name.
        endpoint_url: an alternative endpoint (e.g. a moto server).
        region: the region for signing (IAM is global; default us-east-1).

    Returns:
        The client.
    """
    import boto3

    session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    return session.client("iam", endpoint_url=endpoint_url, region_name=region or session.region_name or "us-east-1")


def _paginate(client, op: str, key: str, **kw) -> list:
    out = []
    for page in client.get_paginator(op).paginate(**kw):
        out.extend(page.get(key) or [])
    return out


def _managed_document(client, arn: str, cache: dict) -> dict:
    if arn not in cache:
        pol = client.get_policy(PolicyArn=arn)["Policy"]
        ver = client.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])["PolicyVersion"]
        cache[arn] = decode_document(ver["Document"])
    return cache[arn]


def from_live(principal_arn: str, *, profile: str | None = None, endpoint_url: str | None = None,
              region: str | None = None, client=None) -> AttachedPolicies:
    """The policies attached to a role or user now, read through the IAM API.

    Reads attached managed policies (default versions), inline policies, the permissions boundary and, for a
    user, the managed and inline policies of each group.

    Args:
        principal_arn: the role or user ARN.
        profile: an AWS CLI profile name.
        endpoint_url: an alternative IAM endpoint (e.g. a moto server).
        region: signing region.
        client: an IAM client to use instead of creating one.

    Returns:
        The :class:`AttachedPolicies`.

    Raises:
        IamError: when the principal does not exist, or credentials/permissions are missing.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    _, kind, name = principal_parts(principal_arn)
    try:
        client = client or iam_client(profile, endpoint_url, region)
        where = f"live IAM{' at ' + endpoint_url if endpoint_url else ''}"
        out = AttachedPolicies(principal_arn, kind, name, source=where)
        cache: dict[str, dict] = {}
        if kind == "role":
            info = client.get_role(RoleName=name)["Role"]
            attached = _paginate(client, "list_attached_role_policies", "AttachedPolicies", RoleName=name)
            inline = _paginate(client, "list_role_policies", "PolicyNames", RoleName=name)
            get_inline = lambda pn: client.get_role_policy(RoleName=name, PolicyName=pn)["PolicyDocument"]  # noqa: E731
        else:
            info = client.get_user(UserName=name)["User"]
            attached = _paginate(client, "list_attached_user_policies", "AttachedPolicies", UserName=name)
            inline = _paginate(client, "list_user_policies", "PolicyNames", UserName=name)
            get_inline = lambda pn: client.get_user_policy(UserName=name, PolicyName=pn)["PolicyDocument"]  # noqa: E731
        if info.get("Arn") and info["Arn"].lower() != principal_arn.lower():
            raise IamError(f"IAM has {info['Arn']}, not {principal_arn}: is this the right account/profile?")
        for att in sorted(attached, key=lambda a: a["PolicyArn"]):
            out.policies.append(PolicySource(att["PolicyName"], "managed",
                                             _managed_document(client, att["PolicyArn"], cache), att["PolicyArn"]))
        for pn in sorted(inline):
            out.policies.append(PolicySource(pn, "inline", decode_document(get_inline(pn))))
        if kind == "user":
            for g in sorted(_paginate(client, "list_groups_for_user", "Groups", UserName=name), key=lambda g: g["GroupName"]):
                gname = g["GroupName"]
                out.groups.append(gname)
                for att in sorted(_paginate(client, "list_attached_group_policies", "AttachedPolicies", GroupName=gname),
                                  key=lambda a: a["PolicyArn"]):
                    out.policies.append(PolicySource(att["PolicyName"], "group-managed",
                                                     _managed_document(client, att["PolicyArn"], cache),
                                                     att["PolicyArn"], gname))
                for pn in sorted(_paginate(client, "list_group_policies", "PolicyNames", GroupName=gname)):
                    doc = client.get_group_policy(GroupName=gname, PolicyName=pn)["PolicyDocument"]
                    out.policies.append(PolicySource(pn, "group-inline", decode_document(doc), None, gname))
        pb = (info.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if pb:
            out.boundary = PolicySource(pb.rsplit("/", 1)[-1], "boundary", _managed_document(client, pb, cache), pb)
        return out
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchEntity", "NoSuchEntityException"):
            raise IamError(f"{kind} {name} does not exist in IAM ({e.response['Error'].get('Message', '')})") from None
        raise IamError(f"reading IAM for {principal_arn} failed: {code}: {e.response.get('Error', {}).get('Message', e)}") from None
    except BotoCoreError as e:
        raise IamError(f"cannot reach IAM: {e} (set credentials, --profile or --endpoint-url, or use --iam-snapshot)") from None
