"""Tests for the shared data contracts in miner.models."""

from datetime import datetime, timezone

import pytest

from miner import models

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("code,msg,expected", [
    (None, None, "success"),
    ("", None, "success"),
    ("AccessDenied", None, "denied"),
    ("Client.UnauthorizedOperation", None, "denied"),
    ("VpceAccessDenied", None, "denied"),
    ("NoSuchBucketPolicy", None, "not_found"),
    ("Client.InvalidInstanceID.NotFound", None, "not_found"),
    ("NoSuchEntityException", None, "not_found"),
    ("TrailNotFoundException", None, "not_found"),
    ("ThrottlingException", None, "throttled"),
    ("Client.DryRunOperation", None, "dry_run"),
    ("InternalError", None, "error"),
])
def test_classify_outcome(code, msg, expected):
    assert models.classify_outcome(code, msg) == expected


@pytest.mark.parametrize("region,arn,expected", [
    ("us-east-1", None, "aws"),
    ("us-gov-west-1", None, "aws-us-gov"),
    ("cn-north-1", None, "aws-cn"),
    ("us-east-1", "arn:aws-us-gov:iam::1:role/x", "aws-us-gov"),
    (None, None, "aws"),
])
def test_partition_of(region, arn, expected):
    assert models.partition_of(region, arn) == expected


def test_relative_window():
    w = models.make_window("90d", None, NOW)
    assert w.until == NOW and round(w.days) == 90


def test_date_until_is_inclusive():
    w = models.make_window("2026-08-01", "2026-08-31", NOW)
    assert w.since == datetime(2026, 8, 1, tzinfo=timezone.utc)
    assert w.until == datetime(2026, 9, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("since,until", [("2026-09-01", "2026-08-01"), ("yesterday", None)])
def test_bad_windows_say_why(since, until):
    with pytest.raises(ValueError) as e:
        models.make_window(since, until, NOW)
    assert "window" in str(e.value) or "cannot read" in str(e.value)


def test_store_path_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINER_STORE", str(tmp_path / "s"))
    assert models.default_store_path() == tmp_path / "s"


@pytest.mark.parametrize("text,days", [("90d", 90), ("2w", 14), ("12h", 0.5), ("3m", 90), (" 7D ", 7)])
def test_parse_age(text, days):
    assert models.parse_age(text).total_seconds() / 86400 == days


@pytest.mark.parametrize("text", ["2026-08-01", "today", "d", "1y"])
def test_parse_age_is_none_for_other_text(text):
    assert models.parse_age(text) is None
