"""Shared fixtures: a moto server on 127.0.0.1, the bundled sample logs, and ../shared data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_LOGS = REPO / "sample_logs"
SHARED_REAL = REPO.parent / "shared" / "cloudtrail-real"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A real moto HTTP server on 127.0.0.1; yields its endpoint URL. boto3 talks to it as to AWS."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("moto server exited at start")
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start in 30 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def aws_env(monkeypatch, moto_server):
    """Fake credentials and region so boto3's standard chain works against the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import requests

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)  # each test starts from an empty account
    return moto_server


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """No credentials anywhere in boto3's standard chain (environment, files, instance metadata). List it after the
    fixtures that set fake ones (``aws_env`` and those built on it): it removes theirs."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def sample_logs() -> Path:
    """The bundled sample logs."""
    assert SAMPLE_LOGS.is_dir(), "sample_logs/ is missing: run python scripts/gen_sample_logs.py --out sample_logs"
    return SAMPLE_LOGS


@pytest.fixture(scope="session")
def shared_real() -> Path:
    """../shared/cloudtrail-real, or skip when this checkout has no ../shared."""
    if not SHARED_REAL.is_dir():
        pytest.skip("../shared/cloudtrail-real is absent")
    return SHARED_REAL


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, sample_logs) -> Path:
    """The sample logs ingested once per test session (for the test modules that need a store)."""
    from miner import ingest

    target = tmp_path_factory.getbasetemp() / "sample-store"
    if not (target / "events").is_dir():
        ingest.ingest([str(sample_logs)], target)
    return target


@pytest.fixture(scope="session")
def sample_review_json(tmp_path_factory, sample_store, sample_logs) -> Path:
    """The review of the whole sample store with the sample IAM snapshots, built once per session, as a JSON file."""
    from miner import report, review, store

    cached = tmp_path_factory.getbasetemp() / "sample-review.json"
    if not cached.exists():
        con = store.connect(sample_store)
        rv = review.build_review(con, review.store_window(con), iam_source=review.snapshot_source(sample_logs / "iam"),
                                 store=sample_store)
        cached.write_text(report.render_json(rv))
    return cached


@pytest.fixture(scope="module")
def sample_review(sample_review_json) -> dict:
    """The sample review as a dict read from JSON (a fresh copy per test module)."""
    import json

    return json.loads(sample_review_json.read_text())


@pytest.fixture(scope="session")
def spark():
    """One SparkSession (local[2]) for the whole test session, or skip when the spark extra is not installed."""
    pytest.importorskip("pyspark", reason="the spark extra is not installed (pip install -e '.[spark]')")
    from miner import engine

    session = engine.spark_session("local[2]")
    yield session
    session.stop()
