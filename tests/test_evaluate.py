"""The accuracy harness: matching, scoring and the PhysioNet conversions."""

from __future__ import annotations

import numpy as np

from host_tools.gait import evaluate, physionet


def test_match_is_one_to_one_closest_first():
    det = np.array([100.0, 130.0, 1000.0, 2050.0])
    ref = np.array([120.0, 1100.0, 2000.0])
    pairs = evaluate.match(det, ref, 60.0)
    # 130 is closer to 120 than 100 is; 1000 is 100 ms from 1100 (outside 60 ms)
    assert pairs == [(1, 0), (3, 2)]


def test_score_counts_misses_extras_and_errors():
    ref = np.arange(10) * 1000.0 + 500
    rec = physionet.Recording(
        "synthetic-left", "gaitndd", "control", "left", 100, np.zeros((1, 3)), ref,
        (float(ref[0]), float(ref[-1])),
    )
    det = list(ref[:8] + 5) + [4000.0 + 400, 9999999.0]  # two missed, one extra
    res = evaluate.score(rec, det, 60.0)
    assert (res.n_ref, res.n_det, res.matched) == (10, 9, 8)
    assert res.errors_ms == [5.0] * 8
    assert res.missed_ms == [8500.0, 9500.0]
    assert res.extra_ms == [4400.0]
    s = evaluate.summarise("x", [res])
    assert round(s.sensitivity, 1) == 80.0 and round(s.precision, 1) == round(800 / 9, 1)
    assert s.median_signed_ms == 5.0


def test_invalid_spans_leave_both_sides_out():
    ref = np.arange(10) * 1000.0
    rec = physionet.Recording(
        "dead-right", "gaitndd", "als", "right", 100, np.zeros((1, 3)), ref,
        (0.0, 9000.0), invalid_ms=[(4500.0, 9500.0)],
    )
    res = evaluate.score(rec, [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 7000.0], 60.0)
    assert (res.n_ref, res.n_det, res.matched) == (5, 5, 5)


def test_ndd_conversion_maps_invalid_to_zero():
    raw = np.array([-2048, 0, 0, 2047, 0, 0, -2047, 0, 0])
    assert physionet.ndd_to_counts(raw).tolist() == [0, 65520, 16]


def test_pdb_conversion_scale_and_clip():
    assert physionet.newtons_to_counts(np.array([0.0, 600.0, 1200.0, 5000.0, -3.0])).tolist() == [
        0, 32768, 65535, 65535, 0
    ]


def test_pdb_onsets_are_interpolated_after_a_quiet_spell():
    total = np.zeros(400)
    total[100:160] = 300.0  # a 0.6 s stance at 100 Hz
    total[99] = 10.0
    total[250:300] = 300.0
    onsets = physionet.pdb_onsets_ms(total, 100)
    # 20 N is crossed 10/290 of the way from sample 99 (10 N) to 100 (300 N), and
    # 20/300 of the way from sample 249 (0 N) to 250
    assert len(onsets) == 2
    assert abs(onsets[0] - (990 + 10 * 10 / 290)) < 1e-6
    assert abs(onsets[1] - (2490 + 10 * 20 / 300)) < 1e-6
