"""The review HTML as a person sees it: rendered by headless Chromium, offline, with a screenshot."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = REPO / "scripts" / "check_review_in_browser.py"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def review_html(tmp_path_factory, sample_review) -> Path:
    from miner import report

    out = tmp_path_factory.mktemp("browser") / "review.html"
    out.write_text(report.render_html(sample_review), encoding="utf-8")
    return out


def test_chromium_shows_the_ranked_review_offline(review_html, tmp_path):
    checker = runpy.run_path(str(SCRIPT))
    shot = tmp_path / "review.png"
    result = checker["check"](review_html, screenshot=shot, chromium=str(CHROMIUM))
    assert checker["verdict"](result, min_rows=8, min_charts=3, expect=["orders-api-task", "unused-etl", "alice"]) == []
    assert result["title"].startswith("miner review")
    assert result["external_requests"] == [] and result["static_problems"] == []
    assert {"chart-activity", "chart-heatmap", "chart-grants"} <= set(result["figures"])
    assert result["details"] == result["ranked_rows"]  # one collapsible suggested policy per principal
    assert any("Removal candidates" in h for h in result["headings"])
    assert shot.stat().st_size > 20_000 and result["screenshot_ink"] > 0.02


def test_the_checker_catches_external_requests(tmp_path):
    """A page that loads a remote image fails, both statically and by what Chromium tried to fetch."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>miner review x</title></head><body>'
                   '<img src="https://example.invalid/x.png"><table id="ranked"><tbody><tr><td>a</td></tr></tbody></table>'
                   "</body></html>")
    res = subprocess.run([sys.executable, str(SCRIPT), str(bad), "--chromium", str(CHROMIUM), "--min-charts", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert any("example.invalid" in u for u in out["external_requests"])
    assert any("example.invalid" in f for f in out["failures"])
