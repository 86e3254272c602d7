"""Tests for policy synthesis: minimisation, wildcards, size splitting, determinism, and rendering."""

from __future__ import annotations

import json
import re
import types

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miner import diff, synthesize as syn
from miner.catalog import get_catalog

A = "111122223333"


def frame(rows, **cols) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["action", "resource"])
    for k, v in cols.items():
        df[k] = v
    return df


def allowed_everything(policies, usage) -> bool:
    ev = diff.Evaluator(policies)
    return all(ev(a, r) for a, r in zip(usage["action"], usage["resource"]))


def test_statements_merge_by_identical_resource_sets():
    t = f"arn:aws:dynamodb:us-east-1:{A}:table/orders"
    s = syn.synthesize(frame([("dynamodb:GetItem", t), ("dynamodb:PutItem", t), ("s3:GetObject", "arn:aws:s3:::b/k")]))
    assert len(s.policies) == 1
    stmts = s.statements
    assert [st["Action"] for st in stmts] == [["dynamodb:GetItem", "dynamodb:PutItem"], "s3:GetObject"]
    assert stmts[0]["Resource"] == t and s.generalisations == [] and s.fallbacks == []


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]


def test_no_generalisation_at_or_below_the_threshold():
    rows = [("s3:GetObject", f"arn:aws:s3:::b/in/{w}.json") for w in WORDS[:10]]
    s = syn.synthesize(frame(rows), max_resources=10)
    assert sorted(s.statements[0]["Resource"]) == sorted(r for _, r in rows) and not s.generalisations


def test_free_form_names_past_the_threshold_keep_their_constant_parts():
    rows = [("s3:GetObject", f"arn:aws:s3:::b/invoices/2026/{w}.json") for w in WORDS]
    rows.append(("s3:GetObject", "arn:aws:s3:::other/x"))
    s = syn.synthesize(frame(rows), max_resources=10)
    assert s.statements[0]["Resource"] == ["arn:aws:s3:::b/invoices/2026/*.json", "arn:aws:s3:::other/x"]
    (g,) = s.generalisations
    assert g.count == 11 and "bucket b" in g.reason and "11 names > --max-resources 10" in g.reason


def test_s3_objects_with_no_structure_past_the_threshold_become_a_prefix():
    """The last resort: names of different depths (nothing to learn), more than --max-resources of them."""
    rows = [("s3:GetObject", "arn:aws:s3:::b/invoices/" + "/".join(WORDS[: i + 1])) for i in range(11)]
    s = syn.synthesize(frame(rows), max_resources=10)
    assert s.statements[0]["Resource"] == "arn:aws:s3:::b/invoices/*"
    (g,) = s.generalisations
    assert g.count == 11 and "no structure to learn" in g.reason and "--max-resources 10" in g.reason


def test_other_resources_past_the_threshold_become_a_per_type_wildcard():
    rows = [("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{A}:table/t{i}") for i in range(3)]
    rows += [("dynamodb:GetItem", f"arn:aws:dynamodb:eu-west-1:{A}:table/t{i}") for i in range(1)]
    s = syn.synthesize(frame(rows), max_resources=2)
    assert s.statements[0]["Resource"] == [f"arn:aws:dynamodb:eu-west-1:{A}:table/t0",
                                           f"arn:aws:dynamodb:us-east-1:{A}:table/*"]
    rows = [("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{A}:orders-{i}") for i in range(3)]
    s = syn.synthesize(frame(rows), max_resources=2)
    assert s.statements[0]["Resource"] == f"arn:aws:sqs:us-east-1:{A}:orders-*"


def test_max_resources_zero_never_generalises():
    rows = [("s3:GetObject", f"arn:aws:s3:::b/{i}") for i in range(30)]
    assert not syn.synthesize(frame(rows), max_resources=0).generalisations


def test_star_fallbacks_are_explained():
    s = syn.synthesize(frame([("ec2:DescribeInstances", "*"), ("kms:Decrypt", "*"),
                              ("sts:GetCallerIdentity", "arn:aws:sts::1:x")], reason=[None, "keyId is an alias", None]))
    reasons = {f.action: f.reason for f in s.fallbacks}
    assert "no resource-level" in reasons["ec2:DescribeInstances"]
    assert reasons["kms:Decrypt"] == "keyId is an alias"
    assert "no resource-level" in reasons["sts:GetCallerIdentity"]  # an ARN on such an action would never match
    assert s.statements[0]["Resource"] == "*"


def test_action_wildcards_only_when_they_expand_to_observed_actions_alone():
    cat = get_catalog()
    every_get_object = sorted(cat.expand("s3:GetObject*"))
    res = "arn:aws:s3:::b/k"
    s = syn.synthesize(frame([(a, res) for a in every_get_object]))
    assert s.statements[0]["Action"] == "s3:GetObject*"
    assert s.wildcards[0].pattern == "s3:GetObject*" and list(s.wildcards[0].expands_to) == every_get_object
    partial = every_get_object[:-1]
    s = syn.synthesize(frame([(a, res) for a in partial]))
    for pattern in syn._as_list(s.statements[0]["Action"]):
        assert cat.expand(pattern) <= set(partial)
    s = syn.synthesize(frame([(a, res) for a in every_get_object]), wildcards=False)
    assert s.statements[0]["Action"] == every_get_object and not s.wildcards


def test_passrole_gets_passed_to_service_condition():
    role = f"arn:aws:iam::{A}:role/fn-role"
    df = frame([("iam:PassRole", role), ("lambda:CreateFunction", f"arn:aws:lambda:us-east-1:{A}:function:f")],
               implicit=[True, False], event_sources=["lambda.amazonaws.com", "lambda.amazonaws.com"])
    s = syn.synthesize(df)
    pr = [st for st in s.statements if st["Action"] == "iam:PassRole"][0]
    assert pr["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    two = frame([("iam:PassRole", role), ("iam:PassRole", f"arn:aws:iam::{A}:role/task")], implicit=[True, True],
                event_sources=["lambda.amazonaws.com", "ecs.amazonaws.com"])
    by_service = {st["Condition"]["StringEquals"]["iam:PassedToService"]: st["Resource"]
                  for st in syn.synthesize(two).statements}
    assert by_service == {"lambda.amazonaws.com": role, "ecs-tasks.amazonaws.com": f"arn:aws:iam::{A}:role/task"}
    unknown = df.assign(event_sources=["mystery.amazonaws.com", ""])
    s = syn.synthesize(unknown)
    assert all("Condition" not in st for st in s.statements) and any("PassedToService" in n for n in s.notes)


def test_splits_past_the_managed_policy_limit_and_each_part_fits():
    rows = [("s3:GetObject", f"arn:aws:s3:::bucket-{i % 7}/some/long/prefix/object-{i:05d}.json") for i in range(400)]
    rows += [("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{A}:table/t{i}") for i in range(50)]
    df = frame(rows)
    s = syn.synthesize(df, max_resources=0)
    assert len(s.policies) > 1 and all(size <= syn.MANAGED_POLICY_LIMIT for size in s.sizes)
    assert any("split into" in n for n in s.notes)
    assert allowed_everything(s.policies, df)
    sids = [st["Sid"] for st in s.statements]
    assert len(sids) == len(set(sids))


def test_split_parts_fit_with_their_part_sid_suffix():
    # 104 resources at 1,000 characters: a half fitted the limit before its Sid got "Part1" (1,002 characters).
    df = frame([("s3:GetObject", f"arn:aws:s3:::bucket-{i:04d}/key-{i}") for i in range(104)])
    s = syn.synthesize(df, max_resources=0, size_limit=1000)
    assert all(size <= 1000 for size in s.sizes) and allowed_everything(s.policies, df)
    assert all(re.fullmatch(r"S3ReadPart\d+", st["Sid"]) for st in s.statements)


def test_policy_size_ignores_whitespace():
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    assert syn.policy_size(doc) == len(json.dumps(doc, separators=(",", ":")))


def test_sids_are_stable_alphanumeric_and_unique():
    rows = [("s3:GetObject", "arn:aws:s3:::a/x"), ("s3:GetObject", "arn:aws:s3:::a/y"),
            ("s3:PutObject", "arn:aws:s3:::a/z"), ("s3:GetObjectTagging", "arn:aws:s3:::b/x")]
    s = syn.synthesize(frame(rows))
    sids = [st["Sid"] for st in s.statements]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", x) for x in sids) and len(set(sids)) == len(sids)
    assert sids == ["S3Read", "S3Read2", "S3Write"]


def test_empty_usage_is_an_error():
    with pytest.raises(ValueError):
        syn.synthesize(frame([]))


def test_renderers():
    s = syn.synthesize(frame([("s3:GetObject", "arn:aws:s3:::b/${weird}"), ("iam:PassRole", f"arn:aws:iam::{A}:role/r")],
                             implicit=[False, True], event_sources=["", "ecs.amazonaws.com"]))
    tf = syn.to_terraform(s, "orders-api-task", "mined by miner")
    assert tf.startswith("# mined by miner\n")
    assert 'data "aws_iam_policy_document" "orders_api_task" {' in tf
    assert "$${weird}" in tf and 'variable = "iam:PassedToService"' in tf and '"ecs-tasks.amazonaws.com"' in tf
    assert tf.count("{") == tf.count("}")
    cfn = yaml.safe_load(syn.to_cloudformation(s, "orders-api-task", roles=["orders-api-task"], description="d"))
    res = cfn["Resources"]["OrdersApiTaskLeastPrivilegePolicy"]
    assert res["Type"] == "AWS::IAM::ManagedPolicy" and res["Properties"]["Roles"] == ["orders-api-task"]
    assert res["Properties"]["PolicyDocument"] == s.policies[0]
    assert json.loads(syn.to_json(s)) == s.policies[0]


# ----------------------------------------------------------------------------- properties

_ACTIONS = ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:ListBucket", "dynamodb:GetItem",
            "dynamodb:Query", "sqs:SendMessage", "kms:Decrypt", "ec2:DescribeInstances", "lambda:InvokeFunction",
            "s3:GetObjectAcl", "s3:GetObjectVersion"]


@st.composite
def usage_rows(draw):
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        action = draw(st.sampled_from(_ACTIONS))
        svc = action.split(":")[0]
        name = draw(st.sampled_from(["a", "b", "orders", "orders-2", "x/y", "in/2026/01", "in/2026/02", "in/2027"]))
        res = draw(st.sampled_from([
            "*",
            f"arn:aws:s3:::bucket-{draw(st.integers(0, 2))}/{name}",
            f"arn:aws:s3:::bucket-{draw(st.integers(0, 2))}",
            f"arn:aws:{svc}:us-east-1:{A}:table/{name}",
            f"arn:aws:{svc}:eu-west-1:{A}:{name}",
            f"arn:aws-us-gov:{svc}:us-gov-west-1:{A}:function:{name}",
        ]))
        rows.append((action, res))
    return frame(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usage_rows(), st.integers(0, 4), st.booleans(), st.sampled_from([syn.MANAGED_POLICY_LIMIT, 400]))
def test_property_policy_allows_every_mined_call(df, max_resources, wildcards, limit):
    s = syn.synthesize(df, max_resources=max_resources, wildcards=wildcards, size_limit=limit)
    assert allowed_everything(s.policies, df)
    assert all(size <= limit for size in s.sizes) or any(len(p["Statement"]) == 1 for p in s.policies)
    # wildcards never reach unobserved actions of a statement
    cat = get_catalog()
    observed = {a.lower() for a in df["action"]}
    for stmt in s.statements:
        for pattern in syn._as_list(stmt["Action"]):
            assert {e.lower() for e in cat.expand(pattern)} <= observed


@settings(max_examples=40, deadline=None)
@given(usage_rows(), st.randoms(use_true_random=False), st.integers(0, 4))
def test_property_input_order_does_not_change_the_output(df, rnd, max_resources):
    shuffled = df.sample(frac=1.0, random_state=rnd.randint(0, 10**6)).reset_index(drop=True)
    a = syn.synthesize(df, max_resources=max_resources)
    b = syn.synthesize(shuffled, max_resources=max_resources)
    assert syn.to_json(a) == syn.to_json(b)
    assert a.generalisations == b.generalisations and a.fallbacks == b.fallbacks


# ----------------------------------------------------------------------------- hostile resources (issue 8)

from miner.patterns import covers, literal  # noqa: E402


def obj(key: str, bucket: str = "b") -> str:
    return f"arn:aws:s3:::{bucket}/{literal(key)}"


def test_a_failed_call_on_key_star_does_not_widen_the_grant():
    """Issue 8.1: a NoSuchKey GetObject of key `*` plus one real key used to give `b/*` and drop the real key."""
    df = frame([("s3:GetObject", obj("*")), ("s3:GetObject", obj("real.json"))],
               outcomes=["not_found:1", "success:1"], calls=[1, 1])
    s = syn.synthesize(df)
    assert sorted(s.statements[0]["Resource"]) == ["arn:aws:s3:::b/${*}", "arn:aws:s3:::b/real.json"]
    ev = diff.Evaluator(s.policies)
    assert ev("s3:GetObject", obj("real.json")) and ev("s3:GetObject", obj("*"))
    assert not ev("s3:GetObject", obj("other.json"))
    (u,) = s.unproven
    assert u.kept == ("arn:aws:s3:::b/${*}",) and not u.left_out
    assert any("1 resource kept" in line for line in syn.summary_lines(
        s, principal_arn="p", window=_WINDOW, events=2, authorised_events=2))


def test_keys_star_and_escaped_star_never_give_an_empty_resource_list():
    """Issue 8.2: keys `*` and `${*}` in one bucket produced "Resource": [] and a policy that denied both."""
    df = frame([("s3:GetObject", obj("*")), ("s3:GetObject", obj("${*}"))])
    s = syn.synthesize(df)
    assert sorted(s.statements[0]["Resource"]) == ["arn:aws:s3:::b/${$}{${*}}", "arn:aws:s3:::b/${*}"]
    assert allowed_everything(s.policies, df)


@pytest.mark.parametrize("outcome", ["not_found:1", "error:1", "throttled:1"])
def test_failed_call_volume_never_generalises(outcome):
    """Issue 8.3: more than --max-resources junk keys from failed calls generalised the grant to the whole bucket."""
    rows = [("s3:GetObject", obj("real.json"))] + [("s3:GetObject", obj(f"junk{i}")) for i in range(15)]
    df = frame(rows, outcomes=["success:3"] + [outcome] * 15, calls=[3] + [1] * 15)
    s = syn.synthesize(df, max_resources=10)
    assert s.statements[0]["Resource"] == "arn:aws:s3:::b/real.json" and not s.generalisations
    (u,) = s.unproven
    assert len(u.left_out) == 15 and u.calls == 15 and "--max-resources 10" in u.reason
    lines = syn.summary_lines(s, principal_arn="p", window=_WINDOW, events=18, authorised_events=18)
    assert any("15 resources left out" in line for line in lines)


def test_failed_calls_already_covered_need_nothing_and_successes_still_generalise():
    rows = [("s3:GetObject", obj(f"in/{i}.json")) for i in range(12)] + [("s3:GetObject", obj("in/missing.json"))]
    df = frame(rows, outcomes=["success:1"] * 12 + ["not_found:1"])
    s = syn.synthesize(df, max_resources=10)
    assert s.statements[0]["Resource"] == "arn:aws:s3:::b/in/*.json" and not s.unproven


def test_a_star_from_failed_calls_is_left_out_where_successes_name_resources():
    df = frame([("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{A}:table/orders"), ("dynamodb:GetItem", "*")],
               outcomes=["success:1", "error:1"])
    s = syn.synthesize(df)
    assert s.statements[0]["Resource"] == f"arn:aws:dynamodb:us-east-1:{A}:table/orders" and not s.fallbacks
    assert s.unproven[0].left_out == ("*",)


def test_only_failed_calls_left_out_drops_the_action():
    rows = [("s3:GetObject", obj("ok"))] + [("s3:DeleteObject", obj(f"junk{i}")) for i in range(5)]
    s = syn.synthesize(frame(rows, outcomes=["success:1"] + ["not_found:1"] * 5), max_resources=2)
    assert s.actions == ("s3:GetObject",) and "s3:DeleteObject" not in json.dumps(s.policies)


def test_a_resource_over_the_size_limit_is_reported_not_a_traceback():
    huge = obj("k" * 7000)
    s = syn.synthesize(frame([("s3:GetObject", huge), ("s3:GetObject", obj("small"))]))
    assert s.statements[0]["Resource"] == obj("small")
    assert any(f"left out s3:GetObject on a resource of {len(huge):,} characters" in n for n in s.notes)


_WINDOW = types.SimpleNamespace(days=1.0, __str__=lambda self: "w")


_HOSTILE_KEY = st.one_of(st.text(max_size=12), st.text(alphabet="ab*?${}/ ", max_size=8))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_HOSTILE_KEY, st.sampled_from(["success:1", "not_found:1", "error:1"])),
                min_size=1, max_size=14),
       st.integers(0, 12))
def test_property_hostile_keys_never_widen_and_statements_are_never_empty(items, max_resources):
    """The suggested resources are covered by the observed ones under IAM's matching (nothing wider), every
    statement has resources, and every successful call is allowed (generalisation only over successes)."""
    df = frame([("s3:GetObject", obj(k)) for k, _ in items], outcomes=[o for _, o in items])
    s = syn.synthesize(df, max_resources=max_resources)
    for stmt in s.statements:
        assert syn._as_list(stmt["Resource"])
    ev = diff.Evaluator(s.policies)
    observed = [obj(k) for k, _ in items]
    for k, o in items:
        if o.startswith("success"):
            assert ev("s3:GetObject", obj(k))
    successes = {obj(k) for k, o in items if o.startswith("success")}
    for stmt in s.statements:
        for pattern in syn._as_list(stmt["Resource"]):
            if any(g.pattern == pattern for g in s.generalisations):  # only successes past the threshold generalise
                assert 0 < max_resources < len(successes)
                continue
            assert any(covers(r, pattern) for r in observed), pattern


def test_conditions_from_usage_become_string_equals_blocks():
    """Tag on create: ec2:CreateTags carries ec2:CreateAction; a grant some call needs without it carries none."""
    inst, vol = f"arn:aws:ec2:us-east-1:{A}:instance/*", f"arn:aws:ec2:us-east-1:{A}:volume/*"
    own = f"arn:aws:ec2:us-east-1:{A}:instance/i-0123456789abcdef0"
    usage = frame([("ec2:CreateTags", inst), ("ec2:CreateTags", vol), ("ec2:CreateTags", own), ("ec2:RunInstances", inst)],
                  conditions=["ec2:CreateAction=RunInstances", "ec2:CreateAction=CreateVolume,ec2:CreateAction=RunInstances",
                              None, None])
    stmts = {(json.dumps(s["Resource"]), json.dumps(s.get("Condition"), sort_keys=True)): s["Action"]
             for s in syn.synthesize(usage).statements}
    assert stmts == {
        (json.dumps(inst), json.dumps({"StringEquals": {"ec2:CreateAction": "RunInstances"}})): "ec2:CreateTags",
        (json.dumps(vol), json.dumps({"StringEquals": {"ec2:CreateAction": ["CreateVolume", "RunInstances"]}})):
            "ec2:CreateTags",
        (json.dumps(own), "null"): "ec2:CreateTags",
        (json.dumps(inst), "null"): "ec2:RunInstances"}
    assert allowed_everything(syn.synthesize(usage).policies, usage)
    # generalised or collapsed to "*": a condition only when every call it stands for carried one
    many = frame([("ecs:TagResource", f"arn:aws:ecs:us-east-1:{A}:cluster/c{i}") for i in range(4)],
                 conditions=["ecs:CreateAction=CreateCluster"] * 3 + [None])
    s = syn.synthesize(many, max_resources=2)
    assert s.generalisations and not any("Condition" in st for st in s.statements)
    star = frame([("ec2:CreateTags", "*"), ("ec2:CreateTags", vol)], conditions=["ec2:CreateAction=RunInstances"] * 2)
    (stmt,) = syn.synthesize(star).statements
    assert stmt["Resource"] == "*" and stmt["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
