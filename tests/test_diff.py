"""Tests for miner.diff: the policy evaluator, granted sets, classification, risk flags and the unified diff."""

from __future__ import annotations

import copy

import pandas as pd
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
