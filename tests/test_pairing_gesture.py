"""The foot gesture that opens the pairing window (firmware/pairing.py TapGesture):
heel taps with the forefoot loaded. It fires for the gesture at every sample rate,
for exactly its tap counts, and never for walking, standing or the exercises: every
recording of ../shared/data (both feet) and generated sessions of every exercise.
The counter runs the same on CPython and MicroPython, allocates nothing per sample
and keeps every value within +-2**29. The window opens, closes on time and after
repeated failed pairings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from host_tools.gait import physionet
from host_tools.gait.engine import FIRMWARE
from host_tools.training import exgen
from tests.boundcheck import Bound, load
from tests.mpy import run_micropython

sys.path.insert(0, str(FIRMWARE))
import pairing  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LIMIT = 1 << 29


def gesture_trace(taps=6, rate=100, tap_ms=150, gap_ms=250, lead_ms=800, hold_ms=1500,
                  fore=45000, noise=300, seed=1, stand_s=3.0):
    """Stand, rise onto the forefoot, tap the heel `taps` times, hold, stand again."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(ms, h, a, f):
        for _ in range(max(1, int(ms * rate / 1000))):
            rows.append((h, a, f))

    add(stand_s * 1000, 30000, 9000, 30000)
    add(lead_ms, 400, 6000, fore)
    for i in range(taps):
        add(tap_ms, 36000, 8000, fore)
        if i < taps - 1:
            add(gap_ms, 400, 6000, fore)
    add(hold_ms, 400, 6000, fore)
    add(stand_s * 1000, 30000, 9000, 30000)
    arr = np.asarray(rows, dtype=float) + rng.normal(0, noise, (len(rows), 3))
    return np.clip(np.round(arr), 0, 65535).astype(int)


def gestures(trace, rate):
    g = pairing.TapGesture(rate)
    return [(i, ev) for i, (h, a, f) in enumerate(np.asarray(trace).tolist())
            if (ev := g.feed(h, a, f))]


@pytest.mark.parametrize("rate", [50, 100, 200, 400])
def test_six_taps_open_the_window_and_twelve_forget(rate):
    got = gestures(gesture_trace(6, rate), rate)
    assert [ev for _, ev in got] == [pairing._GESTURE_PAIR]
    got = gestures(gesture_trace(12, rate, seed=2), rate)
    assert [ev for _, ev in got] == [pairing._GESTURE_FORGET]
    # the event comes once the heel has been held up for the hold after the last tap
    tr = gesture_trace(6, rate, hold_ms=1500, stand_s=3.0)
    (i, _), = gestures(tr, rate)
    taps_end = int(3.0 * rate) + int(0.8 * rate) + 6 * int(0.15 * rate) + 5 * int(0.25 * rate)
    assert taps_end + pairing._HOLD_MS * rate // 1000 - 2 <= i <= taps_end + 1.1 * rate


@pytest.mark.parametrize("taps", [1, 3, 5, 7, 8, 10, 11, 13, 16])
def test_other_tap_counts_do_nothing(taps):
    assert gestures(gesture_trace(taps), 100) == []


def test_taps_must_be_quick_and_the_forefoot_loaded():
    assert gestures(gesture_trace(6, tap_ms=500), 100) == []  # heel down too long
    assert gestures(gesture_trace(6, gap_ms=900), 100) == []  # too slow
    assert gestures(gesture_trace(6, lead_ms=100), 100) == []  # no heel-up lead-in
    assert gestures(gesture_trace(6, hold_ms=500), 100) == []  # no hold at the end
    assert gestures(gesture_trace(6, fore=12000), 100) == []  # forefoot barely loaded
    # two gestures in a row: two events
    both = np.concatenate([gesture_trace(6, seed=3), gesture_trace(6, seed=4)])
    assert [ev for _, ev in gestures(both, 100)] == [pairing._GESTURE_PAIR] * 2


def _recordings():
    for r in physionet.ndd_records(DATA / "gaitndd"):
        for side in ("left", "right"):
            yield physionet.load_ndd(DATA / "gaitndd", r, side)
    for f in physionet.pdb_files(DATA / "gaitpdb"):
        for side in ("left", "right"):
            yield physionet.load_pdb(f, side)


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data")
def test_no_recording_makes_the_gesture():
    """Every walk of both databases, both feet (gaitndd's single FSR signal feeds all
    three channels, gaitpdb's heel, arch and forefoot sensors their own): no gesture,
    and no run of more than two taps anywhere."""
    checked = samples = most = 0
    for rec in _recordings():
        # as the device feeds it: about 50 times a second (every other sample at
        # 100 Hz, device.py _gesture_rate), and at the recording's own rate
        for step in (rec.rate_hz // 50, 1):
            g = pairing.TapGesture(rec.rate_hz // step)
            for h, a, f in rec.trace[::step].tolist():
                assert g.feed(h, a, f) == pairing._GESTURE_NONE, (rec.name, step)
                if g.taps > most:
                    most = g.taps
        checked += 1
        samples += len(rec.trace)
    assert checked == 2 * (33 + 242) and samples > 7_000_000
    assert most <= 2


def test_no_exercise_session_makes_the_gesture():
    kinds = ("heel-raises", "toe-scrunch", "balance", "slow-walk")
    n = 0
    for rate in (50, 100, 200):
        for kind in kinds:
            for seed in range(15):
                tr = exgen._sessions(kind, rate, seed)
                assert gestures(tr.samples, rate) == [], (kind, rate, seed)
                n += 1
    # the generators' extremes: quick shallow heel raises, long holds, fast scrunches
    for tr in (exgen.heel_raises(reps=12, rise_ms=300, hold_ms=100, lower_ms=300,
                                 rest_ms=400, depth=0.6),
               exgen.toe_scrunches(reps=20, press_ms=100, hold_ms=0, release_ms=100,
                                   rest_ms=200),
               exgen.balance(holds=4, hold_ms=3000, lift_ms=250, down_ms=200),
               exgen.slow_walk([700.0] * 20, pattern="fore")):
        assert gestures(tr.samples, tr.rate_hz) == []
        n += 1
    assert n == 184


def test_the_gesture_needs_live_sensors():
    flat = np.tile([[0, 0, 0]], (2000, 1))
    assert gestures(flat, 100) == []
    sat = np.tile([[65535, 65535, 65535]], (2000, 1))
    assert gestures(sat, 100) == []


# ------------------------------------------------------------------ 29-bit bounds


def _checked_pairing():
    src = (FIRMWARE / "pairing.py").read_text()
    return vars(load(src, "pairing_checked", (-LIMIT, LIMIT)))


def test_bound_checker_can_fail():
    m = _checked_pairing()
    g = m["TapGesture"](100)
    g._st[m["_N"]] = LIMIT
    g.feed(100, 100, 100)  # a restart: the sample count is not touched
    g._st[m["_HT"]] = LIMIT << 1
    with pytest.raises(Bound):
        g.feed(100, 100, 100)


def test_every_value_within_29_bits():
    m = _checked_pairing()
    rng = np.random.default_rng(5)
    traces = [(gesture_trace(12, 400), 400), (gesture_trace(6, 50), 50),
              (rng.integers(0, 65536, (6000, 3)), 100),
              (np.where(rng.random((6000, 3)) < 0.5, 0, 65535), 333),
              (np.tile([[65535, 0, 65535]], (400000, 1)), 1000)]
    for samples, rate in traces:
        g = m["TapGesture"](rate)
        plain = pairing.TapGesture(rate)
        for h, a, f in np.asarray(samples).tolist():
            assert g.feed(h, a, f) == plain.feed(h, a, f)
        ints = [v for v in vars(g).values() if isinstance(v, int)] + list(g._st)
        assert all(-LIMIT <= v <= LIMIT for v in ints)


# ------------------------------------------------------------------ MicroPython
_MPY_RUN = """
import sys, micropython, pairing

def run(rate, n, vals, out):
    g = pairing.TapGesture(rate)
    feed = g.feed
    micropython.heap_lock()
    i = 0
    while i < n:
        ev = feed(vals[3 * i], vals[3 * i + 1], vals[3 * i + 2])
        if ev:
            micropython.heap_unlock()
            out.append((i, ev))
            micropython.heap_lock()
        i += 1
    micropython.heap_unlock()

rate = int(sys.stdin.readline())
n = int(sys.stdin.readline())
vals = [int(x) for x in sys.stdin.readline().split()]
out = []
run(rate, n, vals, out)
print(out)
"""


def test_micropython_gives_the_same_events_and_allocates_nothing():
    """heap_lock() around feed(): any allocation would raise MemoryError."""
    tr = np.concatenate([gesture_trace(6, 100, seed=7), gesture_trace(12, 100, seed=8),
                         gesture_trace(7, 100, seed=9)])
    walk = physionet.load_pdb(physionet.pdb_files(DATA / "gaitpdb")[0], "left").trace \
        if DATA.exists() else np.zeros((100, 3), int)
    tr = np.concatenate([tr, walk[:3000]])
    stdin = f"100\n{len(tr)}\n{' '.join(str(v) for v in tr.ravel().tolist())}\n".encode()
    out = run_micropython(_MPY_RUN, stdin=stdin).strip()
    want = gestures(tr, 100)
    assert [ev for _, ev in want] == [pairing._GESTURE_PAIR, pairing._GESTURE_FORGET]
    assert out == str(want)


# ------------------------------------------------------------------ the window
class _Clock:
    def __init__(self):
        self.ms = (1 << 30) - 30000  # wraps during the test

    def ticks_ms(self):
        return self.ms

    def ticks_add(self, t, d):
        return (t + d) & ((1 << 30) - 1)

    def ticks_diff(self, a, b):
        return ((a - b + (1 << 29)) & ((1 << 30) - 1)) - (1 << 29)


def test_the_window_closes_on_time_and_after_three_failures():
    lines = []
    clock = _Clock()
    w = pairing.PairingWindow(clock, lambda tag, text: lines.append(f"{tag} {text}"))
    assert not w.open
    w.start("power-on")
    clock.ms = clock.ticks_add(clock.ms, pairing._WINDOW_MS - 1)
    w.update()
    assert w.open
    clock.ms = clock.ticks_add(clock.ms, 1)
    w.update()
    assert not w.open
    w.start("gesture")
    w.failed()
    w.failed()
    assert w.open
    w.failed()
    assert not w.open
    w.failed()  # a closed window counts nothing more
    assert w.failures == 3
    assert lines == ["pair window open 120 s (power-on)", "pair window closed (time up)",
                     "pair window open 120 s (gesture)",
                     "pair window closed (3 failed pairings)"]
