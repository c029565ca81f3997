"""Report numbers against a walk with known steps, and damaged logs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from walk_synth import BASE, RATE_HZ, make_steps, synth_trace  # noqa: E402

from host_tools import cli  # noqa: E402
from host_tools.ble.steplog import (  # noqa: E402
    LOG_COLUMNS,
    SessionMeta,
    StepLogWriter,
    log_paths,
    read_steplog,
    write_meta,
)
from host_tools.gait import engine  # noqa: E402
from host_tools.gait.report import build_report, format_summary, write_html, write_plots  # noqa: E402

STRIDES = [1050.0, 1150.0] * 20  # known: alternating stride times


def detect(strides, stance_frac=0.62):
    trace = synth_trace(make_steps(strides, stance_frac))
    return engine.step_summaries(engine.run_cpython(trace, RATE_HZ))


def write_log(directory: Path, side: str, summaries, t0=1.7e9) -> Path:
    csv_path, meta_path = log_paths(directory, side)
    with StepLogWriter(csv_path, side) as w:
        for s in summaries:
            w.write(s, t0 + s[1] / 1000.0)
    write_meta(meta_path, SessionMeta(side=side, firmware_version="test", sample_rate_hz=RATE_HZ))
    return csv_path


@pytest.fixture(scope="module")
def left_steps():
    return detect(STRIDES, 0.62)


@pytest.fixture(scope="module")
def right_steps():
    return detect([s * 1.0 for s in STRIDES], 0.58)


def test_detector_finds_every_known_step(left_steps):
    assert len(left_steps) == len(STRIDES)


def test_report_numbers_match_known_walk(tmp_path, left_steps):
    write_log(tmp_path, "left", left_steps)
    rep = build_report(tmp_path)
    f = rep.feet["left"]
    assert rep.problems == [] and not rep.symmetry
    assert f.steps == 40 and f.timed_strides == 39 and f.missing_seqs == 0
    true_strides = np.array(STRIDES[:-1])  # stride k ends at strike k+1
    true_cadence = 120000.0 / true_strides
    assert f.cadence_mean == pytest.approx(true_cadence.mean(), rel=2e-3)
    cad_cv = true_cadence.std(ddof=1) / true_cadence.mean() * 100
    assert f.cadence_cv == pytest.approx(cad_cv, abs=0.15)
    assert f.stride_ms_mean == pytest.approx(true_strides.mean(), abs=2)
    assert f.stride_ms_sd == pytest.approx(true_strides.std(ddof=1), abs=2)
    assert f.stride_cv == pytest.approx(true_strides.std(ddof=1) / true_strides.mean() * 100,
                                        abs=0.2)
    # the walk's stance is 62 % of each stride; the detector dates contact a few ms after
    # the heel starts to load and toe-off a few ms before the forefoot is clear
    assert f.stance_pct == pytest.approx(62.0, abs=2.5)
    assert f.stance_pct + f.swing_pct == pytest.approx(100.0)
    assert f.stance_ms_mean == pytest.approx(0.62 * np.mean(STRIDES), abs=30)
    assert f.pattern_pct["rear"] == 100.0
    # each per-mille share is rounded down on the insole: the three add up to 99.7..100 %
    assert 99.7 <= f.share_heel + f.share_arch + f.share_forefoot <= 100.0
    # shares of the load integrated over the whole walk, straight from the trace; the
    # insole sums only between confirmed contact and toe-off, missing a little heel load
    load = synth_trace(make_steps(STRIDES, 0.62)) - BASE
    truth = load.sum(axis=0) / load.sum() * 100
    assert [f.share_heel, f.share_arch, f.share_forefoot] == pytest.approx(truth, abs=1.0)
    # the arch peak is 9000 of 30000 + 9000 + 24000 counts above the 3000 baseline
    assert f.arch_loading == pytest.approx(100 * 9000 / 63000, abs=0.5)
    assert f.duration_s == pytest.approx(sum(STRIDES[:-1]) / 1000, abs=0.05)


def test_report_is_the_arithmetic_of_the_rows(tmp_path, left_steps):
    write_log(tmp_path, "left", left_steps)
    f = build_report(tmp_path).feet["left"]
    a = np.array(left_steps, dtype=float)
    timed = a[a[:, 6] > 0]
    assert f.cadence_mean == pytest.approx(np.mean(120000 / timed[:, 6]))
    assert f.swing_pct == pytest.approx(np.mean(timed[:, 5] / timed[:, 6]) * 100)
    assert f.share_arch == pytest.approx(a[:, 12].mean() / 10)
    assert f.stance_ms_mean == pytest.approx(a[:, 4].mean())


def test_symmetry_indices(tmp_path, left_steps, right_steps):
    write_log(tmp_path, "left", left_steps)
    write_log(tmp_path, "right", right_steps)
    rep = build_report(tmp_path)
    left, right = rep.feet["left"], rep.feet["right"]
    si = rep.symmetry
    expect = 100 * (left.stance_ms_mean - right.stance_ms_mean) / (
        (left.stance_ms_mean + right.stance_ms_mean) / 2)
    assert si["stance_ms_mean"] == pytest.approx(expect)
    # known walk: left stance 62 %, right 58 % of the same strides
    assert si["stance_ms_mean"] == pytest.approx(100 * 0.04 / 0.60, abs=1.0)
    assert abs(si["cadence_mean"]) < 0.5 and si["steps"] == 0
    text = format_summary(rep)
    assert "SI %" in text and "Arch loading (% of stance load)" in text
    # left 62 % and right 58 % stance of equal strides: a stance-time SI over the 4.9 %
    # healthy-control limit, and the report says so
    assert si["stance_ms_mean"] > 4.9
    assert (f"Stance time symmetry |SI|: up to 4.9 %: {si['stance_ms_mean']:.1f} % "
            "OUTSIDE (higher)") in text


def test_plots_and_html(tmp_path, left_steps, right_steps):
    write_log(tmp_path, "left", left_steps)
    write_log(tmp_path, "right", right_steps)
    rep = build_report(tmp_path)
    paths = write_plots(rep)
    names = sorted(p.name for p in paths)
    assert names == ["cadence.png", "left_right.png", "load_share.png", "stance_swing.png",
                     "strike_pattern.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    page = write_html(rep, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "src='http" not in page and "<link" not in page


def test_cli_report(tmp_path, left_steps, capsys):
    write_log(tmp_path, "left", left_steps)
    assert cli.main(["report", str(tmp_path), "--html"]) == 0
    out = capsys.readouterr().out
    assert "Cadence (steps/min)" in out and (tmp_path / "report.html").exists()
    assert (tmp_path / "report.json").exists()
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 2
    assert "no usable capture log" in capsys.readouterr().err


# ------------------------------------------------------------------ damaged logs


def _damage(path: Path, lineno: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[lineno - 1] = new
    path.write_bytes(b"\n".join(lines))


def test_truncated_last_line(tmp_path, left_steps):
    p = write_log(tmp_path, "left", left_steps)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 20])  # crash in the middle of writing step 40
    rows, problems = read_steplog(p)
    assert [r.seq for r in rows] == list(range(1, 40))
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{p}:41: truncated last line")


def test_wrong_columns_and_garbage(tmp_path, left_steps):
    p = write_log(tmp_path, "left", left_steps)
    _damage(p, 5, b"4,1,2,3")  # step 4: too few columns
    _damage(p, 9, b"\x00\x00\xff\xfe\x13garbage\x00")  # step 8: binary garbage
    _damage(p, 12, b"\xff\xfe\xfa,1,2")  # step 11: not UTF-8
    _damage(p, 15, b"14,x,2,3,4,5,6,rear,1,2,3,4,5,6,1700000000.0,left,0")  # step 14: bad value
    rows, problems = read_steplog(p)
    lost = {4, 8, 11, 14}
    assert [r.seq for r in rows] == [s for s in range(1, 41) if s not in lost]
    msgs = [str(x) for x in problems]
    assert msgs[0] == f"{p}:5: expected {len(LOG_COLUMNS)} columns, found 4, line skipped"
    assert msgs[1] == f"{p}:9: binary garbage (NUL bytes), line skipped"
    assert msgs[2] == f"{p}:12: binary garbage (not UTF-8), line skipped"
    assert msgs[3] == f"{p}:15: strike_ms 'x' is not an integer, line skipped"
    # the report still runs on the intact rows and names the damage
    rep = build_report(tmp_path)
    assert rep.feet["left"].steps == 36 and rep.feet["left"].missing_seqs == 4
    assert len(rep.problems) == 4


def test_damaged_header_keeps_rows(tmp_path, left_steps):
    p = write_log(tmp_path, "left", left_steps)
    _damage(p, 1, b"\x00\x00\x00")
    rows, problems = read_steplog(p)
    assert len(rows) == 40
    assert "header missing or damaged" in str(problems[-1]) or "garbage" in str(problems[0])


def test_unreadable_meta_is_a_problem_not_a_failure(tmp_path, left_steps):
    write_log(tmp_path, "left", left_steps)
    log_paths(tmp_path, "left")[1].write_bytes(b"{\"side\": \"left\", \x00")
    rep = build_report(tmp_path)
    assert rep.feet["left"].steps == 40
    assert any("left.json" in p and "unreadable" in p for p in rep.problems)


def test_backfilled_rows_out_of_order_and_duplicates(tmp_path, left_steps):
    p = log_paths(tmp_path, "left")[0]
    order = left_steps[:10] + left_steps[15:] + left_steps[10:15] + left_steps[3:4]
    with StepLogWriter(p, "left") as w:
        for s in order:
            w.write(s, 1.7e9)
    rows, problems = read_steplog(p)
    assert [r.event_values() for r in rows] == [
        tuple(s[:7]) + (("unknown", "rear", "mid", "fore")[s[7]],) + tuple(s[8:])
        for s in left_steps
    ]
    assert [str(x) for x in problems] == [f"{p}:42: duplicate seq 4, kept the first"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged=st.dictionaries(st.integers(2, 41), st.binary(max_size=40), max_size=6))
def test_any_damage_keeps_every_intact_row(tmp_path_factory, left_steps, damaged):
    d = tmp_path_factory.mktemp("fuzz")
    p = write_log(d, "left", left_steps)
    original = p.read_bytes().split(b"\n")
    for lineno, junk in damaged.items():
        _damage(p, lineno, junk.replace(b"\n", b" "))
    rows, problems = read_steplog(p)
    intact = {lineno - 1 for lineno in range(2, 42)
              if lineno not in damaged or damaged[lineno].replace(b"\n", b" ") ==
              original[lineno - 1]}
    got = {r.seq for r in rows}
    assert intact <= got  # no intact row is lost
    assert all(not math.isnan(r.host_time) for r in rows)
    for x in problems:
        assert str(x).startswith(f"{p}:")


def test_strike_times_unwrap_the_clock_and_bridge_a_restart():
    from host_tools.ble.steplog import StepRow
    from host_tools.gait.report import strike_seconds

    def row(seq, ms, host):
        return StepRow(seq, ms, 0, 0, 0, 0, 0, "rear", 0, 0, 0, 0, 0, 0, host, "left")

    wrap = 1 << 29
    rows = [row(1, wrap - 1500, 100.0), row(2, wrap - 400, 101.1), row(3, 700, 102.2),
            row(4, 250, 109.0), row(5, 1350, 110.1)]  # wrap at 2**29 ms, then a reboot
    assert strike_seconds(rows).tolist() == pytest.approx([0, 1.1, 2.2, 9.0, 10.1])


def test_sensor_faults_from_the_session_file_are_shown_in_text_and_html(
        tmp_path, left_steps, right_steps):
    write_log(tmp_path, "left", left_steps)
    write_log(tmp_path, "right", right_steps)
    _, meta_path = log_paths(tmp_path, "left")
    write_meta(meta_path, SessionMeta(side="left", firmware_version="test",
                                      sample_rate_hz=RATE_HZ, sensor_faults=["heel dead"]))
    rep = build_report(tmp_path)
    text = format_summary(rep)
    assert "Sensor faults on the left insole during the walk: heel dead" in text
    assert "right insole" not in text
    page = write_html(rep, tmp_path / "report.html").read_text()
    assert "class='warn'>Sensor faults on the left insole during the walk: heel dead" in page
    assert "mains" not in text  # a dead heel is no interference
    # a noisy channel: what it may mean, and the setting where mains is 60 Hz
    write_meta(meta_path, SessionMeta(side="left", firmware_version="test",
                                      sample_rate_hz=RATE_HZ, sensor_faults=["arch noisy"]))
    rep = build_report(tmp_path)
    text = format_summary(rep)
    assert "left insole during the walk: arch noisy" in text
    assert "insole config --mains 60" in text
    assert "insole config --mains 60" in write_html(rep, tmp_path / "report.html").read_text()
    # a clean walk says nothing about sensors
    write_meta(meta_path, SessionMeta(side="left", firmware_version="test", sample_rate_hz=RATE_HZ))
    assert "Sensor faults" not in format_summary(build_report(tmp_path))
