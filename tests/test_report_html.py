"""The report a clinician reads: walk date and length, reference ranges with sources and
flags, per-step table, outliers, one arch-loading name; and the page in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from walk_synth import RATE_HZ, make_steps, synth_trace  # noqa: E402

from host_tools.ble.steplog import SessionMeta, StepLogWriter, log_paths, write_meta  # noqa: E402
from host_tools.gait import engine  # noqa: E402
from host_tools.gait.report import (  # noqa: E402
    ARCH_LABEL,
    REFERENCES,
    build_report,
    format_steps,
    format_summary,
    report_json,
    write_html,
    write_plots,
)

T0 = 1_767_000_000.0  # 2025-12-29 09:20:00 UTC
STRIDES = [1100.0] * 14 + [2300.0] + [1100.0] * 14  # one long stride: an outlier


def _log(d: Path, side: str, stance: float) -> None:
    trace = synth_trace(make_steps(STRIDES, stance))
    steps = engine.step_summaries(engine.run_cpython(trace, RATE_HZ))
    csv_path, meta_path = log_paths(d, side)
    with StepLogWriter(csv_path, side) as w:
        for s in steps:
            w.write(s, T0 + s[1] / 1000.0)
    write_meta(meta_path, SessionMeta(side=side, firmware_version="0.1.0",
                                      sample_rate_hz=RATE_HZ,
                                      start_time="2025-12-29T09:20:00Z",
                                      end_time="2025-12-29T09:21:00Z"))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("walk")
    _log(d, "left", 0.62)
    _log(d, "right", 0.58)
    return d


def test_walk_date_duration_and_flags_in_the_text(report_dir, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    rep = build_report(report_dir)
    text = format_summary(rep)
    assert text.splitlines()[0].startswith("Walk of 2025-12-29 09:20:00 (UTC+00:00): ")
    assert f"{rep.walk_s:.1f} s of walking" in text
    # cadence of 1.1 s strides is 109 steps/min, inside 100-120; the long stride makes
    # the stride-time CV far above 3 %
    f = rep.feet["left"]
    assert 100 < f.cadence_mean < 120 and f.stride_cv > 3
    assert "Stride-time variability (CV): up to 3 %: left " in text
    assert f"left {f.stride_cv:.2f} OUTSIDE (higher)" in text
    assert f"left {f.cadence_mean:.1f}," in text  # no flag on cadence
    assert ARCH_LABEL in text and "% of peak" not in text


def test_outliers_are_found(report_dir):
    rep = build_report(report_dir)
    for side in ("left", "right"):
        f = rep.feet[side]
        long = [r.seq for r in rep.rows[side] if r.stride_ms > 2000]
        assert long and set(long) <= set(f.stride_outliers)
        assert len(f.stride_outliers) <= 2  # the steady strides are not outliers


def test_per_step_table_side_by_side(report_dir):
    rep = build_report(report_dir)
    text = format_steps(rep)
    head = text.splitlines()[0]
    assert head.index("left foot") < head.index("right foot")
    assert text.count("stride outlier") >= 2
    n = max(len(r) for r in rep.rows.values())
    assert len(text.splitlines()) == n + 3  # title, header, rule, one line per step


def test_report_json_lists_what_is_outside_with_sources(report_dir):
    rep = build_report(report_dir)
    data = json.loads(report_json(rep))
    assert data["walk"]["started"].startswith("2025-12-29T09:20:00")
    outside = {(o["figure"], o["side"]) for o in data["outside_reference"]}
    assert ("Stride-time variability (CV)", "left") in outside
    assert all(o["source"] for o in data["outside_reference"])


def test_html_page_has_everything_a_clinician_needs(report_dir, tmp_path):
    rep = build_report(report_dir)
    write_plots(rep, tmp_path)
    page = write_html(rep, tmp_path / "report.html").read_text()
    assert "<details><summary>Per-step table" in page
    assert page.count("<h3 class='left'>left foot</h3>") == 1
    assert "(!) above the range" in page
    for ref in REFERENCES:
        assert ref.source.split(".")[0] in page  # every range names its source
    assert "<dt>Cadence</dt>" in page and "120000" not in page  # words, not code
    assert page.count("data:image/png;base64,") == 5


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_the_page_renders_in_a_real_browser(report_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium) to render report.html")
    rep = build_report(report_dir)
    write_plots(rep, tmp_path)
    page = write_html(rep, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1100,3000",
                           f"--screenshot={shot}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[:, :, :3]
    assert img.shape[:2] == (3000, 1100)
    # the page drew text, tables and plots: many distinct colours, not a blank page
    rows_with_ink = int((img.min(axis=(1, 2)) < 0.5).sum())
    assert rows_with_ink > 1000
    colours = np.unique((img[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200
    # the left (blue) and right (orange) plot colours are both on screen
    blue = np.all(np.abs(img - np.array([0x1f, 0x5f, 0xa8]) / 255) < 0.06, axis=2).sum()
    orange = np.all(np.abs(img - np.array([0xe0, 0x82, 0x14]) / 255) < 0.06, axis=2).sum()
    assert blue > 500 and orange > 500
