"""The accuracy harness: matching, scoring and the PhysioNet conversions."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
        "synthetic-left", "gaitndd", "control", "left", 100, np.zeros((1200, 3)), ref,
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
        "dead-right", "gaitndd", "als", "right", 100, np.zeros((1200, 3)), ref,
        (0.0, 9000.0), invalid_ms=[(4500.0, 9500.0)],
    )
    res = evaluate.score(rec, [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 7000.0], 60.0)
    assert (res.n_ref, res.n_det, res.matched) == (5, 5, 5)


def test_contacts_no_detector_could_report_before_the_end_are_not_scored():
    # 10 s at 100 Hz: a strike 50 ms before the end and one after it (a rebuilt
    # right-foot strike can land there) are outside the comparison; one 150 ms before
    # the end counts, and so does a detection of it in the last 100 ms
    ref = np.array([1000.0, 9850.0, 9950.0, 10400.0])
    rec = physionet.Recording(
        "end-left", "gaitndd", "control", "left", 100, np.zeros((1000, 3)), ref,
        (1000.0, 10400.0),
    )
    res = evaluate.score(rec, [1003.0, 9905.0], 60.0)
    assert (res.n_ref, res.n_det, res.matched) == (2, 2, 2)
    assert res.missed_ms == [] and res.extra_ms == []
    assert evaluate.score(rec, [1003.0], 60.0).missed_ms == [9850.0]


def test_resampling_keeps_the_reference_and_interpolates_the_trace():
    trace = np.array([[0, 10, 20], [300, 310, 320], [600, 610, 620], [900, 910, 920]])
    rec = physionet.Recording(
        "r-left", "gaitpdb", "Ga", "left", 100, trace, np.array([15.0]), (15.0, 15.0),
        invalid_ms=[(0.0, 5.0)],
    )
    # 50 Hz: each sample the mean of four reads 5 ms apart from its tick (a ramp of 30
    # counts per ms: 0, 150, 300, 450; then 600, 750, 900 and 900 past the end),
    # rounded down as the insole shifts the sum
    half = physionet.resample(rec, 50)
    assert half.rate_hz == 50 and half.trace.tolist() == [[225, 235, 245], [787, 797, 807]]
    # with 60 Hz mains the reads are 4166 us apart: 0, 125, 250 and 375 counts (0,
    # 4.166, 8.332 and 12.498 ms, each rounded to a whole count) and 600, 725, 850, 900
    half60 = physionet.resample(rec, 50, mains_hz=60)
    assert half60.trace[:, 0].tolist() == [187, 768]
    # the mean stands for 3/8 of a mains period after the tick: on a ramp it reads
    # what a point read 7.5 ms (6.25 ms) later reads, to the rounding
    assert abs(half.trace[0, 0] - 7.5 * 30) <= 1 and abs(half60.trace[0, 0] - 6.25 * 30) <= 1
    triple = physionet.resample(rec, 300)
    assert triple.rate_hz == 300 and len(triple.trace) == 10
    assert triple.trace[:, 0].tolist() == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert triple.trace[:, 2].tolist() == [20, 120, 220, 320, 420, 520, 620, 720, 820, 920]
    for r in (half, half60, triple):
        assert r.reference_ms.tolist() == [15.0] and r.invalid_ms == [(0.0, 5.0)]
        assert r.window_ms == (15.0, 15.0) and r.trace.dtype == trace.dtype
    assert physionet.resample(rec, 100) is rec


def test_rate_sweep_table_states_the_spread_between_rates():
    from host_tools.gait import ratesweep

    def row(rate, db, group, sens, prec):
        return {"rate_hz": rate, "database": db, "group": group, "feet": 2, "n_ref": 100,
                "n_det": 100, "sensitivity": sens, "precision": prec,
                "median_abs_ms": 3.0, "p95_abs_ms": 11.0}

    rows = [row(50, "gaitndd", "all", 99.4, 99.5), row(100, "gaitndd", "all", 99.47, 99.52),
            row(50, "gaitpdb", "all", 99.6, 99.0), row(100, "gaitpdb", "all", 99.65, 98.9)]
    assert ratesweep.spread(rows) == {("gaitndd", "all"): (0.07, 0.02),
                                      ("gaitpdb", "all"): (0.05, 0.1)}
    text = ratesweep.markdown(rows)
    body = [line for line in text.splitlines() if line.startswith(("| 50", "| 100"))]
    assert body[0].startswith("| 50 | gaitndd | all |") and "99.40 | 99.50" in body[0]
    assert body[1].startswith("| 100 | gaitndd | all |")
    assert "(50, 100 Hz)" in text and "gaitndd all 0.07 / 0.02; gaitpdb all 0.05 / 0.10" in text


def test_rate_sweep_refuses_a_bad_rate_list_in_one_line(capsys):
    from host_tools.gait import ratesweep

    for bad in ("fast", "100,2000", "100,"):
        with pytest.raises(SystemExit) as exc:
            ratesweep.main(["--rates", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "error: --rates" in err[-1] and bad in err[-1]


def test_ndd_conversion_maps_invalid_to_zero():
    raw = np.array([-2048, 0, 0, 2047, 0, 0, -2047, 0, 0])
    assert physionet.ndd_to_counts(raw).tolist() == [0, 65520, 16]


def test_pdb_conversion_scale_and_clip():
    assert physionet.newtons_to_counts(np.array([0.0, 600.0, 1200.0, 5000.0, -3.0])).tolist() == [
        0, 32768, 65535, 65535, 0
    ]


def test_pdb_onsets_are_interpolated_on_the_rise_out_of_each_swing():
    total = np.zeros(400)
    total[:40] = 300.0  # the recording starts in a stance
    total[100:160] = 300.0  # a 0.6 s stance at 100 Hz
    total[99] = 10.0
    total[250:300] = 300.0
    onsets = physionet.pdb_onsets_ms(total, 100)
    # 20 N is crossed 10/290 of the way from sample 99 (10 N) to 100 (300 N), and
    # 20/300 of the way from sample 249 (0 N) to 250
    assert len(onsets) == 2
    assert abs(onsets[0] - (990 + 10 * 10 / 290)) < 1e-6
    assert abs(onsets[1] - (2490 + 10 * 20 / 300)) < 1e-6


def test_pdb_a_shallow_swing_beside_a_deep_one_is_a_swing_and_a_dip_in_stance_is_not():
    # stances of 800 N; the swings alternate between 0 N and 50 N (the foot drags a
    # sensor); one stance dips to 300 N half-way through
    x = np.zeros(1200)
    starts = list(range(100, 1100, 100))
    for k, start in enumerate(starts):
        x[start : start + 60] = 800.0
        if k % 2:
            x[start - 40 : start] = 50.0
    x[530:535] = 300.0
    onsets = physionet.pdb_onsets_ms(x, 100)
    # each rise crosses its own swing's lowest value + 20 N: 20/800 of the way up from
    # 0 N, 20/750 from 50 N; the first stance has no stance before it
    want = [(s - 1 + (20 / 800 if k % 2 == 0 else 20 / 750)) * 10.0
            for k, s in enumerate(starts)][1:]
    np.testing.assert_allclose(onsets, want)


def test_pdb_quiet_standing_before_the_walk_holds_no_contact():
    # standing on both feet (350 N, sway of 15 N) for 3 s, then steps of 700 N
    t = np.arange(700)
    x = np.where(t < 300, 350.0 + 15.0 * np.sin(t / 7.0), 0.0)
    for start in (400, 510, 620):
        x[start : start + 60] = 700.0
    onsets = physionet.pdb_onsets_ms(x, 100)
    np.testing.assert_allclose(onsets, [(s - 1 + 20 / 700) * 10.0 for s in (400, 510, 620)])


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


def test_ndd_right_reference_takes_the_rise_after_a_spike_in_late_swing():
    # a one-sample spike to stance level 80 ms before each contact, back in the air
    # after it (control5's right FSR from 262 s on): the strike is the rise, not the spike
    strides = [1100.0] + list(np.diff(STRIKES))
    counts = _right_foot(STRIKES)
    for t in STRIKES:
        counts[int(t / 10) - 8] = 30000
    ref = physionet.ndd_reference(_ts(strides, 0.95), "right", counts, 100)
    np.testing.assert_allclose(ref, np.asarray(STRIKES) - 10.0, atol=10.0)
    # taking every spell above the line as a rise puts the strikes on the spikes
    spikes = physionet._crossing_times_ms(counts, 100, 0.15, hold_s=0.0) - 10.0
    np.testing.assert_allclose(spikes[: len(STRIKES)], np.asarray(STRIKES) - 90.0, atol=10.0)


def test_pdb_onsets_skip_a_one_sample_spike_in_the_air():
    # swing at 0 N, a 150 N one-sample spike 300 ms before each stance of 600 N
    x = np.zeros(600)
    x[:30] = 600.0
    for start in (100, 250, 400):
        x[start - 30] = 150.0
        x[start : start + 60] = 600.0
    onsets = physionet.pdb_onsets_ms(x, 100)
    np.testing.assert_allclose(onsets, [(s - 1 + 20 / 600) * 10.0 for s in (100, 250, 400)])
    # without the hold, each spike would be a contact of its own
    assert len(physionet.pdb_onsets_ms(x, 100, hold_s=0.0)) == 6


def test_the_report_shows_each_draw_of_the_fault_bench_and_the_rate_sweep(tmp_path):
    import json

    from host_tools.gait import accuracy_doc

    row = {"rate_hz": 100, "case": "mains", "clean_steps": 377, "found_pct": 97.61,
           "extra_pct": 2.12, "p95_ms": 6.0, "missed_after_recovery": 0, "faults": 64,
           "seed": 1, "met": False}
    old = {k: v for k, v in row.items() if k != "seed"}  # saved before draws were kept
    heel = dict(old, case="heel-dead", found_pct=99.73, extra_pct=1.06, faults=1, met=True)
    (tmp_path / "fb.json").write_text(json.dumps([row, heel]))
    text = accuracy_doc._faults(tmp_path / "fb.json")
    assert "| 100 | mains | 1 | 377 | 97.61 | 2.12 |" in text
    assert "| 100 | heel-dead | - | 377 | 99.73 |" in text
    assert text.endswith("Met in 1 of 2 cases.")
    assert accuracy_doc._rates(tmp_path / "none.json").startswith("(not run")
    rates = [{"rate_hz": 50, "database": "gaitndd", "group": "all", "feet": 66, "n_ref": 10,
              "n_det": 10, "sensitivity": 99.44, "precision": 99.47, "median_abs_ms": 5.0,
              "p95_abs_ms": 13.0}]
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    assert "| 50 | gaitndd | all | 10 | 10 | 99.44 | 99.47 | 5.0 | 13.0 |" in accuracy_doc._rates(
        tmp_path / "rates.json")


def test_the_report_sets_the_biased_bench_beside_the_plain_one(tmp_path):
    import json

    from host_tools.gait import accuracy_doc

    row = {"rate_hz": 120, "case": "mains", "clean_steps": 377, "found_pct": 97.61,
           "extra_pct": 2.12, "p95_ms": 6.0, "missed_after_recovery": 0, "faults": 0,
           "seed": 1, "met": False}
    same = dict(row, rate_hz=100, found_pct=99.73, extra_pct=0.0, met=True)
    heel = dict(same, case="heel-dead", seed=0, faults=1)
    (tmp_path / "plain.json").write_text(json.dumps([row, same, heel]))
    biased = [dict(r, bias=6000) for r in (row, same, heel)]
    biased[0].update(found_pct=99.73, extra_pct=0.0, met=True)
    biased[2].update(found_pct=97.0, met=False)
    (tmp_path / "biased.json").write_text(json.dumps(biased))
    text = accuracy_doc._bias(tmp_path / "plain.json", tmp_path / "biased.json")
    assert text.startswith("Met in 2 of 3 cases with the bias, 2 of 3 without")
    # the cell the bias mends and the one it costs are listed, the one met in both is not
    assert "| 120 | mains | 1 | 97.61 | 99.73 | 2.12 | 0.00 | no | yes |" in text
    assert "| 100 | heel-dead | - | 99.73 | 97.00 | 0.00 | 0.00 | yes | no |" in text
    assert "| 100 | mains |" not in text
    missing = accuracy_doc._bias(tmp_path / "plain.json", tmp_path / "none.json", "--x ")
    assert missing.startswith("(not run") and "--x --bias 6000" in missing


@pytest.mark.parametrize("module, argv, needle", [
    ("faultbench", ["--rates", "fast"], "--rates and --seeds"),
    ("faultbench", ["--rates", "10"], "25..1000"),
    ("faultbench", ["--cases", "wet"], "unknown wet"),
    ("faultbench", ["--workers", "0"], "outside 1..64"),
    ("faultbench", ["--mains-hz", "5"], "--mains-hz: 40..70"),
    ("faultbench", ["--mains-hz", "sixty"], "--mains-hz"),
    ("faultbench", ["--bias", "30000"], "--bias 30000 is outside 0..20000"),
    ("faultbench", ["--bias", "-1"], "--bias"),
    ("crossval", ["--workers", "65"], "outside 1..64"),
    ("crossval", ["--data", "/nonexistent/data"], "no gaitndd/ or gaitpdb/"),
    ("ratesweep", ["--data", "/nonexistent/data"], "no gaitndd/ or gaitpdb/"),
])
def test_the_accuracy_benches_refuse_bad_arguments_in_one_line(module, argv, needle, capsys):
    import importlib

    main = importlib.import_module(f"host_tools.gait.{module}").main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and "Traceback" not in "\n".join(err)


def _feet(database, group, n_ref, matched):
    return evaluate.FootResult(name=f"{group}-left", database=database, group=group,
                               n_ref=n_ref, n_det=n_ref, matched=matched)


def test_crossval_keeps_the_shipped_constants_on_a_tie_and_leaves_them_for_a_better_set():
    from host_tools.gait import crossval

    cands = [{"_MIN_SWING_MS": 110}, {"_MIN_SWING_MS": 130}]
    groups = crossval.FOLDS["gaitndd"]
    # 110 and 130 score alike on every group: the shipped one stands, whichever it is
    tie = [[_feet("gaitndd", g, 100, 99) for g in groups] for _ in cands]
    for ship in cands:
        folds = crossval.crossvalidate(tie, cands, ship)["folds"]
        assert [f["chosen"] for f in folds] == [ship] * len(groups)
    # 110 finds one more step on every group but the last: folds that train on any of
    # those pick it although 130 ships; the held-out group is scored with that choice
    better = [[_feet("gaitndd", g, 100, 99 + (k == 0 and g != groups[-1])) for g in groups]
              for k in range(2)]
    cv = crossval.crossvalidate(better, cands, cands[1])
    assert [f["chosen"] for f in cv["folds"]] == [cands[0]] * len(groups)
    assert cv["folds"][-1]["sensitivity"] == 99.0
    assert cv["folds"][0]["sensitivity"] == 100.0


def test_the_cost_of_a_wrong_setting_is_read_from_the_benches(tmp_path, monkeypatch):
    from host_tools.gait import accuracy_doc

    rows = [{"rate_hz": 80, "case": "wrong-mains", "found_pct": f, "extra_pct": 2.0}
            for f in (6.44, 8.81)]
    rows.append({"rate_hz": 80, "case": "noise", "found_pct": 99.0, "extra_pct": 0.0})
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows))
    assert accuracy_doc._spread(path, 80, "found_pct") == "6.4-8.8"
    assert accuracy_doc._spread(path, 80, "extra_pct") == "2.0"
    assert accuracy_doc._spread(path, 100, "found_pct") == "(not run)"
    assert accuracy_doc._spread(tmp_path / "none.json", 80, "found_pct") == "(not run)"
    # the sentence takes each figure from its bench; a bench not run says so, with no unit
    for name in ("BIAS60_JSON", "FAULTS60_JSON", "FAULTS_JSON"):
        monkeypatch.setattr(accuracy_doc, name, path)
    monkeypatch.setattr(accuracy_doc, "BIAS_JSON", tmp_path / "none.json")
    text = accuracy_doc._wrong_cost()
    assert text.startswith("with the insole at 60 Hz under 50.2 Hz hum 6.4-8.8 % found at 80 Hz"
                           " (2.0 % extra), (not run) at 100 Hz")
    assert text.endswith("hum (not run) at 60 Hz ((not run) without)")
