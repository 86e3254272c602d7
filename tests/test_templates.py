"""Tests for resource templates: which segments vary and how, constant segments kept, never crossing a group."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner import synthesize as syn
from miner.patterns import covers, literal
from miner.templates import ARN_SEPARATORS, S3_SEPARATORS, learn

R = random.Random(7)


def _hex(n: int) -> str:
    return "".join(R.choice("0123456789abcdef") for _ in range(n))


def _uuid() -> str:
    return f"{_hex(8)}-{_hex(4)}-{_hex(4)}-{_hex(4)}-{_hex(12)}"


UUID_RUN = "????????-????-????-????-????????????"  # a UUID keeps its hyphens


@pytest.mark.parametrize("names, separators, expected", [
    # dates over several segments: even a month that did not change in the window becomes ?? (time moves on)
    ([f"invoices/2026/08/ord-{R.randrange(10**9):09d}.pdf" for _ in range(5)], S3_SEPARATORS,
     ["invoices/????/??/ord-*.pdf"]),
    ([f"raw/year=2026/month=08/day={d:02d}/part-{_uuid()}.parquet" for d in range(1, 4)], S3_SEPARATORS,
     ["raw/year=????/month=??/day=??/part-" + UUID_RUN + ".parquet"]),
    ([f"events/dt=2026-08-{d:02d}/batch.json" for d in range(1, 4)], S3_SEPARATORS, ["events/dt=??????????/batch.json"]),
    ([f"snap/db-20260814T12{m:02d}Z.dump" for m in range(0, 50, 10)], S3_SEPARATORS, ["snap/db-??????????????.dump"]),
    ([f"uploads/{_uuid()}" for _ in range(3)], S3_SEPARATORS, ["uploads/" + UUID_RUN]),
    ([f"builds/{_hex(40)}/app.zip" for _ in range(3)], S3_SEPARATORS, ["builds/" + "?" * 40 + "/app.zip"]),
    ([f"/aws/lambda/f:log-stream:2026/08/{d:02d}/[$LATEST]{_hex(32)}" for d in (1, 2)], ARN_SEPARATORS,
     ["/aws/lambda/f:log-stream:????/??/??/[$LATEST]" + "?" * 32]),
    ([f"cluster/prod/{_hex(32)}" for _ in range(3)], ARN_SEPARATORS, ["cluster/prod/" + "?" * 32]),
    (["f:12", "f:13", "f:14"], ARN_SEPARATORS, ["f:*"]),                        # version suffixes
    (["orders-audit-2026-07", "orders-audit-2026-08"], ARN_SEPARATORS, ["orders-audit-???????"]),  # rotating names
    ([f"tenants/{t}/r/{_uuid()}.json" for t in ("acme", "globex") for _ in range(2)], S3_SEPARATORS,
     ["tenants/acme/r/" + UUID_RUN + ".json", "tenants/globex/r/" + UUID_RUN + ".json"]),  # a closed set stays listed
])
def test_each_variable_segment_kind(names, separators, expected):
    templates, exact = learn(names, separators, 10, own_name_first=separators == ARN_SEPARATORS)
    assert sorted(t.pattern for t in templates) == sorted(expected) and not exact
    for t in templates:
        assert all(covers(t.pattern, literal(n)) for n in t.members) and t.why


@pytest.mark.parametrize("names", [
    ["config/app.json"],                         # one name: nothing varies
    ["config/prod.json", "config/dev.json"],     # a few words: kept exact
    ["a/x", "a/y/z"],                            # different structures, one each
    ["\x00"], ["a\x00b"], ["\x01", "\x01\x01"],      # control characters are names, not mask marks (found by
    ["\ud800"],                                   # hypothesis: a key "\x00" became the template "?")
    ["", "0"], ["7", "9"], ["1/2", "3/4"],        # ids with nothing constant around them: not the whole bucket
])
def test_names_without_evidence_stay_exact(names):
    templates, exact = learn(names, S3_SEPARATORS, 10)
    assert not templates and exact == sorted(names)


def test_a_resource_of_its_own_name_varies_only_by_date_or_id():
    """Tables orders-a and orders-b are two tables: never `orders-*` (another table) from a template."""
    assert learn(["orders-a", "orders-b"], ARN_SEPARATORS, 10, own_name_first=True) == ([], ["orders-a", "orders-b"])


def test_max_resources_zero_learns_nothing():
    assert learn(["a/1", "a/2"], S3_SEPARATORS, 0) == ([], ["a/1", "a/2"])


def test_templates_in_a_policy_never_cross_a_bucket_or_account():
    rows = [("s3:GetObject", f"arn:aws:s3:::{b}/in/{_uuid()}.json") for b in ("b1", "b2") for _ in range(3)]
    rows += [("dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{a}:table/t-2026-0{m}") for a in ("111122223333",
                                                                                             "444455556666")
             for m in (7, 8)]
    s = syn.synthesize(pd.DataFrame(rows, columns=["action", "resource"]))
    got = sorted(r for st_ in s.statements for r in syn._as_list(st_["Resource"]))
    assert got == ["arn:aws:dynamodb:us-east-1:111122223333:table/t-???????",
                   "arn:aws:dynamodb:us-east-1:444455556666:table/t-???????",
                   "arn:aws:s3:::b1/in/" + UUID_RUN + ".json", "arn:aws:s3:::b2/in/" + UUID_RUN + ".json"]
    assert all("template from" in g.reason for g in s.generalisations)


_SEG = st.one_of(st.sampled_from(["invoices", "tenants", "acme", "globex", "2026", "08", "14", "dt=2026-08-14",
                                  "ord-000123.pdf", "x.json", "*", "${a}", "a?b"]),
                 st.text(alphabet="ab01-_.", min_size=1, max_size=6))
_NAME = st.lists(_SEG, min_size=1, max_size=5).map("/".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(_NAME, min_size=1, max_size=12, unique=True), st.integers(0, 12), st.randoms(use_true_random=False))
def test_property_templates_cover_their_names_keep_constants_and_ignore_order(names, max_resources, rnd):
    templates, exact = learn(names, S3_SEPARATORS, max_resources)
    covered = [m for t in templates for m in t.members]
    assert sorted(covered + exact) == sorted(names)  # every name once: in one template or exact
    for t in templates:
        assert all(covers(t.pattern, literal(m)) for m in t.members)
        parts = [m.split("/") for m in t.members]
        for i, seg in enumerate(parts[0]):  # a constant segment that is no date stays in the pattern
            if all(p[i] == seg for p in parts) and not seg.isdigit() and "dt=" not in seg:
                assert literal(seg) in t.pattern.split("/")[i], (t.pattern, seg)
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert learn(shuffled, S3_SEPARATORS, max_resources) == (templates, exact)
