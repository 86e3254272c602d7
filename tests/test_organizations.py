"""SCPs and RCPs: evaluation, the organizations snapshot, the live read through moto, and their place in the diff."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pandas as pd
import pytest
from typer.testing import CliRunner

from miner import diff, iam, organizations as org
from miner.cli import app
from test_cli import strict_json
from test_usage import ACCT, ORDERS, event, s3_get, write_store

SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"
MGMT = "999988887777"
OTHER = "210987654321"
FULL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def doc(*stmts: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(stmts)}


def deny(action, resource="*", **kw) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **kw}


def allow(action, resource="*", **kw) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **kw}


def snapshot(root=(), ou=(), account=(), rcps_root=(), rcps_account=(), *, parent_ou=(), other_rcps=(),
             replace=()) -> dict:
    """An organization: root -> OU Parent -> OU Prod -> ACCT, plus the management account and OTHER under the root.

    Each argument lists the documents of the SCPs (or RCPs) attached at that level; FullAWSAccess is attached to
    every level but those in ``replace`` (where an allow-list replaces it).
    """
    pols, n = [], 0

    def add(ptype, docs, target):
        nonlocal n
        for d in docs:
            n += 1
            pols.append({"PolicySummary": {"Id": f"p-{n:08d}", "Name": f"policy{n}", "Type": ptype},
                         "Content": json.dumps(d), "Targets": [target]})

    full_targets = [t for t in ("r-root", "ou-parent", "ou-prod", ACCT, MGMT, OTHER) if t not in replace]
    pols.append({"PolicySummary": {"Id": "p-FullAWSAccess", "Name": "FullAWSAccess", "Type": org.SCP,
                                   "AwsManaged": True}, "Content": json.dumps(FULL), "Targets": full_targets})
    for ptype, docs, target in ((org.SCP, root, "r-root"), (org.SCP, parent_ou, "ou-parent"), (org.SCP, ou, "ou-prod"),
                                (org.SCP, account, ACCT), (org.RCP, rcps_root, "r-root"),
                                (org.RCP, rcps_account, ACCT), (org.RCP, other_rcps, OTHER)):
        add(ptype, docs, target)
    return {"Organization": {"Id": "o-test", "MasterAccountId": MGMT}, "Roots": [{"Id": "r-root", "Name": "Root"}],
            "OrganizationalUnits": [{"Id": "ou-parent", "Name": "Parent", "ParentId": "r-root"},
                                    {"Id": "ou-prod", "Name": "Prod", "ParentId": "ou-parent"}],
            "Accounts": [{"Id": ACCT, "Name": "prod", "ParentId": "ou-prod"},
                         {"Id": MGMT, "Name": "management", "ParentId": "r-root"},
                         {"Id": OTHER, "Name": "other", "ParentId": "r-root"}],
            "Policies": pols}


def source(data: dict) -> org.OrgSource:
    read, _ = org.parse_snapshot(data)
    return org.OrgSource("test", read)


def evaluator(data: dict, principal: str = ORDERS) -> org.OrgEvaluator:
    account = principal.split(":")[4]
    return source(data).evaluator(principal, account)


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("data, action, resource, verdict, names", [
    # FullAWSAccess everywhere: allowed
    (snapshot(), "s3:DeleteBucket", "*", "allowed", ""),
    # deny-list SCP on the OU
    (snapshot(ou=[doc(deny(["s3:DeleteBucket", "dynamodb:DeleteTable"]))]), "s3:DeleteBucket", "*", "blocked",
     "policy"),
    (snapshot(ou=[doc(deny(["s3:DeleteBucket"]))]), "s3:GetObject", "*", "allowed", ""),
    # a Deny's wildcard and case
    (snapshot(account=[doc(deny("s3:Delete*"))]), "s3:deletebucketpolicy", "*", "blocked", "policy"),
    # allow-list SCP on the OU (replaces FullAWSAccess): outside the list is blocked by the level's lack of Allow
    (snapshot(ou=[doc(allow(["s3:Get*", "s3:List*"]))], replace={"ou-prod"}), "s3:GetObject", "*", "allowed", ""),
    (snapshot(ou=[doc(allow(["s3:Get*", "s3:List*"]))], replace={"ou-prod"}), "ec2:RunInstances", "*", "blocked",
     "no SCP attached to OU Prod"),
    # FullAWSAccess beside an allow-list still allows everything
    (snapshot(ou=[doc(allow(["s3:Get*"]))]), "ec2:RunInstances", "*", "allowed", ""),
    # inheritance: an allow-list on the parent OU binds the account though its own levels allow everything
    (snapshot(parent_ou=[doc(allow("iam:*"))], replace={"ou-parent"}), "s3:GetObject", "*", "blocked", "OU Parent"),
    # a level with nothing attached counts as FullAWSAccess (the default)
    (snapshot(replace={"ou-parent"}), "s3:GetObject", "*", "allowed", ""),
    # a Deny at the root reaches every account
    (snapshot(root=[doc(deny("organizations:LeaveOrganization"))]), "organizations:LeaveOrganization", "*",
     "blocked", "root Root"),
    # NotAction: everything but IAM is denied
    (snapshot(ou=[doc({"Effect": "Deny", "NotAction": ["iam:*", "sts:*"], "Resource": "*"})]), "iam:CreateRole", "*",
     "allowed", ""),
    (snapshot(ou=[doc({"Effect": "Deny", "NotAction": ["iam:*", "sts:*"], "Resource": "*"})]), "ec2:RunInstances",
     "*", "blocked", "policy"),
    # a Condition makes a Deny conditional, never a block
    (snapshot(root=[doc(deny("*", Condition={"StringNotEquals": {"aws:RequestedRegion": ["us-east-1"]}}))]),
     "ec2:RunInstances", "*", "conditional", "policy"),
    # a Deny on some resources: the grant on * is only partly blocked; the call on one of them is blocked
    (snapshot(ou=[doc(deny("s3:PutObject", "arn:aws:s3:::prod-*"))]), "s3:PutObject", "*", "conditional", "policy"),
    (snapshot(ou=[doc(deny("s3:PutObject", "arn:aws:s3:::prod-*"))]), "s3:PutObject", "arn:aws:s3:::prod-data/x",
     "blocked", "policy"),
    (snapshot(ou=[doc(deny("s3:PutObject", "arn:aws:s3:::prod-*"))]), "s3:PutObject", "arn:aws:s3:::dev-data/x",
     "allowed", ""),
    # NotResource: a Deny on everything but one bucket
    (snapshot(ou=[doc({"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::ok", "arn:aws:s3:::ok/*"]})]),
     "s3:GetObject", "arn:aws:s3:::ok/a", "allowed", ""),
    (snapshot(ou=[doc({"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::ok", "arn:aws:s3:::ok/*"]})]),
     "s3:GetObject", "arn:aws:s3:::other/a", "blocked", "policy"),
    (snapshot(ou=[doc({"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::ok", "arn:aws:s3:::ok/*"]})]),
     "s3:GetObject", "*", "conditional", "policy"),
    # RCPs: an unconditional Deny blocks the actions of the services RCPs cover, on this account's resources
    (snapshot(rcps_root=[doc(deny("s3:*", Principal="*"))]), "s3:GetObject", "arn:aws:s3:::b/k", "blocked", "RCP"),
    (snapshot(rcps_root=[doc(deny("*", Principal="*"))]), "ec2:RunInstances", "*", "allowed", ""),
    (snapshot(rcps_account=[doc(deny("kms:Decrypt", Principal="*", Condition={
        "StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-test"}}))]), "kms:Decrypt", "*", "conditional", "RCP"),
    # ... and those of the resource's own account when it is another member
    (snapshot(other_rcps=[doc(deny("sqs:*", Principal="*"))]), "sqs:SendMessage",
     f"arn:aws:sqs:us-east-1:{OTHER}:q", "blocked", "RCP"),
    (snapshot(other_rcps=[doc(deny("sqs:*", Principal="*"))]), "sqs:SendMessage",
     f"arn:aws:sqs:us-east-1:{ACCT}:q", "allowed", ""),
    # RCPs of the management account's resources do not apply
    (snapshot(rcps_root=[doc(deny("sqs:*", Principal="*"))]), "sqs:SendMessage",
     f"arn:aws:sqs:us-east-1:{MGMT}:q", "allowed", ""),
])
def test_scp_and_rcp_verdicts(data, action, resource, verdict, names):
    v = evaluator(data).judge(action, [resource])
    assert v.verdict == verdict, v
    if verdict != "allowed":
        assert names in f"{v.kind} {v.policy} {v.reason}"
        assert v.kind in ("SCP", "RCP") and v.target


@pytest.mark.parametrize("action", ["s3:GetObject", "S3:getobject", "ec2:RunInstances", "iam:CreateRole",
                                    "s3-object-lambda:GetObject", "sts:AssumeRole", "kms:Decrypt"])
def test_the_per_service_statement_filter_never_changes_a_verdict(action):
    """The evaluator judges an action only against the statements that may name its service: the same outcome as
    judging it against all of them, whatever the patterns (no colon, wildcards in the service, NotAction)."""
    stmts = diff.statements(doc(
        allow("*"), deny("s3*"), deny("s3:Get*"), deny("*:GetObject"), deny("s?:*"), deny("S3:GETOBJECT"),
        deny(["ec2:Run*", "iam:Create*"], "arn:aws:ec2:*"), allow("i*m:*", Condition={"Bool": {"aws:x": "true"}}),
        {"Effect": "Deny", "NotAction": ["iam:*", "sts:*"], "Resource": "*"}, deny("s3-object-lambda:*"),
        {"Effect": "Deny", "NotAction": ["s3:Get*", "k?s:*"], "Resource": "*", "Condition": {"Bool": {"a:b": "x"}}},
        {"Effect": "Deny", "NotAction": ["*"], "Resource": "*"}, {"Effect": "Deny", "NotAction": "ec2*", "Resource": "*"},
        deny("kms:Decrypt", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-1"}})), "p-1")
    service = action.split(":", 1)[0].lower()
    for resource in ("*", "arn:aws:s3:::b/k", "arn:aws:ec2:us-east-1:1:instance/i-1"):
        for need_allow in (True, False):
            for cut in range(len(stmts)):  # every prefix: each statement gets to decide
                part = stmts[:cut + 1]
                want = org._judge(part, action, resource, need_allow)
                assert org._judge(org._for_service(part, service, {}), action, resource, need_allow, {}) == want
                some = org._for_service(part, service, {})
                if org._whole_service(some, service):  # then any other action of the service is judged alike
                    assert org._judge(some, f"{service}:SomethingElse", resource, need_allow) == want


@pytest.mark.parametrize("data", [
    snapshot(ou=[doc(deny("s3:PutObject", "arn:aws:s3:::prod-*"))]),
    snapshot(ou=[doc(deny("s3:PutObject"), deny("s3:GetObject", "arn:aws:s3:::prod-*"))]),
    snapshot(ou=[doc({"Effect": "Deny", "Action": "s3:*", "NotResource": ["arn:aws:s3:::ok", "arn:aws:s3:::ok/*"]})]),
    snapshot(account=[doc(allow("s3:Get*"), allow("s3:PutObject", "arn:aws:s3:::dev-*"), allow("sqs:*"))]),
    snapshot(rcps_root=[doc(deny("sqs:SendMessage", Principal="*"))], other_rcps=[doc(deny("sqs:*", Principal="*"))]),
    snapshot(root=[doc(deny("s3:DeleteObject", Condition={"Bool": {"aws:SecureTransport": "false"}}))],
             rcps_account=[doc(deny("s3:GetObject", "arn:aws:s3:::secret/*", Principal="*"))]),
])
def test_one_verdict_per_action_on_any_resource_never_changes_a_verdict(data):
    """An action that every matching statement grants or denies on ``*`` is judged once for all its resources (of
    one account): the same verdict as judging each resource alone, whatever resource came first."""
    calls = [(a, r) for a in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "sqs:SendMessage",
                              "sqs:ReceiveMessage")
             for r in ("arn:aws:s3:::dev-a/k", "arn:aws:s3:::prod-a/k", "arn:aws:s3:::ok/k", "arn:aws:s3:::secret/k",
                       f"arn:aws:sqs:us-east-1:{ACCT}:q", f"arn:aws:sqs:us-east-1:{OTHER}:q", "*")]
    for order in (calls, calls[::-1]):
        ev = evaluator(data)
        for a, r in order:
            alone = evaluator(data)._judge_each(a, (r,))
            assert ev.judge(a, [r]) == alone, (a, r)


def test_blocked_only_on_every_granted_resource():
    ev = evaluator(snapshot(ou=[doc(deny("s3:PutObject", "arn:aws:s3:::prod-*"))]))
    assert ev.judge("s3:PutObject", ["arn:aws:s3:::prod-a/*", "arn:aws:s3:::prod-b/*"]).verdict == "blocked"
    assert ev.judge("s3:PutObject", ["arn:aws:s3:::prod-a/*", "arn:aws:s3:::dev/*"]).verdict == "conditional"


@pytest.mark.parametrize("principal, exempt", [
    (f"arn:aws:iam::{ACCT}:role/aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForELB",
     "a service-linked role"),
    (f"arn:aws:iam::{MGMT}:role/admin", "the management account"),
])
def test_scps_do_not_apply_to_service_linked_roles_nor_the_management_account(principal, exempt):
    data = snapshot(root=[doc(deny("*"))], rcps_root=[doc(deny("s3:*", Principal="*"))])
    ev = evaluator(data, principal)
    assert ev.exempt == exempt
    assert ev.judge("ec2:RunInstances", ["*"]).verdict == "allowed"
    assert any(exempt in n for n in ev.notes())
    # RCPs: not for service-linked roles; the management account's own resources are exempt too
    assert ev.judge("s3:GetObject", ["arn:aws:s3:::b/k"]).verdict == "allowed"
    assert evaluator(data).judge("ec2:RunInstances", ["*"]).verdict == "blocked"  # the member account is bound


def test_an_account_outside_the_organization_has_no_evaluator():
    assert source(snapshot()).evaluator(f"arn:aws:iam::{'5' * 12}:role/x", "5" * 12) is None


def test_rcp_services_are_data():
    services = org.rcp_services()
    assert {"s3", "sts", "kms", "sqs", "secretsmanager"} <= services
    assert all(s == s.lower() and ":" not in s for s in services)


# ----------------------------------------------------------------------------- the snapshot


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["Accounts"][0].update(ParentId="ou-nowhere"), "unknown parent ou-nowhere"),
    (lambda d: d["OrganizationalUnits"][0].update(ParentId="ou-prod"), "cycle"),
    (lambda d: d["Policies"][0]["PolicySummary"].update(Type="TAG_POLICY"), "TAG_POLICY"),
    (lambda d: d["Policies"][0].update(Content="{not json"), "not a policy document"),
    (lambda d: d["Policies"][0].update(Targets="r-root"), "Targets"),
    (lambda d: d.pop("Accounts"), "not an organizations snapshot"),
])
def test_malformed_snapshot_is_one_clear_error(mutate, message):
    data = snapshot()
    mutate(data)
    with pytest.raises(org.OrgError, match=message):
        read, _ = org.parse_snapshot(data, "x.json")
        read(ACCT)


def test_snapshot_beside_the_iam_snapshot(tmp_path):
    (tmp_path / "111122223333.json").write_text(json.dumps({"RoleDetailList": []}))
    assert org.snapshot_source(tmp_path) is None
    (tmp_path / org.SNAPSHOT_NAME).write_text(json.dumps(snapshot()))
    assert [n for n, _ in iam.load_snapshot(tmp_path)] == ["111122223333.json"]  # not read as IAM's
    for path in (tmp_path, tmp_path / "111122223333.json", tmp_path / org.SNAPSHOT_NAME):
        found = org.snapshot_source(path)
        assert found is not None and [lv.kind for lv in found.account(ACCT).levels] == ["root", "ou", "ou", "account"]
    (tmp_path / org.SNAPSHOT_NAME).write_text("{")
    with pytest.raises(iam.IamError, match="cannot read organizations snapshot"):
        org.snapshot_source(tmp_path)


def test_to_snapshot_round_trips():
    data = snapshot(ou=[doc(deny("s3:DeleteBucket"))], rcps_root=[doc(deny("s3:*", Principal="*"))])
    first = source(data).account(ACCT)
    again = source(org.to_snapshot([first], data["Organization"])).account(ACCT)
    assert again.levels == first.levels and again.management == first.management


# ----------------------------------------------------------------------------- live, through moto


def _moto_org(endpoint: str):
    c = boto3.client("organizations", endpoint_url=endpoint, region_name="us-east-1")
    c.create_organization(FeatureSet="ALL")
    root = c.list_roots()["Roots"][0]["Id"]
    c.enable_policy_type(RootId=root, PolicyType=org.RCP)
    parent = c.create_organizational_unit(ParentId=root, Name="Workloads")["OrganizationalUnit"]["Id"]
    prod = c.create_organizational_unit(ParentId=parent, Name="Prod")["OrganizationalUnit"]["Id"]
    account = c.create_account(Email="prod@example.com", AccountName="prod")["CreateAccountStatus"]["AccountId"]
    c.move_account(AccountId=account, SourceParentId=root, DestinationParentId=prod)

    def attach(name, ptype, d, target):
        pid = c.create_policy(Content=json.dumps(d), Description=name, Name=name, Type=ptype)["Policy"][
            "PolicySummary"]["Id"]
        c.attach_policy(PolicyId=pid, TargetId=target)

    attach("ProtectProd", org.SCP, doc(deny(["s3:DeleteBucket", "dynamodb:DeleteTable"])), prod)
    attach("NoLeaving", org.SCP, doc(deny("organizations:LeaveOrganization")), root)
    attach("Perimeter", org.RCP, doc(deny("s3:*", Principal="*", Condition={
        "StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-x"}})), account)
    return c, account, (root, parent, prod)


def test_live_read_through_moto(aws_env):
    c, account, (root, parent, prod) = _moto_org(aws_env)
    src = org.live_source(endpoint_url=aws_env)
    got = src.account(account)
    assert [(lv.kind, lv.target) for lv in got.levels] == [("root", root), ("ou", parent), ("ou", prod),
                                                           ("account", account)]
    assert [lv.name for lv in got.levels][:3] == ["Root", "Workloads", "Prod"]
    assert {p.name for p in got.levels[2].scps} == {"FullAWSAccess", "ProtectProd"}
    assert {p.name for p in got.levels[3].rcps} == {"RCPFullAWSAccess", "Perimeter"}
    assert not got.management and src.account("123456789012").management  # moto's caller is the management account
    ev = src.evaluator(f"arn:aws:iam::{account}:role/app", account)
    v = ev.judge("s3:DeleteBucket", ["*"])
    assert v.verdict == "blocked" and v.policy.startswith("ProtectProd (p-") and "OU Prod" in v.target
    assert ev.judge("s3:GetObject", ["arn:aws:s3:::b/k"]).verdict == "conditional"  # the RCP's Condition
    assert ev.judge("organizations:LeaveOrganization", ["*"]).verdict == "blocked"
    # the snapshot of what was read evaluates the same
    again = source(org.to_snapshot([got])).evaluator(f"arn:aws:iam::{account}:role/app", account)
    assert again.judge("s3:DeleteBucket", ["*"]) == v
    assert src.notes == []


def test_live_with_rcps_not_enabled_reads_the_scps(aws_env):
    from botocore.exceptions import ClientError

    c, account, _ = _moto_org(aws_env)
    real = c.get_paginator

    class NoRcps:
        def __init__(self, op):
            self.pages = real(op)

        def paginate(self, **kw):
            if kw.get("Filter") == org.RCP:
                raise ClientError({"Error": {"Code": "PolicyTypeNotEnabledException", "Message": "not enabled"}},
                                  "ListPoliciesForTarget")
            return self.pages.paginate(**kw)

    c.get_paginator = NoRcps
    src = org.live_source(client=c)
    got = src.account(account)
    assert {p.name for p in got.levels[2].scps} == {"FullAWSAccess", "ProtectProd"}
    assert all(not lv.rcps for lv in got.levels)
    assert src.notes == ["RCPs are not enabled in the organization: none evaluated"]


def test_live_without_organizations_access_is_one_note(aws_env):
    src = org.live_source(endpoint_url=aws_env)  # moto: no organization exists
    assert src.account(ACCT) is None and src.account("444455556666") is None
    assert len(src.notes) == 1 and src.notes[0].startswith("SCPs and RCPs not read (Organizations said ")


def test_live_without_credentials_is_one_note(no_aws_credentials):
    src = org.live_source(endpoint_url="http://127.0.0.1:9")
    assert src.account(ACCT) is None
    assert len(src.notes) == 1 and "SCPs and RCPs not read" in src.notes[0]


# ----------------------------------------------------------------------------- in the diff


GRANTS = doc(allow(["s3:*", "dynamodb:GetItem"]))


def _usage(rows):
    return pd.DataFrame(rows, columns=["action", "resource", "calls"])


def test_blocked_grants_are_not_unused_nor_high_risk():
    ev = evaluator(snapshot(ou=[doc(deny(["s3:*"]))]))
    usage = _usage([("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{ACCT}:table/t", 3)])
    plain = diff.compare([("inline p", GRANTS)], [], usage, principal_arn=ORDERS)
    rep = diff.compare([("inline p", GRANTS)], [], usage, principal_arn=ORDERS, org=ev)
    assert plain.count("unused") > 100 and any(h["rule"].startswith("s3:*") for h in plain.high_risk)
    assert rep.count("unused") == 0 and rep.count("blocked") == plain.count("unused") + plain.count("unobservable")
    assert rep.high_risk == []
    (b,) = rep.org["blocked"]
    assert b["kind"] == "SCP" and b["policy"].startswith("policy") and "s3:DeleteBucket" in b["actions"]
    assert rep.org["blocked_calls"] == []
    d = rep.to_dict()
    assert "s3:GetObject" in d["blocked"] and "s3:GetObject" not in d["unused"]
    json.loads(json.dumps(d, allow_nan=False))
    assert "blocked by SCP or RCP" in diff.render_text(rep)


def test_a_call_an_scp_denies_is_an_error():
    ev = evaluator(snapshot(ou=[doc(deny("s3:GetObject", "arn:aws:s3:::secret-*"))]))
    usage = _usage([("s3:GetObject", "arn:aws:s3:::secret-bucket/k", 7), ("s3:GetObject", "arn:aws:s3:::open/k", 2)])
    rep = diff.compare([("inline p", GRANTS)], [], usage, principal_arn=ORDERS, org=ev)
    (call,) = rep.org["blocked_calls"]
    assert (call["action"], call["resource"], call["calls"], call["kind"]) == (
        "s3:GetObject", "arn:aws:s3:::secret-bucket/k", 7, "SCP")
    text = diff.render_text(rep)
    assert "ERROR: authorised calls an SCP or RCP denies (1)" in text and "secret-bucket/k (7 calls)" in text


def test_hostile_policy_names_are_escaped_in_text():
    data = snapshot(ou=[doc(deny("s3:*"))])
    data["Policies"][1]["PolicySummary"]["Name"] = "evil\x1b[31m\nname"
    rep = diff.compare([("inline p", GRANTS)], [], _usage([]), principal_arn=ORDERS, org=evaluator(data))
    text = diff.render_text(rep)
    assert "\x1b" not in text and "evil\\x1b[31m\\nname" in text


# ----------------------------------------------------------------------------- the command line


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


WINDOW = ["--since", "2026-08-01", "--until", "2026-08-31"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    evs = [s3_get(key=f"k{i}", when=f"2026-08-{1 + i:02d}T10:00:00Z") for i in range(3)]
    evs += [event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "orders"}, category="Data",
                  when="2026-08-05T10:00:00Z")]
    return write_store(tmp_path_factory.mktemp("org") / "store", evs)


def _iam_dir(tmp_path: Path, org_data: dict | None) -> Path:
    d = tmp_path / "iam"
    d.mkdir()
    (d / f"{ACCT}.json").write_text(json.dumps({"RoleDetailList": [{
        "RoleName": "orders-api", "Arn": ORDERS, "Path": "/service-role/", "AttachedManagedPolicies": [],
        "RolePolicyList": [{"PolicyName": "broad", "PolicyDocument": GRANTS}]}], "Policies": []}))
    if org_data is not None:
        (d / org.SNAPSHOT_NAME).write_text(json.dumps(org_data))
    return d


def test_cli_suggest_diff_reports_blocked_grants_and_denied_calls(store, tmp_path):
    data = snapshot(ou=[doc(deny(["s3:Delete*", "s3:PutBucketPolicy"])),
                        doc({"Sid": "NoOrdersBucket", "Effect": "Deny", "Action": "s3:GetObject",
                             "Resource": "arn:aws:s3:::orders-bucket/*"})])
    snap = _iam_dir(tmp_path, data)
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap,
            "--format", "json")
    assert r.exit_code == 0, r.output
    rep = strict_json(r.stdout)
    assert "s3:DeleteBucket" in rep["blocked"] and "s3:DeleteBucket" not in rep["unused"]
    calls = rep["organizations"]["blocked_calls"]  # one per object read
    assert {(c["action"], c["statement"], c["kind"]) for c in calls} == {("s3:GetObject", "NoOrdersBucket", "SCP")}
    assert sum(c["calls"] for c in calls) == 3
    text = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap)
    assert text.exit_code == 0 and "ERROR: authorised calls an SCP or RCP denies" in text.stdout


def test_cli_bad_organizations_snapshot_is_exit_2(store, tmp_path):
    snap = _iam_dir(tmp_path, {"Accounts": [{"Id": ACCT, "ParentId": "ou-gone"}]})
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap)
    assert r.exit_code == 2 and "ou-gone" in r.stderr and "Traceback" not in r.output
    r = run("review", "--store", store, *WINDOW, "-q", "--iam-snapshot", snap, "--format", "json")
    assert r.exit_code == 2 and "ou-gone" in r.stderr


@pytest.mark.parametrize("fmt", ["md", "html", "csv", "json"])
def test_cli_review_shows_blocked_grants_escaped(store, tmp_path, fmt):
    data = snapshot(ou=[doc(deny(["s3:Delete*"]))])
    data["Policies"][1]["PolicySummary"]["Name"] = "<b>x</b>|`y`"
    snap = _iam_dir(tmp_path, data)
    r = run("review", "--store", store, *WINDOW, "-q", "--iam-snapshot", snap, "--format", fmt,
            *(["--out", tmp_path / "r.html"] if fmt == "html" else []))
    assert r.exit_code == 0, r.output
    out = (tmp_path / "r.html").read_text() if fmt == "html" else r.stdout
    if fmt == "json":
        rv = strict_json(out)
        (p,) = [p for p in rv["principals"] if p["arn"] == ORDERS]
        assert p["blocked_count"] > 0 and rv["summary"]["blocked_by_org"] == p["blocked_count"]
        assert any("block" in n and "not counted as unused" in n for n in rv["notes"])
        assert all(not a.startswith("s3:Delete") for a in p["unused_sample"])
    elif fmt == "csv":
        assert "blocked_by_org" in out.splitlines()[0]
    elif fmt == "md":
        assert "## Blocked by SCP or RCP" in out and "SCP ``<b>x</b>\\|`y` (p-00000001)``" in out  # a code span
    else:
        assert 'id="org-blocked"' in out and "<b>x</b>" not in out and "&lt;b&gt;x&lt;/b&gt;" in out


def test_sample_review_shows_the_sample_scp(sample_review):
    by = {p["name"]: p for p in sample_review["principals"]}
    orders = by["orders-api-task"]["organizations"]
    (b,) = orders["blocked"]
    assert b["policy"] == "ProtectProdData (p-protectprod1)" and "s3:DeleteBucket" in b["actions"]
    assert orders["blocked_calls"] == []  # nothing the sample principals did is denied
    assert by["audit-readonly"]["organizations"]["blocked"][0]["policy"] == "SecurityAuditOnly (p-securityro1)"
    assert any("ProtectProdData" in n for n in sample_review["notes"])


def test_cli_live_reads_organizations_with_the_iam_credentials(store, aws_env):
    c, _, _ = _moto_org(aws_env)
    iam_client = boto3.client("iam", endpoint_url=aws_env, region_name="us-east-1")
    role = iam_client.create_role(RoleName="admin", AssumeRolePolicyDocument=json.dumps(doc(
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"})))["Role"]
    iam_client.put_role_policy(RoleName="admin", PolicyName="broad", PolicyDocument=json.dumps(GRANTS))
    arn = role["Arn"]  # in moto's account 123456789012: the organization's management account
    live_store = write_store(Path(str(store)).parent / "live-org", [s3_get(arn, account=arn.split(":")[4],
                                                                         when="2026-08-10T00:00:00Z")])
    r = run("suggest", "--principal", arn, "--store", live_store, *WINDOW, "-q", "--diff", "--endpoint-url", aws_env,
            "--format", "json")
    assert r.exit_code == 0, r.output
    rep = strict_json(r.stdout)
    o = rep["organizations"]
    assert o["source"].startswith("live Organizations") and o["management_account"] and not o["scps_apply"]
    assert o["exempt"] == "the management account" and rep["blocked"] == []
    assert any("SCPs do not apply to the management account" in n for n in o["notes"])
    assert [lv["kind"] for lv in o["levels"]] == ["root", "account"]


def test_cli_organizations_writes_the_snapshot_that_iam_snapshot_reads(aws_env, tmp_path):
    """`miner organizations` reads the organization live into `organizations.json`; beside an IAM snapshot it judges
    grants as the live read does."""
    c, account, (root, parent, prod) = _moto_org(aws_env)
    out = tmp_path / "iam" / org.SNAPSHOT_NAME
    r = run("organizations", "--endpoint-url", aws_env, "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and f"-> {out}" in r.stderr
    snap = json.loads(out.read_text())
    assert account in {a["Id"] for a in snap["Accounts"]} and snap["Organization"]["MasterAccountId"]
    arn = f"arn:aws:iam::{account}:role/app"
    offline = org.snapshot_source(out.parent).evaluator(arn, account)
    live = org.live_source(endpoint_url=aws_env).evaluator(arn, account)
    for action, res in (("s3:DeleteBucket", "*"), ("s3:GetObject", "arn:aws:s3:::b/k"),
                        ("organizations:LeaveOrganization", "*"), ("ec2:RunInstances", "*")):
        assert offline.judge(action, [res]) == live.judge(action, [res]), action
    one = run("organizations", "--endpoint-url", aws_env, "--account", account, "-q")
    assert one.exit_code == 0 and [a["Id"] for a in strict_json(one.stdout)["Accounts"]] == [account]


@pytest.mark.parametrize("args, expect", [
    (["--account", "12345"], "12-digit account ids"),
    (["-o", "org.yaml"], "unknown extension"),
    ([], "cannot read the organization: Organizations said"),  # moto without an organization
])
def test_cli_organizations_errors_are_one_line(aws_env, args, expect):
    r = run("organizations", "--endpoint-url", aws_env, *args)
    assert r.exit_code == 2 and expect in r.stderr and "Traceback" not in r.output
