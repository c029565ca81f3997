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


def _right_foot(strikes_ms, rate_hz=100, stance_ms=600, skip=()):
    """A right-foot force trace: 3000 counts in the air, 30000 in stance from each strike."""
    n = int((strikes_ms[-1] + 2000) * rate_hz / 1000)
    counts = np.full(n, 3000, dtype=np.int64)
    for k, t in enumerate(strikes_ms):
        if k in skip:
            continue
        a = int(t * rate_hz / 1000)
        counts[a : a + stance_ms * rate_hz // 1000] = 30000
    return counts


def _ts(strides_ms, start_s):
    ts = np.zeros((len(strides_ms), 4))
    ts[0, 0] = start_s
    ts[:, 2] = np.asarray(strides_ms) / 1000.0
    return ts


STRIKES = [1000.0]
for _gap in (1100, 1050, 1150, 1000, 1120, 1080, 1130, 1060, 1110, 1090, 1040):
    STRIKES.append(STRIKES[-1] + _gap)


def test_ndd_right_reference_snaps_a_misreported_stride_to_the_rise():
    # the authors' stride into strike 4 is 250 ms long and the next one 250 ms short:
    # strike 4 is predicted on a loaded foot, and the rise a quarter stride before it
    # is the strike
    strides = [1100.0] + list(np.diff(STRIKES))
    strides[4] += 250.0
    strides[5] -= 250.0
    ref = physionet.ndd_reference(_ts(strides, 0.95), "right", _right_foot(STRIKES), 100)
    assert len(ref) == len(STRIKES)
    np.testing.assert_allclose(ref, np.asarray(STRIKES) - 10.0, atol=10.0)


def test_ndd_right_reference_keeps_the_prediction_where_no_rise_is_near():
    strides = [1100.0] + list(np.diff(STRIKES))
    counts = _right_foot(STRIKES, skip=(6,))
    ref = physionet.ndd_reference(_ts(strides, 0.95), "right", counts, 100)
    # no rise within a third of a stride of strike 6: the authors' stride places it
    assert abs(ref[6] - (ref[5] + strides[6])) < 1e-6
    others = np.delete(np.asarray(STRIKES), 6) - 10.0
    np.testing.assert_allclose(np.delete(ref, 6), others, atol=10.0)


def test_pdb_onsets_skip_a_one_sample_spike_in_the_air():
    # swing at 0 N, a 28 N one-sample spike 300 ms before each stance of 600 N
    x = np.zeros(600)
    for start in (100, 250, 400):
        x[start - 30] = 28.0
        x[start : start + 60] = 600.0
    onsets = physionet.pdb_onsets_ms(x, 100)
    np.testing.assert_allclose(onsets, [(s - 1 + 20 / 600) * 10.0 for s in (100, 250, 400)])
    # without the hold, each spike would be a contact of its own
    assert len(physionet.pdb_onsets_ms(x, 100, hold_s=0.0)) == 6
