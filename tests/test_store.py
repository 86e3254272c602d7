"""Tests for the store's write helpers: partition paths, atomic publish, manifest, lock, tmp cleanup."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner import models
from miner import store as st

NOW = datetime(2026, 9, 14, 12, 0, tzinfo=timezone.utc)


def _events(ids: list[str]) -> pa.Table:
    rows = [{f.name: None for f in models.EVENT_SCHEMA} | {"event_id": i, "event_time": NOW, "principal_arn": "p"}
            for i in ids]
    return pa.Table.from_pylist(rows, schema=models.EVENT_SCHEMA)


@pytest.mark.parametrize("raw, safe", [("111122223333", "111122223333"), ("012345678901", "012345678901"),
                                       (None, "unknown"), ("", "unknown"), ("us-east-1", "us-east-1"),
                                       ("a/b=c d", "a_b_c_d"), ("redacted", "redacted")])
def test_partition_values_are_path_safe(raw, safe):
    assert st.partition_value(raw) == safe


def test_partition_dir_layout(tmp_path):
    d = st.partition_dir(tmp_path, "012345678901", "eu-west-1", "2026-08-01")
    assert d == tmp_path / "events" / "account=012345678901" / "region=eu-west-1" / "date=2026-08-01"


def test_run_ids_sort_by_time_and_are_unique():
    a, b = st.new_run_id(NOW), st.new_run_id(NOW)
    assert a != b and a.startswith("20260914T120000Z-")


def test_published_files_are_read_with_the_hive_contract(tmp_path):
    tmp = st.tmp_dir(tmp_path) / "x.parquet"
    st.write_parquet(_events(["a", "b"]), tmp)
    st.publish(tmp, st.partition_dir(tmp_path, "012345678901", "us-east-1", "2026-09-14") / "part-1.parquet")
    con = st.connect(tmp_path)
    rows = con.execute("select account, region, date, event_id from events order by event_id").fetchall()
    assert [r[0] for r in rows] == ["012345678901"] * 2  # the leading zero survives: VARCHAR partition key
    assert str(rows[0][2]) == "2026-09-14"
    assert not tmp.exists()


def test_event_files_keep_the_schema_and_have_zone_maps(tmp_path):
    path = tmp_path / "e.parquet"
    st.write_parquet(_events(["a", "b"]), path)
    f = pq.ParquetFile(path)
    assert f.schema_arrow.equals(models.EVENT_SCHEMA)
    col = f.metadata.row_group(0).column(f.schema_arrow.get_field_index("principal_arn"))
    assert col.statistics is not None and col.statistics.has_min_max
    assert col.compression == "ZSTD"


def test_connect_ignores_tmp_and_clean_tmp_removes_leftovers(tmp_path):
    d = st.partition_dir(tmp_path, "1", "r", "2026-09-14")
    d.mkdir(parents=True)
    st.write_parquet(_events(["ok"]), d / "part-1.parquet")
    leftover = st.tmp_dir(tmp_path) / "half-written.parquet"
    leftover.write_bytes(b"PAR1 garbage")
    (st.tmp_dir(tmp_path) / "sub").mkdir()
    assert st.connect(tmp_path).execute("select count(*) from events").fetchall() == [(1,)]
    assert st.clean_tmp(tmp_path) == 2
    assert list(st.tmp_dir(tmp_path).iterdir()) == []


def test_rewrite_filtered_copies_the_kept_rows_and_removes_the_source(tmp_path):
    path = tmp_path / "p.parquet"
    st.write_parquet(_events(["a", "b", "c"]), path)
    kept = st.rewrite_filtered(path, pa.array([True, False, True]), tmp_path / "t.parquet")
    assert kept.to_pylist() == ["a", "c"]
    assert st.file_event_ids(tmp_path / "t.parquet").to_pylist() == ["a", "c"]
    assert not path.exists()


def test_manifest_append_read_index_and_compact(tmp_path):
    assert st.read_manifest(tmp_path).num_rows == 0
    for seq in range(3):
        st.append_manifest(tmp_path, [{"source": f"/logs/{seq}.json.gz", "size": 10 + seq, "version": "v",
                                       "records": 5, "status": "ok", "reason": None, "run_id": "r",
                                       "ingested_at": NOW}], "r", seq)
    assert st.append_manifest(tmp_path, [], "r", 9) is None
    assert st.manifest_index(tmp_path)["/logs/2.json.gz"] == (12, "v")
    assert not st.compact_manifest(tmp_path, "r2", min_files=4)
    assert st.compact_manifest(tmp_path, "r2", min_files=3)
    assert len(st.manifest_files(tmp_path)) == 1
    assert st.read_manifest(tmp_path).num_rows == 3


def test_write_lock_is_exclusive(tmp_path):
    with st.write_lock(tmp_path):
        with pytest.raises(st.StoreError, match="another `miner ingest`"):
            with st.write_lock(tmp_path):
                pass
    with st.write_lock(tmp_path):  # released
        pass


def test_write_lock_on_an_unusable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for store in (blocker, blocker / "below"):  # a file in the way: one clear line, no OSError traceback
        with pytest.raises(st.StoreError, match="cannot use .* as a store"):
            with st.write_lock(store):
                pass
