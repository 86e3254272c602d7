"""Tests for miner.diff: the policy evaluator, granted sets, classification, risk flags and the unified diff."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner import diff
from miner.catalog import get_catalog

A = "111122223333"


def doc(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **kw) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **kw}


def deny(action, resource="*", **kw) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **kw}


# ----------------------------------------------------------------------------- evaluator

def test_action_matching_is_case_insensitive_and_wildcarded():
    p = [doc(allow("S3:get*", "arn:aws:s3:::b/*"))]
    assert diff.is_allowed(p, "s3:GetObject", "arn:aws:s3:::b/k/deep")
    assert not diff.is_allowed(p, "s3:PutObject", "arn:aws:s3:::b/k")
    assert not diff.is_allowed(p, "s3:GetObject", "arn:aws:s3:::bb/k")


def test_resource_matching_is_case_sensitive_with_question_mark():
    p = [doc(allow("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:q?"))]
    assert diff.is_allowed(p, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:q1")
    assert not diff.is_allowed(p, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:Q1")
    assert not diff.is_allowed(p, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:q12")


def test_star_usage_needs_a_star_grant():
    assert not diff.is_allowed([doc(allow("kms:Decrypt", f"arn:aws:kms:us-east-1:{A}:key/*"))], "kms:Decrypt", "*")
    assert diff.is_allowed([doc(allow("kms:Decrypt"))], "kms:Decrypt", "*")


def test_explicit_deny_wins_and_conditional_deny_is_read_optimistically():
    p = [doc(allow("s3:*")), doc(deny("s3:DeleteObject", "arn:aws:s3:::b/*"))]
    assert not diff.is_allowed(p, "s3:DeleteObject", "arn:aws:s3:::b/k")
    assert diff.is_allowed(p, "s3:DeleteObject", "arn:aws:s3:::c/k")
    cond = [doc(allow("s3:*"), deny("s3:*", Condition={"Bool": {"aws:SecureTransport": "false"}}))]
    assert diff.is_allowed(cond, "s3:GetObject", "arn:aws:s3:::b/k")


def test_not_action_and_not_resource():
    p = [doc({"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"})]
    assert diff.is_allowed(p, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not diff.is_allowed(p, "iam:CreateUser", "*")
    q = [doc({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::secret/*"})]
    assert diff.is_allowed(q, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not diff.is_allowed(q, "s3:GetObject", "arn:aws:s3:::secret/k")


def test_permissions_boundary_intersects():
    p = [doc(allow("*"))]
    b = [doc(allow(["s3:*", "ec2:Describe*"]))]
    assert diff.is_allowed(p, "s3:GetObject", "arn:aws:s3:::b/k", b)
    assert not diff.is_allowed(p, "iam:CreateUser", "*", b)
    assert diff.Evaluator(p, b)("ec2:DescribeInstances", "*")


def test_policy_variables_match_anything():
    p = [doc(allow("s3:GetObject", "arn:aws:s3:::home/${aws:username}/*"))]
    assert diff.is_allowed(p, "s3:GetObject", "arn:aws:s3:::home/alice/x")


# ----------------------------------------------------------------------------- granted set

def test_granted_set_expands_wildcards_not_action_deny_and_boundary():
    cat = get_catalog()
    g = diff.granted_set([("p", doc(allow("s3:Get*"), deny("s3:GetObjectAcl")))], catalog=cat)
    assert "s3:GetObject" in g and "s3:GetObjectAcl" not in g and g["s3:GetObject"].all_resources
    assert set(g) == cat.expand("s3:Get*") - {"s3:GetObjectAcl"}
    narrow = diff.granted_set([("p", doc(allow("s3:GetObject"), deny("s3:GetObject", "arn:aws:s3:::x/*")))])
    assert narrow["s3:GetObject"].partially_denied
    na = diff.granted_set([("p", doc({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))])
    assert "s3:GetObject" in na and not any(a.startswith("iam:") for a in na)
    bounded = diff.granted_set([("p", doc(allow("*")))], boundary=[doc(allow("sqs:*"))])
    assert set(bounded) == cat.expand("sqs:*")


def test_suggested_actions_counts_expanded_actions():
    assert diff.suggested_actions([doc(allow(["s3:GetObject*", "sqs:SendMessage"], "arn:aws:s3:::b/*"))]) == \
        get_catalog().expand("s3:GetObject*") | {"sqs:SendMessage"}


# ----------------------------------------------------------------------------- classification and risk

def test_classify_used_unused_and_unobservable():
    grants = diff.granted_set([("p", doc(allow(["s3:GetObject", "s3:DeleteBucket", "logs:PutLogEvents",
                                                "dynamodb:GetItem"])))])
    cls = diff.classify(grants, {"dynamodb:GetItem"}, {"s3.amazonaws.com"}).set_index("action")
    assert cls.loc["dynamodb:GetItem", "status"] == "used"
    assert cls.loc["s3:GetObject", "status"] == "unused"  # the trail logged S3 data events: truly unused
    assert cls.loc["s3:DeleteBucket", "status"] == "unused"
    assert cls.loc["logs:PutLogEvents", "status"] == "unobservable" and "never logs" in cls.loc["logs:PutLogEvents", "reason"]
    no_data = diff.classify(grants, set(), set()).set_index("action")
    assert no_data.loc["s3:GetObject", "status"] == "unobservable"
    assert "no s3.amazonaws.com data events" in no_data.loc["s3:GetObject", "reason"]


def test_high_risk_flags_unused_wildcards_and_escalation():
    grants = diff.granted_set([("p", doc(allow("s3:*"), allow(["iam:PassRole", "lambda:CreateFunction"])))])
    cls = diff.classify(grants, {"s3:GetObject"}, {"s3.amazonaws.com"})
    found = diff.high_risk(grants, cls)
    rules = {h["rule"]: h for h in found}
    assert "s3:* on *" in rules and "s3:GetObject" not in rules["s3:* on *"]["actions"]
    # PassRole and CreateFunction + PassRole are one statement: one finding, both rules named
    assert len(found) == 2 and rules["iam:PassRole on *"]["rules"] == ["iam:PassRole on *",
                                                                         "lambda:CreateFunction + iam:PassRole"]
    scoped = diff.granted_set([("p", doc(allow("iam:PassRole", f"arn:aws:iam::{A}:role/x")))])
    assert diff.high_risk(scoped, diff.classify(scoped, set(), set())) == []
    used = diff.granted_set([("p", doc(allow("iam:PassRole")))])
    assert diff.high_risk(used, diff.classify(used, {"iam:PassRole"}, set())) == []  # resources not known: no claim


def test_data_files_name_real_actions_and_say_why():
    cat = get_catalog()
    for row in diff.unobservable_rules():
        assert cat.expand(row["action"]), row
        assert row["kind"] in ("data_event", "never_logged") and row["comment"] and row["source"].startswith("https://")
        assert row["kind"] == "never_logged" or row["event_source"].endswith(".amazonaws.com")
    for row in diff.high_risk_rules():
        assert cat.expand(row["pattern"]), row
        assert row["match"] in ("each", "all") and row["resource"] in ("*", "any") and row["reason"]
        assert not row["requires"] or cat.expand(row["requires"])


# ----------------------------------------------------------------------------- compare

def test_compare_reports_reduction_paths_and_diff():
    current = [("managed S3Full", doc(allow("s3:*"))), ("inline q", doc(allow("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:q")))]
    suggested = [doc({"Sid": "S3Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})]
    usage = pd.DataFrame([
        ("s3:GetObject", "arn:aws:s3:::b/k", 10, None),
        ("kms:Decrypt", f"arn:aws:kms:us-east-1:999999999999:key/k", 2, None),
        ("sqs:ReceiveMessage", f"arn:aws:sqs:us-east-1:{A}:q", 1, None),
        ("ecr:BatchGetImage", f"arn:aws:ecr:us-east-1:{A}:repository/r", 3, "ecs-tasks.amazonaws.com"),
        ("ec2:DescribeInstances", "*", 1, None),
    ], columns=["action", "resource", "calls", "invoked_by"])
    denied = pd.DataFrame([("iam:CreateRole", f"arn:aws:iam::{A}:role/new", 2)], columns=["action", "resource", "calls"])
    r = diff.compare(current, suggested, usage, denied=denied, data_sources={"s3.amazonaws.com"},
                     principal_arn=f"arn:aws:iam::{A}:role/x", principal_account=A)
    n_s3 = len(get_catalog().expand("s3:*"))
    assert r.granted_actions == n_s3 + 1 and r.granted_services == 2 and r.suggested_actions == 1
    assert 0.99 < r.reduction < 1
    paths = dict(zip(r.used_not_granted["action"], r.used_not_granted["likely_path"]))
    assert "cross-account" in paths["kms:Decrypt"]
    assert "resource-based policy" in paths["sqs:ReceiveMessage"]
    assert "ecs-tasks.amazonaws.com" in paths["ecr:BatchGetImage"]
    assert "not explained" in paths["ec2:DescribeInstances"]
    assert paths["iam:CreateRole"].startswith("denied")
    assert r.diff[0] == "--- current" and any(line.startswith("+") and "s3:GetObject" in line for line in r.diff)
    out = r.to_dict()
    assert out["granted"]["actions"] == r.granted_actions and "s3:GetObject" in out["used"]
    text = diff.render_text(r, attached=["managed S3Full", "inline q"])
    assert "granted" in text and "fewer" in text and "s3:* on *" in text


def test_likely_path_of_a_short_arn_is_an_explanation_not_an_index_error():
    path = diff.likely_path("sqs:ReceiveMessage", "arn:aws:sqs", principal_account=A, invoked_by=None, missing=[])
    assert "resource-based policy" in path


def test_compare_with_missing_documents_says_so():
    r = diff.compare([], [doc(allow("s3:GetObject", "arn:aws:s3:::b/*"))],
                     pd.DataFrame([("s3:GetObject", "arn:aws:s3:::b/k", 1)], columns=["action", "resource", "calls"]),
                     missing=["AWSManaged (arn:...): document not in the snapshot"])
    assert "could not be read" in r.used_not_granted["likely_path"][0] and r.notes


# ----------------------------------------------------------------------------- properties

_acts = st.sampled_from(["s3:GetObject", "s3:Get*", "s3:*", "sqs:SendMessage", "iam:PassRole", "ec2:Describe*"])
_res = st.sampled_from(["*", "arn:aws:s3:::b/*", "arn:aws:s3:::b", f"arn:aws:sqs:us-east-1:{A}:q",
                        f"arn:aws:iam::{A}:role/r"])


@st.composite
def policies(draw):
    stmts = []
    for _ in range(draw(st.integers(1, 5))):
        s = {"Effect": draw(st.sampled_from(["Allow", "Allow", "Deny"]))}
        acts = draw(st.lists(_acts, min_size=1, max_size=3))
        s["NotAction" if draw(st.booleans()) and s["Effect"] == "Allow" and len(stmts) % 3 == 2 else "Action"] = \
            acts if len(acts) > 1 else acts[0]
        res = draw(st.lists(_res, min_size=1, max_size=3))
        s["Resource"] = res if len(res) > 1 else res[0]
        if draw(st.booleans()):
            s["Sid"] = f"S{len(stmts)}"
        stmts.append(s)
    return doc(*stmts)


@settings(max_examples=20, deadline=None)
@given(policies(), st.randoms(use_true_random=False))
def test_property_diff_of_a_policy_with_itself_is_empty(p, rnd):
    shuffled = copy.deepcopy(p)
    rnd.shuffle(shuffled["Statement"])
    for s in shuffled["Statement"]:
        for k in ("Action", "NotAction", "Resource"):
            if isinstance(s.get(k), list):
                rnd.shuffle(s[k])
    assert diff.unified_diff([("p", p)], [("p", p)]) == []
    assert diff.unified_diff([("p", p)], [("p", shuffled)]) == []
    r = diff.compare([("p", p)], [shuffled], pd.DataFrame(columns=["action", "resource", "calls"]))
    assert set(diff.granted_set([("p", p)])) == diff.suggested_actions([shuffled])
    assert r.granted_actions == r.suggested_actions and r.reduction == 0


def test_normalise_is_order_insensitive():
    a = doc(allow(["s3:PutObject", "s3:GetObject"], ["arn:aws:s3:::b/*", "arn:aws:s3:::a/*"]), allow("sqs:SendMessage"))
    b = doc(allow("sqs:SendMessage"), allow(["s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::a/*", "arn:aws:s3:::b/*"]))
    assert diff.normalise(a) == diff.normalise(b)


# ----------------------------------------------------------------------------- conditions (issue 9, 5b)

_ABSENT, _UNKNOWN = diff.ABSENT, diff.UNKNOWN


@pytest.mark.parametrize("op, key, values, call, expected", [
    # StringEquals / StringNotEquals: ORed values, case-sensitive; absent key: positive fails, negated holds
    ("StringEquals", "aws:requestedregion", ("eu-west-1", "us-east-1"), "us-east-1", True),
    ("StringEquals", "aws:requestedregion", ("eu-west-1",), "EU-WEST-1", False),
    ("StringEquals", "aws:sourcevpce", ("vpce-1",), _ABSENT, False),
    ("StringNotEquals", "aws:requestedregion", ("eu-west-1", "us-east-1"), "us-west-2", True),
    ("StringNotEquals", "aws:requestedregion", ("eu-west-1", "us-east-1"), "eu-west-1", False),
    ("StringNotEquals", "aws:sourcevpce", ("vpce-1",), _ABSENT, True),
    ("StringEqualsIgnoreCase", "aws:requestedregion", ("EU-West-1",), "eu-west-1", True),
    ("StringNotEqualsIgnoreCase", "aws:requestedregion", ("EU-West-1",), "eu-west-1", False),
    # StringLike / StringNotLike: * and ?, IAM's ${*} escape is a literal star
    ("StringLike", "aws:requestedregion", ("eu-*",), "eu-central-1", True),
    ("StringLike", "aws:requestedregion", ("us-east-?",), "us-east-12", False),
    ("StringLike", "aws:sourcevpce", ("vpce-${*}",), "vpce-*", True),
    ("StringLike", "aws:sourcevpce", ("vpce-${*}",), "vpce-1", False),
    ("StringNotLike", "aws:requestedregion", ("eu-*",), "us-east-1", True),
    ("StringNotLike", "aws:requestedregion", ("eu-*",), _ABSENT, True),
    # ...IfExists: an absent key holds
    ("StringEqualsIfExists", "aws:sourcevpce", ("vpce-1",), _ABSENT, True),
    ("StringEqualsIfExists", "aws:sourcevpce", ("vpce-1",), "vpce-2", False),
    ("IpAddressIfExists", "aws:sourceip", ("10.0.0.0/8",), _ABSENT, True),
    # IpAddress / NotIpAddress: CIDRs and single addresses, IPv4 and IPv6
    ("IpAddress", "aws:sourceip", ("10.0.0.0/8", "192.0.2.7"), "10.1.2.3", True),
    ("IpAddress", "aws:sourceip", ("10.0.0.0/8", "192.0.2.7"), "192.0.2.7", True),
    ("IpAddress", "aws:sourceip", ("10.0.0.0/8",), "203.0.113.9", False),
    ("IpAddress", "aws:sourceip", ("2001:db8::/32",), "2001:db8::1", True),
    ("IpAddress", "aws:sourceip", ("2001:db8::/32",), "10.1.2.3", False),
    ("IpAddress", "aws:sourceip", ("10.0.0.0/8",), _ABSENT, False),
    ("NotIpAddress", "aws:sourceip", ("10.0.0.0/8",), "203.0.113.9", True),
    ("NotIpAddress", "aws:sourceip", ("10.0.0.0/8",), "10.9.9.9", False),
    ("NotIpAddress", "aws:sourceip", ("10.0.0.0/8",), _ABSENT, True),
    # Bool
    ("Bool", "aws:securetransport", ("false",), "false", True),
    ("Bool", "aws:securetransport", ("true",), "false", False),
    ("Bool", "aws:multifactorauthpresent", ("true",), _ABSENT, False),
    ("BoolIfExists", "aws:multifactorauthpresent", ("false",), _ABSENT, True),
    # ArnEquals / ArnLike: the six parts matched one by one (a * stays in its part)
    ("ArnLike", "aws:principalarn", (f"arn:aws:iam::{A}:role/app/*",), f"arn:aws:iam::{A}:role/app/x", True),
    ("ArnLike", "aws:principalarn", ("arn:aws:iam::*:role/x",), f"arn:aws:iam::{A}:role/x", True),
    ("ArnLike", "aws:principalarn", ("arn:aws:*:role/x",), f"arn:aws:iam::{A}:role/x", False),
    ("ArnEquals", "aws:principalarn", (f"arn:aws:iam::{A}:role/x",), f"arn:aws:iam::{A}:role/x", True),
    ("ArnNotLike", "aws:principalarn", (f"arn:aws:iam::{A}:role/app/*",), f"arn:aws:iam::{A}:role/x", True),
    ("ArnNotEquals", "aws:principalarn", (f"arn:aws:iam::{A}:role/x",), f"arn:aws:iam::{A}:role/x", False),
    # Null: tests the absence itself
    ("Null", "aws:sourcevpce", ("true",), _ABSENT, True),
    ("Null", "aws:sourcevpce", ("true",), "vpce-1", False),
    ("Null", "aws:sourcevpce", ("false",), "vpce-1", True),
    # ForAnyValue / ForAllValues on a multivalued key (aws:CalledVia)
    ("ForAnyValue:StringEquals", "aws:calledvia", ("cloudformation.amazonaws.com",),
     ("athena.amazonaws.com", "cloudformation.amazonaws.com"), True),
    ("ForAnyValue:StringEquals", "aws:calledvia", ("cloudformation.amazonaws.com",), ("athena.amazonaws.com",), False),
    ("ForAnyValue:StringEquals", "aws:calledvia", ("cloudformation.amazonaws.com",), (), False),
    ("ForAllValues:StringEquals", "aws:calledvia", ("cloudformation.amazonaws.com",),
     ("athena.amazonaws.com", "cloudformation.amazonaws.com"), False),
    ("ForAllValues:StringLike", "aws:calledvia", ("*.amazonaws.com",), ("athena.amazonaws.com",), True),
    ("ForAllValues:StringEquals", "aws:calledvia", ("cloudformation.amazonaws.com",), (), True),
    ("ForAnyValue:StringNotEquals", "aws:calledvia", ("athena.amazonaws.com",),
     ("athena.amazonaws.com", "cloudformation.amazonaws.com"), True),
    ("ForAllValues:StringNotEquals", "aws:calledvia", ("athena.amazonaws.com",),
     ("athena.amazonaws.com", "cloudformation.amazonaws.com"), False),
    # what the log cannot tell: an unknown value, a policy variable, an operator miner does not evaluate
    ("IpAddress", "aws:sourceip", ("10.0.0.0/8",), _UNKNOWN, None),
    ("StringEquals", "aws:principalarn", ("arn:aws:iam::${aws:PrincipalAccount}:role/x",), f"arn:aws:iam::{A}:role/x",
     None),
    ("DateGreaterThan", "aws:requestedregion", ("2020-01-01T00:00:00Z",), "us-east-1", None),
    ("ForSomeValues:StringEquals", "aws:calledvia", ("x",), ("x",), None),
])
def test_condition_operators(op, key, values, call, expected):
    assert diff.condition_holds(op, key, values, call) is expected


def test_condition_block_is_parsed_with_lower_keys_and_text_values():
    st = diff.statements(doc(allow("s3:GetObject", Condition={"Bool": {"aws:SecureTransport": True},
                                                              "IpAddress": {"aws:SourceIp": ["10.0.0.0/8"]}})))[0]
    assert st.conditional and set(st.condition) == {("Bool", "aws:securetransport", ("true",)),
                                                     ("IpAddress", "aws:sourceip", ("10.0.0.0/8",))}


def test_call_context_reads_what_the_log_records():
    row = {"regions": "eu-west-1,us-east-1", "source_ips": ["10.0.0.5", "s3.amazonaws.com"],
           "vpc_endpoints": [None, "vpce-1"], "invokers": [None, "cloudformation.amazonaws.com"]}
    ctx = diff.call_context(row, principal_arn=f"arn:aws:iam::{A}:role/r", principal_account=A)
    assert ctx["aws:requestedregion"] == {"eu-west-1", "us-east-1"}
    assert ctx["aws:sourcevpce"] == {_ABSENT, "vpce-1"}
    # a call through the endpoint carries no aws:SourceIp; a service host name says nothing about the address
    assert ctx["aws:sourceip"] == {"10.0.0.5", _UNKNOWN, _ABSENT}
    assert ctx["aws:calledvia"] == {(), ("cloudformation.amazonaws.com",)}
    assert ctx["aws:principalarn"] == {f"arn:aws:iam::{A}:role/r"} and ctx["aws:principalaccount"] == {A}
    assert "aws:multifactorauthpresent" not in ctx and "aws:sourcevpc" not in ctx  # silent
    assert "aws:sourceip" not in diff.call_context({"regions": "eu-west-1"})  # no context columns: silent


OFFICE = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}


@pytest.mark.parametrize("ips, verdict", [(["10.0.0.5"], "allowed"), (["203.0.113.9"], "denied"),
                                          (["10.0.0.5", "203.0.113.9"], "partly")])
def test_decide_evaluates_an_allow_condition_per_recorded_value(ips, verdict):
    ev = diff.Evaluator([("inline office", doc(allow("s3:GetObject", Sid="Office", Condition=OFFICE)))])
    d = ev.decide("s3:GetObject", "arn:aws:s3:::b/k", diff.call_context({"source_ips": ips, "vpc_endpoints": [None]}))
    assert d.verdict == verdict and d.checks[0].statement.sid == "Office"
    assert ev("s3:GetObject", "arn:aws:s3:::b/k")  # without context: read generously, as before


def test_decide_deny_conditions_apply_when_the_log_says_so_and_silence_is_generous():
    p = [doc(allow("s3:*"), deny("s3:*", Condition={"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}),
             deny("s3:*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}}))]
    ev = diff.Evaluator(p)
    through = diff.call_context({"vpc_endpoints": ["vpce-1"]})
    direct = diff.call_context({"vpc_endpoints": [None]})
    d = ev.decide("s3:GetObject", "arn:aws:s3:::b/k", through)
    assert d.verdict == "allowed"
    mfa = next(c for c in d.checks if c.statement.index == 3)
    assert mfa.outcome == "none" and "aws:multifactorauthpresent" in mfa.generous[0]  # silent: the Deny is not applied
    assert ev.decide("s3:GetObject", "arn:aws:s3:::b/k", direct).verdict == "denied"


def test_decide_boundary_conditions_count_too():
    ev = diff.Evaluator([doc(allow("s3:*"))], boundary=[doc(allow("s3:*", Condition={
        "StringEquals": {"aws:RequestedRegion": "eu-west-1"}}))])
    assert ev.decide("s3:GetObject", "arn:aws:s3:::b/k", {"aws:requestedregion": frozenset({"us-east-1"})}).verdict \
        == "denied"
    assert ev.decide("s3:GetObject", "arn:aws:s3:::b/k", {"aws:requestedregion": frozenset({"eu-west-1"})}).verdict \
        == "allowed"


def test_compare_reports_conditions_per_action_and_calls_they_do_not_allow():
    current = [("inline office", doc(allow("s3:GetObject", Sid="Office", Condition=OFFICE),
                                     allow("sqs:SendMessage", Sid="Vpc", Condition={
                                         "StringEquals": {"aws:SourceVpc": "vpc-1"}})))]
    usage = pd.DataFrame([
        ("s3:GetObject", "arn:aws:s3:::b/k", 4, "us-east-1", ["203.0.113.9"], [None], [None]),
        ("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:q", 1, "us-east-1", ["10.0.0.5"], [None], [None]),
    ], columns=["action", "resource", "calls", "regions", "source_ips", "vpc_endpoints", "invokers"])
    r = diff.compare(current, [], usage, principal_arn=f"arn:aws:iam::{A}:role/x", principal_account=A)
    cond = r.conditions.set_index("action")
    assert cond.loc["s3:GetObject", "outcome"] == "does not hold" and cond.loc["s3:GetObject", "sid"] == "Office"
    assert cond.loc["s3:GetObject", "failing"] == ["aws:sourceip = 203.0.113.9"]
    assert cond.loc["sqs:SendMessage", "outcome"] == "holds"
    assert "aws:sourcevpc (CloudTrail does not log the VPC id)" in cond.loc["sqs:SendMessage", "generous"]
    (path,) = r.used_not_granted["likely_path"]
    assert "Condition of inline office statement Office does not hold: aws:sourceip = 203.0.113.9" in path
    text = diff.render_text(r)
    assert "read generously: aws:sourcevpc" in text and "fails for aws:sourceip = 203.0.113.9" in text
    json.loads(json.dumps(r.to_dict()), parse_constant=_strict)


def _strict(name):
    raise ValueError(f"not JSON: {name}")


# ----------------------------------------------------------------------------- high-risk findings (issue 9, 3)

PASS_ANY = doc({"Sid": "PassAnyRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
               {"Sid": "Functions", "Effect": "Allow", "Action": ["lambda:UpdateFunctionCode", "lambda:GetFunction"],
                "Resource": f"arn:aws:lambda:*:{A}:function:*"})
CI_POLICY = f"arn:aws:iam::{A}:policy/ci-deploy-policy"


def test_compare_with_a_cache_reuses_what_the_documents_give_and_reports_the_same():
    """The review passes one cache for every principal: the granted set of a set of documents is computed once."""
    current = [("p", PASS_ANY)]
    usage = pd.DataFrame({"action": ["iam:PassRole"], "resource": [f"arn:aws:iam::{A}:role/x"], "calls": [2]})
    cache: dict = {}
    first = diff.compare(current, [], usage, cache=cache, principal_arn="a")
    second = diff.compare(current, [], usage.iloc[:0], cache=cache, principal_arn="b")
    assert len(cache) == 1
    assert first.to_dict() == diff.compare(current, [], usage, principal_arn="a").to_dict()
    assert second.to_dict() == diff.compare(current, [], usage.iloc[:0], principal_arn="b").to_dict()
    diff.compare([("other label", PASS_ANY)], [], usage, cache=cache)  # findings name the policy by its label
    assert len(cache) == 2


def test_remedy_examples_do_not_depend_on_set_order():
    """The unobservable actions a remedy names first were taken in set order: the review changed from run to run."""
    (f,) = _findings([("admin", doc(allow("*")))], [])
    shown = f["remedy"].split("first check ")[1].split(", ...")[0].split(", ")
    grants = diff.granted_set([("admin", doc(allow("*")))])
    unobservable = sorted(a for a in grants if diff.unobservable_reason(a, set()))
    assert shown == unobservable[:2]


def _findings(docs, used, observed=None, refs=None):
    grants = diff.granted_set(docs)
    return diff.high_risk(grants, diff.classify(grants, set(used), set()), observed=observed, policies=refs)


def test_a_used_grant_far_broader_than_its_resources_is_flagged_with_policy_sid_and_remedy():
    roles = {f"arn:aws:iam::{A}:role/app-a", f"arn:aws:iam::{A}:role/app-b"}
    fn = f"arn:aws:lambda:us-east-1:{A}:function:deploy-me"
    found = _findings([("managed ci-deploy-policy", PASS_ANY)], {"iam:PassRole", "lambda:UpdateFunctionCode"},
                      {"iam:PassRole": roles, "lambda:UpdateFunctionCode": {fn}},
                      {"managed ci-deploy-policy": {"policy": CI_POLICY, "policy_kind": "managed"}})
    by = {h["sid"]: h for h in found}
    assert set(by) == {"PassAnyRole", "Functions"} and all(h["status"] == "used_broadly" for h in found)
    p = by["PassAnyRole"]
    assert p["policy"] == CI_POLICY and p["statement"] == 1 and p["granted_on"] == ["*"]
    assert p["used_on"] == {"iam:PassRole": sorted(roles)}
    assert p["remedy"].startswith("list the roles it passes in Resource and add an iam:PassedToService condition")
    assert "used on 2 resource(s)" in p["remedy"] and CI_POLICY in p["remedy"]
    assert by["Functions"]["used_on"] == {"lambda:UpdateFunctionCode": [fn]}  # a wildcard is broad too


def test_a_grant_scoped_to_what_was_used_is_not_flagged():
    role = f"arn:aws:iam::{A}:role/app-a"
    scoped = doc(allow("iam:PassRole", role))
    assert _findings([("p", scoped)], {"iam:PassRole"}, {"iam:PassRole": {role}}) == []
    assert _findings([("p", PASS_ANY)], {"iam:PassRole", "lambda:UpdateFunctionCode"},
                     {"iam:PassRole": {"*"}, "lambda:UpdateFunctionCode": {"*"}}) == []  # "*": resources unknown


def test_overlapping_rules_count_once_per_statement():
    admin = [("managed AdministratorAccess", doc(allow("*")))]
    found = _findings(admin, {"s3:ListBucket"}, {"s3:ListBucket": {"arn:aws:s3:::b"}},
                      {"managed AdministratorAccess": {"policy": "arn:aws:iam::aws:policy/AdministratorAccess"}})
    (h,) = found
    assert h["rule"] == "* on *" and h["status"] == "unused" and len(h["rules"]) > 10
    assert {"iam:* on *", "iam:PassRole on *", "kms:Decrypt on *"} <= set(h["rules"])
    assert h["remedy"].startswith("narrow statement #1 of arn:aws:iam::aws:policy/AdministratorAccess to the 1 "
                                  "action(s) it used (see the suggested policy); unused: cloudformation:CreateStack, "
                                  "cloudtrail:DeleteTrail")  # actions of the pointed rules first
    unused = _findings([("inline legacy", doc(allow("iam:PassRole", Sid="Old")))], set())
    assert unused[0]["remedy"] == "remove statement Old of inline legacy: none of its actions was used in the window"


HIGH_RISK_FAMILIES = {
    "wildcard-all": lambda r: r["match"] == "all",
    "on-every-resource": lambda r: r["match"] == "each" and r["resource"] == "*",
    "any-resource": lambda r: r["match"] == "each" and r["resource"] == "any" and not r["requires"],
    "with-passrole": lambda r: bool(r["requires"]),
}


@pytest.mark.parametrize("family", sorted(HIGH_RISK_FAMILIES))
def test_every_high_risk_rule_fires_on_its_own_grant_with_a_remedy(family):
    rows = [r for r in diff.high_risk_rules() if HIGH_RISK_FAMILIES[family](r)]
    assert rows, family
    for row in rows:
        assert row["remedy"] and row["reason"], row
        stmts = [allow(row["pattern"], Sid="Risky")] + ([allow(row["requires"], Sid="Needed")] if row["requires"] else [])
        found = _findings([("inline p", doc(*stmts))], set())
        label = row["pattern"] + (f" + {row['requires']}" if row["requires"] else "") + \
            (" on *" if row["resource"] == "*" else "")
        risky = [h for h in found if h["sid"] == "Risky"]
        assert len(risky) == 1 and label in risky[0]["rules"], (row, found)
        if row["resource"] == "any":  # also on a specific resource
            narrow = _findings([("inline p", doc(allow(row["pattern"], "arn:aws:iam::111122223333:role/x", Sid="R"),
                                                 *stmts[1:]))], set())
            assert any(label in h["rules"] for h in narrow if h["sid"] == "R"), row
