"""Tests for the event -> IAM action + resource mapping: every rule row, each family, and the invariants."""

import json
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner import mapping
from miner.catalog import arn_templates, get_catalog
from miner.mapping import REASON_NO_RESOURCE_LEVEL, Mapper, get_mapper, load_rules, map_frame

ACCT = "111122223333"
ROLE = f"arn:aws:iam::{ACCT}:role/service-role/app-role"
RULES = load_rules()
CAT = get_catalog()


def ev(source, name, params=None, resources=None, region="us-east-1", partition="aws", event_type=None,
       account=ACCT, mapper=None):
    """Map one event with the built-in rules (never a service reference from the environment)."""
    src = source if "." in source else f"{source}.amazonaws.com"
    return (mapper or get_mapper("")).map(src, name, params, resources, account, region, partition, event_type)


def acts(result):
    return {a.action for a in result.actions}


def res_of(result, action):
    return [a.resource for a in result.actions if a.action == action]


def host_for(source: str) -> str:
    """An event-source host that resolves to a rules.csv source (an IAM prefix or a host key)."""
    if source in CAT.prefixes or source in RULES.sources:
        return f"{source}.amazonaws.com"
    for host, prefixes in RULES.sources.items():
        if source in prefixes:
            return f"{host}.amazonaws.com"
    return f"{source}.amazonaws.com"


# ----------------------------------------------------------------------------- rules.csv, row by row

_WILDCARD_EXAMPLES = {"apigateway": "CreateStage", "billingconsole": "GetBillsForBillingPeriod",
                      "portal.sso": "GetRoleCredentials"}
_PARTIQL = {"SELECT": 'SELECT * FROM "t1"', "INSERT": "INSERT INTO \"t1\" VALUE {'a': 1}",
            "UPDATE": 'UPDATE "t1" SET a = 1 WHERE k = 2', "DELETE": 'DELETE FROM "t1" WHERE k = 2'}


def _params_for(rule):
    params = {"bucketName": "bkt", "key": "k/1"}
    for cond in filter(None, (c.strip() for c in rule.when.split("&"))):
        kind, _, arg = cond.lstrip("!").partition(":")
        if kind == "has" and not cond.startswith("!"):
            params[arg] = "1"
        elif kind == "partiql":
            params["statement"] = _PARTIQL[arg]
        elif kind == "copy_version":
            params["x-amz-copy-source"] = "src/k/0" + ("" if cond.startswith("!") else "?versionId=v1")
    return params


RULE_ROWS = RULES.all_rules()


@pytest.mark.parametrize("rule", RULE_ROWS, ids=[f"{r.line}-{r.source}-{r.event_name}-{r.action or r.status}"
                                                 for r in RULE_ROWS])
def test_every_rule_row_names_a_catalogue_action(rule):
    if rule.status:
        assert rule.status in mapping.STATUSES and not rule.action
        return
    if "{http_method}" in rule.action:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            assert CAT.has_action(rule.action.replace("{http_method}", method))
    else:
        assert CAT.canonical(rule.action) == rule.action, "spell actions as the catalogue does"
    assert rule.comment, "every rule explains itself"


@pytest.mark.parametrize("rule", RULE_ROWS, ids=[f"{r.line}-{r.source}-{r.event_name}-{r.action or r.status}"
                                                 for r in RULE_ROWS])
def test_every_rule_row_is_applied(rule):
    name = _WILDCARD_EXAMPLES.get(rule.source, rule.event_name) if "*" in rule.event_name else rule.event_name
    r = ev(host_for(rule.source), name, _params_for(rule))
    if rule.status:
        assert r.status == rule.status and not r.actions
        return
    assert r.status == "mapped", r.note
    if "{http_method}" in rule.action:
        assert any(a.startswith("apigateway:") for a in acts(r))
        return
    got = [a for a in r.actions if a.action == rule.action]
    assert got, f"{rule.action} not in {acts(r)}"
    assert all(a.implicit == rule.implicit for a in got)


def test_conditional_rows_exclude_each_other():
    assert acts(ev("s3", "GetObject", {"bucketName": "b", "key": "k"})) == {"s3:GetObject"}
    assert acts(ev("s3", "GetObject", {"bucketName": "b", "key": "k", "versionId": "v1"})) == {"s3:GetObjectVersion"}
    assert res_of(ev("s3", "GetObject", {"bucketName": "b", "key": "k", "versionId": "v1"}), "s3:GetObjectVersion") == \
        ["arn:aws:s3:::b/k"]


@pytest.mark.parametrize("name,row,message", [
    ("rules.csv", "s3,GetObject,s3:GetObject,,hass:versionId,,,typo", "unknown condition 'hass'"),
    ("rules.csv", "s3,GetObject,,,,,nopermission,typo", "unknown status 'nopermission'"),
    ("versioned.csv", "s3,^(?P<name>[A-Za-z]+)2020$,no op group", "no (?P<op>...) group"),
])
def test_malformed_rule_rows_fail_at_load_not_at_map_time(tmp_path, name, row, message):
    # these rows used to load, then raised (or were skipped) only when a matching event arrived
    for f in mapping.RULE_FILES:
        (tmp_path / f).write_bytes((mapping.DATA_DIR / f).read_bytes())
    with (tmp_path / name).open("a", encoding="utf-8") as fh:
        fh.write(row + "\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_rules(str(tmp_path))


# ----------------------------------------------------------------------------- event sources (sources.csv)

SOURCE_ROWS = RULES.rows["sources.csv"]


@pytest.mark.parametrize("row", SOURCE_ROWS, ids=[r["event_source"] for r in SOURCE_ROWS])
def test_every_event_source_row_resolves_to_its_prefix(row):
    prefix = row["iam_prefixes"].split(";")[0]
    assert prefix in CAT.prefixes
    wildcard = [r for r in RULES.patterns.get(row["event_source"], ()) if r.status]
    name = CAT.actions(prefix)[0].split(":")[1]
    r = ev(f"{row['event_source']}.amazonaws.com", name)
    if wildcard:
        assert r.status == wildcard[0].status
    else:
        assert f"{prefix}:{name}" in acts(r) or r.status == "no_permission", (r.status, r.note)
    assert row["comment"]


@pytest.mark.parametrize("source,name,action", [
    ("monitoring", "GetMetricData", "cloudwatch:GetMetricData"),
    ("email", "SendEmail", "ses:SendEmail"),
    ("streams.dynamodb", "GetRecords", "dynamodb:GetRecords"),
    ("tagging", "GetResources", "tag:GetResources"),
    ("models.lex", "GetBot", "lex:GetBot"),
    ("appstream2", "DescribeFleets", "appstream:DescribeFleets"),
    ("s3express", "CreateSession", "s3express:CreateSession"),
    ("application-insights", "ListApplications", "applicationinsights:ListApplications"),
    ("servicecatalog-appregistry", "ListApplications", "servicecatalog:ListApplications"),
    ("ec2messages", "GetMessages", "ec2messages:GetMessages"),
])
def test_event_source_host_family(source, name, action):
    assert action in acts(ev(source, name))


def test_botocore_resolves_hosts_without_a_rule():
    m = Mapper()
    # elasticfilesystem is listed for documentation; sso-directory and cloudhsmv2 come from botocore metadata
    assert "cloudhsm:CreateCluster" in acts(m.map("cloudhsmv2.amazonaws.com", "CreateCluster"))
    assert m.prefixes("api.ecr")[0] == "ecr"


def test_unknown_source_is_unmapped_with_a_note():
    r = ev("nosuchservice", "DoThing")
    assert r.status == "unmapped" and "nosuchservice" in r.note and not r.actions


# ----------------------------------------------------------------------------- versioned names (versioned.csv)

@pytest.mark.parametrize("source,name,action", [
    ("lambda", "GetFunction20150331v2", "lambda:GetFunction"),
    ("lambda", "ListFunctions20150331", "lambda:ListFunctions"),
    ("lambda", "UpdateFunctionCode20150331v2", "lambda:UpdateFunctionCode"),
    ("lambda", "AddPermission20150331v2", "lambda:AddPermission"),
    ("lambda", "CreateFunction20150331", "lambda:CreateFunction"),
    ("lambda", "ListTags20170331", "lambda:ListTags"),
    ("cloudfront", "CreateDistribution2020_05_31", "cloudfront:CreateDistribution"),
    ("cloudfront", "GetDistributionConfig2020_05_31", "cloudfront:GetDistributionConfig"),
    ("cloudfront", "UpdateDistribution2019_03_26", "cloudfront:UpdateDistribution"),
])
def test_versioned_names_are_normalised(source, name, action):
    r = ev(source, name)
    assert acts(r) == {action} and r.via == "versioned"


def test_real_operation_names_ending_in_digits_or_v2_are_kept():
    r = ev("connect", "GetMetricDataV2", {"InstanceId": "i1"})
    assert acts(r) == {"connect:GetMetricDataV2"} and r.via == "direct"
    assert "connect:GetMetricDataV" not in acts(r)
    assert acts(ev("s3", "ListObjectsV2", {"bucketName": "b"})) == {"s3:ListBucket"}


def test_versioned_names_need_a_real_operation():
    r = ev("lambda", "Frobnicate20150331v2")
    assert r.status == "unmapped" and not r.actions


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["GetFunction", "ListFunctions", "GetMetricData", "CreateDistribution", "Frob"]),
       suffix=st.from_regex(r"\A(20\d{6}(v\d)?|_?\d{4}_\d\d_\d\d|V\d|\d{1,3})\Z"),
       source=st.sampled_from(["lambda", "cloudfront", "connect", "monitoring"]))
def test_normalisation_never_invents_actions(op, suffix, source):
    r = ev(source, op + suffix)
    for a in r.actions:
        assert CAT.has_action(a.action)
        assert not a.action.endswith(":GetMetricDataV")


# ----------------------------------------------------------------------------- S3 REST families

BUCKET_RES = [{"type": "AWS::S3::Object", "ARNPrefix": "arn:aws:s3:::bkt/"},
              {"accountId": ACCT, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::bkt"}]


@pytest.mark.parametrize("name,action", [("ListObjects", "s3:ListBucket"), ("ListObjectsV2", "s3:ListBucket"),
                                         ("HeadBucket", "s3:ListBucket"), ("ListObjectVersions", "s3:ListBucketVersions"),
                                         ("ListMultipartUploads", "s3:ListBucketMultipartUploads")])
def test_s3_bucket_listing_family_uses_the_bucket_arn(name, action):
    r = ev("s3", name, {"bucketName": "bkt"}, BUCKET_RES)
    assert acts(r) == {action}
    assert res_of(r, action) == ["arn:aws:s3:::bkt"]
    assert r.actions[0].derivation == "record_arn"


@pytest.mark.parametrize("name", ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject"])
def test_s3_multipart_family_is_put_object(name):
    r = ev("s3", name, {"bucketName": "bkt", "key": "exports/a.csv", "uploadId": "u"})
    assert acts(r) == {"s3:PutObject"} and res_of(r, "s3:PutObject") == ["arn:aws:s3:::bkt/exports/a.csv"]


def test_s3_head_object_and_parts():
    assert acts(ev("s3", "HeadObject", {"bucketName": "b", "key": "k"})) == {"s3:GetObject"}
    assert acts(ev("s3", "ListParts", {"bucketName": "b", "key": "k"})) == {"s3:ListMultipartUploadParts"}
    assert acts(ev("s3", "AbortMultipartUpload", {"bucketName": "b", "key": "k"})) == {"s3:AbortMultipartUpload"}


def test_copy_object_reads_the_source_and_writes_the_destination():
    r = ev("s3", "CopyObject", {"bucketName": "dst", "key": "archive/x.pdf",
                                "x-amz-copy-source": "src/invoices/x%20y.pdf?versionId=3"},
           [{"ARN": "arn:aws:s3:::dst/archive/x.pdf"}, {"ARN": "arn:aws:s3:::dst"}])
    assert res_of(r, "s3:GetObjectVersion") == ["arn:aws:s3:::src/invoices/x y.pdf"]  # a specific source version
    assert "s3:GetObject" not in acts(r)
    assert res_of(r, "s3:PutObject") == ["arn:aws:s3:::dst/archive/x.pdf"]
    r = ev("s3", "CopyObject", {"bucketName": "dst", "key": "k2", "x-amz-copy-source": "src/current.pdf"})
    assert res_of(r, "s3:GetObject") == ["arn:aws:s3:::src/current.pdf"] and "s3:GetObjectVersion" not in acts(r)
    r = ev("s3", "UploadPartCopy", {"bucketName": "dst", "key": "k", "x-amz-copy-source": "/src/a"})
    assert res_of(r, "s3:GetObject") == ["arn:aws:s3:::src/a"] and res_of(r, "s3:PutObject") == ["arn:aws:s3:::dst/k"]


def test_delete_objects_is_delete_object_on_the_logged_prefix():
    r = ev("s3", "DeleteObjects", {"bucketName": "bkt", "delete": ""}, BUCKET_RES)
    assert acts(r) == {"s3:DeleteObject"} and res_of(r, "s3:DeleteObject") == ["arn:aws:s3:::bkt/*"]


@pytest.mark.parametrize("name,action", [
    ("GetBucketLifecycle", "s3:GetLifecycleConfiguration"), ("GetBucketLifecycleConfiguration", "s3:GetLifecycleConfiguration"),
    ("PutBucketEncryption", "s3:PutEncryptionConfiguration"), ("GetBucketNotificationConfiguration", "s3:GetBucketNotification"),
    ("GetBucketCors", "s3:GetBucketCORS"), ("DeleteBucketCors", "s3:PutBucketCORS"),
    ("GetBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock"), ("GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock"),
    ("DeleteBucketPublicAccessBlock", "s3:PutBucketPublicAccessBlock"), ("GetBucketLocation", "s3:GetBucketLocation"),
    ("GetBucketReplication", "s3:GetReplicationConfiguration"), ("GetObjectLockConfiguration", "s3:GetBucketObjectLockConfiguration"),
])
def test_s3_bucket_configuration_family(name, action):
    r = ev("s3", name, {"bucketName": "bkt"})
    assert acts(r) == {action} and res_of(r, action) == ["arn:aws:s3:::bkt"]


def test_s3_account_level_calls():
    assert acts(ev("s3", "ListBuckets", None)) == {"s3:ListAllMyBuckets"}
    r = ev("s3", "GetAccountPublicAccessBlock", {"Host": f"{ACCT}.s3-control.us-west-1.amazonaws.com"})
    assert acts(r) == {"s3:GetAccountPublicAccessBlock"}


def test_put_object_with_acl_or_tags_needs_the_extra_actions():
    r = ev("s3", "PutObject", {"bucketName": "b", "key": "k", "x-amz-acl": "bucket-owner-full-control",
                               "x-amz-tagging": "a=b"})
    extra = {a.action for a in r.actions if a.implicit}
    assert extra == {"s3:PutObjectAcl", "s3:PutObjectTagging"}


# ----------------------------------------------------------------------------- other many-to-one families

def test_lambda_invoke_and_function_name_forms():
    assert acts(ev("lambda", "Invoke", {"functionName": "f"})) == {"lambda:InvokeFunction"}
    base = f"arn:aws:lambda:us-east-1:{ACCT}:function"
    cases = {
        "f": f"{base}:f",
        "f:PROD": f"{base}:f:PROD",
        "444455556666:function:f": "arn:aws:lambda:us-east-1:444455556666:function:f",
        f"{base}:f:7": f"{base}:f:7",
    }
    for given_name, want in cases.items():
        assert res_of(ev("lambda", "Invoke", {"functionName": given_name}), "lambda:InvokeFunction") == [want], given_name
    r = ev("lambda", "GetFunction20150331v2", {"functionName": "f", "qualifier": "live"})
    assert res_of(r, "lambda:GetFunction") == [f"{base}:f:live"]


def test_kms_reencrypt_needs_both_keys():
    src, dst = f"arn:aws:kms:us-east-1:{ACCT}:key/src-1", f"arn:aws:kms:us-east-1:{ACCT}:key/mrk-dst"
    r = ev("kms", "ReEncrypt", {"destinationKeyId": dst}, [{"ARN": src}, {"ARN": dst}])
    assert res_of(r, "kms:ReEncryptFrom") == [src] and res_of(r, "kms:ReEncryptTo") == [dst]
    r = ev("kms", "ReEncrypt", {"sourceKeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "destinationKeyId": dst})
    assert res_of(r, "kms:ReEncryptFrom") == [f"arn:aws:kms:us-east-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"]


def test_kms_key_forms():
    key = f"arn:aws:kms:eu-west-1:{ACCT}:key/mrk-50fa"
    r = ev("kms", "GenerateDataKey", {"keyId": "alias/orders"}, [{"ARN": key}], region="eu-west-1")
    assert res_of(r, "kms:GenerateDataKey") == [key]
    r = ev("kms", "Decrypt", {"keyId": "alias/orders"})  # an alias alone names no key
    assert res_of(r, "kms:Decrypt") == ["*"] and "could not derive" in r.actions[0].reason
    r = ev("kms", "CreateAlias", {"aliasName": "alias/x", "targetKeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"})
    assert set(res_of(r, "kms:CreateAlias")) == {f"arn:aws:kms:us-east-1:{ACCT}:alias/x",
                                                 f"arn:aws:kms:us-east-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"}


@pytest.mark.parametrize("statement,action,arn", [
    ('SELECT "a" FROM "orders"."by-customer" WHERE x = ?', "dynamodb:PartiQLSelect", "table/orders/index/by-customer"),
    ("select * from orders where k = 1", "dynamodb:PartiQLSelect", "table/orders"),
    ("INSERT INTO \"orders\" VALUE {'k': 1}", "dynamodb:PartiQLInsert", "table/orders"),
    ('UPDATE "orders" SET a = 1 WHERE k = 1', "dynamodb:PartiQLUpdate", "table/orders"),
    ('DELETE FROM "orders" WHERE k = 1', "dynamodb:PartiQLDelete", "table/orders"),
    ('EXISTS(SELECT * FROM "orders" WHERE k = 1)', "dynamodb:PartiQLSelect", "table/orders"),
])
def test_partiql_maps_by_statement_verb(statement, action, arn):
    r = ev("dynamodb", "ExecuteStatement", {"statement": statement})
    assert acts(r) == {action}
    assert res_of(r, action) == [f"arn:aws:dynamodb:us-east-1:{ACCT}:{arn}"]


def test_partiql_batch_and_transaction_emit_one_action_per_verb():
    r = ev("dynamodb", "BatchExecuteStatement", {"statements": [{"statement": 'SELECT * FROM "a"'},
                                                                {"statement": 'DELETE FROM "b" WHERE k=1'}]})
    assert acts(r) == {"dynamodb:PartiQLSelect", "dynamodb:PartiQLDelete"}
    assert res_of(r, "dynamodb:PartiQLDelete") == [f"arn:aws:dynamodb:us-east-1:{ACCT}:table/b"]
    r = ev("dynamodb", "ExecuteTransaction", {"transactStatements": [{"statement": 'INSERT INTO "a" VALUE {}'}]})
    assert acts(r) == {"dynamodb:PartiQLInsert"}


def test_partiql_without_a_statement_is_reported_not_dropped():
    r = ev("dynamodb", "ExecuteStatement", {"parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"})
    assert r.status == "unmapped" and "partiql" in r.note


def test_transact_write_items_by_item_kind():
    r = ev("dynamodb", "TransactWriteItems", {"transactItems": [{"Put": {"tableName": "a"}},
                                                                {"ConditionCheck": {"tableName": "b"}}]})
    assert acts(r) == {"dynamodb:PutItem", "dynamodb:ConditionCheckItem"}


def test_dynamodb_query_on_an_index_is_authorised_on_the_index():
    table = f"arn:aws:dynamodb:us-east-1:{ACCT}:table/orders"
    r = ev("dynamodb", "Query", {"tableName": "orders", "indexName": "by-customer"}, [{"ARN": table}])
    assert res_of(r, "dynamodb:Query") == [f"{table}/index/by-customer"]
    r = ev("dynamodb", "Query", {"tableName": "orders"}, [{"ARN": table}])
    assert res_of(r, "dynamodb:Query") == [table] and r.actions[0].derivation == "record_arn"
    r = ev("dynamodb", "GetItem", None, [{"ARN": table}])  # requestParameters null: the record still names the table
    assert res_of(r, "dynamodb:GetItem") == [table]


def test_batch_families():
    assert acts(ev("sqs", "SendMessageBatch", {"queueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"})) == {"sqs:SendMessage"}
    assert acts(ev("sns", "PublishBatch", {"topicArn": f"arn:aws:sns:us-east-1:{ACCT}:t"})) == {"sns:Publish"}


def test_api_gateway_uses_the_http_verb_and_path():
    r = ev("apigateway", "CreateStage", {"restApiId": "abc", "createStageInput": {"stageName": "latest"}})
    assert [(a.action, a.resource) for a in r.actions] == [("apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/abc/stages")]
    r = ev("apigateway", "GetResource", {"restApiId": "abc", "resourceId": "r1"})
    assert [(a.action, a.resource) for a in r.actions] == [("apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis/abc/resources/r1")]


# ----------------------------------------------------------------------------- no permission / not an API call

@pytest.mark.parametrize("source,name", [("sts", "GetCallerIdentity"), ("signin", "ConsoleLogin"), ("signin", "CheckMfa"),
                                         ("signin", "SwitchRole"), ("portal.sso", "ListAccounts"),
                                         ("sts", "AssumeRoleWithWebIdentity")])
def test_calls_that_need_no_permission(source, name):
    r = ev(source, name)
    assert r.status == "no_permission" and not r.actions and r.note


EVENT_TYPE_ROWS = RULES.rows["event_types.csv"]


@pytest.mark.parametrize("row", EVENT_TYPE_ROWS, ids=[r["event_type"] for r in EVENT_TYPE_ROWS])
def test_every_event_type_row(row):
    r = ev("ec2", "DescribeInstances", {}, event_type=row["event_type"])
    assert r.status == (row["status"] or "mapped")
    if row["status"]:
        assert not r.actions and row["event_type"] in r.note


# ----------------------------------------------------------------------------- iam:PassRole (passrole.csv)

PASSROLE_ROWS = RULES.rows["passrole.csv"]


@pytest.mark.parametrize("row", PASSROLE_ROWS, ids=[f"{r['kind']}-{r['name']}" for r in PASSROLE_ROWS])
def test_every_passrole_row(row):
    kind, name = row["kind"], row["name"]
    if kind == "exclude_action":
        prefix, action = name.split(":")
        r = ev(prefix, action, {"roleArn": ROLE, "role": ROLE})
        assert "iam:PassRole" not in {a.action for a in r.actions if a.implicit}
        return
    if kind == "instance_profile":
        r = ev("ec2", "RunInstances", {name: {"arn": f"arn:aws:iam::{ACCT}:instance-profile/web"}, "imageId": "ami-1"})
        pr = [a for a in r.actions if a.action == "iam:PassRole"]
        assert pr and pr[0].resource == f"arn:aws:iam::{ACCT}:role/*" and "instance profile" in pr[0].reason
        return
    key = ("execution" + name[0].upper() + name[1:]) if kind == "param_suffix" else name
    value = [ROLE] if name.endswith("s") and kind == "param_suffix" else ROLE
    r = ev("lambda", "CreateFunction20150331", {"functionName": "f", key: value})
    pr = [a for a in r.actions if a.action == "iam:PassRole"]
    assert [a.resource for a in pr] == [ROLE] and pr[0].implicit and key in pr[0].reason
    if kind == "param_or_name":
        r = ev("glue", "CreateJob", {"name": "j", name: "etl-role"})
        assert set(res_of(r, "iam:PassRole")) == {f"arn:aws:iam::{ACCT}:role/etl-role", f"arn:aws:iam::{ACCT}:role/*/etl-role"}


def test_passrole_from_nested_and_several_roles():
    r = ev("ecs", "RegisterTaskDefinition", {"family": "orders-api", "taskRoleArn": ROLE,
                                              "executionRoleArn": f"arn:aws:iam::{ACCT}:role/ecsTaskExecutionRole"})
    assert set(res_of(r, "iam:PassRole")) == {ROLE, f"arn:aws:iam::{ACCT}:role/ecsTaskExecutionRole"}
    r = ev("firehose", "CreateDeliveryStream", {"deliveryStreamName": "s",
                                                "extendedS3DestinationConfiguration": {"roleARN": ROLE}})
    assert res_of(r, "iam:PassRole") == [ROLE]


def test_no_passrole_for_reads_or_assume_role():
    assert "iam:PassRole" not in acts(ev("lambda", "GetFunction20150331v2", {"functionName": "f", "role": ROLE}))
    r = ev("sts", "AssumeRole", {"roleArn": ROLE}, [{"ARN": ROLE}])
    assert acts(r) == {"sts:AssumeRole"} and res_of(r, "sts:AssumeRole") == [ROLE]


# ----------------------------------------------------------------------------- resources (bindings.csv)

_SAMPLES = {
    "": "sample-1", "arn_or_name": "sample-1", "lambda_function": "my-fn", "kms_key": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "kms_alias": "alias/my-alias", "secret_id": "app/db", "sqs_queue": f"https://sqs.us-east-1.amazonaws.com/{ACCT}/q1",
    "iam_with_path": "name-1", "strip_leading_slash": "/app/db/password", "log_group": "/aws/lambda/fn",
    "ecs_task_definition": "family-1:3", "bedrock_foundation_model": "anthropic.claude-v2",
    "bedrock_inference_profile": "us.anthropic.claude-v2",
}
_EC2 = {"VpcId": "vpc-0123456789abcdef0", "SubnetId": "subnet-0123456789abcdef0", "NetworkInterfaceId": "eni-0123456789abcdef0",
        "VpcFlowLogId": "fl-0123456789abcdef0", "SecurityGroupId": "sg-0123456789abcdef0", "KeyPairName": "kp-1"}


def _action_for(prefix, rtype, var):
    """A catalogue action of ``prefix`` with a resource type whose template uses ``${var}`` (the fewest variables first)."""
    best = None
    for action in CAT.actions(prefix):
        for rt in CAT.info(action).resource_types:
            if rtype != "*" and rt.name.lower() != rtype:
                continue
            for t in arn_templates(rt.arn_template):
                if var in t.variables:
                    score = (len(t.identifying_variables), len(CAT.info(action).resource_types))
                    if best is None or score < best[0]:
                        best = (score, action, t)
    return best


BINDING_ROWS = RULES.rows["bindings.csv"]


@pytest.mark.parametrize("row", BINDING_ROWS, ids=[f"{r['scope']}-{r['resource_type']}-{r['variable']}" for r in BINDING_ROWS])
def test_every_binding_row_fills_a_template(row):
    prefix = "s3" if row["scope"] == "*" else row["scope"]
    found = _action_for(prefix, row["resource_type"], row["variable"])
    assert found, f"no {prefix} action uses ${{{row['variable']}}}"
    _score, action, tmpl = found
    param = row["parameters"].split("|")[0]
    value = _EC2.get(row["variable"]) if row["transform"] == "ec2_id" or prefix == "ec2" else None
    value = value or _SAMPLES[row["transform"]]
    if param.lower().endswith("arn") and row["transform"] in ("", "arn_or_name"):
        value = tmpl.fill({"Partition": "aws", "Region": "us-east-1", "Account": ACCT, row["variable"]: "sample-1"})
    r = ev(host_for(prefix), action.split(":")[1], {param: value})
    got = [a for a in r.actions if a.action == action]
    assert got and any(a.resource != "*" and a.derivation == "template" for a in got), (action, param, value, r)
    assert row["comment"]


def test_resources_follow_the_partition():
    r = ev("s3", "GetObject", {"bucketName": "b", "key": "k"}, region="us-gov-west-1", partition="aws-us-gov")
    assert res_of(r, "s3:GetObject") == ["arn:aws-us-gov:s3:::b/k"]
    r = ev("sqs", "SendMessage", {"queueUrl": f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCT}/q"},
           region="cn-north-1", partition="aws-cn")
    assert res_of(r, "sqs:SendMessage") == [f"arn:aws-cn:sqs:cn-north-1:{ACCT}:q"]
    r = ev("lambda", "Invoke", {"functionName": "f"}, region="cn-north-1", partition="aws-cn")
    assert res_of(r, "lambda:InvokeFunction") == [f"arn:aws-cn:lambda:cn-north-1:{ACCT}:function:f"]


def test_missing_partition_is_inferred_from_the_region():
    # was arn:aws:... whatever the region when the partition was not given (map_event default, null column)
    r = ev("s3", "GetObject", {"bucketName": "b", "key": "k"}, region="us-gov-west-1", partition="")
    assert res_of(r, "s3:GetObject") == ["arn:aws-us-gov:s3:::b/k"]
    r = mapping.map_event("lambda.amazonaws.com", "Invoke", {"functionName": "f"}, None, ACCT, "cn-north-1")
    assert res_of(r, "lambda:InvokeFunction") == [f"arn:aws-cn:lambda:cn-north-1:{ACCT}:function:f"]
    df = pd.DataFrame({"event_source": ["s3.amazonaws.com"], "event_name": ["GetObject"],
                       "request_parameters": ['{"bucketName":"b","key":"k"}'], "resources": [None],
                       "account_id": [ACCT], "aws_region": ["us-gov-east-1"], "partition": [None]})
    assert list(map_frame(df, Mapper())["resource"]) == ["arn:aws-us-gov:s3:::b/k"]
    assert res_of(ev("s3", "GetObject", {"bucketName": "b", "key": "k"}, partition=""), "s3:GetObject") == \
        ["arn:aws:s3:::b/k"]


def test_record_arn_wins_and_lower_case_arn_key_is_read():
    r = ev("s3", "GetObject", {"bucketName": "b", "key": "k"}, [{"arn": "arn:aws:s3:::b/k"}, {"ARN": "arn:aws:s3:::b"}])
    assert [(a.resource, a.derivation) for a in r.actions] == [("arn:aws:s3:::b/k", "record_arn")]


def test_secret_and_role_names_are_widened_honestly():
    r = ev("secretsmanager", "GetSecretValue", {"secretId": "orders/db"})
    (a,) = r.actions
    assert a.resource == f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:orders/db-??????"
    r = ev("iam", "GetRole", {"roleName": "ci-deploy"})
    assert set(res_of(r, "iam:GetRole")) == {f"arn:aws:iam::{ACCT}:role/ci-deploy", f"arn:aws:iam::{ACCT}:role/*/ci-deploy"}
    r = ev("iam", "CreateRole", {"roleName": "w", "path": "/service-role/"})
    assert res_of(r, "iam:CreateRole") == [f"arn:aws:iam::{ACCT}:role/service-role/w"]


def test_star_reasons_distinguish_no_resource_level_from_not_derived():
    r = ev("ec2", "DescribeInstances", {})
    assert [(a.resource, a.derivation, a.reason) for a in r.actions] == [("*", "star", REASON_NO_RESOURCE_LEVEL)]
    r = ev("logs", "CreateLogStream", None)
    (a,) = r.actions
    assert a.resource == "*" and a.reason != REASON_NO_RESOURCE_LEVEL and "could not derive" in a.reason


def test_partial_arns_when_only_part_is_known():
    r = ev("cloudformation", "UpdateStack", {"stackName": "orders-api"})
    (a,) = r.actions
    assert a.resource == f"arn:aws:cloudformation:us-east-1:{ACCT}:stack/orders-api/*" and a.derivation == "template"
    assert a.reason.startswith("partial")


def test_required_types_missing_from_the_request_are_scoped_to_the_account():
    r = ev("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": "ami-1"}]},
                                   "groupSet": {"items": [{"groupId": "sg-1"}]}, "subnetId": "subnet-1"})
    got = set(res_of(r, "ec2:RunInstances"))
    assert "arn:aws:ec2:us-east-1::image/ami-1" in got
    assert f"arn:aws:ec2:us-east-1:{ACCT}:instance/*" in got and f"arn:aws:ec2:us-east-1:{ACCT}:subnet/subnet-1" in got
    assert "*" not in got


# ----------------------------------------------------------------------------- inputs, caching, map_frame

def test_json_text_dict_and_double_encoded_inputs_agree():
    params = {"bucketName": "b", "key": "k"}
    a = ev("s3", "GetObject", params)
    b = ev("s3", "GetObject", json.dumps(params))
    c = ev("s3", "GetObject", json.dumps(json.dumps(params)))
    assert a.actions == b.actions == c.actions


def test_every_emitted_action_exists_and_nothing_raises_on_junk():
    for params in (None, "", "null", "not json", "[1, 2]", {"a": [{"b": None}]}, {"bucketName": 5}):
        for resources in (None, "[]", "{}", "junk", [{"type": "x"}], [{"ARNPrefix": "arn:aws:s3:::b/"}]):
            r = ev("s3", "GetObject", params, resources)
            assert r.status == "mapped"
            assert all(CAT.has_action(a.action) for a in r.actions)


def test_plans_are_cached_per_event_kind():
    m = Mapper()
    for i in range(50):
        m.map("s3.amazonaws.com", "GetObject", {"bucketName": "b", "key": f"k{i}"}, None, ACCT, "us-east-1", "aws")
    assert len(m._plans) == 1


def test_map_frame_one_row_per_action_keeps_unmapped_and_index():
    df = pd.DataFrame({
        "event_source": ["s3.amazonaws.com", "s3.amazonaws.com", "sts.amazonaws.com", "nosuch.amazonaws.com", "s3.amazonaws.com"],
        "event_name": ["CopyObject", "GetObject", "GetCallerIdentity", "Frob", "CopyObject"],
        "request_parameters": [json.dumps({"bucketName": "b", "key": "d", "x-amz-copy-source": "b/s"}),
                               json.dumps({"bucketName": "b", "key": "k"}), None, None,
                               json.dumps({"bucketName": "b", "key": "d", "x-amz-copy-source": "b/s"})],
        "resources": [None] * 5, "account_id": [ACCT] * 5, "aws_region": ["us-east-1"] * 5,
        "partition": ["aws"] * 5, "extra": ["e0", "e1", "e2", "e3", "e4"],
    }, index=[10, 11, 12, 13, 14])
    out = map_frame(df, Mapper())
    assert list(out.index) == [10, 10, 11, 12, 13, 14, 14]
    assert list(out["extra"]) == ["e0", "e0", "e1", "e2", "e3", "e4", "e4"]
    assert list(out["status"]) == ["mapped"] * 3 + ["no_permission", "unmapped"] + ["mapped"] * 2
    assert out["action"].isna().sum() == 2
    assert set(out.loc[10, "action"]) == {"s3:GetObject", "s3:PutObject"}
    assert all(CAT.has_action(a) for a in out["action"].dropna())


def test_map_frame_maps_each_distinct_input_once(monkeypatch):
    m = Mapper()
    calls = []
    real = m.map
    monkeypatch.setattr(m, "map", lambda *a, **k: calls.append(a) or real(*a, **k))
    row = {"event_source": "s3.amazonaws.com", "event_name": "GetObject", "request_parameters": '{"bucketName":"b","key":"k"}',
           "resources": None, "account_id": ACCT, "aws_region": "us-east-1", "partition": "aws"}
    df = pd.DataFrame([row] * 1000 + [{**row, "event_name": "PutObject"}] * 500)
    out = map_frame(df, m)
    assert len(out) == 1500 and len(calls) == 2


def test_map_frame_accepts_dicts_and_empty_frames():
    df = pd.DataFrame({"event_source": ["s3.amazonaws.com"], "event_name": ["GetObject"],
                       "request_parameters": [{"bucketName": "b", "key": "k"}], "resources": [None],
                       "account_id": [ACCT], "aws_region": ["us-east-1"], "partition": ["aws"]})
    assert list(map_frame(df, Mapper())["resource"]) == ["arn:aws:s3:::b/k"]
    empty = map_frame(df.iloc[:0], Mapper())
    assert len(empty) == 0 and "action" in empty.columns


def test_public_api_is_kept():
    r = mapping.map_event("s3.amazonaws.com", "ListObjects", {"bucketName": "b"}, None, ACCT, "us-east-1", "aws")
    assert isinstance(r, mapping.MappingResult) and isinstance(r.actions[0], mapping.MappedAction)
    assert mapping.map("s3.amazonaws.com", "ListObjects", {"bucketName": "b"}).actions[0].action == "s3:ListBucket"
    assert get_mapper().map("s3.amazonaws.com", "HeadObject", {"bucketName": "b", "key": "k"}).actions[0].action == "s3:GetObject"
    assert mapping.rules_version().startswith("rules ")


# ----------------------------------------------------------------------------- AWS Service Reference precedence

SERVICE_REF = {
    "Name": "s3",
    "Actions": [{"Name": "GetObject"}, {"Name": "ListBucket"}],
    "Operations": [
        {"Name": "HeadObject", "AuthorizedActions": [{"Name": "GetObject", "Service": "s3"},
                                                     {"Name": "GetObjectVersion", "Service": "s3"}],
         "SDK": [{"Name": "s3", "Method": "head_object", "Package": "Boto3"}]},
        {"Name": "CopyObject", "AuthorizedActions": [{"Name": "GetObject", "Service": "s3"},
                                                     {"Name": "PutObject", "Service": "s3"},
                                                     {"Name": "NotARealAction", "Service": "s3"}]},
        {"Name": "ListObjects", "AuthorizedActions": []},
    ],
}


@pytest.fixture
def service_ref_dir(tmp_path):
    d = tmp_path / "servicereference"
    d.mkdir()
    (d / "s3.json").write_text(json.dumps(SERVICE_REF))
    (d / "README.json").write_text(json.dumps({"hello": "not a service file"}))
    return d


def test_service_reference_takes_precedence_where_it_has_an_answer(service_ref_dir):
    from miner.servicereference import load_service_reference

    ref = load_service_reference(service_ref_dir)
    assert ref.services == {"s3": "s3.json"} and ref.problems
    m = Mapper(service_reference=ref)
    r = m.map("s3.amazonaws.com", "HeadObject", {"bucketName": "b", "key": "k"}, None, ACCT, "us-east-1", "aws")
    assert acts(r) == {"s3:GetObject", "s3:GetObjectVersion"} and r.via == "service_reference"
    # the built-in rule's resource strategy is reused for the same action (CopyObject reads the source)
    r = m.map("s3.amazonaws.com", "CopyObject", {"bucketName": "d", "key": "k", "x-amz-copy-source": "s/x"}, None, ACCT,
              "us-east-1", "aws")
    assert res_of(r, "s3:GetObject") == ["arn:aws:s3:::s/x"] and "NotARealAction" in r.note
    assert all(CAT.has_action(a.action) for a in r.actions)
    # no answer (empty list, or no such operation): the built-in rules apply
    assert acts(m.map("s3.amazonaws.com", "ListObjects", {"bucketName": "b"})) == {"s3:ListBucket"}
    assert m.map("s3.amazonaws.com", "ListObjects", {"bucketName": "b"}).via == "rule"
    assert "service reference" in m.version


def test_service_reference_from_the_environment(service_ref_dir, monkeypatch):
    monkeypatch.setenv("MINER_SERVICE_REFERENCE", str(service_ref_dir))
    assert get_mapper().service_reference is not None
    assert get_mapper("").service_reference is None  # "" forces offline
    monkeypatch.delenv("MINER_SERVICE_REFERENCE")
    assert get_mapper().service_reference is None


def test_missing_service_reference_dir_is_an_error(tmp_path):
    from miner.servicereference import load_service_reference

    with pytest.raises(FileNotFoundError):
        load_service_reference(tmp_path / "nope")


_KEYS = ["bucketName", "key", "functionName", "queueUrl", "keyId", "roleArn", "role", "tableName", "indexName",
         "secretId", "logGroupName", "instanceId", "x-amz-copy-source", "statement", "versionId", "name"]
_VALUES = st.one_of(st.text(max_size=30), st.sampled_from([ROLE, "alias/x", "arn:aws:s3:::b/k", "/a/b", "i-0abc",
                                                          "https://sqs.us-east-1.amazonaws.com/1/q", "SELECT * FROM t"]),
                    st.lists(st.text(max_size=10), max_size=3), st.none(), st.integers())


@settings(max_examples=150, deadline=None)
@given(source=st.sampled_from(["s3", "lambda", "kms", "dynamodb", "sqs", "iam", "sts", "ec2", "logs", "secretsmanager",
                               "monitoring", "signin", "apigateway", "cloudfront", "nosuch"]),
       name=st.one_of(st.sampled_from(["GetObject", "CopyObject", "Invoke", "ReEncrypt", "ExecuteStatement", "Query",
                                       "SendMessage", "GetRole", "AssumeRole", "RunInstances", "CreateLogStream",
                                       "GetSecretValue", "GetMetricData", "ConsoleLogin", "CreateStage",
                                       "GetFunction20150331v2", "PutObject", "DeleteObjects"]),
                      st.text(alphabet="AbcdefGhV0123456789_", min_size=1, max_size=25)),
       params=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5),
       region=st.sampled_from(["us-east-1", "us-gov-west-1", "cn-north-1", "", "redacted"]))
def test_mapping_invariants_hold_for_any_input(source, name, params, region):
    from miner.models import partition_of

    r = ev(source, name, params, None, region=region, partition=partition_of(region))
    assert r.status in mapping.STATUSES
    assert bool(r.actions) == (r.status == "mapped")
    if r.status != "mapped":
        assert r.note
    for a in r.actions:
        assert CAT.has_action(a.action) and a.derivation in mapping.DERIVATIONS
        assert a.resource == "*" or a.resource.startswith("arn:")
        assert (a.resource == "*") == (a.derivation == "star") and (a.derivation != "star" or a.reason)


# ----------------------------------------------------------------------------- hostile request values (issue 8)

from miner.patterns import covers, is_literal, literal  # noqa: E402

#: names.csv row (scope, resource_type, variable) -> an event that binds it: (source, eventName, parameter, valid value)
_NAME_EVENTS = {
    ("*", "*", "BucketName"): ("s3", "GetObject", "bucketName", "my.Legacy_bucket-1"),
    ("s3", "*", "AccessPointName"): ("s3", "GetAccessPointPolicy", "name", "ap-1"),
    ("lambda", "*", "FunctionName"): ("lambda", "GetFunction", "functionName", "thumbnailer:live"),
    ("lambda", "*", "LayerName"): ("lambda", "GetLayerVersion", "layerName", "deps_1"),
    ("dynamodb", "*", "TableName"): ("dynamodb", "DescribeTable", "tableName", "orders.v2-x"),
    ("dynamodb", "*", "IndexName"): ("dynamodb", "Query", "indexName", "by-date"),
    ("sqs", "*", "QueueName"): ("sqs", "SendMessage", "queueUrl", f"https://sqs.us-east-1.amazonaws.com/{ACCT}/q.fifo"),
    ("sns", "*", "TopicName"): ("sns", "CreateTopic", "name", "alerts"),
    ("iam", "role", "RoleNameWithPath"): ("iam", "GetRole", "roleName", "app+role=,.@-_"),
    ("iam", "user", "UserNameWithPath"): ("iam", "GetUser", "userName", "alice@example.com"),
    ("iam", "group", "GroupNameWithPath"): ("iam", "GetGroup", "groupName", "admins"),
    ("iam", "policy", "PolicyNameWithPath"): ("iam", "CreatePolicy", "policyName", "ReadOnly"),
    ("iam", "instance-profile", "InstanceProfileNameWithPath"): ("iam", "GetInstanceProfile", "instanceProfileName", "web"),
    ("secretsmanager", "*", "SecretId"): ("secretsmanager", "GetSecretValue", "secretId", "prod/db+x=y.z@w-1"),
    ("ssm", "parameter", "ParameterNameWithoutLeadingSlash"): ("ssm", "GetParameter", "name", "/app/prod/db_url"),
    ("logs", "*", "LogGroupName"): ("logs", "DescribeLogStreams", "logGroupName", "/aws/lambda/f#1"),
    ("logs", "*", "LogStreamName"): ("logs", "PutLogEvents", "logStreamName", "2026/08/14/[$LATEST]abc"),
    ("kinesis", "stream", "StreamName"): ("kinesis", "PutRecord", "streamName", "clicks.v1"),
    ("firehose", "deliverystream", "DeliveryStreamName"): ("firehose", "PutRecord", "deliveryStreamName", "to-s3"),
    ("ecs", "*", "ClusterName"): ("ecs", "DescribeClusters", "cluster", "prod_1"),
    ("ecs", "task-definition", "TaskDefinitionFamilyName"): ("ecs", "RunTask", "taskDefinition", "web:12"),
    ("rds", "*", "DbInstanceName"): ("rds", "DescribeDBInstances", "dBInstanceIdentifier", "db-1"),
    ("rds", "*", "DbClusterInstanceName"): ("rds", "DescribeDBClusters", "dBClusterIdentifier", "aurora-1"),
    ("states", "*", "StateMachineName"): ("states", "CreateStateMachine", "name", "orders-flow_2"),
}


def test_every_names_row_has_an_example():
    assert set(RULES.names) == set(_NAME_EVENTS)


@pytest.mark.parametrize("row", sorted(RULES.names), ids=lambda r: "/".join(r))
def test_names_row_accepts_real_names_and_rejects_wildcards(row):
    rx, comment = RULES.names[row]
    source, name, param, good = _NAME_EVENTS[row]
    assert rx.fullmatch(good) and comment and "https://docs.aws.amazon.com/" in comment
    params = {"bucketName": "b", "key": "k"} if row[2] == "BucketName" else {}
    ok = ev(source, name, {**params, param: good})
    assert ok.status == "mapped", ok.note
    bad = ev(source, name, {**params, param: good + "*"})
    assert bad.status == "invalid" and not bad.actions and "not used to build an ARN" in bad.note


def test_a_star_key_is_a_literal_not_a_wildcard():
    (r,) = res_of(ev("s3", "GetObject", {"bucketName": "b", "key": "*"}), "s3:GetObject")
    assert r == "arn:aws:s3:::b/${*}" and is_literal(r)
    (r,) = res_of(ev("s3", "GetObject", {"bucketName": "b", "key": "${aws:username}/?"}), "s3:GetObject")
    assert r == "arn:aws:s3:::b/${$}{aws:username}/${?}"


def test_record_arns_and_request_arns_are_literals():
    r = ev("s3", "GetObject", {}, [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::b/*"}])
    assert res_of(r, "s3:GetObject") == ["arn:aws:s3:::b/${*}"]
    r = ev("sns", "Publish", {"topicArn": f"arn:aws:sns:us-east-1:{ACCT}:*"})
    assert res_of(r, "sns:Publish") == [f"arn:aws:sns:us-east-1:{ACCT}:${{*}}"]
    r = ev("kms", "Decrypt", {}, [{"ARNPrefix": f"arn:aws:kms:us-east-1:{ACCT}:key/a*"}])
    assert res_of(r, "kms:Decrypt") == [f"arn:aws:kms:us-east-1:{ACCT}:key/a${{*}}*"]  # the prefix stays literal


def test_names_of_spaces_are_names_not_missing_values():
    (r,) = res_of(ev("s3", "GetObject", {"bucketName": "b", "key": " "}), "s3:GetObject")
    assert r == "arn:aws:s3:::b/ "


@pytest.mark.parametrize("source, name, params, expected", [
    ("s3", "CopyObject", {"bucketName": "b", "key": "k", "x-amz-copy-source": "src/%2A"}, "arn:aws:s3:::src/${*}"),
    ("s3", "CopyObject", {"bucketName": "b", "key": "k", "x-amz-copy-source": "*/k"}, None),  # invalid bucket
    ("dynamodb", "ExecuteStatement", {"statement": 'SELECT * FROM "t*"'}, None),
    ("iam", "CreateRole", {"roleName": "r", "path": "/*/"}, f"arn:aws:iam::{ACCT}:role/${{*}}/r"),
])
def test_strategies_and_paths_keep_logged_text_literal(source, name, params, expected):
    r = ev(source, name, params)
    if expected is None:
        assert r.status == "invalid"
    else:
        assert expected in [a.resource for a in r.actions]


#: Request fields that become resources: (source, eventName, params from a value, the pattern it must map to).
_HOSTILE_FIELDS = {
    "s3 key": ("s3", "GetObject", lambda v: {"bucketName": "b", "key": v}, lambda v: {"arn:aws:s3:::b/" + literal(v)}),
    "s3 bucket": ("s3", "PutObject", lambda v: {"bucketName": v, "key": "k"},
                  lambda v: {f"arn:aws:s3:::{literal(v)}/k"}),
    "dynamodb table": ("dynamodb", "GetItem", lambda v: {"tableName": v},
                       lambda v: {f"arn:aws:dynamodb:us-east-1:{ACCT}:table/{literal(v)}"}),
    "lambda function": ("lambda", "Invoke", lambda v: {"functionName": v},
                        lambda v: {f"arn:aws:lambda:us-east-1:{ACCT}:function:{literal(v)}"}),
    "secret": ("secretsmanager", "GetSecretValue", lambda v: {"secretId": v},
               lambda v: {f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:{literal(v)}-??????"}),
    "queue": ("sqs", "SendMessage", lambda v: {"queueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCT}/{v}"},
              lambda v: {f"arn:aws:sqs:us-east-1:{ACCT}:{literal(v)}"}),
    "role": ("iam", "GetRole", lambda v: {"roleName": v},
             lambda v: {f"arn:aws:iam::{ACCT}:role/{literal(v)}", f"arn:aws:iam::{ACCT}:role/*/{literal(v)}"}),
    "log group": ("logs", "DescribeLogStreams", lambda v: {"logGroupName": v},
                  lambda v: {f"arn:aws:logs:us-east-1:{ACCT}:log-group:{literal(v)}"}),
    "topic ARN": ("sns", "Publish", lambda v: {"topicArn": f"arn:aws:sns:us-east-1:{ACCT}:{v}"},
                  lambda v: {literal(f"arn:aws:sns:us-east-1:{ACCT}:{v}")}),
    "record ARN": ("s3", "GetObject", lambda v: {}, lambda v: {literal(f"arn:aws:s3:::b/{v}")}),
}
_HOSTILE_TEXT = st.one_of(st.text(min_size=1, max_size=20),
                          st.text(alphabet="ab*?${}/:-_. \n\x1b", min_size=1, max_size=12))


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(sorted(_HOSTILE_FIELDS)), value=_HOSTILE_TEXT)
def test_request_values_never_widen_a_resource(field, value):
    """Whatever a request carries, the mapped resource is the logged name as a literal (plus only the wildcards
    the mapping itself adds for parts the log does not show), or the event is invalid and maps to nothing."""
    source, name, params, expected = _HOSTILE_FIELDS[field]
    resources = [{"ARN": f"arn:aws:s3:::b/{value}"}] if field == "record ARN" else None
    if field == "lambda function" and re.match(r"\d{12}:function:", value):
        return  # a partial ARN: another spelling of the same function, covered by the row tests
    r = ev(source, name, params(value), resources)
    if r.status == "invalid":
        assert not r.actions
        return
    assert r.status == "mapped", r.note
    got = {a.resource for a in r.actions if not a.implicit}
    assert got == expected(value)
    concrete = {"s3 key": f"arn:aws:s3:::b/{value}", "dynamodb table": f"arn:aws:dynamodb:us-east-1:{ACCT}:table/{value}"}
    if field in concrete:  # the call itself is allowed by its resource, and a different name is not
        assert covers(got.pop(), literal(concrete[field])) and not covers(r.actions[0].resource, literal(concrete[field] + "x"))


# ----------------------------------------------------------------------------- extra authorisations (extras.csv, issue 9)

EXTRA_ROWS = sorted([r for rs in RULES.extras.values() for r in rs] +
                    [r for rs in RULES.extra_patterns.values() for r in rs], key=lambda r: r.line)
#: Request values that name the resource of each extras row (and satisfy the usual bindings).
_NAMES = {"userName": "u1", "roleName": "r1", "policyName": "p1", "instanceProfileName": "ip1", "functionName": "f1",
          "queueName": "q1", "name": "n1", "tableName": "t1", "logGroupName": "g1", "cluster": "c1", "serviceName": "s1",
          "family": "fam1", "bucketName": "b1", "key": "k1", "imageId": "ami-1", "serialNumber": "mfa1"}
_TAGS = [{"key": "team", "value": "a"}]


def _extra_event(row):
    """An event of the row's operation whose request satisfies the row's ``when``."""
    name = "RunInstances" if row.event_name == "*" else row.event_name
    params = dict(_NAMES)
    for neg, kind, arg in mapping._conditions(row.when):
        if kind == "eq" and neg:
            params[arg.split("=")[0]] = "public-read"
        elif not neg:
            params[arg] = _TAGS if kind == "nonempty" else {"items": [{"resourceType": "instance", "tags": _TAGS}]} \
                if arg == "tagSpecificationSet" else "true"
    return name, params


@pytest.mark.parametrize("row", EXTRA_ROWS, ids=[f"{r.line}-{r.source}-{r.event_name}-{r.action}" for r in EXTRA_ROWS])
def test_every_extras_row_is_a_catalogue_fact_and_is_applied(row):
    info = CAT.info(row.action)
    assert info and CAT.canonical(row.action) == row.action, "spell actions as the catalogue does"
    assert set(row.resource_types) <= {rt.name for rt in info.resource_types}
    if row.condition_key:
        assert row.condition_key.lower() in CAT.condition_keys(row.action)
    assert "https://docs.aws.amazon.com/" in row.comment or row.comment.startswith("ECS tag on create: ")
    name, params = _extra_event(row)
    r = ev(host_for(row.source), name, params)
    assert r.status == "mapped", r.note
    got = [a for a in r.actions if a.action == row.action and a.resource_type in (row.resource_types or ("instance",))]
    assert got and all(a.resource.startswith("arn:") for a in got)
    primary = {a.action for a in ev(host_for(row.source), name, {**_NAMES}).actions if not a.implicit}
    assert all(a.implicit == (row.action not in primary) for a in got)
    assert {(a.condition_key, a.condition_value) for a in got} == \
        {(row.condition_key or None, row.condition_value.replace("{event_name}", name) or None)}
    if row.when:  # the extra depends on the request: without what `when` needs, no such resource
        bare = ev(host_for(row.source), name, {**_NAMES, "tags": []})
        assert not [a for a in bare.actions if a.action == row.action and a.resource_type in row.resource_types
                    and a.implicit]


def test_malformed_extras_rows_fail_at_load(tmp_path):
    for f in mapping.RULE_FILES:
        (tmp_path / f).write_bytes((mapping.DATA_DIR / f).read_bytes())
    for row, message in [("ec2,*,,ec2:CreateTags,,tags,,,,x", "unknown resource strategy 'tags'"),
                         ("iam,CreateUser,,iam:TagUser,,,,,,x", "name the resource_types"),
                         ("iam,CreateUser,,iam:TagUser,user,,iam:x,,,x", "a condition needs a key and one value"),
                         ("iam,CreateUser,nonempty:tags,iam:TagUser,user,,,,,", "every row says where it comes from")]:
        text = (mapping.DATA_DIR / "extras.csv").read_text() + row + "\n"
        (tmp_path / "extras.csv").write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            load_rules(str(tmp_path))


def _tags_of(r):
    return {(a.resource, a.condition_value) for a in r.actions if a.action == "ec2:CreateTags"}


def test_ec2_tag_on_create_covers_each_tagged_type_with_the_create_action():
    spec = {"items": [{"resourceType": "instance", "tags": _TAGS}, {"resourceType": "volume", "tags": _TAGS},
                      {"resourceType": "no-such-type", "tags": _TAGS}, {"resourceType": "network-interface", "tags": []}]}
    r = ev("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": "ami-1"}]}, "tagSpecificationSet": spec})
    assert _tags_of(r) == {(f"arn:aws:ec2:us-east-1:{ACCT}:instance/*", "RunInstances"),
                           (f"arn:aws:ec2:us-east-1:{ACCT}:volume/*", "RunInstances")}
    tags = [a for a in r.actions if a.action == "ec2:CreateTags"]
    assert all(a.implicit and a.condition_key == "ec2:CreateAction" for a in tags)
    r = ev("ec2", "CreateVpc", {"cidrBlock": "10.0.0.0/16",
                                "tagSpecificationSet": {"items": [{"resourceType": "vpc", "tags": _TAGS}]}})
    assert _tags_of(r) == {(f"arn:aws:ec2:us-east-1:{ACCT}:vpc/*", "CreateVpc")}
    # a launch template's instance tags are applied at launch, not when the template is created
    lt = {"launchTemplateName": "lt", "launchTemplateData": {
        "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": _TAGS}]}}}
    assert _tags_of(ev("ec2", "CreateLaunchTemplate", lt)) == set()
    assert _tags_of(ev("ec2", "RunInstances", {"imageId": "ami-1"})) == set()  # no tags, no ec2:CreateTags
    # only operations that take TagSpecifications (botocore) check for them: the others' plans stay static
    mapper = Mapper()
    assert not [s for s in mapper.plan("ec2.amazonaws.com", "DescribeInstances").steps if s.added]
    assert [s.action for s in mapper.plan("ec2.amazonaws.com", "CreateVpc").steps if s.added] == ["ec2:CreateTags"]


def _run_types(params):
    r = ev("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": "ami-1"}]}, **params})
    return {a.resource_type: a.resource for a in r.actions if a.action == "ec2:RunInstances"}


def test_run_instances_authorises_every_resource_type_of_its_scenario():
    scenario = dict(CAT.scenarios("ec2:RunInstances")["EC2-VPC-EBS-Subnet"])
    bare = _run_types({})
    assert {t for t, required in scenario.items() if required} <= set(bare)
    assert bare["volume"] == f"arn:aws:ec2:us-east-1:{ACCT}:volume/*" and "key-pair" not in bare
    assert bare["subnet"] == f"arn:aws:ec2:us-east-1:{ACCT}:subnet/*"  # the default subnet
    full = _run_types({"keyName": "ops", "blockDeviceMapping": {"items": [
        {"deviceName": "/dev/sdb", "ebs": {"volumeSize": 8, "snapshotId": "snap-0123456789abcdef0"}}]},
        "networkInterfaceSet": {"items": [{"networkInterfaceId": "eni-0123456789abcdef0"}]},
        "subnetId": "subnet-0123456789abcdef0", "groupSet": {"items": [{"groupId": "sg-0123456789abcdef0"}]}})
    assert full["key-pair"] == f"arn:aws:ec2:us-east-1:{ACCT}:key-pair/ops"
    assert full["volume"] == f"arn:aws:ec2:us-east-1:{ACCT}:volume/*"
    assert full["snapshot"] == "arn:aws:ec2:us-east-1::snapshot/snap-0123456789abcdef0"
    assert full["network-interface"] == f"arn:aws:ec2:us-east-1:{ACCT}:network-interface/eni-0123456789abcdef0"
    assert full["subnet"] == f"arn:aws:ec2:us-east-1:{ACCT}:subnet/subnet-0123456789abcdef0"
    assert full["security-group"] == f"arn:aws:ec2:us-east-1:{ACCT}:security-group/sg-0123456789abcdef0"


def test_tag_on_create_needs_tags_and_scopes_to_the_created_resource():
    r = ev("iam", "CreateRole", {"roleName": "app", "path": "/svc/", "tags": _TAGS})
    assert res_of(r, "iam:TagRole") == [f"arn:aws:iam::{ACCT}:role/svc/app"]
    assert "iam:TagRole" not in acts(ev("iam", "CreateRole", {"roleName": "app", "tags": []}))
    r = ev("kms", "CreateKey", {"tags": [{"tagKey": "a", "tagValue": "b"}]})  # the key id is not known yet
    assert res_of(r, "kms:TagResource") == [f"arn:aws:kms:us-east-1:{ACCT}:key/*"]
    r = ev("ecs", "RunTask", {"cluster": "prod", "taskDefinition": "web:3", "tags": _TAGS})
    (tag,) = [a for a in r.actions if a.action == "ecs:TagResource"]
    assert tag.resource == f"arn:aws:ecs:us-east-1:{ACCT}:task/prod/*"
    assert (tag.condition_key, tag.condition_value) == ("ecs:CreateAction", "RunTask")
    r = ev("lambda", "CreateFunction20150331", {"functionName": "f", "tags": {"a": "b"}})  # versioned name
    assert res_of(r, "lambda:TagResource") == [f"arn:aws:lambda:us-east-1:{ACCT}:function:f"]
    r = ev("s3", "CreateBucket", {"bucketName": "b", "x-amz-acl": "private"})
    assert acts(r) == {"s3:CreateBucket"}  # a private ACL needs no s3:PutBucketAcl


def test_tag_on_create_against_real_events(shared_real):
    from test_coverage import _bench

    frame = pd.concat([_bench().load_records(shared_real / d) for d in
                       ("stratus-red-team-detonation-logs", "cloud-custodian-cwe-events")])
    m = map_frame(frame.reset_index(drop=True), get_mapper(""))
    tagging = m["action"].fillna("").str.contains(r":(?:Tag|CreateTags)", regex=True) & m["implicit"]
    extra = m[tagging]  # the creates without tags (CreateRole, CreateBucket, CreateVolume, RunInstances, ...) add none
    got = {(e, a, r.split(":")[-1]) for e, a, r in zip(extra["event_name"], extra["action"], extra["resource"])}
    assert got == {("CreateUser", "iam:TagUser", "user/malicious-iam-user"),
                   ("CreateUser", "iam:TagUser", "user/*/malicious-iam-user"),
                   ("CreateProfile", "rolesanywhere:TagResource", "profile/*"),
                   ("CreateTrustAnchor", "rolesanywhere:TagResource", "trust-anchor/*")}
    run = m[(m["event_name"] == "RunInstances") & (m["action"] == "ec2:RunInstances")]
    required = {t for t, req in CAT.scenarios("ec2:RunInstances")["EC2-VPC-EBS-Subnet"] if req}
    for _, one in run.groupby(level=0):
        assert required <= set(one["resource_type"])


def test_calls_on_oneself_act_on_the_caller_every_row():
    import botocore.session

    model = botocore.session.get_session().get_service_model("iam")
    rows = [r for r in RULE_ROWS if r.resource == "caller"]
    assert len(rows) >= 20
    for row in rows:
        shape = model.operation_model(row.event_name).input_shape
        assert "UserName" not in shape.required_members, f"{row.event_name} always names the user"
        r = ev("iam", row.event_name, {})
        assert res_of(r, row.action) == [f"arn:aws:iam::{ACCT}:user/{mapping.CALLER}"]
        if "UserName" in shape.members:
            assert res_of(ev("iam", row.event_name, {"userName": "bob"}), row.action) == \
                [f"arn:aws:iam::{ACCT}:user/bob", f"arn:aws:iam::{ACCT}:user/*/bob"]
    # a logged name can never form the marker: its `${` is escaped
    (forged,) = res_of(ev("iam", "GetUser", {}, [{"ARN": f"arn:aws:iam::{ACCT}:user/{mapping.CALLER}"}]), "iam:GetUser")
    assert mapping.CALLER not in forged and forged.endswith("user/${$}{miner:caller}")
    # every user's credentials: not the caller
    assert res_of(ev("iam", "ListServiceSpecificCredentials", {"allUsers": True}),
                  "iam:ListServiceSpecificCredentials") == ["*"]


@pytest.mark.parametrize("name", ["s3", "lambda", "sso-oidc", "monitoring", "not-a-service", "../../etc", "..", "S3",
                                  "", "s3/../ec2", "dynamodb\x00"])
def test_botocore_has_service_asks_one_folder_and_agrees_with_the_full_list(name):
    from miner.servicereference import BotocoreModels

    one_by_one = BotocoreModels()
    assert one_by_one.has_service(name) == (name in BotocoreModels().service_names())
    assert one_by_one._names is None  # the 400-folder listing was not needed
