"""Tests for miner.iam: attached policies from an authorization-details snapshot and live from a moto IAM server."""

from __future__ import annotations

import json
from urllib.parse import quote

import boto3
import pytest

from miner import iam

A = "111122223333"
ROLE = f"arn:aws:iam::{A}:role/service-role/orders-api"
USER = f"arn:aws:iam::{A}:user/alice"


def pdoc(*actions, resource="*", effect="Allow") -> dict:
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": list(actions), "Resource": resource}]}


def snapshot() -> dict:
    """A small `aws iam get-account-authorization-details` document."""
    return {
        "RoleDetailList": [{
            "RoleName": "orders-api", "Path": "/service-role/", "Arn": ROLE,
            "AttachedManagedPolicies": [
                {"PolicyName": "orders-managed", "PolicyArn": f"arn:aws:iam::{A}:policy/orders-managed"},
                {"PolicyName": "AmazonS3FullAccess", "PolicyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"},
            ],
            # the raw API returns URL-encoded JSON text; the CLI prints objects: accept both
            "RolePolicyList": [{"PolicyName": "inline-sqs", "PolicyDocument": quote(json.dumps(pdoc("sqs:SendMessage")))}],
            "PermissionsBoundary": {"PermissionsBoundaryType": "Policy",
                                    "PermissionsBoundaryArn": f"arn:aws:iam::{A}:policy/boundary"},
        }],
        "UserDetailList": [{
            "UserName": "alice", "Path": "/", "Arn": USER, "GroupList": ["developers", "ghosts"],
            "AttachedManagedPolicies": [],
            "UserPolicyList": [{"PolicyName": "alice-inline", "PolicyDocument": pdoc("ec2:DescribeInstances")}],
        }],
        "GroupDetailList": [{
            "GroupName": "developers", "Arn": f"arn:aws:iam::{A}:group/developers",
            "GroupPolicyList": [{"PolicyName": "dev-inline", "PolicyDocument": pdoc("ec2:*")}],
            "AttachedManagedPolicies": [{"PolicyName": "orders-managed", "PolicyArn": f"arn:aws:iam::{A}:policy/orders-managed"}],
        }],
        "Policies": [
            {"PolicyName": "orders-managed", "Arn": f"arn:aws:iam::{A}:policy/orders-managed", "DefaultVersionId": "v2",
             "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": False, "Document": pdoc("s3:*")},
                                   {"VersionId": "v2", "IsDefaultVersion": True, "Document": pdoc("dynamodb:GetItem")}]},
            {"PolicyName": "boundary", "Arn": f"arn:aws:iam::{A}:policy/boundary", "DefaultVersionId": "v1",
             "PolicyVersionList": [{"VersionId": "v1", "IsDefaultVersion": True, "Document": pdoc("dynamodb:*", "sqs:*")}]},
        ],
    }


@pytest.fixture
def snap_dir(tmp_path):
    d = tmp_path / "iam"
    d.mkdir()
    (d / f"{A}.json").write_text(json.dumps(snapshot()))
    (d / "444455556666.json").write_text(json.dumps({"RoleDetailList": [], "Policies": []}))
    return d


def test_snapshot_role_managed_inline_boundary(snap_dir):
    att = iam.from_snapshot(snap_dir, ROLE)
    labels = [p.label for p in att.policies]
    assert labels == ["managed orders-managed", "managed AmazonS3FullAccess", "inline inline-sqs"]
    docs = dict(att.documents)
    assert docs["managed orders-managed"]["Statement"][0]["Action"] == ["dynamodb:GetItem"]  # the default version
    assert docs["inline inline-sqs"]["Statement"][0]["Action"] == ["sqs:SendMessage"]  # URL-decoded
    assert att.boundary.document["Statement"][0]["Action"] == ["dynamodb:*", "sqs:*"]
    assert any("AmazonS3FullAccess" in m for m in att.missing)  # AWS managed document not in this snapshot
    assert att.source.startswith("snapshot")


def test_snapshot_user_with_groups(snap_dir):
    att = iam.from_snapshot(snap_dir / f"{A}.json", USER)
    labels = [p.label for p in att.policies]
    assert labels == ["inline alice-inline", "managed (group developers) orders-managed", "inline (group developers) dev-inline"]
    assert att.groups == ["developers", "ghosts"] and any("ghosts" in m for m in att.missing)


def test_snapshot_errors(snap_dir, tmp_path):
    with pytest.raises(iam.IamError, match="close: orders-api"):
        iam.from_snapshot(snap_dir, f"arn:aws:iam::{A}:role/orders-apx")
    with pytest.raises(iam.IamError, match="no IAM snapshot"):
        iam.from_snapshot(tmp_path / "nope", ROLE)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(iam.IamError, match="get-account-authorization-details"):
        iam.from_snapshot(bad, ROLE)
    with pytest.raises(iam.IamError, match="role or a user"):
        iam.from_snapshot(snap_dir, f"arn:aws:iam::{A}:root")


def test_snapshot_inline_policy_without_a_document_is_an_iam_error(tmp_path):
    snap = snapshot()
    del snap["RoleDetailList"][0]["RolePolicyList"][0]["PolicyDocument"]
    (tmp_path / "s.json").write_text(json.dumps(snap))
    with pytest.raises(iam.IamError, match="inline policy 'inline-sqs'.*not a policy document"):
        iam.from_snapshot(tmp_path / "s.json", ROLE)


def test_decode_document_forms():
    d = pdoc("s3:GetObject")
    assert iam.decode_document(d) is d
    assert iam.decode_document(json.dumps(d)) == d
    assert iam.decode_document(quote(json.dumps(d))) == d
    with pytest.raises(iam.IamError):
        iam.decode_document("not json")


def _seed_moto(endpoint: str) -> None:
    c = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                                                 "Action": "sts:AssumeRole"}]})
    c.create_role(RoleName="orders-api", Path="/service-role/", AssumeRolePolicyDocument=trust)
    managed = c.create_policy(PolicyName="orders-managed", PolicyDocument=json.dumps(pdoc("s3:*")))["Policy"]["Arn"]
    c.create_policy_version(PolicyArn=managed, PolicyDocument=json.dumps(pdoc("dynamodb:GetItem")), SetAsDefault=True)
    boundary = c.create_policy(PolicyName="boundary", PolicyDocument=json.dumps(pdoc("dynamodb:*")))["Policy"]["Arn"]
    c.attach_role_policy(RoleName="orders-api", PolicyArn=managed)
    c.put_role_policy(RoleName="orders-api", PolicyName="inline-sqs", PolicyDocument=json.dumps(pdoc("sqs:SendMessage")))
    c.put_role_permissions_boundary(RoleName="orders-api", PermissionsBoundary=boundary)
    c.create_user(UserName="alice")
    c.put_user_policy(UserName="alice", PolicyName="alice-inline", PolicyDocument=json.dumps(pdoc("ec2:DescribeInstances")))
    c.create_group(GroupName="developers")
    c.add_user_to_group(GroupName="developers", UserName="alice")
    c.put_group_policy(GroupName="developers", PolicyName="dev-inline", PolicyDocument=json.dumps(pdoc("ec2:*")))
    c.attach_group_policy(GroupName="developers", PolicyArn=managed)


def _moto_arn(endpoint: str, kind: str, name: str) -> str:
    c = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    return c.get_role(RoleName=name)["Role"]["Arn"] if kind == "role" else c.get_user(UserName=name)["User"]["Arn"]


def test_live_role_through_moto(aws_env):
    _seed_moto(aws_env)
    arn = _moto_arn(aws_env, "role", "orders-api")
    att = iam.from_live(arn, endpoint_url=aws_env)
    docs = dict(att.documents)
    assert set(docs) == {"managed orders-managed", "inline inline-sqs"}
    assert docs["managed orders-managed"]["Statement"][0]["Action"] == ["dynamodb:GetItem"]
    assert att.boundary is not None and att.boundary.document["Statement"][0]["Action"] == ["dynamodb:*"]
    assert "live IAM" in att.source


def test_live_user_reads_group_policies(aws_env):
    _seed_moto(aws_env)
    att = iam.from_live(_moto_arn(aws_env, "user", "alice"), endpoint_url=aws_env)
    assert [p.label for p in att.policies] == ["inline alice-inline", "managed (group developers) orders-managed",
                                               "inline (group developers) dev-inline"]
    assert att.groups == ["developers"]


def test_live_unknown_role_is_a_clear_error(aws_env):
    with pytest.raises(iam.IamError, match="does not exist"):
        iam.from_live("arn:aws:iam::123456789012:role/nope", endpoint_url=aws_env)


@pytest.mark.parametrize("doc,why", [
    ({"Version": "2012-10-17", "Statement": ["s3:*"]}, "not an object"),
    ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": {"s3": "*"}, "Resource": "*"}]},
     "Action must be"),
    ({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": [1]}}, "Resource must be"),
])
def test_malformed_documents_are_iam_errors_that_say_why(doc, why):
    with pytest.raises(iam.IamError, match=why):
        iam.decode_document(doc)
