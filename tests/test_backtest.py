"""Tests for backtesting: time split, privilege-error scoring over plain policies, and the CLI on the sample logs."""

from __future__ import annotations

import fnmatch
from datetime import datetime, timezone

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner import backtest, models
from miner.catalog import get_catalog
from miner.patterns import covers


def _glob_evaluator(docs, action, resource):
    """A minimal Allow-only evaluator for the pure scoring tests (the real one is tested with the CLI)."""
    for doc in docs:
        for st in doc["Statement"]:
            acts = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
            res = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
            if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in acts) and \
                    any(fnmatch.fnmatchcase(resource, r) for r in res):
                return True
    return False


def _doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


TEST_USAGE = pd.DataFrame([
    ("s3:GetObject", "arn:aws:s3:::bucket/a", 90),
    ("s3:GetObject", "arn:aws:s3:::other/b", 5),
    ("sqs:SendMessage", "arn:aws:sqs:us-east-1:111122223333:q", 5),
], columns=["action", "resource", "calls"])


def test_split_windows_are_adjacent_and_end_at_the_anchor():
    anchor = datetime(2026, 9, 15, tzinfo=timezone.utc)
    train, test = backtest.split_windows(anchor, 30, 15)
    assert test.until == anchor and train.until == test.since
    assert test.days == 15 and train.days == 30
    with pytest.raises(ValueError):
        backtest.split_windows(anchor, 0, 15)


def test_parse_days_and_default_anchor():
    assert backtest.parse_days("60d") == 60 and backtest.parse_days("2w") == 14 and backtest.parse_days("12h") == 0.5
    assert backtest.parse_days("7") == 7
    with pytest.raises(ValueError, match="duration"):
        backtest.parse_days("soon")
    last = datetime(2026, 9, 14, 22, 34, tzinfo=timezone.utc)
    assert backtest.default_anchor(last) == datetime(2026, 9, 15, tzinfo=timezone.utc)


def test_run_backtest_refuses_overlapping_windows():
    """A test window that overlaps training would score the policy on calls it was mined from."""
    anchor = datetime(2026, 9, 15, tzinfo=timezone.utc)
    train, test = backtest.split_windows(anchor, 30, 15)
    overlapping = models.Window(train.since, test.until)
    with pytest.raises(ValueError, match="starts before the training window"):
        backtest.run_backtest(None, None, overlapping, test)


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "", "2026-09-01"])
def test_parse_days_rejects_non_durations(text):
    """Infinite or NaN lengths used to pass and crash later in timedelta; dates are not durations."""
    with pytest.raises(ValueError, match="duration"):
        backtest.parse_days(text)


def test_score_counts_under_and_over_privilege():
    cat = get_catalog()
    policy = [_doc({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::bucket/*"})]
    s = backtest.score("exact", policy, TEST_USAGE, _glob_evaluator, cat)
    assert s.test_calls == 100 and s.test_actions == 2
    assert s.denied_calls == 10 and s.under_rate == pytest.approx(0.10)  # other/b (5) + sqs (5)
    assert s.denied_by_action == {"s3:GetObject": 5, "sqs:SendMessage": 5}
    assert s.policy_actions == 2 and s.unused_granted == 1 and s.over_rate == pytest.approx(0.5)


def test_service_level_policy_trades_over_for_under_privilege():
    cat = get_catalog()
    docs = [backtest.service_level_policy(["s3:GetObject", "sqs:SendMessage"])]
    assert docs[0]["Statement"][0]["Action"] == ["s3:*", "sqs:*"]
    s = backtest.score(backtest.Setting("service-level", service_level=True), docs, TEST_USAGE, _glob_evaluator, cat)
    assert s.denied_calls == 0 and s.under_rate == 0
    assert s.policy_actions == len(cat.expand("s3:*")) + len(cat.expand("sqs:*"))
    assert s.over_rate > 0.9
    exact = backtest.score("exact", [_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})], TEST_USAGE,
                           _glob_evaluator, cat)
    assert backtest.pick([s, exact]) == "service-level"  # the only one with no denied test call
    exact.denied_calls, exact.under_rate = 0, 0.0
    assert backtest.pick([s, exact]) == "exact"  # tie on under-privilege: less over-privilege wins


def test_default_evaluator_is_the_diff_stage_one():
    policy = [_doc({"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::bucket/*"},
                   {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/a"})]
    s = backtest.score("deny", policy, TEST_USAGE, catalog=get_catalog())
    assert s.denied_by_action == {"s3:GetObject": 95, "sqs:SendMessage": 5}  # explicit Deny wins on bucket/a
    assert s.policy_actions == len(get_catalog().expand("s3:Get*"))


def test_empty_test_window_scores_zero_rates():
    s = backtest.score("x", [_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})],
                       TEST_USAGE.iloc[0:0], _glob_evaluator, get_catalog())
    assert s.test_calls == 0 and s.under_rate == 0.0 and s.over_rate == 1.0


def test_default_settings_cover_wildcards_resources_and_service_level():
    settings = backtest.default_settings()
    assert {s.wildcards for s in settings} == {True, False}
    assert {s.max_resources for s in settings if not s.service_level} == {1, 10, 50}
    assert any(s.service_level for s in settings)
    assert len({s.name for s in settings}) == len(settings)


def test_format_table_marks_the_recommendation():
    cat = get_catalog()
    s = backtest.score("exact", [_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})], TEST_USAGE,
                       _glob_evaluator, cat)
    result = {"principal": "arn:aws:iam::1:role/r",
              "train": {"since": "2026-08-01T00:00:00+00:00", "until": "2026-08-31T00:00:00+00:00", "days": 30,
                        "calls": 1, "actions": 1},
              "test": {"since": "b", "until": "c", "calls": 100, "actions": 2}, "scores": [s.to_dict()],
              "recommended": "exact"}
    text = backtest.format_table(result)
    assert "* exact" in text and "5.0%" in text and "sqs:SendMessage x5" in text
    assert "2026-08-01 .. 2026-08-30 (30 days)" in text and "b .. c" in text


# ----------------------------------------------------------------------------------------- resource breadth

KEY = "arn:aws:s3:::acme-orders-prod/invoices/2026/08/01/ord-1.pdf"
#: Grants of one object, each strictly wider than the one before.
WIDENING = [KEY, "arn:aws:s3:::acme-orders-prod/invoices/*/*/*/*.pdf", "arn:aws:s3:::acme-orders-prod/invoices/*",
            "arn:aws:s3:::acme-orders-prod/*", "arn:aws:s3:::*", "*"]


def test_breadth_orders_grants_from_the_exact_arn_to_star():
    values = [backtest.breadth(p, KEY) for p in WIDENING]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(a < b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("pattern,resource,expected", [
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b/k", 1 / 7),  # arn, aws, s3, region, account, b, k: one level open
    ("arn:aws:s3:::b/in/*", "arn:aws:s3:::b/in/2026/x.pdf", 2 / 9),  # a trailing * opens every deeper level
    ("arn:aws:s3:::b/in/ord-*", "arn:aws:s3:::b/in/ord-12", (2 / 6) / 8),  # part of a level: its share
    ("arn:aws:dynamodb:*:1:table/orders", "arn:aws:dynamodb:us-east-1:1:table/orders", 1 / 7),
    # a wildcard the mapping put in the resource (a secret's random suffix) is not counted against the grant
    ("arn:aws:secretsmanager:us-east-1:1:secret:db-??????", "arn:aws:secretsmanager:us-east-1:1:secret:db-??????", 0),
    ("arn:aws:secretsmanager:us-east-1:1:secret:*", "arn:aws:secretsmanager:us-east-1:1:secret:db-??????", 1 / 7),
    ("arn:aws:s3:::b/${*}", "arn:aws:s3:::b/${*}", 0.0),  # the key named "*", granted exactly
])
def test_breadth_values(pattern, resource, expected):
    assert backtest.breadth(pattern, resource) == pytest.approx(expected)


def test_breadth_refuses_a_pattern_that_does_not_grant_the_resource():
    with pytest.raises(ValueError, match="does not grant"):
        backtest.breadth("arn:aws:s3:::other/*", KEY)


_PIECES = st.sampled_from(["a", "b", "/", ":", "*", "?"])


@st.composite
def _pattern_wider_pattern_and_resource(draw):
    """A pattern, a widening of it (some characters -> ``?``, some runs -> ``*``), and a resource it matches."""
    narrow = draw(st.lists(_PIECES, min_size=1, max_size=7))
    wide = list(narrow)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(wide) - 1))
        j = draw(st.integers(i, len(wide)))
        one = j - i == 1 and wide[i] != "*"  # one character or ? may become ?; anything else becomes *
        wide[i:j] = [draw(st.sampled_from(["*", "?"])) if one else "*"]
    text = "".join(draw(st.text("ab/:", max_size=3)) if t == "*" else draw(st.sampled_from("ab/:")) if t == "?" else t
                   for t in narrow)
    return "".join(wide), "".join(narrow), text


@settings(max_examples=300, deadline=None)
@given(_pattern_wider_pattern_and_resource())
def test_a_covering_pattern_is_at_least_as_broad(case):
    wide, narrow, resource = case
    assert covers(wide, narrow)
    assert backtest.breadth(wide, resource) >= backtest.breadth(narrow, resource)


TRAIN_KEYS = pd.DataFrame([
    ("s3:GetObject", "arn:aws:s3:::b/in/2026/08/x.pdf", 3),
    ("s3:PutObject", "arn:aws:s3:::b/out/a.csv", 2),
], columns=["action", "resource", "calls"])
TEST_KEYS = pd.DataFrame([
    ("s3:GetObject", "arn:aws:s3:::b/in/2026/09/y.pdf", 5),  # a new key
    ("s3:GetObject", "arn:aws:s3:::b/in/2026/08/x.pdf", 1),
    ("s3:PutObject", "arn:aws:s3:::b/out/a.csv", 4),  # only the training key
    ("s3:ListAllMyBuckets", "*", 2),  # no resource-level permissions: not measured
], columns=["action", "resource", "calls"])


@pytest.mark.parametrize("get_resource", ["arn:aws:s3:::b/in/*", "arn:aws:s3:::b/*", "*"])
def test_resource_scores_rank_a_bucket_grant_worse_than_a_prefix_grant(get_resource):
    def scores(get, put):
        docs = [_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": get},
                     {"Effect": "Allow", "Action": "s3:PutObject", "Resource": put},
                     {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"})]
        return backtest.resource_scores(docs, TEST_KEYS, TRAIN_KEYS)

    prefix = scores("arn:aws:s3:::b/in/*", "arn:aws:s3:::b/out/a.csv")
    wider = scores(get_resource, "arn:aws:s3:::b/out/*")
    assert prefix["resource_calls"] == wider["resource_calls"] == 10 and prefix["unscoped_calls"] == 2
    assert prefix["resource_breadth"] < wider["resource_breadth"]
    get_prefix, get_wider = prefix["breadth_by_action"]["s3:GetObject"], wider["breadth_by_action"]["s3:GetObject"]
    assert get_prefix <= get_wider and (get_prefix < get_wider) == (get_resource != "arn:aws:s3:::b/in/*")
    # the Get wildcard let a new key through; the Put wildcard allowed nothing the exact training key did not
    assert (prefix["wildcard_grants"], prefix["idle_wildcards"]) == (1, 0)
    assert (wider["wildcard_grants"], wider["idle_wildcards"]) == (2, 1) and wider["idle_rate"] == 0.5
    assert list(wider["breadth_by_action"]) == ["s3:GetObject", "s3:PutObject"]


def test_resource_scores_of_an_exact_policy_measure_only_the_calls_it_allows():
    docs = [_doc({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                  "Resource": ["arn:aws:s3:::b/in/2026/08/x.pdf", "arn:aws:s3:::b/out/a.csv"]})]
    s = backtest.score("exact", docs, TEST_KEYS, catalog=get_catalog(), train_usage=TRAIN_KEYS)
    assert s.denied_calls == 7  # the new key (5) and ListAllMyBuckets (2)
    assert s.resource_calls == 5 and s.resource_breadth == 0.0 and s.wildcard_grants == s.idle_wildcards == 0


def _scored(name, under=0.0, breadth=0.0, idle=0.0, over=0.0, chars=100, mr=10, wildcards=True, service=False):
    return backtest.Score(setting=name, options="", policy_actions=1, policy_statements=1, policy_chars=chars,
                          test_calls=1, test_actions=1, denied_calls=0, denied_actions=0, unused_granted=0,
                          under_rate=under, over_rate=over, resource_breadth=breadth, idle_rate=idle,
                          wildcards=wildcards, max_resources=mr, service_level=service)


@pytest.mark.parametrize("better,worse", [
    (_scored("fewer denials", under=0.0, breadth=1.0, over=0.9), _scored("denies", under=0.01)),
    (_scored("narrow", breadth=0.1, over=0.9), _scored("wide", breadth=0.2)),
    (_scored("no idle", idle=0.0, over=0.9), _scored("idle", idle=0.1)),
    (_scored("fewer actions", over=0.0, chars=900), _scored("more actions", over=0.1)),
    (_scored("small", chars=100), _scored("large", chars=200)),
    (_scored("specific", mr=50), _scored("coarse", mr=1)),
    (_scored("no action wildcards", wildcards=False), _scored("action wildcards", wildcards=True)),
    (_scored("mined", mr=1), _scored("service-level", mr=1, service=True)),
], ids=lambda s: s.setting)
def test_pick_order(better, worse):
    """Under-privilege, then resource breadth, idle wildcards, unused actions, size, then the most specific."""
    assert backtest.pick([worse, better]) == backtest.pick([better, worse]) == better.setting
    assert backtest.pick([worse.to_dict(), better.to_dict()]) == better.setting


# ----------------------------------------------------------------------------------------- on the sample logs


def _cli(*args):
    from typer.testing import CliRunner

    from miner.cli import app

    return CliRunner().invoke(app, ["backtest", *map(str, args)])


def test_backtest_cli_json_on_the_sample_logs(sample_store, sample_logs):
    import json

    res = _cli("--role", "orders-api-task", "--train", "30d", "--test", "15d", "--format", "json",
               "--store", sample_store, "--iam-snapshot", sample_logs / "iam")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["principal"].endswith(":role/service-role/orders-api-task")
    # default anchor: the midnight after the role's last event; train and test are adjacent
    assert out["test"]["until"].startswith("2026-09-15") and out["train"]["until"] == out["test"]["since"]
    assert out["train"]["calls"] > 0 and out["test"]["calls"] > 0
    by = {s["setting"]: s for s in out["scores"]}
    assert len(by) == 8 and "service-level" in by and "attached today" in by
    for s in by.values():
        assert 0 <= s["under_rate"] <= 1 and 0 <= s["over_rate"] <= 1
        assert s["denied_calls"] == sum(s["denied_by_action"].values())
    assert by["service-level"]["under_rate"] <= min(s["under_rate"] for s in by.values())
    assert by["service-level"]["over_rate"] > by["no-wildcards, max-resources 10"]["over_rate"]
    assert by["attached today"]["over_rate"] > 0.5  # the role is granted far more than it uses
    assert out["recommended"] in by and out["recommended"] != "attached today"
    assert "Sanders" in out["method"]


def test_backtest_cli_table_user_and_until(sample_store):
    res = _cli("--user", "alice", "--train", "20d", "--test", "10d", "--until", "2026-09-10",
               "--max-resources", "5,50", "--store", sample_store)
    assert res.exit_code == 0, res.output
    assert "arn:aws:iam::111122223333:user/alice" in res.stdout
    assert ".. 2026-09-10 (10 days)" in res.stdout  # --until 2026-09-10 counts the whole day
    assert "max-resources 5 " in res.stdout and "max-resources 50" in res.stdout and "service-level" in res.stdout
    assert "* " in res.stdout and "recommended" in res.stdout


def test_backtest_cli_errors_are_clear(sample_store):
    res = _cli("--role", "orders-api-tsk", "--store", sample_store)
    assert res.exit_code == 2 and "orders-api-task" in res.output  # suggests the close name
    res = _cli("--role", "orders-api-task", "--until", "2026-07-01", "--store", sample_store)
    assert res.exit_code == 2 and "training window" in res.output
    res = _cli("--role", "orders-api-task", "--train", "soon", "--store", sample_store)
    assert res.exit_code == 2 and "duration" in res.output


def test_run_backtest_library_and_frame(sample_store):
    from miner import store, usage
    from miner.review import store_window

    con = store.connect(sample_store)
    w = store_window(con)
    who = usage.resolve_principal(con, w, role="thumbnailer-lambda")
    train, test = backtest.split_windows(w.until, 14, 7)
    result = backtest.run_backtest(con, who, train, test, settings=[backtest.Setting("only", False, 10)])
    frame = backtest.to_frame(result)
    assert list(frame["setting"]) == ["only"] and bool(frame["recommended"].iloc[0])
    assert frame["test_calls"].iloc[0] == result["test"]["calls"] > 0


@pytest.fixture(scope="module")
def every_principal(sample_store):
    """``run_backtest_all`` over the sample store (20-day training, 10-day test), run once for the module."""
    from miner import store

    return backtest.run_backtest_all(store.connect(sample_store), train_days=20, test_days=10, min_days=30)


def test_run_backtest_all_measures_roles_and_users_and_says_why_others_are_skipped(every_principal):
    import json

    result = json.loads(json.dumps(every_principal, allow_nan=False))  # strict JSON: no NaN or infinity
    measured = {r["principal"] for r in result["principals"]}
    assert "arn:aws:iam::111122223333:role/service-role/orders-api-task" in measured
    assert all(":role/" in a or ":user/" in a for a in measured)
    skipped = {s["principal"]: s["reason"] for s in result["skipped"]}
    assert skipped["cloudtrail.amazonaws.com"] == backtest.SKIP_NOT_IAM
    assert not measured & set(skipped) and sum(result["skipped_by_reason"].values()) == len(skipped)
    calls = [r["test"]["calls"] for r in result["principals"]]
    assert calls == sorted(calls, reverse=True) and min(calls) > 0
    rows = {r["setting"]: r for r in result["settings"]}
    assert set(rows) == {s.name for s in backtest.default_settings()}
    assert sum(r["picked"] for r in rows.values()) == len(measured)
    for r in rows.values():
        assert r["principals"] == len(measured)
        assert r["under_rate_median"] <= r["under_rate_max"] and r["under_rate_worst"] in measured
        assert 0 <= r["resource_breadth"] <= r["resource_breadth_max"] <= 1
    assert rows["service-level"]["resource_breadth"] == 1.0  # every measured call is granted on "*"
    assert 0 < rows["service-level"]["resource_principals"] < len(measured)  # legacy-batch: no measurable call
    assert result["recommended"] in rows and not rows[result["recommended"]]["service_level"]


def test_run_backtest_all_skips_principals_with_too_little_history(sample_store):
    from miner import store

    result = backtest.run_backtest_all(store.connect(sample_store), train_days=2, test_days=1,
                                       until=datetime(2026, 8, 6, tzinfo=timezone.utc), min_days=4.5,
                                       settings=[backtest.Setting("only", False, 10)])
    reasons = {s["principal"].rsplit("/", 1)[-1]: s["reason"] for s in result["skipped"]}
    assert reasons["audit-readonly"] == backtest.SKIP_HISTORY  # first seen on 2026-08-03
    assert reasons["legacy-batch"] in (backtest.SKIP_HISTORY, backtest.SKIP_NO_TRAIN, backtest.SKIP_NO_TEST)
    assert [r["setting"] for r in result["settings"]] == ["only"] and result["recommended"] == "only"
    with pytest.raises(ValueError, match="min-days"):
        backtest.run_backtest_all(None, train_days=2, test_days=1, min_days=float("nan"))


def test_format_all_table_and_csv(every_principal):
    import csv
    import io

    text = backtest.format_all_table(every_principal)
    assert f"* {every_principal['recommended']}" in text and "recommended default" in text
    assert "orders-api-task" in text and "not an IAM role or user" in text and "res breadth" in text
    rows = list(csv.DictReader(io.StringIO(backtest.all_csv(every_principal))))
    assert len(rows) == sum(len(r["scores"]) for r in every_principal["principals"])
    assert set(rows[0]) == set(backtest.CSV_COLUMNS)
    assert sum(r["recommended"] == "True" for r in rows) == len(every_principal["principals"])


def test_backtest_all_cli_json_and_errors(sample_store):
    import json

    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    res = _cli("--all", "--min-days", "44d", "--train", "14d", "--test", "7d", "--format", "json", "-q",
               "--store", sample_store)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=no_constants)
    assert out["min_days"] == 44 and out["principals"] and out["recommended"]
    assert out["skipped_by_reason"][backtest.SKIP_HISTORY] >= 1  # the roles first seen after 2026-08-01
    assert res.stderr == ""  # -q: no progress, no summary
    res = _cli("--all", "--role", "ci-deploy", "--store", sample_store)
    assert res.exit_code == 2 and "--all backtests every principal" in res.output
    res = _cli("--role", "ci-deploy", "--format", "csv", "--store", sample_store)
    assert res.exit_code == 2 and "csv with --all" in res.output


def test_issue9_targets_on_the_sample_logs(sample_store, sample_logs):
    """Defaults, train 30 days, test the next 15: at most 1% of authorised test calls denied on every sample
    principal with 30+ days of history; at least 95% of the granted-but-unused actions cut; no whole-bucket or
    whole-account grant where the observed resources share a longer constant prefix (templates, not prefixes)."""
    from miner import store
    from miner.review import snapshot_source

    source = snapshot_source(sample_logs / "iam")
    every = backtest.run_backtest_all(store.connect(sample_store), train_days=30, test_days=15, min_days=30,
                                      current_for=lambda arn: [d for _, d in source.attached(arn).documents])
    assert len(every["principals"]) >= 8
    for r in every["principals"]:
        default = next(s for s in r["scores"] if s["setting"] == backtest.DEFAULT_SETTING)
        assert default["under_rate"] <= 0.01, (r["principal"], default["denied_by_action"])
        if default["unused_cut"] is not None:
            assert default["unused_cut"] >= 0.95, r["principal"]
    assert "unused grants cut" in backtest.format_all_table(every)
