"""CLI tests for `miner principals`, `miner usage` and `miner suggest` (own store, sample logs goldens, moto IAM)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from miner import diff
from miner.cli import app
from test_usage import ACCT, ALICE, ORDERS, event, s3_get, write_store

GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLE = Path(__file__).resolve().parent.parent / "sample_logs"
WINDOW = ["--since", "2026-08-01", "--until", "2026-08-31"]
UPDATE = os.environ.get("MINER_UPDATE_GOLDEN") == "1"


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """orders-api: S3 reads under two prefixes, DynamoDB, a denied PutObject; alice: ec2; a twin role elsewhere."""
    evs = [s3_get(key=f"invoices/2026/{i:02d}.json", when=f"2026-08-{1 + i % 28:02d}T10:00:00Z") for i in range(12)]
    evs += [s3_get(key="config/app.json", when="2026-08-03T10:00:00Z")]
    evs += [event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "orders"}, category="Data",
                  when="2026-08-05T10:00:00Z"),
            event(ORDERS, "PutObject", when="2026-08-12T14:00:00Z", error="AccessDenied", category="Data",
                  params={"bucketName": "orders-bucket", "key": "x"},
                  resources=[{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::orders-bucket/x"}]),
            event(ORDERS, "GetCallerIdentity", "sts.amazonaws.com", when="2026-08-13T00:00:00Z"),
            event(ALICE, "DescribeInstances", "ec2.amazonaws.com", when="2026-08-15T09:00:00Z"),
            event("arn:aws:iam::444455556666:role/orders-api", "ListQueues", "sqs.amazonaws.com",
                  when="2026-08-15T09:00:00Z", account="444455556666")]
    return write_store(tmp_path_factory.mktemp("cli") / "store", evs)


def snapshot_for(path: Path, policies: list[dict]) -> Path:
    """An authorization-details snapshot where orders-api has the given inline policies."""
    path.write_text(json.dumps({"RoleDetailList": [{
        "RoleName": "orders-api", "Arn": ORDERS, "AttachedManagedPolicies": [],
        "RolePolicyList": [{"PolicyName": f"p{i}", "PolicyDocument": d} for i, d in enumerate(policies)]}],
        "Policies": []}))
    return path


BROAD = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:*", "dynamodb:GetItem", "logs:PutLogEvents"], "Resource": "*"}]}


# ----------------------------------------------------------------------------- principals / usage

def test_principals_formats(store):
    r = run("principals", "--store", store, *WINDOW, "--format", "json")
    assert r.exit_code == 0, r.output
    rows = {p["principal_arn"]: p for p in json.loads(r.stdout)}
    assert rows[ORDERS]["events"] == 16 and rows[ORDERS]["services"] == ["dynamodb", "s3", "sts"]
    r = run("principals", "--store", store, *WINDOW, "--format", "csv")
    assert r.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0])[:3] == ["principal_arn", "principal_type", "events"]
    assert {row["principal_arn"]: row["services"] for row in rows}[ORDERS] == "dynamodb,s3,sts"
    r = run("principals", "--store", store, *WINDOW)  # the table names principals (ARNs would be cut)
    assert r.exit_code == 0 and "AssumedRole" in r.stdout and ORDERS not in r.stdout
    assert r.stdout.count("orders-api ") == 2 and "444455556666" in r.stdout  # the twin role, told apart by account


def test_usage_json_and_table(store):
    r = run("usage", "--role", "orders-api", "--account", ACCT, "--store", store, *WINDOW, "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["principal"] == ORDERS and out["denied_events"] == 1
    actions = {a["action"] for a in out["actions"]}
    assert {"s3:GetObject", "dynamodb:GetItem"} <= actions
    assert out["denied"][0]["action"] == "s3:PutObject" and out["sources"][0]["source_ip"] == "10.0.0.1"
    r = run("usage", "--principal", ORDERS, "--store", store, *WINDOW)
    assert r.exit_code == 0 and "s3:GetObject" in r.stdout and "from where" in r.stdout


# ----------------------------------------------------------------------------- suggest

def test_suggest_json_to_stdout_summary_to_stderr(store):
    r = run("suggest", "--role", "orders-api", "--account", ACCT, "--store", store, *WINDOW)
    assert r.exit_code == 0, r.output
    policy = json.loads(r.stdout)  # nothing but the policy on stdout
    assert policy["Version"] == "2012-10-17"
    resources = {x for s in policy["Statement"] for x in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
    assert "arn:aws:s3:::orders-bucket/invoices/2026/*.json" in resources  # 12 numbered keys: a learned template
    assert "arn:aws:s3:::orders-bucket/config/app.json" in resources
    assert all("PutObject" not in json.dumps(s["Action"]) for s in policy["Statement"])  # denied: never added
    assert "catalogue:" in r.stderr and "denied:" in r.stderr and "generalised:" in r.stderr
    assert "window:" in r.stderr and "catalogue" not in r.stdout


def test_suggest_is_deterministic_and_honours_options(store, tmp_path):
    a = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q")
    b = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q")
    assert a.stdout == b.stdout and a.stderr == ""
    wide = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--max-resources", "50")
    assert "invoices/2026/*.json" in wide.stdout  # a template is learned whatever the threshold
    exact = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--max-resources", "0")
    assert "invoices/2026/*" not in exact.stdout and "invoices/2026/11.json" in exact.stdout


def test_suggest_terraform_cloudformation_and_out(store, tmp_path):
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--format", "terraform")
    assert r.exit_code == 0 and 'data "aws_iam_policy_document" "orders_api"' in r.stdout
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--format", "cloudformation")
    tpl = yaml.safe_load(r.stdout)
    (res,) = tpl["Resources"].values()
    assert res["Type"] == "AWS::IAM::ManagedPolicy" and res["Properties"]["Roles"] == ["orders-api"]
    out = tmp_path / "policy.tf"
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--out", out)
    assert r.exit_code == 0 and r.stdout == "" and out.read_text().count('data "aws_iam_policy_document"') == 1
    assert 'resource "aws_iam_role_policy_attachment" "orders_api"' in out.read_text()
    out = tmp_path / "policy.json"
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--out", out)
    assert json.loads(out.read_text())["Statement"]


@pytest.mark.parametrize("args,expect", [
    (["--role", "order-api"], "did you mean"),
    (["--role", "orders-api"], "--account"),
    (["--role", "orders-api", "--account", ACCT, "--since", "2026-10-01", "--until", "2026-10-02"], "no events in the window"),
    (["--role", "orders-api", "--since", "yesterday-ish"], "cannot read"),
    (["--role", "orders-api", "--since", "2026-09-01", "--until", "2026-08-01"], "window is empty"),
    (["--role", "orders-api", "--user", "alice"], "exactly one"),
    (["--role", "orders-api", "--account", ACCT, "--format", "yaml"], "--format"),
])
def test_suggest_user_errors_exit_2_without_traceback(store, args, expect):
    base = ["suggest", "--store", store] + ([] if "--since" in args else WINDOW)
    r = run(*base, *args)
    assert r.exit_code == 2, r.output
    assert expect in r.stderr and "Traceback" not in r.output


def test_suggest_empty_and_missing_store(tmp_path):
    r = run("suggest", "--role", "x", "--store", tmp_path / "nope")
    assert r.exit_code == 2 and "no store" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("suggest", "--role", "x", "--store", tmp_path / "empty")
    assert r.exit_code == 2 and "holds no events" in r.stderr


def test_suggest_only_unpermissioned_calls_is_an_error(tmp_path):
    store = write_store(tmp_path / "s", [event(ORDERS, "GetCallerIdentity", "sts.amazonaws.com")])
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW)
    assert r.exit_code == 2 and "no authorised calls" in r.stderr and "1 call needing no IAM permission" in r.stderr


def test_no_policy_error_names_unmapped_and_invalid_calls_not_unpermissioned_ones(tmp_path):
    """The error used to blame "calls that need no IAM permission" whatever the calls were."""
    store = write_store(tmp_path / "s", [
        event(ORDERS, "DoSomething", "nosuchservice.amazonaws.com"),
        event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "*"}, when="2026-08-11T00:00:00Z"),
        event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "t"}, error="AccessDenied",
              when="2026-08-12T00:00:00Z")])
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW)
    assert r.exit_code == 2, r.output
    assert "1 call mapping to no IAM action" in r.stderr and "1 call naming a resource AWS does not allow" in r.stderr
    assert "1 call denied" in r.stderr and "no IAM permission" not in r.stderr


# ----------------------------------------------------------------------------- --diff

def test_diff_with_snapshot_text_json_and_fail_on_unused(store, tmp_path):
    snap = snapshot_for(tmp_path / "snap.json", [BROAD])
    base = ["suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap]
    r = run(*base)
    assert r.exit_code == 0, r.output
    assert "granted" in r.stdout and "-> suggested" in r.stdout and "s3:* on *" in r.stdout
    assert "logs:PutLogEvents" in r.stdout and "--- current" in r.stdout
    r = run(*base, "--format", "json")
    rep = json.loads(r.stdout)
    assert rep["granted"]["actions"] > rep["suggested"]["actions"] and rep["reduction"] > 0.9
    assert "s3:DeleteBucket" in rep["unused"] and "s3:GetObject" in rep["used"]
    assert any(u["action"] == "logs:PutLogEvents" for u in rep["unobservable"])
    assert rep["used_not_granted"] == []  # s3:* grants even the denied PutObject (denied elsewhere, e.g. an SCP)
    r = run(*base, "--fail-on-unused")
    assert r.exit_code == 1
    exact = snapshot_for(tmp_path / "exact.json", [json.loads(run("suggest", "--principal", ORDERS, "--store", store,
                                                                   *WINDOW, "-q").stdout)])
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", exact,
            "--fail-on-unused", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["unused"] == [] and rep["reduction"] == 0


def test_diff_live_through_moto(store, aws_env):
    c = boto3.client("iam", endpoint_url=aws_env, region_name="us-east-1")
    # moto's account is 123456789012: record the same calls for a role in that account
    role = c.create_role(RoleName="orders-api", Path="/service-role/", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}))["Role"]
    c.put_role_policy(RoleName="orders-api", PolicyName="broad", PolicyDocument=json.dumps(BROAD))
    arn = role["Arn"]
    live_store = write_store(Path(str(store)).parent / "live", [s3_get(arn, account=arn.split(":")[4],
                                                                     when="2026-08-10T00:00:00Z")])
    r = run("suggest", "--principal", arn, "--store", live_store, *WINDOW, "-q", "--diff", "--endpoint-url", aws_env,
            "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["source"].startswith("live IAM") and rep["attached"] == ["inline broad"]
    assert "s3:GetObject" in rep["used"] and rep["unused"]


def test_diff_live_unknown_role_is_exit_2(store, aws_env):
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--endpoint-url", aws_env)
    assert r.exit_code == 2 and "does not exist" in r.stderr


# ----------------------------------------------------------------------------- goldens over sample_logs

GOLDEN_PRINCIPALS = {
    "orders-api-task": ["--role", "orders-api-task"],
    "ci-deploy": ["--role", "ci-deploy"],
    "alice": ["--user", "alice"],
    "sso-admin": ["--principal", "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/"
                                 "AWSReservedSSO_AdministratorAccess_0123456789abcdef"],
    "legacy-batch": ["--role", "legacy-batch"],
    "thumbnailer-lambda": ["--role", "thumbnailer-lambda"],
    "audit-readonly": ["--role", "audit-readonly"],
    "ecs-task-execution": ["--role", "ecsTaskExecutionRole"],
}
SAMPLE_WINDOW = ["--since", "2026-08-01", "--until", "2026-09-14"]


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    """The sample logs ingested into a fresh store (skips when sample_logs/ or the ingest stage is absent)."""
    if not (SAMPLE / "AWSLogs").is_dir():
        pytest.skip("sample_logs/ is absent")
    ingest = pytest.importorskip("miner.ingest")
    store = tmp_path_factory.mktemp("sample") / "store"
    ingest.ingest([str(SAMPLE / "AWSLogs")], store)
    return store


def _golden(name: str, actual) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, sort_keys=False) + "\n")
        if not UPDATE:
            pytest.fail(f"wrote missing golden {path.name}; check it in and re-run")
    assert actual == json.loads(path.read_text()), f"{path.name} differs (MINER_UPDATE_GOLDEN=1 regenerates)"


@pytest.mark.parametrize("name", sorted(GOLDEN_PRINCIPALS))
def test_golden_policies_for_sample_principals(sample_store, name):
    r = run("suggest", *GOLDEN_PRINCIPALS[name], "--store", sample_store, *SAMPLE_WINDOW, "-q")
    assert r.exit_code == 0, r.output
    policy = json.loads(r.stdout)
    _golden(f"suggest-{name}", policy)
    # what it was mined from is allowed by it
    used = json.loads(run("usage", *GOLDEN_PRINCIPALS[name], "--store", sample_store, *SAMPLE_WINDOW,
                          "--format", "json").stdout)["actions"]
    docs = policy if isinstance(policy, list) else [policy]
    ev = diff.Evaluator(docs)
    assert all(ev(u["action"], u["resource"]) for u in used)


@pytest.mark.parametrize("role", ["orders-api-task", "ci-deploy"])
def test_golden_diff(sample_store, role):
    r = run("suggest", "--role", role, "--store", sample_store, *SAMPLE_WINDOW, "-q", "--diff",
            "--iam-snapshot", SAMPLE / "iam", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    summary = {k: rep[k] for k in ("granted", "suggested", "reduction", "attached", "used")}
    summary["unused_count"] = len(rep["unused"])
    summary["unobservable"] = [u["action"] for u in rep["unobservable"]]
    for status in ("unused", "used_broadly", "unobservable"):
        summary[f"high_risk_{status}"] = [{k: h[k] for k in ("rule", "policy", "sid", "granted_on", "used_on", "remedy")}
                                          for h in rep[f"high_risk_{status}"]]
    summary["used_not_granted"] = [(u["action"], u["resource"], u["likely_path"]) for u in rep["used_not_granted"]]
    summary["conditions"] = rep["conditions"]
    summary["blocked"] = rep["blocked"]  # by the sample organization's SCPs (sample_logs/iam/organizations.json)
    _golden(f"diff-{role}", json.loads(json.dumps(summary)))
    if role == "orders-api-task":
        assert "logs:PutLogEvents" in summary["unobservable"]  # granted, used, never logged: not "unused"
        assert [h["rule"] for h in summary["high_risk_unused"]] == ["s3:* on *"]
        (decrypt,) = summary["high_risk_used_broadly"]  # kms:Decrypt on *, used on the app's keys
        assert decrypt["policy"] == "orders-api-s3-and-kms" and decrypt["sid"] == "DecryptAnything"
    else:  # issue 9.3: ci-deploy passed 3 roles with iam:PassRole on *: no longer clean
        by = {h["sid"]: h for h in summary["high_risk_used_broadly"]}
        assert by["PassAnyRole"]["policy"] == "arn:aws:iam::111122223333:policy/ci-deploy-policy"
        assert by["PassAnyRole"]["granted_on"] == ["*"] and len(by["PassAnyRole"]["used_on"]["iam:PassRole"]) == 3


def test_sample_principal_only_in_snapshot_is_unknown(sample_store):
    r = run("suggest", "--role", "unused-etl", "--store", sample_store, *SAMPLE_WINDOW)
    assert r.exit_code == 2 and "unknown role 'unused-etl'" in r.stderr


# ----------------------------------------------------------------------------- hostile request values (issue 8.1-8.3)

def _suggest_json(tmp_path, events, *extra):
    root = write_store(tmp_path / "store", events)
    res = run("suggest", "--role", "orders-api", "--store", root, *WINDOW, *extra)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    return doc, res.stderr


def test_suggest_failed_call_on_key_star_keeps_the_real_key(tmp_path):
    doc, err = _suggest_json(tmp_path, [s3_get(key="*", error="NoSuchKey"), s3_get(key="real.json",
                                                                                    when="2026-08-11T00:00:00Z")])
    (stmt,) = doc["Statement"]
    assert sorted(stmt["Resource"]) == ["arn:aws:s3:::orders-bucket/${*}", "arn:aws:s3:::orders-bucket/real.json"]
    assert "1 resource kept, granted exactly as literals" in err


@pytest.mark.parametrize("source, name, params, needle", [
    ("dynamodb.amazonaws.com", "GetItem", {"tableName": "*"}, "TableName '*'"),
    ("lambda.amazonaws.com", "Invoke", {"functionName": "*"}, "FunctionName '*'"),
    ("secretsmanager.amazonaws.com", "GetSecretValue", {"secretId": "*"}, "SecretId '*'"),
    ("sqs.amazonaws.com", "SendMessage", {"queueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCT}/*"}, "QueueName"),
    ("iam.amazonaws.com", "GetRole", {"roleName": "*"}, "RoleNameWithPath '*'"),
    ("s3.amazonaws.com", "GetObject", {"bucketName": "*", "key": "k"}, "BucketName '*'"),
])
def test_suggest_names_aws_does_not_allow_are_reported_never_an_arn(tmp_path, source, name, params, needle):
    evs = [event(ORDERS, name, source, params=params, error="ResourceNotFoundException"), s3_get(key="real.json")]
    doc, err = _suggest_json(tmp_path, evs)
    assert json.dumps(doc).count("Resource") == 1 and doc["Statement"][0]["Resource"] == \
        "arn:aws:s3:::orders-bucket/real.json"
    assert "invalid:" in err and needle in err and "not used to build an ARN" in err


def test_suggest_keys_star_and_escaped_star_in_one_bucket(tmp_path):
    doc, _ = _suggest_json(tmp_path, [s3_get(key="*"), s3_get(key="${*}", when="2026-08-11T00:00:00Z")])
    resources = doc["Statement"][0]["Resource"]
    assert sorted(resources) == ["arn:aws:s3:::orders-bucket/${$}{${*}}", "arn:aws:s3:::orders-bucket/${*}"]
    ev = diff.Evaluator([doc])
    from miner.patterns import literal

    assert ev("s3:GetObject", literal("arn:aws:s3:::orders-bucket/*"))
    assert ev("s3:GetObject", literal("arn:aws:s3:::orders-bucket/${*}"))
    assert not ev("s3:GetObject", "arn:aws:s3:::orders-bucket/other")


def test_suggest_junk_keys_from_failed_calls_do_not_decide_breadth(tmp_path):
    evs = [s3_get(key="real.json")] + [s3_get(key=f"junk{i}", error="NoSuchKey", when=f"2026-08-02T00:00:{i:02d}Z")
                                       for i in range(15)]
    doc, err = _suggest_json(tmp_path, evs)
    assert doc["Statement"][0]["Resource"] == "arn:aws:s3:::orders-bucket/real.json"
    assert "15 resources left out" in err and "generalised" not in err


def test_suggest_tag_on_create_condition_and_calls_on_oneself(tmp_path):
    """Issue 9: ec2:CreateTags with ec2:CreateAction; iam:CreateAccessKey without userName on the user's own ARN."""
    tags = {"items": [{"resourceType": "instance", "tags": [{"key": "team", "value": "a"}]}]}
    root = write_store(tmp_path / "store", [
        event(ALICE, "RunInstances", "ec2.amazonaws.com", params={"instancesSet": {"items": [{"imageId": "ami-1"}]},
                                                                  "tagSpecificationSet": tags}),
        event(ALICE, "CreateAccessKey", "iam.amazonaws.com", params={}, when="2026-08-11T00:00:00Z"),
        event(ORDERS, "GetUser", "iam.amazonaws.com", params={}, error="ValidationError"),
        event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "orders"})])
    res = run("suggest", "--user", "alice", "--store", root, *WINDOW)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    by_action = {a: s for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert by_action["ec2:CreateTags"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    assert by_action["ec2:CreateTags"]["Resource"] == f"arn:aws:ec2:us-east-1:{ACCT}:instance/*"
    assert by_action["iam:CreateAccessKey"]["Resource"] == ALICE
    assert diff.is_allowed([doc], "iam:CreateAccessKey", ALICE)
    assert not diff.is_allowed([doc], "iam:CreateAccessKey", f"arn:aws:iam::{ACCT}:user/bob")
    used = json.loads(run("usage", "--user", "alice", "--store", root, *WINDOW, "--format", "json").stdout)
    assert {(a["action"], a["resource"]) for a in used["actions"]} >= {("iam:CreateAccessKey", ALICE)}
    res = run("suggest", "--role", "orders-api", "--account", ACCT, "--store", root, *WINDOW)
    assert res.exit_code == 0, res.output
    assert "iam:" not in res.stdout and "invalid:    1 events of iam:GetUser" in res.stderr

# ----------------------------------------------------------------------------- strict JSON (issue 9.6)

def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str):
    """``json.loads`` that rejects NaN and Infinity (what jq, JavaScript and other strict parsers do)."""
    return json.loads(text, parse_constant=_reject_constant)


STRICT_JSON_COMMANDS = {
    "principals": ["principals", *SAMPLE_WINDOW, "--format", "json"],
    "usage": ["usage", "--role", "orders-api-task", *SAMPLE_WINDOW, "--format", "json"],
    "suggest": ["suggest", "--role", "ci-deploy", *SAMPLE_WINDOW, "-q"],
    "suggest --diff": ["suggest", "--role", "ci-deploy", *SAMPLE_WINDOW, "-q", "--diff", "--iam-snapshot",
                       SAMPLE / "iam", "--format", "json"],
    "coverage": ["coverage", "-f", "json", "-q"],
    "catalog": ["catalog", "--format", "json"],
    "review": ["review", *SAMPLE_WINDOW, "--account", "444455556666", "--iam-snapshot", SAMPLE / "iam", "--format",
               "json", "-q"],
    "backtest": ["backtest", "--role", "ci-deploy", "--train", "30d", "--test", "14d", "--max-resources", "10",
                 "--format", "json"],
}


@pytest.mark.parametrize("name", sorted(STRICT_JSON_COMMANDS))
def test_every_json_output_parses_strictly(sample_store, name):
    args = STRICT_JSON_COMMANDS[name]
    if name != "catalog":
        args = [*args, "--store", sample_store]
    r = run(*args)
    assert r.exit_code == 0, r.output
    strict_json(r.stdout)


def test_ingest_json_parses_strictly(tmp_path):
    day = next((SAMPLE / "AWSLogs" / "111122223333" / "CloudTrail" / "us-east-1").glob("2026/08/0*"))
    r = run("ingest", day, "--store", tmp_path / "store", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert strict_json(r.stdout)["records_written"] > 0


def test_print_json_writes_null_for_nan():
    from miner.escape import json_safe

    doc = {"a": float("nan"), "b": [float("inf"), 1.5], "c": pd.NA, "d": np.array([1.0, np.nan])}
    assert json_safe(doc) == {"a": None, "b": [None, 1.5], "c": None, "d": [1.0, None]}


# ----------------------------------------------------------------------------- Conditions in the diff (issue 9, 5b)

def test_diff_evaluates_conditions_against_the_logged_ips_and_endpoints(tmp_path):
    evs = [s3_get(key="a.json", ip="10.1.2.3"), s3_get(key="b.json", ip="203.0.113.9", when="2026-08-11T00:00:00Z"),
           s3_get(key="c.json", ip="172.31.0.9", vpc_endpoint_id="vpce-0abc", when="2026-08-12T00:00:00Z"),
           event(ORDERS, "GetItem", "dynamodb.amazonaws.com", params={"tableName": "orders"}, ip="10.1.2.3",
                 category="Data")]
    store = write_store(tmp_path / "store", evs)
    office = {"Version": "2012-10-17", "Statement": [
        {"Sid": "OfficeOrEndpoint", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::orders-bucket/*",
         "Condition": {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}},
        {"Sid": "Table", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*",
         "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}, "StringEquals": {"aws:RequestedRegion": "us-east-1"}}}]}
    snap = snapshot_for(tmp_path / "snap.json", [office])
    r = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap,
            "--format", "json")
    assert r.exit_code == 0, r.output
    rep = strict_json(r.stdout)
    cond = {c["action"]: c for c in rep["conditions"]}
    # b.json came from outside 10.0.0.0/8 and not through the endpoint: the Condition does not hold for it; a.json
    # came from inside, c.json through the endpoint (no aws:SourceIp: IfExists holds)
    assert cond["s3:GetObject"]["outcome"] == "holds for some calls" and cond["s3:GetObject"]["sid"] == "OfficeOrEndpoint"
    (ung,) = [u for u in rep["used_not_granted"] if u["action"] == "s3:GetObject"]
    assert ung["resource"] == "arn:aws:s3:::orders-bucket/b.json" and "aws:sourceip = 203.0.113.9" in ung["likely_path"]
    # MFA is not in the store: read generously, and said so for the action
    assert cond["dynamodb:GetItem"]["outcome"] == "holds" and cond["dynamodb:GetItem"]["evaluated"] == \
        ["aws:requestedregion"]
    assert any("aws:multifactorauthpresent" in g for g in cond["dynamodb:GetItem"]["generous"])
    text = run("suggest", "--principal", ORDERS, "--store", store, *WINDOW, "-q", "--diff", "--iam-snapshot", snap)
    assert "read generously: aws:multifactorauthpresent" in text.stdout
