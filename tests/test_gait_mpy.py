"""The detector's three hard constraints, checked against the real micropython binary.

1. Same events on CPython and MicroPython (differential, hypothesis-generated traces).
2. No allocation per sample: feeding under micropython.heap_lock() raises nothing.
3. 31-bit safety: every intermediate value stays within +-2**29, checked explicitly by
   running an instrumented copy of firmware/gait.py (the unix port's 63-bit small ints
   would not show an overflow).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_tools.cli.bench import DATA as WALK
from host_tools.gait import engine, faultbench, tracefile
from tests import gaitsynth
from tests.boundcheck import Bound, load
from tests.mpy import run_micropython

LIMIT = 1 << 29

walks = st.builds(
    gaitsynth.Walk,
    rate_hz=st.sampled_from([50, 66, 72, 100, 250, 1000]),  # up to 72 Hz: averaged reads
    strides_ms=st.lists(st.floats(500, 2500), min_size=1, max_size=8),
    stance_frac=st.floats(0.4, 0.75),
    start_ms=st.floats(0, 3000),
    tail_ms=st.floats(0, 1500),
    base=st.tuples(*[st.integers(0, 20000)] * 3),
    amp=st.tuples(*[st.integers(0, 45000)] * 3),
    ramp_ms=st.floats(10, 200),
    noise=st.floats(0, 2000),
    drift_per_s=st.floats(-300, 300),
    dip=st.floats(0, 1),
    strike_order=st.sampled_from(["rear", "fore"]),
    seed=st.integers(0, 1000),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(walks, st.integers(0, 3), st.integers(0, 2), st.sampled_from([50, 60]))
def test_same_events_on_cpython_and_micropython(walk, fault, channel, mains):
    trace = gaitsynth.make(walk)
    if fault == 1:
        trace[:, channel] = 0
    elif fault == 2:
        trace[:, channel] = 65535
    elif fault == 3:
        trace[:, channel] = np.random.default_rng(walk.seed).integers(0, 65536, len(trace))
    cp = engine.run_cpython(trace, walk.rate_hz, mains_hz=mains)
    mp = engine.run_micropython(trace, walk.rate_hz, mains_hz=mains)
    assert cp == mp


def spiked_walk(rate):
    # a brief heel spike before the seventh contact: the step's strike is corrected
    w = gaitsynth.Walk(rate_hz=rate, strides_ms=[1100.0] * 12)
    trace = gaitsynth.make(w)
    first = int((w.contacts_ms()[6] - 220) * rate / 1000)
    trace[first : first + max(1, round(30 * rate / 1000)), 0] += 12000
    return trace


@pytest.mark.parametrize("rate", [50, 100, 1000])
def test_same_corrected_strike_on_cpython_and_micropython(rate):
    trace = spiked_walk(rate)
    cp = engine.run_cpython(trace, rate)
    assert cp == engine.run_micropython(trace, rate)
    # the seventh summary has the real contact's strike, not the spike's
    strikes = [e[2] for e in cp if e[0] == "S"]
    assert len(strikes) == 12 and abs(strikes[6] - 8600) <= max(20, 2000 // rate)


def test_same_events_on_the_bundled_real_walk():
    trace = tracefile.read_trace(WALK)
    cp = engine.run_cpython(trace.samples, trace.rate_hz)
    assert len(engine.step_summaries(cp)) > 30
    assert cp == engine.run_micropython(trace.samples, trace.rate_hz)


HEAP_LOCK_SCRIPT = """
import micropython
from gait import GaitDetector
samples = %s

def run(rate):
    # inside a function: locals live on the stack, module globals would allocate
    det = GaitDetector(rate)
    failed = 0
    events = 0
    for h, a, f in samples:
        ev = -1
        word = -1
        micropython.heap_lock()
        try:
            ev = det.feed(h, a, f)
            word = det.faults  # Status reads it (the wrong-mains check lives there)
        except MemoryError:
            pass
        micropython.heap_unlock()
        if ev < 0 or word < 0:
            failed += 1
        elif ev:
            events += 1
    print(rate, failed, events)

for rate in (50, 100, 1000):
    run(rate)
"""


def test_feed_allocates_nothing_under_heap_lock():
    trace = tracefile.read_trace(WALK).samples[:3000]
    noise = np.random.default_rng(0).integers(0, 65536, (500, 3))
    # the spiked walk takes the strike-correcting path inside feed() as well
    samples = [tuple(r) for r in np.concatenate([trace, spiked_walk(100), noise]).tolist()]
    out = run_micropython(HEAP_LOCK_SCRIPT % repr(samples))
    lines = [line.split() for line in out.strip().splitlines()]
    assert len(lines) == 3
    for rate, failed, _events in lines:
        assert failed == "0", f"{failed} samples allocated at {rate} Hz"
    # the 100 Hz run is the trace's own rate: it must have produced events
    assert int(lines[1][2]) > 20


def instrumented_gait():
    src = (engine.FIRMWARE / "gait.py").read_text()
    return load(src, "gait_checked", (-LIMIT, LIMIT))


def test_instrumentation_catches_an_overflow():
    # the checker itself must be able to fail
    g = instrumented_gait()
    det = g.GaitDetector(100)
    try:
        g._crossing_ms(det._st, LIMIT, -LIMIT, 0)
    except Bound:
        return
    raise AssertionError("a 2**30 intermediate was not caught")


def test_every_intermediate_within_29_bits():
    g = instrumented_gait()
    rng = np.random.default_rng(5)
    traces = [
        (tracefile.read_trace(WALK).samples, 100),
        (gaitsynth.make(gaitsynth.Walk(rate_hz=1000, strides_ms=[900.0] * 4)), 1000),
        (gaitsynth.make(gaitsynth.Walk(rate_hz=50, amp=(65535, 65535, 65535))), 50),
        (rng.integers(0, 65536, (3000, 3)), 100),
        (np.where(rng.random((3000, 3)) < 0.5, 0, 65535), 333),
        (np.tile([[65535, 65535, 65535]], (9000, 1)), 1000),  # long full-scale stance
        (np.tile([[0, 0, 0], [65535, 65535, 65535]], (2000, 1)), 50),
        # noise long enough to lengthen the pre-filter, and mains pickup
        (faultbench.disturb(faultbench.looped_walk(50, 30.0), 50, "noise"), 50),
        (faultbench.disturb(faultbench.looped_walk(100, 30.0), 100, "mains"), 100),
        # between multiples of 50 Hz the filter takes lengths of no whole period
        (faultbench.disturb(faultbench.looped_walk(120, 30.0), 120, "mains"), 120),
        (spiked_walk(50), 50),
        (spiked_walk(1000), 1000),
    ]
    for samples, rate in traces:
        events = engine.run_cpython(samples, rate, g)
        assert events == engine.run_cpython(samples, rate)  # instrumented = original
    # 60 Hz mains: other filter lengths (16 and 17 taps at 1000 Hz)
    for rate in (100, 1000):
        samples = faultbench.disturb(faultbench.looped_walk(rate, 30.0), rate, "mains",
                                     mains_hz=60.2)
        events = engine.run_cpython(samples, rate, g, mains_hz=60)
        assert events == engine.run_cpython(samples, rate, mains_hz=60)


def test_clock_wraps_at_2_to_the_29():
    # six days of samples cannot run in a test: start the clock just before the wrap
    gait = engine.load_firmware_module()
    det = gait.GaitDetector(100)
    walk = gaitsynth.make(gaitsynth.Walk(strides_ms=[1000.0] * 10))
    det.feed(*walk[0].tolist())
    det._st[gait._NOW] = (1 << 29) - 4000
    rows = []
    for h, a, f in walk[1:].tolist():
        if det.feed(h, a, f) & gait.EV_STEP:
            rows.append(det.summary())
            assert all(0 <= v < (1 << 29) for v in det.summary())
    assert len(rows) == 10
    assert [r[6] for r in rows[2:]] == [1000] * 8 or all(abs(r[6] - 1000) <= 10 for r in rows[2:])
    assert any(r[1] > r[2] for r in rows) or any(r[1] < 4000 for r in rows)


@pytest.mark.parametrize("rate", [50, 100, 120, 300])
@pytest.mark.parametrize("case", ["noise", "mains", "heel-saturated", "heel-stuck", "heel-dead"])
def test_same_events_under_noise_and_channel_faults(case, rate):
    # the fault bench's disturbances on a minute of the bundled walk: the noise
    # filter, its length changes and the fault codes run the same on both engines
    clean = faultbench.looped_walk(rate, seconds=60.0)
    trace = faultbench.disturb(clean, rate, case, seed=rate)
    cp = engine.run_cpython(trace, rate)
    assert len(engine.step_summaries(cp)) > 20  # a minute of walking: about 47 steps
    assert cp == engine.run_micropython(trace, rate)


@pytest.mark.parametrize("rate", [100, 1000])
def test_same_events_under_60_hz_pickup_with_the_detector_set_to_60_hz(rate):
    clean = faultbench.looped_walk(rate, seconds=60.0)
    trace = faultbench.disturb(clean, rate, "mains", seed=rate, mains_hz=60.2)
    cp = engine.run_cpython(trace, rate, mains_hz=60)
    assert len(engine.step_summaries(cp)) > 20
    assert cp == engine.run_micropython(trace, rate, mains_hz=60)
    assert cp != engine.run_cpython(trace, rate)  # the setting matters


@pytest.mark.parametrize("rate,pickup_hz", [(100, 60.2), (250, 50.2), (1000, 50.2)])
def test_same_fault_words_under_hum_at_the_other_mains_frequency(rate, pickup_hz):
    # the wrong-mains check (gait.hum_lags) and every other code, sample by sample
    clean = faultbench.looped_walk(rate, seconds=30.0)
    trace = faultbench.disturb(clean, rate, "wrong-mains", seed=rate, mains_hz=pickup_hz)
    mains = faultbench.setting(pickup_hz)
    cp = engine.run_cpython(trace, rate, mains_hz=mains, faults=True)
    words = [e[2] for e in cp if e[0] == "F"]
    assert any((w >> 4) & 0xF == 6 for w in words)  # the arch said wrong mains
    assert cp == engine.run_micropython(trace, rate, mains_hz=mains, faults=True)


def test_step_counts_saturate_below_2_to_the_29():
    gait = engine.load_firmware_module()
    det = gait.GaitDetector(100)
    limit = (1 << 29) - 1
    det.steps = limit - 2
    seqs, contacts = [], []
    for h, a, f in gaitsynth.make(gaitsynth.Walk(strides_ms=[1000.0] * 6)).tolist():
        ev = det.feed(h, a, f)
        if ev & gait.EV_STRIKE:
            contacts.append(det.contact_seq)
        if ev & gait.EV_STEP:
            seqs.append(det.seq)
    assert seqs == [limit - 1, limit, limit, limit, limit, limit]
    assert contacts[:3] == [limit - 1, limit, limit] and max(contacts) == limit
