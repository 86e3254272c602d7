"""miner advisor: IAM Access Advisor reports through boto3 against a local IAM endpoint, snapshots, the store's table,
and the evidence in suggest --diff and the review (miner/advisor.py, miner.jobs.advisor)."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import pytest

from miner import advisor, jobs

GOLDEN = Path(__file__).parent / "golden"
ACCT = "111122223333"
ROLES = [f"arn:aws:iam::{ACCT}:role/{n}" for n in ("app", "batch", "service-role/etl")]
USERS = [f"arn:aws:iam::{ACCT}:user/alice"]
NS = "https://iam.amazonaws.com/doc/2010-05-08/"


def _services(arn: str) -> list[dict]:
    """Each principal's report: s3 at action level (ListBuckets used), glue never accessed, sqs accessed."""
    return [
        {"ServiceName": "Amazon S3", "ServiceNamespace": "s3", "LastAuthenticated": "2026-05-01T10:00:00Z",
         "LastAuthenticatedRegion": "us-east-1", "LastAuthenticatedEntity": arn, "TotalAuthenticatedEntities": 1,
         "TrackedActionsLastAccessed": [
             {"ActionName": "ListBuckets", "LastAccessedTime": "2026-05-01T10:00:00Z", "LastAccessedEntity": arn,
              "LastAccessedRegion": "us-east-1"},
             {"ActionName": "CreateBucket"}]},
        {"ServiceName": "AWS Glue", "ServiceNamespace": "glue", "TotalAuthenticatedEntities": 0},
        {"ServiceName": "Amazon SQS", "ServiceNamespace": "sqs", "LastAuthenticated": "2026-09-01T00:00:00Z",
         "LastAuthenticatedEntity": arn, "LastAuthenticatedRegion": "eu-west-1", "TotalAuthenticatedEntities": 1},
    ]


def _xml(value, tag: str = "") -> str:
    """A value in IAM's query-protocol XML (lists as <member> elements)."""
    if isinstance(value, list):
        return "".join(f"<member>{_xml(v)}</member>" for v in value)
    if isinstance(value, dict):
        return "".join(f"<{k}>{_xml(v, k)}</{k}>" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


class FakeIam:
    """The IAM calls miner advisor makes, answered with the XML shapes AWS documents: ListRoles/ListUsers (Marker
    pages of 2), GenerateServiceLastAccessedDetails (the first call throttled), GetServiceLastAccessedDetails
    (IN_PROGRESS on the first poll, then COMPLETED in Marker pages of 2 services)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.jobs: dict[str, str] = {}
        self.polls: dict[str, int] = {}
        self.throttled = 0
        self.fail_generate_for: set[str] = set()
        self.keys: list[tuple[str, str]] = []  # (action, the access key that signed it)
        self.members = {"444455556666"}  # accounts whose OrganizationAccountAccessRole may be assumed
        self.accounts = [ACCT, "444455556666", "777788889999"]

    def organizations(self, target: str) -> tuple[int, str]:
        """Organizations (JSON protocol): ListAccounts."""
        assert target.endswith(".ListAccounts"), target
        return 200, json.dumps({"Accounts": [{"Id": a, "Arn": f"arn:aws:organizations::{ACCT}:account/o-x/{a}",
                                              "Status": "ACTIVE", "Name": a} for a in self.accounts]})

    def answer(self, action: str, p: dict, key: str = "") -> tuple[int, str]:
        self.calls.append((action, p))
        self.keys.append((action, key))
        if action == "GetCallerIdentity":
            return 200, self._ok(action, {"Arn": f"arn:aws:iam::{ACCT}:user/admin", "UserId": "AIDA", "Account": ACCT})
        if action == "AssumeRole":
            acct = p["RoleArn"].split(":")[4]
            if acct not in self.members:
                return 403, self._error("AccessDenied", f"not authorized to assume {p['RoleArn']}")
            return 200, self._ok(action, {"Credentials": {
                "AccessKeyId": f"ASIA{acct}", "SecretAccessKey": "s", "SessionToken": "t",
                "Expiration": "2026-09-15T08:00:00Z"}, "AssumedRoleUser": {"Arn": p["RoleArn"], "AssumedRoleId": "x"}})
        if action in ("ListRoles", "ListUsers"):
            kind = "Role" if action == "ListRoles" else "User"
            arns = ROLES if kind == "Role" else USERS
            start = int(p.get("Marker", "0"))
            page = arns[start:start + 2]
            more = start + 2 < len(arns)
            members = [{"Path": "/", f"{kind}Name": a.rsplit("/", 1)[1], f"{kind}Id": f"AID{i}", "Arn": a,
                        "CreateDate": "2026-01-01T00:00:00Z"} for i, a in enumerate(page)]
            body = {f"{kind}s": members, "IsTruncated": more, **({"Marker": str(start + 2)} if more else {})}
            return 200, self._ok(action, body)
        if action == "GenerateServiceLastAccessedDetails":
            if not self.throttled:
                self.throttled += 1
                return 400, self._error("Throttling", "Rate exceeded")
            if p["Arn"] in self.fail_generate_for:
                return 400, self._error("NoSuchEntity", "no such entity")
            assert p["Granularity"] == "ACTION_LEVEL"
            job = f"{len(self.jobs):08d}-aaaa-4bbb-8ccc-dddddddddddd"  # a UUID, as AWS (botocore checks the length)
            self.jobs[job] = p["Arn"]
            return 200, self._ok(action, {"JobId": job})
        if action == "GetServiceLastAccessedDetails":
            job = p["JobId"]
            self.polls[job] = self.polls.get(job, 0) + 1
            base = {"JobType": "ACTION_LEVEL", "JobCreationDate": "2026-09-15T06:00:00Z"}
            if self.polls[job] == 1:
                return 200, self._ok(action, {"JobStatus": "IN_PROGRESS", **base, "ServicesLastAccessed": []})
            services = _services(self.jobs[job])
            start = int(p.get("Marker", "0"))
            more = start + 2 < len(services)
            return 200, self._ok(action, {"JobStatus": "COMPLETED", **base,
                                          "ServicesLastAccessed": services[start:start + 2],
                                          "JobCompletionDate": "2026-09-15T06:00:41Z", "IsTruncated": more,
                                          **({"Marker": str(start + 2)} if more else {})})
        return 400, self._error("InvalidAction", action)

    @staticmethod
    def _ok(action: str, result: dict) -> str:
        return (f'<{action}Response xmlns="{NS}"><{action}Result>{_xml(result)}</{action}Result>'
                f"<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></{action}Response>")

    @staticmethod
    def _error(code: str, message: str) -> str:
        return (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")


@pytest.fixture
def fake_iam(monkeypatch):
    """A local IAM endpoint on 127.0.0.1 (moto 5.2.1 lacks the Access Advisor calls); yields (url, FakeIam)."""
    state = FakeIam()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            key = (self.headers.get("Authorization") or "").partition("Credential=")[2].split("/", 1)[0]
            if self.headers.get("X-Amz-Target"):
                status, text = state.organizations(self.headers["X-Amz-Target"])
            else:
                params = {k: v[0] for k, v in parse_qs(body).items()}
                status, text = state.answer(params.get("Action", ""), params, key)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                 ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_MAX_ATTEMPTS", "1")):  # throttling reaches miner's backoff
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


NOW = datetime(2026, 9, 15, 7, tzinfo=timezone.utc)


def test_live_reads_every_role_and_user_through_boto3(fake_iam, tmp_path):
    url, state = fake_iam
    waits: list[float] = []
    seen: list[tuple[int, int]] = []
    run = jobs.advisor(tmp_path / "store", endpoint_url=url, now=NOW, sleep=waits.append,
                       progress=lambda done, total, arn: seen.append((done, total)))
    assert run.principals == 4 and run.problems == []
    assert seen[-1] == (4, 4)
    assert waits[0] == 1.0  # the throttled GenerateServiceLastAccessedDetails was retried after a backoff
    assert [a for a, _ in state.calls].count("ListRoles") == 2  # ListRoles paginated with Marker
    gets = [p for a, p in state.calls if a == "GetServiceLastAccessedDetails"]
    assert any("Marker" in p for p in gets)  # the report's pages were followed
    frame = advisor.read(tmp_path / "store")
    assert set(frame["principal_arn"]) == set(ROLES + USERS)
    app = frame[frame["principal_arn"] == ROLES[0]].set_index(frame[frame["principal_arn"] == ROLES[0]]["action"]
                                                             .fillna(frame["service_namespace"]))
    assert pd_time(app.loc["s3:ListBuckets", "last_accessed"]) == datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
    assert app.loc["glue", "last_accessed"] is None or str(app.loc["glue", "last_accessed"]) == "NaT"
    assert app.loc["sqs", "last_accessed_region"] == "eu-west-1" and not app.loc["sqs", "tracked"]
    assert str(app.loc["s3", "tracking_start"])[:10] == "2025-08-11" and app.loc["s3", "account"] == ACCT
    assert run.never_accessed == 4  # glue, per principal
    assert not (tmp_path / "store" / "_tmp").exists()


def pd_time(v) -> datetime:
    return v.to_pydatetime()


def test_all_accounts_assumes_a_role_in_each_member_account(fake_iam, tmp_path):
    url, state = fake_iam
    run = jobs.advisor(tmp_path / "store", endpoint_url=url, all_accounts=True, now=NOW, sleep=lambda s: None)
    lists = [k for a, k in state.keys if a == "ListRoles"]
    assert "testing" in lists and "ASIA444455556666" in lists  # the caller's own account, then the member's
    assert any("777788889999" in p and "OrganizationAccountAccessRole" in p for p in run.problems)
    assert run.principals == 4  # the fake answers the same roles and users in both accounts


def test_a_principal_that_fails_is_named_and_the_others_kept(fake_iam, tmp_path):
    url, state = fake_iam
    state.fail_generate_for = {USERS[0]}
    run = jobs.advisor(tmp_path / "store", endpoint_url=url, now=NOW, sleep=lambda s: None)
    assert run.principals == 3 and len(run.problems) == 1 and "alice" in run.problems[0]


def test_a_later_run_wins_per_principal(fake_iam, tmp_path):
    url, _ = fake_iam
    snap = tmp_path / "old.json"
    snap.write_text(json.dumps({"Arn": ROLES[0], "JobStatus": "COMPLETED", "JobCompletionDate": "2026-01-01T00:00:00Z",
                                "ServicesLastAccessed": [{"ServiceNamespace": "glue", "ServiceName": "AWS Glue",
                                                          "LastAuthenticated": "2025-12-01T00:00:00Z"}]}))
    jobs.advisor(tmp_path / "store", snapshot=snap, now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    jobs.advisor(tmp_path / "store", endpoint_url=url, now=NOW, sleep=lambda s: None)
    frame = advisor.read(tmp_path / "store")
    glue = frame[(frame["principal_arn"] == ROLES[0]) & (frame["service_namespace"] == "glue")]
    assert len(glue) == 1 and str(glue["last_accessed"].iloc[0]) == "NaT"  # the September report, not January's
    assert len(advisor.files(tmp_path / "store")) == 2  # published files are never rewritten


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    (json.dumps({"JobStatus": "COMPLETED"}), "Arn"),
    (json.dumps({"Arn": ROLES[0], "JobStatus": "IN_PROGRESS"}), "IN_PROGRESS"),
    (json.dumps({"Arn": ROLES[0], "JobStatus": "FAILED", "Error": {"Code": "X", "Message": "boom"}}), "boom"),
    (json.dumps({"Arn": ROLES[0], "JobStatus": "COMPLETED", "JobCompletionDate": "2026-09-15T00:00:00Z"}),
     "ServicesLastAccessed"),
])
def test_a_bad_snapshot_is_one_line_and_writes_nothing(tmp_path, content, message):
    snap = tmp_path / "a.json"
    snap.write_text(content)
    with pytest.raises(jobs.JobError, match=message):
        jobs.advisor(tmp_path / "store", snapshot=snap, now=NOW)
    assert not (tmp_path / "store").exists()


def test_cli_snapshot_and_errors(tmp_path, sample_logs):
    from typer.testing import CliRunner

    from miner.cli import app

    r = CliRunner().invoke(app, ["advisor", "--snapshot", str(tmp_path / "nope"), "--store", str(tmp_path / "s")])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["advisor", "--snapshot", str(sample_logs / "advisor"), "--store",
                                 str(tmp_path / "s"), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert doc["principals"] == 12 and doc["never_accessed"] > 0 and doc["path"].endswith(".parquet")


# ----------------------------------------------------------------------------------------- the sample, end to end


@pytest.fixture(scope="module")
def advised_store(tmp_path_factory, sample_store, sample_logs) -> Path:
    """The sample store with the sample Access Advisor snapshot read into it."""
    target = tmp_path_factory.mktemp("advised") / "store"
    shutil.copytree(sample_store, target)
    jobs.advisor(target, snapshot=sample_logs / "advisor", now=NOW)
    return target


WINDOW = jobs.parse_window("2026-08-01", "2026-09-14")[0]


def test_suggest_diff_gives_each_granted_action_its_evidence(advised_store, sample_logs):
    from miner import evidence

    res = jobs.suggest(advised_store, WINDOW, role="legacy-batch", grants=jobs.Grants(snapshot=sample_logs / "iam"))
    doc = json.loads(json.dumps(res.report_dict(), default=str, allow_nan=False))
    ev = doc["evidence"]
    assert sum(ev["counts"].values()) == doc["granted"]["actions"]
    assert ev["counts"]["used_cloudtrail"] == len(doc["used"])
    by = {a["action"]: a for a in ev["actions"]}
    assert by["ec2:DescribeInstances"]["evidence"] == evidence.USED_ADVISOR  # before the trail's 45 days
    assert by["glue:GetJob"]["evidence"] == evidence.UNUSED_PROVEN and by["glue:GetJob"]["service_never_accessed"]
    assert "glue" in [s["service"] for s in ev["never_accessed_services"]]
    text = res.report_text()
    assert "evidence per granted action" in text and "never accessed in Access Advisor's tracking period" in text


def test_without_access_advisor_suggest_diff_is_unchanged(sample_store, sample_logs):
    res = jobs.suggest(sample_store, WINDOW, role="legacy-batch", grants=jobs.Grants(snapshot=sample_logs / "iam"))
    assert "evidence" not in res.report_dict() and "evidence per granted action" not in res.report_text()


def _evidence_golden(review: dict) -> dict:
    """What the golden file pins: per principal, its evidence counts and never-accessed services; the ranking."""
    return {"removal_proven": [(c["name"], c["actions"], [s["service"] for s in c["services"][:5]])
                               for c in review["removal_proven"]],
            "principals": {p["name"]: {"counts": p["evidence"]["counts"],
                                       "never_accessed": [s["service"] for s in
                                                          p["evidence"]["never_accessed_services"][:8]],
                                       "used_advisor": [u["action"] for u in p["evidence"]["used_advisor"]],
                                       "unused_services": (p.get("unused_services") or [])[:3]}
                           for p in review["principals"] if p.get("evidence")}}


def test_review_with_the_sample_access_advisor_snapshot_golden(advised_store, sample_logs):
    from miner import report

    rv = jobs.review(advised_store, WINDOW, grants=jobs.Grants(snapshot=sample_logs / "iam"))
    text = rv.render("json")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    got = json.loads(json.dumps(_evidence_golden(doc)))
    assert got == json.loads((GOLDEN / "review-advisor-evidence.json").read_text())
    etl = next(p for p in doc["principals"] if p["name"] == "unused-etl")
    from miner import review

    assert review.to_frame(doc).set_index("name").loc["unused-etl", "unused_proven"] == \
        etl["evidence"]["counts"]["unused_proven"] > 0  # (the notebook's ranked table)
    assert [s["service"] for s in etl["evidence"]["never_accessed_services"]] == ["glue", "s3"]  # most actions first
    assert doc["summary"]["services_never_accessed"] > 0
    page, md = report.render(doc, "html"), report.render(doc, "md")
    assert 'id="removal-proven"' in page and "Removal candidates proven by IAM Access Advisor" in md
    assert "Evidence per granted action" in page
    import csv
    import io

    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report.render(doc, "csv")))}
    assert rows["unused-etl"]["advisor_unused_proven"] == str(etl["evidence"]["counts"]["unused_proven"])
    assert rows["unused-etl"]["advisor_never_accessed_services"] == "glue;s3"
    assert all(rows[p["name"]]["advisor_used_only"] == "" for p in doc["principals"] if not p.get("evidence"))
    proven = review.removal_proven_frame(doc)  # (the notebook's table)
    assert list(proven[proven["name"] == "unused-etl"]["service"]) == ["glue", "s3"]
    assert proven["actions"].sum() == sum(c["actions"] for c in doc["removal_proven"])
    assert review.removal_proven_frame({"principals": []}).empty


def test_a_store_on_s3_gets_the_table_by_single_puts(aws_env, monkeypatch, sample_logs):
    import boto3

    from miner import s3store
    from miner import store as st

    monkeypatch.setenv(s3store.ENDPOINT_ENV, aws_env)
    client = boto3.client("s3", endpoint_url=aws_env)
    client.create_bucket(Bucket="advisor-store")
    root = st.root("s3://advisor-store/team")
    run = jobs.advisor(root, snapshot=sample_logs / "advisor", now=NOW)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="advisor-store")["Contents"]]
    assert [k for k in keys if k.startswith("team/advisor/")] == [f"team/advisor/{Path(run.path).name}"]
    assert not [k for k in keys if "_tmp" in k]
    frame = advisor.read(root)
    assert frame["principal_arn"].nunique() == 12 and len(frame) == run.rows


def test_logged_values_of_a_report_are_data_in_every_output(tmp_path, sample_store, sample_logs):
    from miner import report

    arn = "arn:aws:iam::111122223333:role/legacy-batch"
    evil = "us-east-1\x1b[2J\u202e<b>`|"
    snap = tmp_path / "evil.json"
    snap.write_text(json.dumps({"Arn": arn, "JobStatus": "COMPLETED", "JobCompletionDate": "2026-09-15T06:00:00Z",
                                "ServicesLastAccessed": [
                                    {"ServiceNamespace": "ec2", "ServiceName": evil,
                                     "LastAuthenticated": "2026-03-02T04:10:00Z", "LastAuthenticatedRegion": evil,
                                     "TrackedActionsLastAccessed": [
                                         {"ActionName": "DescribeInstances", "LastAccessedRegion": evil,
                                          "LastAccessedTime": "2026-03-02T04:10:00Z"}]}]}))
    store = tmp_path / "store"
    shutil.copytree(sample_store, store)
    jobs.advisor(store, snapshot=snap, now=NOW)
    grants = jobs.Grants(snapshot=sample_logs / "iam")
    text = jobs.suggest(store, WINDOW, role="legacy-batch", grants=grants).report_text()
    assert "\x1b" not in text and "\u202e" not in text and "in us-east-1\\x1b[2J\\u202e<b>`|" in text
    rv = jobs.review(store, WINDOW, grants=grants)
    doc = json.loads(rv.render("json"))
    entry = next(p for p in doc["principals"] if p["name"] == "legacy-batch")
    assert entry["evidence"]["used_advisor"][0]["detail"].endswith(evil)  # JSON keeps the exact value
    page = report.render(doc, "html")
    assert "\x1b" not in page and "<b>`|" not in page
