"""The demo's HTML report: the dashboards' charts from local results, rendered by a real headless
Chromium, with a screenshot checked for drawn charts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bearwatch.dashboards import CHARTS, SEARCHES
from bearwatch.report import PALETTE, Frame, _time, compute

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = Path(os.environ.get("BEARWATCH_TEST_ARTIFACTS", "test-artifacts"))


def test_the_report_has_every_chart_of_the_overview_with_data(demo_run) -> None:
    page = demo_run.page.read_text(encoding="utf-8")
    drawn = set(re.findall(r'data-chart="([\w-]+)"', page))
    overview = {
        "bearwatch-volume-by-topic",
        "bearwatch-negative-share-by-topic",
        "bearwatch-negative-tickers",
        "bearwatch-alert-timeline",
        "bearwatch-model-version",
        "bearwatch-alert-keys",
        "bearwatch-negative-headlines",
    }
    assert overview <= drawn
    assert "<script" not in page.lower()  # a static page: nothing runs
    for svg in re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S):
        assert "<rect" in svg or "<polyline" in svg, svg[:120]


def test_chart_figures_agree_with_the_documents(demo_run) -> None:
    docs = demo_run.documents
    times = [_time(d["published_at"]) for d in docs]
    frame = Frame(docs, "published_at", min(times), max(times))
    volume = compute(next(c for c in CHARTS if c.id == "bearwatch-volume-by-topic"), frame)
    assert sum(v or 0 for s in volume["series"].values() for v in s) == len(docs)  # every item in one topic bar
    tickers = compute(next(c for c in CHARTS if c.id == "bearwatch-negative-tickers"), frame)
    hlcy = next(r for r in tickers["rows"] if r[0] == "HLCY")
    day = max(times).timestamp() - 86400
    expected = sum(
        1
        for d in docs
        if "HLCY" in (d.get("tickers") or []) and d["negative"] and _time(d["published_at"]).timestamp() >= day
    )
    assert hlcy[1] == expected > 0 and tickers["rows"][0][0] == "HLCY"  # the planted episode tops the table
    assert any(s.kql for s in SEARCHES)


def test_a_headline_with_markup_is_shown_as_text(tmp_path: Path) -> None:
    from bearwatch.report import render

    doc = {
        "id": "x",
        "published_at": "2026-11-03T09:00:00Z",
        "scored_at": "2026-11-03T09:00:01Z",
        "headline": "<script>alert(1)</script> Acme <b>plunges</b>",
        "tickers": ["ACME"],
        "topic": "Earnings",
        "sentiment": "bearish",
        "negative": True,
        "is_negative": 1,
        "p_bearish": 0.9,
        "source": "wire",
        "url": 'javascript:alert(1)" onmouseover="x',
        "model_version": "v1",
    }
    page = render([doc], [])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onmouseover="x' not in page


def _chart_pixels(png: Path) -> dict[str, int]:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    counts = dict.fromkeys(PALETTE[:3], 0)
    wanted = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)): c for c in counts}
    for n, colour in image.getcolors(maxcolors=1 << 24):
        if n and (c := wanted.get(colour)):
            counts[c] += n
    return counts


def test_headless_chromium_renders_the_report_with_non_empty_charts(demo_run) -> None:
    if CHROMIUM is None:
        if os.environ.get("BEARWATCH_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (BEARWATCH_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("no Chromium on this machine (tests/run.sh installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,2200",
            f"--screenshot={shot.resolve()}",
            demo_run.page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = _chart_pixels(shot)
    # the first three series colours are drawn over thousands of pixels: bars, lines and legend keys
    assert all(n > 500 for n in pixels.values()), pixels
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", demo_run.page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("data-chart=") >= 7 and "HLCY" in dom
