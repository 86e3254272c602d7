"""Tests for scripts/bench_ingest.py's native-reader probe: the schema it hands the readers matches miner's decoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa

from miner import ingest as ig

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ingest.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ingest", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reader_fields_are_the_fields_miner_decodes():
    bench = _bench()
    names = [n for n, _ in bench._READER_FIELDS]
    assert len(names) == len(set(names))
    # every top-level field miner's msgspec decoder keeps (``@timestamp``, a rare fallback, aside)
    assert set(names) == set(ig._FIELDS) - {"@timestamp"}
    raw = {n for n, t in bench._READER_FIELDS if t == "JSON"}
    assert raw == {"requestParameters", "resources"}


def test_arrow_type_of_nested_struct():
    bench = _bench()
    ui = dict(bench._READER_FIELDS)["userIdentity"]
    typ = bench._arrow_type(ui)
    assert typ.get_field_index("accessKeyId") >= 0
    names = {typ.field(i).name for i in range(typ.num_fields)}
    assert names <= set(ig._UI_FIELDS)
    issuer = typ.field("sessionContext").type.field("sessionIssuer").type
    assert issuer == pa.struct([("arn", pa.string()), ("userName", pa.string())])
    assert bench._arrow_type("BOOLEAN") == pa.bool_()
    assert bench._arrow_type("STRUCT(a VARCHAR, b STRUCT(c BOOLEAN))") == pa.struct(
        [("a", pa.string()), ("b", pa.struct([("c", pa.bool_())]))])
