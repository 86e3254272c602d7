"""cloudtrail://REGION: LookupEvents through boto3 against a local server answering AWS's documented shapes."""

from __future__ import annotations

import gzip
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from miner import ingest as ig
from miner import lookup
from miner import store as st
from miner.models import Window
from lookup_server import ACCOUNT, Server, event_time, serve
from test_cli import one_line_error, run

UTC = timezone.utc
#: "now" of the library tests: the day after the sample logs end, so all of them are within 90 days.
NOW = datetime(2026, 9, 15, tzinfo=UTC)
WEEK = Window(datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 8, tzinfo=UTC))


@pytest.fixture(scope="session")
def management_records(sample_logs) -> dict[str, list[dict]]:
    """The sample's management events of account 111122223333 by region (each eventID once), as LookupEvents
    would hold them."""
    out: dict[str, dict[str, dict]] = {}
    for f in sorted((sample_logs / "AWSLogs" / ACCOUNT / "CloudTrail").rglob("*.json.gz")):
        try:
            records = json.loads(gzip.decompress(f.read_bytes()))["Records"]
        except (EOFError, OSError):  # the sample's truncated file (a re-delivery)
            continue
        for r in records:
            if r.get("eventCategory") == "Management" and r.get("recipientAccountId") == ACCOUNT:
                out.setdefault(r["awsRegion"], {}).setdefault(r["eventID"], r)
    return {region: list(recs.values()) for region, recs in out.items()}


@pytest.fixture
def cloudtrail(management_records, monkeypatch):
    """A local CloudTrail LookupEvents (and STS GetCallerIdentity) endpoint on 127.0.0.1, fake credentials, STS
    pointed at it, and a fast rate limit (``MINER_LOOKUP_RATE``) unless a test sets another."""
    with serve({k: list(v) for k, v in management_records.items()}) as server:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_STS": server.url, "MINER_LOOKUP_RATE": "500",
                     "AWS_RETRY_MODE": "standard"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield server


def lookup_ingest(server: Server, store, regions="us-east-1", window=WEEK, **kw):
    return ig.ingest([f"cloudtrail://{regions}"], store, window=window, now=NOW,
                     cloudtrail_endpoint_url=server.url, processes=1, **kw)


def expected_ids(server: Server, region: str, window: Window) -> set[str]:
    return {r["eventID"] for r in server.records[region] if window.since <= event_time(r) < window.until}


def stored_ids(store) -> list[str]:
    return st.connect(store).sql("select event_id from events").fetchnumpy()["event_id"].tolist()


# ----------------------------------------------------------------------------- what is stored


def test_store_holds_exactly_the_management_events_of_the_window(cloudtrail, tmp_path):
    rep = lookup_ingest(cloudtrail, tmp_path / "s", "us-east-1,eu-west-1")
    ids = stored_ids(tmp_path / "s")
    want = expected_ids(cloudtrail, "us-east-1", WEEK) | expected_ids(cloudtrail, "eu-west-1", WEEK)
    assert len(ids) == len(set(ids)) and set(ids) == want and len(want) > 300
    assert rep.records_written == len(want) and rep.outcome()[0] == 0
    assert rep.lookup_slices == 14 and rep.lookup_slices_done_before == 0
    con = st.connect(tmp_path / "s")
    assert con.sql("select distinct event_category from events").fetchall() == [("Management",)]
    assert {r for (r,) in con.sql("select distinct region from events").fetchall()} == {"us-east-1", "eu-west-1"}
    sources = {s for (s,) in con.sql("select distinct source_object from events").fetchall()}
    assert all(s.startswith(f"cloudtrail://{ACCOUNT}/") for s in sources)
    # the store says which (account, region, days) came from LookupEvents
    assert lookup.stored_spans(tmp_path / "s") == [(ACCOUNT, r, WEEK.since, WEEK.until)
                                                   for r in ("eu-west-1", "us-east-1")]


def test_the_same_rows_as_the_trail_files(cloudtrail, tmp_path, sample_store):
    lookup_ingest(cloudtrail, tmp_path / "s")
    cols = "event_id, event_time, principal_arn, event_name, outcome, request_parameters, resources"
    sql = (f"select {cols} from events where region = 'us-east-1' and account = '{ACCOUNT}' and "
           f"event_category = 'Management' and event_time >= TIMESTAMPTZ '2026-09-01' and "
           f"event_time < TIMESTAMPTZ '2026-09-08' order by event_id")
    assert st.connect(tmp_path / "s").sql(sql).fetchall() == st.connect(sample_store).sql(sql).fetchall()


def test_pages_of_at_most_50_follow_next_token(cloudtrail, tmp_path):
    lookup_ingest(cloudtrail, tmp_path / "s")
    reqs = [r["params"] for r in cloudtrail.requests]
    assert all(p["MaxResults"] == 50 for p in reqs)
    per_slice: dict = {}
    for p in reqs:
        per_slice.setdefault(p["StartTime"], []).append(p)
    assert len(per_slice) == 7
    for start, pages in per_slice.items():
        n = sum(1 for r in cloudtrail.records["us-east-1"]
                if start <= event_time(r).timestamp() < start + 86400)
        assert len(pages) == max(1, -(-n // 50))  # ceil(n / 50) requests, one at least
        assert [bool(p.get("NextToken")) for p in pages] == [False] + [True] * (len(pages) - 1)
        assert pages[0]["EndTime"] == start + 86400 - 1  # EndTime is inclusive: [start, end) asked as end - 1 s
    assert any(len(pages) > 1 for pages in per_slice.values())


def test_lookup_attributes_and_max_results_are_honoured_by_the_fixture(cloudtrail):
    """The fixture answers as AWS documents (so the other tests exercise the real request shapes)."""
    client, _ = lookup.make_client("us-east-1", endpoint_url=cloudtrail.url)
    got = client.lookup_events(StartTime=WEEK.since, EndTime=WEEK.until, MaxResults=5,
                               LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "AssumeRole"}])
    assert len(got["Events"]) == 5 and got["NextToken"]
    assert {e["EventName"] for e in got["Events"]} == {"AssumeRole"}
    assert isinstance(got["Events"][0]["EventTime"], datetime) and json.loads(got["Events"][0]["CloudTrailEvent"])


# ----------------------------------------------------------------------------- rate limit and throttling


def _max_per_second(times: list[float]) -> int:
    """The most requests in any one-second interval [t, t + 1)."""
    return max(sum(1 for u in times if t <= u < t + 1.0) for t in times)


def test_rate_limit_is_shared_by_the_threads_of_a_region(cloudtrail, tmp_path, monkeypatch):
    monkeypatch.setenv("MINER_LOOKUP_RATE", "20")
    lookup_ingest(cloudtrail, tmp_path / "s", "us-east-1,eu-west-1")
    for region in ("us-east-1", "eu-west-1"):
        times = sorted(r["t"] for r in cloudtrail.requests if r["region"] == region)
        assert len(times) >= 7
        # 20/s at the client; the arrivals jitter on a loaded machine, so allow two requests more than 20/s
        assert len(times) <= 20 * (times[-1] - times[0]) + 3 and _max_per_second(times) <= 22


def test_the_real_rate_of_two_requests_per_second(cloudtrail, tmp_path, monkeypatch):
    monkeypatch.delenv("MINER_LOOKUP_RATE")
    assert lookup.rate() == 2.0
    t0 = time.monotonic()
    lookup_ingest(cloudtrail, tmp_path / "s", window=Window(datetime(2026, 9, 5, tzinfo=UTC),
                                                            datetime(2026, 9, 7, tzinfo=UTC)))
    times = sorted(r["t"] for r in cloudtrail.requests)
    assert len(times) >= 4
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.4  # 0.525 s apart, less jitter on the way
    assert _max_per_second(times) <= 2
    assert time.monotonic() - t0 >= (len(times) - 1) / 2


def test_throttled_requests_are_retried(cloudtrail, tmp_path):
    cloudtrail.throttle = 3
    rep = lookup_ingest(cloudtrail, tmp_path / "s")
    assert cloudtrail.throttled == 3 and rep.lookup_retries == 3
    assert set(stored_ids(tmp_path / "s")) == expected_ids(cloudtrail, "us-east-1", WEEK)
    assert rep.lookup_slices_failed == 0 and rep.outcome()[0] == 0


def test_throttled_past_the_retries_is_retried_by_the_next_run(cloudtrail, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # two attempts in all: one retry
    cloudtrail.throttle = 10**6  # throttled for good: every slice fails after its retry
    rep = lookup_ingest(cloudtrail, tmp_path / "s")
    assert rep.lookup_slices_failed == 7 and cloudtrail.throttled == 14 and rep.records_written == 0
    code, verdict = rep.outcome()
    assert code == 2 and verdict.startswith("nothing stored: 7 LookupEvents slices could not be read to the end "
                                            "(LookupEvents ThrottlingException: 7)"), verdict
    cloudtrail.throttle = 0
    again = lookup_ingest(cloudtrail, tmp_path / "s")
    assert again.lookup_slices_done_before == 0 and again.lookup_slices_failed == 0
    ids = stored_ids(tmp_path / "s")
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(cloudtrail, "us-east-1", WEEK)


# ----------------------------------------------------------------------------- resumable


class Interrupt(Exception):
    pass


def test_interrupted_run_then_rerun_fetches_only_unfinished_slices(cloudtrail, tmp_path):
    pages = [0]

    def stop_after_some(p):
        pages[0] += 1
        if pages[0] == 12:
            raise Interrupt

    with pytest.raises(Interrupt):
        lookup_ingest(cloudtrail, tmp_path / "s", progress=stop_after_some)
    finished = lookup.finished_spans(tmp_path / "s")[(ACCOUNT, "us-east-1")]
    assert 0 < len(finished) < 7
    first = len(cloudtrail.requests)
    rep = lookup_ingest(cloudtrail, tmp_path / "s")
    assert rep.lookup_slices_done_before == len(finished)
    starts = {datetime.fromtimestamp(r["params"]["StartTime"], UTC) for r in cloudtrail.requests[first:]}
    assert not starts & {a for a, _ in finished}  # finished slices are not asked again
    ids = stored_ids(tmp_path / "s")
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(cloudtrail, "us-east-1", WEEK)
    third = lookup_ingest(cloudtrail, tmp_path / "s")
    assert third.lookup_requests == 0 and third.outcome() == (
        0, "nothing new to ingest: the 7 LookupEvents slices of the window are already in the store")


def test_killed_run_then_rerun_has_no_duplicates_and_nothing_missing(cloudtrail, tmp_path, monkeypatch):
    """``kill -9`` while slices are being read: what was published stays readable, the manifest names only
    finished slices whose events are all stored, and the next run completes the rest."""
    import os
    import signal
    import subprocess
    import sys

    store = tmp_path / "s"
    code = ("import sys; from datetime import datetime, timezone; from miner import ingest as ig; "
            "from miner.models import Window; u = timezone.utc; "
            "ig.ingest(['cloudtrail://us-east-1'], sys.argv[1], now=datetime(2026, 9, 15, tzinfo=u), "
            "window=Window(datetime(2026, 9, 1, tzinfo=u), datetime(2026, 9, 8, tzinfo=u)), "
            "cloudtrail_endpoint_url=sys.argv[2])")
    env = dict(os.environ, MINER_LOOKUP_RATE="4", PYTHONPATH=str(Path(ig.__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", code, str(store), cloudtrail.url], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / "manifest").is_dir() and lookup.finished_spans(store):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = lookup.finished_spans(store)[(ACCOUNT, "us-east-1")]
    assert 0 < len(finished) < 7
    stored = set(stored_ids(store))
    for a, b in finished:  # a slice in the manifest has all of its events stored
        assert {r["eventID"] for r in cloudtrail.records["us-east-1"] if a <= event_time(r) < b} <= stored
    rep = lookup_ingest(cloudtrail, store)
    assert rep.lookup_slices_done_before == len(finished)
    ids = stored_ids(store)
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(cloudtrail, "us-east-1", WEEK)


def test_recent_slices_are_read_again_until_settled(cloudtrail, tmp_path):
    now = datetime(2026, 9, 7, 12, 30, tzinfo=UTC)
    win = Window(datetime(2026, 9, 6, tzinfo=UTC), now)
    ig.ingest(["cloudtrail://us-east-1"], tmp_path / "s", window=win, now=now, cloudtrail_endpoint_url=cloudtrail.url)
    rep = ig.ingest(["cloudtrail://us-east-1"], tmp_path / "s", window=win, now=now,
                    cloudtrail_endpoint_url=cloudtrail.url)
    assert rep.lookup_slices == 2 and rep.lookup_slices_done_before == 1  # today's slice may still grow
    assert rep.records_written == 0 and rep.duplicates == rep.records_read > 0


def test_window_is_clipped_to_90_days_with_a_note(cloudtrail, tmp_path):
    rep = lookup_ingest(cloudtrail, tmp_path / "s", window=Window(datetime(2026, 1, 1, tzinfo=UTC),
                                                                  datetime(2026, 12, 1, tzinfo=UTC)))
    assert any("clipped to 2026-06-17 00:00Z .. 2026-09-15 00:00Z" in n for n in rep.notes), rep.notes
    assert rep.lookup_slices == 90
    assert set(stored_ids(tmp_path / "s")) == {r["eventID"] for r in cloudtrail.records["us-east-1"]}


def test_s3_store(cloudtrail, tmp_path, moto_server, monkeypatch):
    import boto3
    import requests

    from miner import s3store

    monkeypatch.setenv(s3store.ENDPOINT_ENV, moto_server)
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="lookup-store")
    url = "s3://lookup-store/m"
    lookup_ingest(cloudtrail, url)
    again = lookup_ingest(cloudtrail, url)
    assert again.lookup_slices_done_before == 7 and again.lookup_requests == 0
    ids = stored_ids(st.root(url))
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids(cloudtrail, "us-east-1", WEEK)


# ----------------------------------------------------------------------------- hostile input and errors


def test_malformed_cloudtrail_event_is_quarantined(cloudtrail, tmp_path):
    inside = sorted(expected_ids(cloudtrail, "us-east-1", WEEK))
    cloudtrail.malformed = {inside[0]: '{"eventID": "x", "eventTime": ', inside[1]: "[1, 2]"}
    rep = lookup_ingest(cloudtrail, tmp_path / "s")
    groups = rep.skipped_groups()
    assert groups[lookup.R_BAD_EVENT]["records"] == 1 and groups[lookup.R_NOT_OBJECT]["records"] == 1
    assert groups[lookup.R_BAD_EVENT]["examples"][0].startswith(f"cloudtrail://{ACCOUNT}/us-east-1/")
    assert set(stored_ids(tmp_path / "s")) == set(inside[2:])
    assert rep.records_read == rep.records_written + rep.duplicates + rep.records_skipped + rep.records_filtered


@pytest.mark.parametrize("text", ["2026-09-01", "", "Z"])
def test_decode_keeps_what_parses(text):
    good, bad = lookup.decode([{"CloudTrailEvent": json.dumps({"eventID": "a"})}, {"CloudTrailEvent": text},
                               {"EventId": "no record"}])
    assert [json.loads(g) for g in good] == [{"eventID": "a"}]
    assert sum(bad.values()) == 2 and bad[lookup.R_NO_EVENT] == 1


@pytest.mark.parametrize("source, message", [
    ("cloudtrail://moon-base-1", "unknown region 'moon-base-1'"),
    ("cloudtrail://us-east-1,nowhere", "unknown region 'nowhere'"),
    ("cloudtrail://", "no region in 'cloudtrail://'"),
])
def test_unknown_region_is_one_line(source, message, tmp_path):
    r = run("ingest", source, "--store", tmp_path / "s", "-q")
    assert r.exit_code == 2 and message in one_line_error(r.stderr)
    assert not (tmp_path / "s").exists()


def test_no_credentials_is_one_line(cloudtrail, no_aws_credentials, tmp_path):
    r = run("ingest", "cloudtrail://us-east-1", "--store", tmp_path / "s", "--cloudtrail-endpoint-url",
            cloudtrail.url, "-q")
    assert r.exit_code == 2 and "no AWS credentials found" in one_line_error(r.stderr)
    assert not (tmp_path / "s").exists() and not cloudtrail.requests


def test_cli_reads_the_recent_event_history(cloudtrail, tmp_path):
    """Through the command line (the real clock): events of the last days, a summary that says what was read."""
    now = datetime.now(UTC).replace(microsecond=0)
    recs = []
    for i, r in enumerate(cloudtrail.records["us-east-1"][:120]):
        r = dict(r, eventTime=(now - timedelta(days=2, minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        recs.append(r)
    cloudtrail.records = {"us-east-1": recs}
    r = run("ingest", "cloudtrail://us-east-1", "--store", tmp_path / "s", "--since", "5d",
            "--cloudtrail-endpoint-url", cloudtrail.url, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["records_written"] == 120 and out["lookup_slices"] in (6, 7)
    assert "management events only" in r.stderr and "LookupEvents requests" in r.stderr
    assert sorted(stored_ids(tmp_path / "s")) == sorted(x["eventID"] for x in recs)


# ----------------------------------------------------------------------------- slices


def test_day_slices_cut_at_utc_midnight():
    w = Window(datetime(2026, 9, 1, 15, tzinfo=UTC), datetime(2026, 9, 3, 6, tzinfo=UTC))
    got = [(s.start.isoformat(), s.end.isoformat()) for s in lookup.day_slices(w, ACCOUNT, "us-east-1")]
    assert got == [("2026-09-01T15:00:00+00:00", "2026-09-02T00:00:00+00:00"),
                   ("2026-09-02T00:00:00+00:00", "2026-09-03T00:00:00+00:00"),
                   ("2026-09-03T00:00:00+00:00", "2026-09-03T06:00:00+00:00")]
    s = lookup.day_slices(w, ACCOUNT, "us-east-1")[1]
    assert lookup.Slice.parse(s.uri) == s
    assert lookup.is_finished(s, {(ACCOUNT, "us-east-1"): [(w.since, w.until)]})
    assert not lookup.is_finished(s, {(ACCOUNT, "eu-west-1"): [(w.since, w.until)]})


def test_window_outside_90_days_is_refused():
    with pytest.raises(lookup.LookupEventsError, match="outside the last 90 days"):
        lookup.clip(Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)), NOW)


@pytest.mark.parametrize("value", ["0", "-1", "fast", "inf"])
def test_bad_rate_is_refused(value, monkeypatch):
    monkeypatch.setenv("MINER_LOOKUP_RATE", value)
    with pytest.raises(lookup.LookupEventsError, match="MINER_LOOKUP_RATE"):
        lookup.rate()


# ----------------------------------------------------------------------------- management events only


def test_data_events_count_as_unobservable_and_the_commands_say_why(cloudtrail, tmp_path, sample_logs, sample_store):
    from miner import jobs

    store = tmp_path / "s"
    lookup_ingest(cloudtrail, store)
    grants = jobs.Grants(snapshot=sample_logs / "iam")
    got = jobs.suggest(store, WEEK, role="orders-api-task", grants=grants)
    assert any("management events only from CloudTrail LookupEvents (account 111122223333 us-east-1 2026-09-01 "
               "00:00Z .. 2026-09-08 00:00Z)" in n for n in got.notes), got.notes
    cls = got.report.classification.set_index("action")
    assert cls.loc["s3:GetObject", "status"] == "unobservable"
    assert "no s3.amazonaws.com data events" in cls.loc["s3:GetObject", "reason"]
    assert cls.loc["dynamodb:GetItem", "status"] == "unobservable"
    trail = jobs.suggest(sample_store, WEEK, role="orders-api-task", grants=grants)  # the trail logged data events
    assert trail.report.classification.set_index("action").loc["s3:GetObject", "status"] == "used"
    assert not jobs.evidence_notes(sample_store, WEEK)
    assert any("management events only" in n for n in jobs.review(store, WEEK).review["notes"])
    r = run("coverage", "--store", store)
    assert r.exit_code == 0 and "note: management events only from CloudTrail LookupEvents" in r.stderr
    assert not jobs.evidence_notes(store, Window(datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 8, 5, tzinfo=UTC)))
