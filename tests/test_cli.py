"""The command line as a user and a pipeline meet it: streams, exit codes, output files, help, defaults."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from miner import jobs
from miner.cli import app

REPO = Path(__file__).resolve().parent.parent
WINDOW = ["--since", "2026-08-01", "--until", "2026-09-14"]
COMMANDS = ["ingest", "coverage", "catalog", "principals", "usage", "suggest", "review", "backtest"]


def run(*args, **kwargs):
    """Invoke the CLI in this process (stdout and stderr apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def miner(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m miner.cli ARGS`` in a real process, with this checkout first on the path."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "miner.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full, timeout=300)


def strict_json(text: str):
    """``json.loads`` that rejects NaN and Infinity, as jq and JavaScript do."""
    def reject(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=reject)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ----------------------------------------------------------------------------- help, version, flags


def test_version_and_help_on_every_command():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == "miner 0.1.0"
    top = run("-h", env={"COLUMNS": "80"})
    assert top.exit_code == 0
    for name in COMMANDS:  # the command list is not cut off
        (line,) = [x for x in top.stdout.splitlines() if x.strip().startswith(name + " ")]
        assert not line.rstrip().endswith("..."), line
    for name in COMMANDS:
        r = run(name, "-h")
        assert r.exit_code == 0, (name, r.output)
        assert "Example: miner " + name in r.stdout, name
        assert not re.search(r"<(list\[|str>|path>|int>)|\{[A-Z]+\.\.\.\}", r.stdout), (name, r.stdout)


def test_the_same_short_flags_on_every_command():
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])} | \
            {o for p in cmd.params for o in getattr(p, "secondary_opts", [])}
        shorts = {o for p in cmd.params for o in p.opts if len(o) == 2}
        assert "-q" in shorts, name
        for long, short in (("--format", "-f"), ("--out", "-o")):
            assert long not in opts or short in shorts, (name, long)


@pytest.mark.parametrize("command", [["suggest", "--role", "x", "--diff"], ["review"], ["backtest", "--role", "x"]])
def test_iam_snapshot_and_live_mean_the_same_everywhere(tmp_path, command):
    r = run(*command, "--store", tmp_path, "--iam-snapshot", tmp_path / "none.json", "--live")
    assert r.exit_code == 2 and "give one of them" in one_line_error(r.stderr)
    r = run(*command, "--store", tmp_path, "--iam-snapshot", tmp_path / "none.json")
    assert r.exit_code == 2 and "no IAM snapshot at" in one_line_error(r.stderr)  # before the store is opened


def test_suggest_diff_needs_a_source_of_grants(tmp_path):
    r = run("suggest", "--role", "x", "--store", tmp_path, "--diff")
    assert r.exit_code == 2 and "--iam-snapshot FILE|DIR, or --live" in one_line_error(r.stderr)
    r = run("suggest", "--role", "x", "--store", tmp_path, "--iam-snapshot", tmp_path)
    assert r.exit_code == 2 and "add --diff" in one_line_error(r.stderr)


# ----------------------------------------------------------------------------- exit codes and streams, for real


def test_suggest_diff_streams_and_exit_codes_in_a_real_process(sample_store, sample_logs, tmp_path):
    base = ["suggest", "--role", "orders-api-task", "--store", sample_store, *WINDOW, "--diff",
            "--iam-snapshot", sample_logs / "iam"]
    p = miner(*base, "-f", "json")  # the README's first command, with the report as JSON: one document
    assert p.returncode == 0, p.stderr
    assert strict_json(p.stdout)["principal"].endswith("role/service-role/orders-api-task")
    assert "window:" in p.stderr and "--out FILE writes it" in p.stderr
    report, policy = tmp_path / "new" / "report.json", tmp_path / "new" / "dir" / "policy.tf"
    p = miner(*base, "--report", report, "--out", policy, "--fail-on-unused", "-q")
    assert p.returncode == 1 and p.stdout == "" and p.stderr == ""  # unused grants: the one finding exit 1 is for
    assert strict_json(report.read_text())["unused"] and 'resource "aws_iam_policy"' in policy.read_text()
    p = miner(*base, "--report", tmp_path / "r.txt", "-q")  # the report to a file: stdout carries the policy
    assert p.returncode == 0 and strict_json(p.stdout)["Statement"] and "-> suggested" in (tmp_path / "r.txt").read_text()


def test_user_and_unexpected_errors_in_a_real_process(sample_store, tmp_path):
    p = miner("suggest", "--role", "orders-api-tsk", "--store", sample_store, *WINDOW)
    assert p.returncode == 2 and "did you mean: orders-api-task" in one_line_error(p.stderr) and p.stdout == ""
    broken = tmp_path / "store" / "events" / "account=1" / "region=r" / "date=2026-08-01"
    broken.mkdir(parents=True)
    (broken / "part-x.parquet").write_bytes(b"not parquet")
    p = miner("principals", "--store", tmp_path / "store", *WINDOW, env={"TMPDIR": str(tmp_path)})
    line = one_line_error(p.stderr)
    assert p.returncode == 70 and line.startswith("error: unexpected error (the traceback is in ") and "--debug" in line
    saved = Path(re.search(r"the traceback is in (\S+?);", line).group(1))
    assert saved.parent == tmp_path and "Traceback" in saved.read_text()
    p = miner("principals", "--store", tmp_path / "store", *WINDOW, "--debug", env={"TMPDIR": str(tmp_path)})
    assert p.returncode == 70 and "Traceback (most recent call last)" in p.stderr


def test_a_reader_that_stops_early_is_not_an_error(sample_store):
    """``miner usage --all | head -1``: the table is larger than the pipe, and the reader goes away."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "miner.cli", "usage", "--role", "orders-api-task", "--all", "-q",
                             "--store", str(sample_store), *WINDOW], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    assert proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0 and proc.stderr.read() == b""


def test_interrupt_and_bug_exit_codes(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "principals", interrupted)
    r = run("principals", "--store", tmp_path)
    assert r.exit_code == 130 and "interrupted" in r.stderr

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(jobs, "principals", bug)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # (gettempdir() caches $TMPDIR on first use)
    r = run("principals", "--store", tmp_path)
    assert r.exit_code == 70 and "KeyError: 'oops'" in one_line_error(r.stderr)
    assert "KeyError" in next(tmp_path.glob("miner-error-*.txt")).read_text()


# ----------------------------------------------------------------------------- output files


@pytest.mark.parametrize("args, expect", [
    (["suggest", "--role", "x", "--out", "policy.txt"], "unknown extension '.txt'"),
    (["suggest", "--role", "x", "--out", "policy"], "no extension"),
    (["suggest", "--role", "x", "--report", "r.html"], "unknown extension '.html'"),
    (["review", "--out", "x.pdf"], "unknown extension '.pdf'"),
    (["review", "--out", "r.json", "-f", "html"], "does not match"),
    (["suggest", "--role", "x", "--out", "p.json", "-f", "terraform"], "does not match"),
])
def test_unknown_output_formats_are_rejected_before_any_work(tmp_path, args, expect):
    r = run(*args, "--store", tmp_path / "no-store")  # a store error would mean the work had started
    assert r.exit_code == 2 and expect in one_line_error(r.stderr)


def test_an_output_under_a_file_fails_up_front(tmp_path):
    (tmp_path / "file").write_text("x")
    r = run("review", "--out", tmp_path / "file" / "review.html", "--store", tmp_path / "no-store")
    assert r.exit_code == 2 and "cannot create a file under" in one_line_error(r.stderr)


def test_review_writes_several_formats_from_one_computation(sample_store, sample_logs, tmp_path, monkeypatch):
    from miner import review

    calls = []
    build = review.build_review
    monkeypatch.setattr(review, "build_review", lambda *a, **k: calls.append(1) or build(*a, **k))
    out = tmp_path / "new" / "q3"
    r = run("review", "--store", sample_store, *WINDOW, "--account", "444455556666", "--iam-snapshot",
            sample_logs / "iam", "-o", out / "review.html", "-o", out / "review.json", "-o", out / "review.csv")
    assert r.exit_code == 0, r.output
    assert len(calls) == 1 and r.stdout == ""
    assert strict_json((out / "review.json").read_text())["kind"] == "miner-review"
    assert (out / "review.html").read_text().startswith("<!DOCTYPE html>")
    assert (out / "review.csv").read_text().startswith('"rank"')
    assert str(out / "review.html") in r.stderr


def test_review_without_out_writes_html_to_a_file_never_the_terminal(sample_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("review", "--store", sample_store, "--since", "2026-09-10", "--until", "2026-09-14")
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and "-> review-2026-09-10-2026-09-14.html" in r.stderr
    assert (tmp_path / "review-2026-09-10-2026-09-14.html").read_text().startswith("<!DOCTYPE html>")


# ----------------------------------------------------------------------------- Terraform


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
@pytest.mark.parametrize("who, attachment", [(["--role", "ci-deploy"], "aws_iam_role_policy_attachment"),
                                             (["--user", "alice"], "aws_iam_user_policy_attachment")])
def test_terraform_passes_fmt_check_and_attaches_the_policy(sample_store, tmp_path, who, attachment):
    tf = tmp_path / "policy.tf"
    r = run("suggest", *who, "--store", sample_store, *WINDOW, "-q", "-o", tf)
    assert r.exit_code == 0, r.output
    text = tf.read_text()
    assert 'data "aws_iam_policy_document"' in text and 'resource "aws_iam_policy"' in text
    assert f'resource "{attachment}"' in text and "data.aws_iam_policy_document." in text
    res = subprocess.run(["terraform", "fmt", "-check", "-diff", str(tf)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- safe, visible defaults


def test_window_edges_round_up_to_the_hour():
    now = datetime(2026, 9, 14, 10, 7, 33, tzinfo=timezone.utc)
    win, note = jobs.parse_window("90d", None, now=now)
    assert win.until == datetime(2026, 9, 14, 11, tzinfo=timezone.utc) and win.since.minute == 0
    assert "rounded up to the hour" in note
    assert jobs.parse_window("2026-08-01", "2026-09-14", now=now) == \
        (jobs.models.Window(datetime(2026, 8, 1, tzinfo=timezone.utc), datetime(2026, 9, 15, tzinfo=timezone.utc)), None)
    late = datetime(2026, 9, 14, 23, 30, tzinfo=timezone.utc)  # "today" is the clock's day, not the rounded hour's
    assert jobs.parse_window("today", None, now=late)[0].since == datetime(2026, 9, 14, tzinfo=timezone.utc)


def test_a_window_past_the_store_says_which_part_holds_data(sample_store):
    r = run("suggest", "--role", "ci-deploy", "--store", sample_store, "--since", "2026-05-01", "--until",
            "2026-09-14")
    assert r.exit_code == 0, r.output
    assert "note: the store holds events from 2026-08-01 to 2026-09-14: only 2026-08-01 00:00Z .. 2026-09-15 " \
           "00:00Z of the window" in r.stderr
    r = run("suggest", "--role", "ci-deploy", "--store", sample_store, *WINDOW)
    assert "the store holds" not in r.stderr


@pytest.mark.parametrize("args, expect", [
    (["--role", "alice"], "'alice' is not a role but the user arn:aws:iam::111122223333:user/alice: use --user alice"),
    (["--user", "ci-deploy"], "use --role ci-deploy"),
    (["--principal", "ecs-tasks.amazonaws.com"], "is an AWS service principal"),
    (["--principal", "AWSAccount:444455556666"], "the identity policy belongs to the calling role or user"),
])
def test_principals_named_wrong_or_without_an_identity_policy(sample_store, args, expect):
    r = run("suggest", *args, "--store", sample_store, *WINDOW)
    assert r.exit_code == 2 and expect in one_line_error(r.stderr) and r.stdout == ""


def test_a_missing_snapshot_fails_before_mining(sample_store, tmp_path, monkeypatch):
    from miner import usage

    monkeypatch.setattr(usage, "collect", lambda *a, **k: pytest.fail("mined before the snapshot was read"))
    r = run("suggest", "--role", "ci-deploy", "--store", sample_store, *WINDOW, "--diff", "--iam-snapshot",
            tmp_path / "missing")
    assert r.exit_code == 2 and "no IAM snapshot at" in one_line_error(r.stderr)


def test_an_empty_folder_ingest_leaves_nothing_behind(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("ingest", tmp_path / "empty", "--store", tmp_path / "store", "-q")
    assert r.exit_code == 2 and not (tmp_path / "store").exists()
    (tmp_path / "mine").mkdir()
    r = run("ingest", tmp_path / "empty", "--store", tmp_path / "mine", "-q")
    assert r.exit_code == 2 and not list((tmp_path / "mine").iterdir())


# ----------------------------------------------------------------------------- tables


def test_usage_table_summarises_by_resource_template(sample_store):
    base = ["usage", "--role", "orders-api-task", "--store", sample_store, *WINDOW]
    r = run(*base)
    assert r.exit_code == 0, r.output
    assert "acme-orders-prod/invoices/????/??/ord-*.pdf" in r.stdout and "--all lists each" in r.stdout
    assert r.stdout.count("log-stream:app/") == 2  # 180 log streams in two regions: two rows
    every = run(*base, "--all")
    assert every.stdout.count("log-stream:app/") == 180
    doc = strict_json(run(*base, "-f", "json").stdout)
    (row,) = [s for s in doc["summary"] if s["resource"].endswith("invoices/????/??/ord-*.pdf")
              and s["action"] == "s3:GetObject"]
    assert row["resources"] == row["calls"] > 100


def test_summarise_adds_up_calls_outcomes_and_regions():
    import pandas as pd

    keys = [f"arn:aws:s3:::b/logs/2026/08/{d:02d}/x.gz" for d in range(1, 21)]
    frame = pd.DataFrame({"action": "s3:GetObject", "resource": keys, "calls": 2,
                          "first_seen": pd.Timestamp("2026-08-01", tz="UTC"),
                          "last_seen": pd.Timestamp("2026-08-20", tz="UTC"), "regions": "us-east-1",
                          "outcomes": "success:1,throttled:1"})
    (row,) = jobs.summarise(frame).to_dict("records")
    assert row["resource"] == "arn:aws:s3:::b/logs/????/??/??/x.gz" and row["resources"] == 20
    assert row["calls"] == 40 and row["outcomes"] == "success:20,throttled:20" and row["regions"] == "us-east-1"


def test_principals_name_services_by_iam_prefix(sample_store):
    r = run("principals", "--store", sample_store, *WINDOW, "-f", "json")
    by = {p["principal_arn"]: p["services"] for p in strict_json(r.stdout)}
    assert "cloudwatch" in by["arn:aws:iam::111122223333:user/alice"]
    assert not any("monitoring" in s for s in by.values())


def test_import_miner_runs_nothing():
    code = "import sys, miner; assert not {'pandas', 'duckdb', 'miner.jobs'} & set(sys.modules); print(miner.suggest)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                                                                                          "PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and "function suggest" in p.stdout, p.stderr
