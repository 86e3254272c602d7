"""Tests for the usage queries and miner.usage (principals, resolution, shapes -> actions, denied, timeline)."""

from __future__ import annotations

import json
import types
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner import models, queries, usage
from miner.store import connect

UTC = timezone.utc
ACCT = "111122223333"
ORDERS = f"arn:aws:iam::{ACCT}:role/service-role/orders-api"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
NOW = datetime(2026, 9, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------- fixture helpers (used by other test files)

def event(principal: str = ORDERS, name: str = "GetObject", source: str = "s3.amazonaws.com", *,
          when: str | datetime = "2026-08-10T12:00:00Z", params: dict | None = None, resources: list | None = None,
          error: str | None = None, account: str = ACCT, region: str = "us-east-1", category: str = "Management",
          ip: str = "10.0.0.1", agent: str = "aws-sdk-go/1.0", invoked_by: str | None = None, **extra) -> dict:
    """One stored event (models.EVENT_SCHEMA columns) with sensible defaults."""
    t = when if isinstance(when, datetime) else datetime.fromisoformat(when.replace("Z", "+00:00"))
    kind = principal.split(":", 5)[-1].split("/", 1)[0] if principal.startswith("arn:") else ""
    row = {f.name: None for f in models.EVENT_SCHEMA}
    row.update({
        "event_id": extra.pop("event_id", None) or f"id-{principal}-{name}-{t.isoformat()}-{json.dumps(params)}-{error}",
        "event_time": t, "event_source": source, "event_name": name, "aws_region": region, "account_id": account,
        "principal_arn": principal, "principal_type": {"role": "AssumedRole", "user": "IAMUser"}.get(kind, "AWSService"),
        "principal_name": principal.rsplit("/", 1)[-1] if kind in ("role", "user") else None,
        "principal_account": principal.split(":")[4] if principal.startswith("arn:") else None,
        "source_ip": ip, "user_agent": agent, "error_code": error, "outcome": models.classify_outcome(error),
        "read_only": name.startswith(("Get", "List", "Describe")), "event_type": "AwsApiCall",
        "event_category": category, "management_event": category == "Management",
        "request_parameters": json.dumps(params) if params is not None else None,
        "resources": json.dumps(resources) if resources is not None else None, "invoked_by": invoked_by,
        "partition": models.partition_of(region), "event_version": "1.09",
    })
    row.update(extra)
    return row


def write_store(root: Path, events: list[dict]) -> Path:
    """Write events into ``root`` in the store layout (one file per account/region/day, sorted by principal_arn)."""
    cells: dict[tuple, list[dict]] = {}
    for e in events:
        cells.setdefault((e["account_id"], e["aws_region"], e["event_time"].strftime("%Y-%m-%d")), []).append(e)
    for (acct, region, day), rows in cells.items():
        rows.sort(key=lambda r: (r["principal_arn"] or "", r["event_time"]))
        d = root / "events" / f"account={acct}" / f"region={region}" / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=models.EVENT_SCHEMA)
        pq.write_table(table, d / "part-0.parquet", row_group_size=64 * 1024)
    return root


def s3_get(principal: str = ORDERS, bucket: str = "orders-bucket", key: str = "invoices/1.json", **kw) -> dict:
    """An S3 GetObject data event with resources[] ARNs."""
    return event(principal, "GetObject", params={"bucketName": bucket, "key": key},
                 resources=[{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                            {"type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}], category="Data", **kw)


class FakeMapper(types.SimpleNamespace):
    """A deterministic stand-in for miner.mapping: ``prefix:eventName`` on every ARN of resources[] (or ``*``)."""

    def __init__(self):
        super().__init__(calls=0)

    def map_event(self, event_source, event_name, request_parameters=None, resources=None, account="", region="",
                  partition="aws", event_type=None):
        from miner.mapping import MappedAction, MappingResult

        self.calls += 1
        if event_name == "GetCallerIdentity":
            return MappingResult("no_permission", (), "needs no permission")
        if event_name == "Mystery":
            return MappingResult("unmapped", (), "no catalogue action")
        action = f"{event_source.split('.')[0]}:{event_name}"
        arns = [r["ARN"] for r in json.loads(resources or "[]") if "ARN" in r and r.get("type") != "AWS::S3::Bucket"]
        if not arns:
            return MappingResult("mapped", (MappedAction(action, "*", "star", "no ARN in the record"),))
        return MappingResult("mapped", tuple(MappedAction(action, a, "record_arn") for a in arns))


@pytest.fixture
def fake_mapper(monkeypatch):
    """Replace the mapping module seen by miner.usage with :class:`FakeMapper`."""
    fake = FakeMapper()
    monkeypatch.setattr(usage, "_mapper", lambda: fake)
    return fake


@pytest.fixture
def store(tmp_path):
    """A small store: orders-api (S3 reads, one denied put, a GetCallerIdentity, an unmapped call), alice, and
    a second role named orders-api in another account."""
    evs = [
        s3_get(key="invoices/1.json", when="2026-08-10T12:00:00Z"),
        s3_get(key="invoices/1.json", when="2026-08-11T12:00:00Z", region="eu-west-1", ip="10.0.0.2"),
        s3_get(key="invoices/2.json", when="2026-08-12T12:00:00Z"),
        s3_get(key="invoices/2.json", when="2026-08-12T13:00:00Z", error="NoSuchKey"),
        event(ORDERS, "PutObject", when="2026-08-12T14:00:00Z", error="AccessDenied",
              params={"bucketName": "orders-bucket", "key": "x"},
              resources=[{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::orders-bucket/x"}], category="Data"),
        event(ORDERS, "GetCallerIdentity", "sts.amazonaws.com", when="2026-08-13T00:00:00Z"),
        event(ORDERS, "Mystery", "odd.amazonaws.com", when="2026-08-13T00:00:01Z"),
        # before the window's first instant, on its first day: the event_time filter must drop it
        s3_get(key="invoices/early.json", when="2026-08-01T00:00:00Z"),
        s3_get(key="invoices/late.json", when="2026-08-31T23:59:00Z"),
        event(ALICE, "DescribeInstances", "ec2.amazonaws.com", when="2026-08-15T09:00:00Z"),
        event("arn:aws:iam::444455556666:role/orders-api", "ListQueues", "sqs.amazonaws.com", when="2026-08-15T09:00:00Z",
              account="444455556666"),
        event("arn:aws:iam::444455556666:role/old-role", "ListQueues", "sqs.amazonaws.com", when="2026-05-15T09:00:00Z",
              account="444455556666"),
    ]
    return write_store(tmp_path / "store", evs)


@pytest.fixture
def win():
    """2026-08-01 12:00 .. 2026-09-01."""
    return models.Window(datetime(2026, 8, 1, 12, tzinfo=UTC), NOW)


# ----------------------------------------------------------------------------- tests

def test_principals_lists_types_counts_and_services(store, win):
    df = usage.principals(connect(store), win)
    rows = {r.principal_arn: r for r in df.itertuples()}
    assert set(rows) == {ORDERS, ALICE, "arn:aws:iam::444455556666:role/orders-api"}
    o = rows[ORDERS]
    assert (o.principal_type, o.events, o.denied, o.authorised) == ("AssumedRole", 8, 1, 7)
    assert list(o.services) == ["odd", "s3", "sts"]
    assert o.first_seen == datetime(2026, 8, 10, 12, tzinfo=UTC)
    assert rows[ALICE].principal_type == "IAMUser"


def test_shapes_respect_the_window_and_principal(store, win):
    shapes = usage.call_shapes(connect(store), ORDERS, win)
    keys = {json.loads(p)["key"] for p in shapes["request_parameters"].dropna() if "key" in json.loads(p)}
    assert "invoices/early.json" not in keys  # same day as --since, but before its hour
    assert "invoices/late.json" in keys
    assert shapes["events"].sum() == 8


def test_queries_push_the_window_and_principal_into_the_scan(store, win):
    con = connect(store)
    plan = con.execute("EXPLAIN " + queries.load("usage_by_principal"),
                       {"since": win.since, "until": win.until, "principal_arn": ORDERS}).fetchall()
    text = "\n".join(r[1] for r in plan)
    assert "principal_arn=" in text.replace(" ", "") or "principal_arn =" in text
    assert "date" in text and "File Filters" in text


def test_collect_maps_once_per_shape_and_aggregates(store, win, fake_mapper):
    u = usage.collect(connect(store), usage.Principal(ORDERS), win)
    assert fake_mapper.calls == 7  # 4 GetObject (key x region) shapes, PutObject, GetCallerIdentity, Mystery
    auth = u.authorised.set_index("resource")
    one = auth.loc["arn:aws:s3:::orders-bucket/invoices/1.json"]
    assert one["calls"] == 2 and one["regions"] == "eu-west-1,us-east-1" and one["action"] == "s3:GetObject"
    two = auth.loc["arn:aws:s3:::orders-bucket/invoices/2.json"]
    assert two["calls"] == 2 and two["outcomes"] == "not_found:1,success:1"
    assert list(u.denied["action"]) == ["s3:PutObject"]
    assert u.events == 8 and u.denied_events == 1 and u.authorised_events == 7
    assert list(u.unmapped["event_name"]) == ["Mystery"]
    assert list(u.no_permission["event_name"]) == ["GetCallerIdentity"]
    assert bool(auth["data_event"].all())


def test_collect_all_gives_each_principal_what_collect_gives_and_maps_shared_shapes_once(tmp_path, win, fake_mapper):
    """The review's one pass: every principal's shapes from one query, a shape two principals made mapped once."""
    import pandas as pd

    other = f"arn:aws:iam::{ACCT}:role/reports"
    evs = [s3_get(key="k/1.json"), s3_get(other, key="k/1.json", when="2026-08-10T13:00:00Z"),
           s3_get(other, key="k/1.json", error="AccessDenied", when="2026-08-11T13:00:00Z"),
           event(other, "Mystery", "odd.amazonaws.com"), event(ALICE, "GetCallerIdentity", "sts.amazonaws.com")]
    con = connect(write_store(tmp_path / "s", evs))
    who = [usage.Principal(a) for a in (ORDERS, other, ALICE, f"arn:aws:iam::{ACCT}:role/idle")]
    together = usage.collect_all(con, who, win)
    assert fake_mapper.calls == 3  # GetObject (made by two principals), Mystery, GetCallerIdentity
    assert set(together) == {p.arn for p in who}
    for p in who:
        alone = usage.collect(con, p, win)
        got = together[p.arn]
        assert (got.events, got.authorised_events, got.denied_events) == \
            (alone.events, alone.authorised_events, alone.denied_events)
        for frame in ("actions", "authorised", "denied", "unmapped", "no_permission", "denied_calls"):
            a, b = getattr(got, frame), getattr(alone, frame)
            if len(a) or len(b):
                pd.testing.assert_frame_equal(a, b, check_dtype=False)
            else:
                assert list(a.columns) == list(b.columns)
    assert together[other].denied_calls[["action", "error_code", "calls"]].values.tolist() == \
        [["s3:GetObject", "AccessDenied", 1]]
    assert together[f"arn:aws:iam::{ACCT}:role/idle"].events == 0


def test_denied_calls_of_a_usage_match_the_denied_calls_query(store, win, fake_mapper):
    """The review takes denied attempts from the call shapes (Usage.denied_calls), not from denied_calls.sql."""
    con = connect(store)
    rows = usage.denied_calls(con, win)
    mine = usage.collect(con, usage.Principal(ORDERS), win).denied_calls
    assert len(rows) == 1
    assert rows.drop(columns=["principal_arn", "error_message"]).to_dict("records") == mine.to_dict("records")


def test_map_shapes_maps_each_distinct_shape_once(fake_mapper):
    import pandas as pd

    base = dict(event_source="s3.amazonaws.com", event_name="GetObject", request_parameters="{}",
                resources=json.dumps([{"ARN": "arn:aws:s3:::b/k"}]), account_id=ACCT, aws_region="us-east-1",
                partition="aws", event_type="AwsApiCall")
    rows = [dict(base, outcome="success", events=3), dict(base, outcome="denied", events=1),
            dict(base, aws_region="eu-west-1", outcome="success", events=1)]
    out = usage.map_shapes(pd.DataFrame(rows))
    assert fake_mapper.calls == 2 and len(out) == 3 and set(out["action"]) == {"s3:GetObject"}


def test_resolve_by_name_path_and_case(store, win):
    con = connect(store)
    p = usage.resolve_principal(con, win, role="orders-api", account=ACCT)
    assert p.arn == ORDERS and p.kind == "role" and p.short_name == "orders-api"
    assert usage.resolve_principal(con, win, user="ALICE").arn == ALICE
    assert usage.resolve_principal(con, win, role=ORDERS).arn == ORDERS
    assert usage.resolve_principal(con, win, principal=ALICE).arn == ALICE


def test_resolve_ambiguous_across_accounts_asks_for_account(store, win):
    with pytest.raises(usage.PrincipalError) as e:
        usage.resolve_principal(connect(store), win, role="orders-api")
    assert "--account" in str(e.value) and ORDERS in str(e.value) and "444455556666" in str(e.value)


def test_resolve_unknown_suggests_close_names(store, win):
    with pytest.raises(usage.PrincipalError) as e:
        usage.resolve_principal(connect(store), win, role="order-api")
    assert "did you mean" in str(e.value) and "orders-api" in str(e.value)


def test_resolve_outside_the_window_says_when_it_was_seen(store, win):
    with pytest.raises(usage.PrincipalError) as e:
        usage.resolve_principal(connect(store), win, role="old-role")
    assert "no events in the window" in str(e.value) and "2026-05-15" in str(e.value)


def test_resolve_needs_exactly_one_selector(store, win):
    with pytest.raises(usage.PrincipalError):
        usage.resolve_principal(connect(store), win)
    with pytest.raises(usage.PrincipalError):
        usage.resolve_principal(connect(store), win, role="a", user="b")


def test_denied_calls_are_mapped(store, win, fake_mapper):
    d = usage.denied_calls(connect(store), win)
    assert list(d["action"]) == ["s3:PutObject"] and d["error_code"][0] == "AccessDenied" and d["calls"][0] == 1
    assert usage.denied_calls(connect(store), win, ALICE).empty


def test_denied_calls_example_message_is_stable(tmp_path, win, fake_mapper):
    # Two shapes with the same action, resource, error code and count: the example is the first in a total order.
    evs = [event(ORDERS, "DeleteQueue", "sqs.amazonaws.com", params={"q": q}, error="AccessDenied",
                 error_message=f"denied {q}", when=f"2026-08-1{i}T00:00:00Z")
           for i, q in enumerate(["b", "a", "d", "c"])]
    con = connect(write_store(tmp_path / "s", evs))
    for _ in range(5):
        d = usage.denied_calls(con, win)
        assert list(d["calls"]) == [4] and d["error_message"][0] == "denied a"


def test_timeline_and_sources(store, win):
    con = connect(store)
    t = usage.timeline(con, win, ORDERS)
    assert t["events"].sum() == 8 and set(t["service"]) == {"s3", "sts", "odd"}
    assert str(t["day"].min())[:10] == "2026-08-10"
    src = usage.sources(con, ORDERS, win, limit=1)
    assert len(src) == 1 and src["source_ip"][0] == "10.0.0.1"


def test_data_event_sources(store, win):
    con = connect(store)
    assert usage.data_event_sources(con, win) == {"s3.amazonaws.com"}
    assert usage.data_event_sources(con, win, account="444455556666") == set()
    by_account = usage.data_event_sources_by_account(con, win)
    assert by_account == {a: usage.data_event_sources(con, win, account=a) for a in by_account}
    assert set().union(*by_account.values()) == usage.data_event_sources(con, win)
    assert "444455556666" not in by_account and by_account


def test_calls_on_oneself_get_the_callers_arn_or_are_invalid(tmp_path, win):
    """iam:CreateAccessKey without userName acts on the caller: granted on the user's own ARN, never on `*`."""
    pathed = f"arn:aws:iam::{ACCT}:user/ops/alice"
    root = write_store(tmp_path / "s", [
        event(pathed, "CreateAccessKey", "iam.amazonaws.com", params={}),
        event(pathed, "ListAccessKeys", "iam.amazonaws.com", params={}, error="AccessDenied"),
        event(ORDERS, "GetUser", "iam.amazonaws.com", params={}, error="ValidationError"),
        event(f"arn:aws:iam::{ACCT}:root", "CreateAccessKey", "iam.amazonaws.com", params={})])
    con = connect(root)
    u = usage.collect(con, usage.Principal(pathed), win)
    assert list(zip(u.actions["action"], u.actions["resource"], u.actions["outcome_class"])) == [
        ("iam:CreateAccessKey", pathed, "authorised"), ("iam:ListAccessKeys", pathed, "denied")]
    role = usage.collect(con, usage.Principal(ORDERS), win)
    assert role.actions.empty and list(role.unmapped["status"]) == ["invalid"]
    assert "is not an IAM user" in role.unmapped["note"][0]
    r = usage.collect(con, usage.Principal(f"arn:aws:iam::{ACCT}:root"), win)
    assert list(r.actions["resource"]) == [f"arn:aws:iam::{ACCT}:root"]
    denied = usage.denied_calls(con, win)
    assert list(zip(denied["principal_arn"], denied["resource"])) == [(pathed, pathed)]


class _NoReadAhead:
    """``miner.jobs._Prefetch`` that reads nothing: ``suggest`` runs every query itself."""

    lookup = shapes = arn = None

    def __init__(self, *a, **kw):
        pass

    def join(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("kw", [
    dict(role="orders-api", account=ACCT), dict(role=" orders-api ", account="444455556666"), dict(role=ORDERS),
    dict(principal=ORDERS), dict(user="alice"), dict(user=ALICE), dict(role="ORDERS-API", account=ACCT),
    dict(role="orders-api"), dict(role="alice"), dict(role="nobody"), dict(role="old-role"),
])
def test_suggest_reads_ahead_and_decides_as_without(store, win, kw, monkeypatch):
    """``suggest`` reads the principal lookup and the call shapes in a thread while it imports; what it then gets is
    what it gets running each query itself: the same policy and summary, or the same error (ambiguous names, the
    wrong kind, names in another case, unknown ones and ones without events in the window)."""
    from miner import jobs

    ran: list[str] = []
    run_arrow = queries.run_arrow
    monkeypatch.setattr(queries, "run_arrow", lambda con, name, **p: ran.append(name) or run_arrow(con, name, **p))

    def outcome():
        try:
            got = jobs.suggest(store, win, **kw)
        except jobs.JobError as e:
            return str(e)
        return got.suggestion.policies, got.summary, got.principal, got.usage.authorised.to_json(orient="records", date_format="iso")

    ahead = outcome()
    if kw in (dict(role="orders-api", account=ACCT), dict(user="alice"), dict(principal=ORDERS)):
        assert ran.count("usage_by_principal") == 1 and not isinstance(ahead, str)  # read once, in the thread
    monkeypatch.setattr(jobs, "_Prefetch", _NoReadAhead)
    assert outcome() == ahead


def test_suggest_stops_its_read_ahead_when_it_fails_first(store, win, monkeypatch):
    """A job that fails before it needs the read (a bad --max-resources is caught before; an unreadable snapshot
    after) interrupts it and leaves no thread behind."""
    import threading

    from miner import jobs

    with pytest.raises(jobs.JobError, match="snapshot"):
        jobs.suggest(store, win, role="orders-api", account=ACCT, grants=jobs.Grants(snapshot=store / "no-such-file"))
    assert not [t for t in threading.enumerate() if t.name == "miner-prefetch"]
