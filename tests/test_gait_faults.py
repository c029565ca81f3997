"""Channel faults: the detector names them in `faults` and keeps finding steps."""

from __future__ import annotations

import numpy as np
import pytest

from host_tools.gait import engine, evaluate, faultbench
from tests import gaitsynth

gait = engine.load_firmware_module()


def run(trace, rate=100):
    """Strike times, and the faults word after every sample."""
    det = gait.GaitDetector(rate)
    assert det.faults == 0
    strikes, faults = [], []
    for h, a, f in trace.tolist():
        if det.feed(h, a, f) & gait.EV_STRIKE:
            strikes.append(det.contact_ms)
        faults.append(det.faults)
    return strikes, np.asarray(faults)


def walk(strides=40):
    w = gaitsynth.Walk(strides_ms=[1100.0] * strides, noise=150, seed=2)
    return w, gaitsynth.make(w)


def test_a_clean_walk_reports_no_fault():
    _, trace = walk()
    _, faults = run(trace)
    assert not faults[300:].any()


@pytest.mark.parametrize(
    ("fault", "code"),
    [("saturated", gait.FAULT_SATURATED), ("stuck", gait.FAULT_STUCK), ("dead", gait.FAULT_DEAD)],
)
def test_a_failed_heel_is_named_and_steps_go_on_within_2_s(fault, code):
    w, trace = walk()
    t_fault = 20000.0
    i = int(t_fault / 10)
    # fail while the heel is loaded, the hardest moment: it holds the stance
    i += int(np.argmax(trace[i : i + 110, 0]))
    if fault == "saturated":
        trace[i:, 0] = 65535
    elif fault == "stuck":
        trace[i:, 0] = trace[i, 0]
    else:
        trace[i:, 0] = 0
    strikes, faults = run(trace)
    assert (faults[i + 200 :] & 0xF == code).all()
    assert not (faults[i + 200 :] & 0xFF0).any()  # arch and forefoot stay fine
    truth = np.asarray(w.contacts_ms())
    late = truth[truth > i * 10 + 2000]
    pairs = evaluate.match(np.asarray(strikes, float), late, 250.0)
    assert len(pairs) == len(late)
    # no step is invented: at most the one the fault cut short
    assert len(strikes) <= len(truth) + 1


def test_a_recovered_channel_is_learned_again():
    w, trace = walk()
    trace[1500:1800, 0] = 65535  # 3 s shorted, then back
    strikes, faults = run(trace)
    assert (faults[1700:1800] & 0xF == gait.FAULT_SATURATED).all()
    assert not faults[2100:].any()
    truth = np.asarray(w.contacts_ms())
    late = truth[truth > 20000]
    pairs = evaluate.match(np.asarray(strikes, float), late, 30.0)
    assert len(pairs) == len(late)  # dated by the heel again


def test_noise_and_jumps_are_named():
    _, trace = walk()
    rng = np.random.default_rng(4)
    noisy = trace.copy()
    noisy[:, 1] = rng.integers(0, 65536, len(trace))
    _, faults = run(noisy)
    assert ((faults[1000:] >> 4) & 0xF == gait.FAULT_NOISY).all()
    jumpy = trace.copy()
    hits = np.arange(1000, len(trace), 70)
    jumpy[hits, 2] = 65535  # one-sample spikes from a loose contact
    _, faults = run(jumpy)
    assert ((faults[1200:] >> 8) & 0xF == gait.FAULT_JUMPS).mean() > 0.9


def test_pure_noise_on_every_channel_is_no_walk():
    rng = np.random.default_rng(1)
    trace = np.clip(20000 + rng.normal(0, 2000, (6000, 3)), 0, 65535).astype(int)
    strikes, _ = run(trace)
    assert strikes == []


@pytest.mark.parametrize("rate", [50, 60, 75, 90, 100, 120, 150, 1000])
def test_mains_pickup_costs_few_steps(rate):
    res = faultbench.run_case(rate, "mains")
    assert res.met and res.p95_ms <= faultbench.MATCH_MS


@pytest.mark.parametrize("rate,pickup_hz", [(60, 50.2), (58, 50.2), (50, 60.2), (55, 60.2)])
def test_hum_at_the_mains_frequency_the_insole_is_not_set_to_is_reported(rate, pickup_hz):
    # the insole set for pickup_hz, the hum at the other frequency: it costs steps
    # at these rates (60 Hz: 78.8 % found; 50 Hz with the insole at 60: 67.6 %), and
    # Status names it on heel and forefoot, which load above the hum
    res = faultbench.run_case(rate, "wrong-mains", mains_hz=pickup_hz)
    codes = [(res.faults >> (4 * c)) & 0xF for c in range(3)]
    assert codes[0] == codes[2] == faultbench.WRONG_MAINS and res.met
    # hum at the set frequency: the same check says nothing
    res = faultbench.run_case(rate, "mains", mains_hz=pickup_hz)
    assert faultbench.WRONG_MAINS not in [(res.faults >> (4 * c)) & 0xF for c in range(3)]
    assert res.met


def test_60_hz_hum_between_61_and_72_hz_is_averaged_out_with_the_insole_at_50():
    # one read per sample at 62 Hz found 24 % of the steps under 60.2 Hz hum with the
    # insole left at 50 Hz; its four reads now take 60 Hz spacing there
    res = faultbench.run_case(62, "wrong-mains")
    assert res.found_pct >= 99.5 and res.extra_pct == 0.0


@pytest.mark.parametrize("rate", [50, 60])
def test_a_long_stance_keeps_its_dip_under_clipped_pickup(rate):
    # pickup clipped at 0 lifts the swing level; a baseline that also crept up under
    # the 1.9 s stance at 27 s of the walk made its dip (heel at 15 % of its span) a
    # swing, once per loop
    res = faultbench.run_case(rate, "mains")
    assert res.extra_pct == 0.0


def test_pickup_riding_on_a_weak_arch_in_the_air_is_no_load():
    # 50.2 Hz pickup read at 100 Hz, clipped at 0, lifts the weak arch by about a tenth
    # of its span as its 0.2 Hz beat drifts; with heel and forefoot at their swing level
    # the spell is a swing (draw 1 lost the step at 26.6 s of every loop: 97.9 % found)
    res = faultbench.run_case(100, "mains", seed=1)
    assert res.met and res.found_pct > 99.0 and res.extra_pct == 0.0


@pytest.mark.parametrize(
    ("rate", "mains", "lengths"),
    [(100, 50, [2, 4, 6, 8]), (150, 50, [3, 6, 9, 12]), (120, 50, [2, 3, 4, 5, 7]),
     (300, 50, [6, 12, 18]), (75, 50, [1, 2, 3, 6]),
     (120, 60, [2, 4, 6, 8]), (100, 60, [1, 2, 3, 5]), (1000, 60, [16, 17]),
     (60, 60, [1, 2, 3, 4])],
)
def test_the_filter_lengthens_to_near_whole_mains_periods(rate, mains, lengths):
    # at multiples of the mains frequency the multiples of one period; between them
    # the base is one period rounded down (1 tap at 75 Hz for 50 Hz mains, 16 at
    # 1000 Hz for 60 Hz) and the longer lengths at least as near whole periods per tap
    # as every shorter one (at 120 Hz with 50 Hz mains 7 taps, 2.92 periods, and not
    # 6 or 8; at 100 Hz with 60 Hz mains 5 taps, three periods); never longer than
    # _LONG_MS
    det = gait.GaitDetector(rate, mains)
    good = det._st[gait._GOOD]
    bt = det._st[gait._BTAPS]
    longest = det._st[gait._MAXLEN]
    assert [n for n in range(bt, longest + 1) if good >> (n - 1) & 1] == lengths
    assert longest == lengths[-1]


def test_the_detector_takes_50_or_60_hz_mains_only():
    for bad in (0, 55, 100, 50.0):
        with pytest.raises(ValueError, match="mains_hz"):
            gait.GaitDetector(100, bad)


@pytest.mark.parametrize("rate", [60, 100])
def test_60_hz_pickup_costs_few_steps_with_the_detector_set_to_60_hz(rate):
    # 60.2 Hz pickup with a 50 Hz filter and 50 Hz read spacing found 78.8 % (60 Hz,
    # draw 0); set to 60 Hz (SET_MAINS) the filter and the four reads span its periods
    res = faultbench.run_case(rate, "mains", mains_hz=60.2)
    assert res.met and res.found_pct > 99.0 and res.extra_pct == 0.0
    assert res.p95_ms <= faultbench.MATCH_MS


def test_pickup_between_multiples_of_50_hz_keeps_the_weak_arch_dating_contact():
    # 50.2 Hz pickup at 120 Hz: a filter of 8 taps (3.35 periods) passed 11 % of the
    # pickup, the arch was dropped as noisy and one contact per loop was dated 61 ms
    # late by the heel (draw 1: 97.6 % found, 2.1 % extra); 7 taps (2.92 periods) pass
    # 3.3 %
    res = faultbench.run_case(120, "mains", seed=1)
    assert res.met and res.found_pct > 99.0 and res.extra_pct == 0.0


def test_pickup_that_drops_every_channel_still_lengthens_the_filter():
    # 50.2 Hz pickup at 80 Hz, where one 20 ms period is a single tap: with draw 1 the
    # unfiltered pickup made every channel noisy at once, and the filter, which
    # lengthened only for live channels, never did (0 % found, faults 0x444)
    res = faultbench.run_case(80, "mains", seed=1)
    assert res.met and res.found_pct > 99.0 and res.faults & 0x444 != 0x444


@pytest.mark.parametrize("rate", [75, 90])
def test_pickup_the_filter_removes_is_not_noise(rate):
    # between multiples of 50 Hz the residual over one sample keeps the pickup, but the
    # lengthened filter removes it: no channel is dropped as noisy
    res = faultbench.run_case(rate, "mains")
    assert res.faults == 0


@pytest.mark.parametrize("rate", [50, 60, 100, 120, 150, 300])
def test_noise_of_3_percent_costs_few_steps(rate):
    # the pre-filter lengthens and weak, noisy regions stop counting as weight; a
    # shallow mid-stance dip that noise carries below the unload line stays one stance
    res = faultbench.run_case(rate, "noise")
    assert res.met and res.p95_ms <= faultbench.MATCH_MS


@pytest.mark.parametrize("case", ["heel-saturated", "heel-dead"])
def test_the_bench_heel_faults_lose_no_step_after_2_s(case):
    res = faultbench.run_case(100, case)
    assert res.met and res.missed_after_recovery == 0


def test_the_filter_stays_one_mains_period_on_a_clean_walk():
    # clean signals keep the shortest filter, so the notification latency is unchanged
    det = gait.GaitDetector(100)
    for h, a, f in faultbench.looped_walk(100, 120.0).tolist():
        det.feed(h, a, f)
        assert det._st[gait._FLEN] == 2


@pytest.mark.parametrize(
    ("rate", "mains", "final"), [(75, 50, 1), (80, 50, 1), (120, 50, 2), (1000, 60, 17)]
)
def test_where_one_period_is_no_whole_number_of_samples_the_filter_starts_long(
    rate, mains, final
):
    # there pickup passes the base filter; learnt into the spans in the first second
    # it cost 8 steps in the first 10 s at 75 Hz under 50.2 Hz hum (97.9 % found with
    # a bias). The filter starts at its longest and shortens, on a clean walk, only
    # once the noise estimates have had _SETTLE_MS (and, as ever, only by at least one
    # base length: at 1000 Hz with 60 Hz mains 17 taps stay, against 16)
    det = gait.GaitDetector(rate, mains)
    st = det._st
    assert st[gait._FLEN] == st[gait._MAXLEN] > st[gait._BTAPS]
    settle = gait._SETTLE_MS * rate // 1000
    lengths = []
    for h, a, f in faultbench.looped_walk(rate, 12.0).tolist():
        det.feed(h, a, f)
        lengths.append(st[gait._FLEN])
    assert set(lengths[: settle - 1]) == {st[gait._MAXLEN]}
    assert lengths[-1] == final


@pytest.mark.parametrize(("rate", "mains"), [(50, 50), (100, 50), (300, 50), (120, 60)])
def test_where_one_period_is_whole_samples_the_filter_starts_at_one_period(rate, mains):
    det = gait.GaitDetector(rate, mains)
    assert det._st[gait._FLEN] == det._st[gait._BTAPS] == rate // mains


def test_hum_costs_no_step_at_the_start_at_75_hz():
    # 4000 counts of 50.2 Hz hum with the unloaded level 6000 counts above 0 (nothing
    # clipped): the one-tap base filter let it widen the spans for ~10 s (97.9 %)
    res = faultbench.run_case(75, "mains", bias=6000)
    assert res.met and res.found_pct > 99.5 and res.extra_pct == 0.0


def test_the_bench_models_a_bias_resistor_as_a_raised_unloaded_level():
    walk = faultbench.looped_walk(100, 20.0)
    same = faultbench.biased(walk, 0)
    assert (same == walk).all()
    lifted = faultbench.biased(walk, 6000)
    assert lifted.min() >= 6000 and lifted.max() <= faultbench.FULL_SCALE
    assert (np.diff(lifted[:, 0]) * np.diff(walk[:, 0]) >= 0).all()  # same shape
    assert faultbench.biased(np.array([faultbench.FULL_SCALE]), 6000)[0] == faultbench.FULL_SCALE
    with pytest.raises(ValueError, match="bias"):
        faultbench.biased(walk, faultbench.BIAS_MAX + 1)


def test_with_a_bias_clipped_hum_no_longer_loses_the_arch_first_contact():
    # 60.2 Hz hum at 120 Hz, unloaded level at 0: the ADC clips the hum's lower half,
    # the weak arch is lost in it, and the heel dates the contact at 53.7 s of every
    # loop 62 ms after the clean run (97.6 %); lifted 6000 counts nothing clips
    res = faultbench.run_case(120, "mains", seed=0, mains_hz=60.2, bias=6000)
    assert res.bias == 6000
    assert res.met and res.found_pct > 99.5 and res.extra_pct == 0.0


@pytest.mark.parametrize("mains", [50, 60])
def test_the_wrong_mains_lags_cancel_one_frequency_and_keep_the_other(mains):
    other = 110 - mains

    def off(k, hz, rate):  # periods from the nearest whole number, 0..0.5
        p = k * hz / rate
        return abs(p - round(p))

    blind = []
    for rate in range(73, 1001):
        n, m = gait.hum_lags(rate, mains)
        if n == 0:
            assert m == 0
            blind.append(rate)
            continue
        assert 1 <= n <= 20 and 1 <= m <= 20
        assert off(n, other, rate) <= 1 / 20  # the other's hum cancels over n
        assert off(m, other, rate) >= 1 / 6  # ... and not over m
        assert off(m, mains, rate) <= off(n, mains, rate) + 1e-9  # the setting's never favours m
    # where no lag up to the ring's length tells the two apart (docs/PROTOCOL.md)
    expected = {50: [85, 95, 110, 130, 170, 189, 190],
                60: [85, 95, 110, 130, 169, 170, 171, 189, 190]}
    assert blind == expected[mains]


def _codes_over(rate, case, mains_hz, bias=0, seconds=40.0):
    """Per sample (the last half of a walk of `seconds`): each channel's fault code."""
    det = gait.GaitDetector(rate, faultbench.setting(mains_hz))
    x = faultbench.acquired(rate, case, 0, seconds=seconds, mains_hz=mains_hz, bias=bias)
    words = []
    for h, a, f in x.tolist():
        det.feed(h, a, f)
        words.append(det.faults)
    w = np.asarray(words[len(words) // 2:])
    return np.stack([(w >> (4 * c)) & 0xF for c in range(3)], axis=1)


@pytest.mark.parametrize("rate", [80, 100, 120, 250, 1000])
@pytest.mark.parametrize("pickup_hz", [50.2, 60.2])
def test_hum_at_the_other_mains_frequency_is_reported_above_72_hz(rate, pickup_hz):
    # one read per sample here, so mains.py's check of the reads is not there: the
    # detector's own lags (hum_lags) say it, on the arch (whose span is below the hum)
    # all the time and on heel or forefoot for a fifth of it or more (at 80 and 120 Hz
    # with the insole at 60 the lag that cancels 50 Hz is 100 ms, which the gait moves)
    wrong = gait.FAULT_WRONG_MAINS
    codes = _codes_over(rate, "wrong-mains", pickup_hz)
    assert (codes[:, 1] == wrong).all()
    assert max((codes[:, 0] == wrong).mean(), (codes[:, 2] == wrong).mean()) > 0.2
    # hum at the setting, noise, or nothing: never
    for case in ("mains", "noise", "clean"):
        assert not (_codes_over(rate, case, pickup_hz) == wrong).any(), case


@pytest.mark.parametrize("bias", [0, 6000])
def test_the_wrong_mains_check_needs_no_clipping(bias):
    # with the bias resistor nothing is cut off at 0: the hum passes whole
    wrong = gait.FAULT_WRONG_MAINS
    assert (_codes_over(100, "wrong-mains", 60.2, bias) == wrong).mean() > 0.8
    assert not (_codes_over(100, "mains", 60.2, bias) == wrong).any()


def test_no_wrong_mains_check_where_the_reads_average():
    # up to 72 Hz four reads per sample cancel the hum they are spaced for, and
    # firmware/mains.py checks those reads instead
    assert gait.hum_lags(72, 60) != (0, 0)  # the rate turns it off, not the lags
    assert not (_codes_over(72, "wrong-mains", 60.2) == gait.FAULT_WRONG_MAINS).any()
