"""firmware/mains.py: four reads over one mains period per sample at rates up to 6/5 of
the mains frequency (60 Hz for 50 Hz mains, 72 Hz for 60 Hz mains)."""

from __future__ import annotations

import math
import re
import sys

import pytest

from host_tools.gait import faultbench
from host_tools.gait.engine import FIRMWARE
from tests.fw_fakes import FakeClock
from tests.mpy import ROOT, run_micropython

sys.path.insert(0, str(FIRMWARE))
import gait  # noqa: E402
import mains  # noqa: E402

PICKUP = 4000
MAINS_HZ = 50.0


class PickupADC:
    """One channel: a level plus mains pickup at the clock's time, clipped as an ADC."""

    def __init__(self, clock, level, phase, hz=MAINS_HZ):
        self.clock, self.level, self.phase, self.hz = clock, level, phase, hz
        self.times: list[int] = []

    def read_u16(self):
        t = self.clock.ticks_us()
        self.times.append(t)
        v = self.level + PICKUP * math.sin(2 * math.pi * self.hz * t / 1e6 + self.phase)
        return min(65535, max(0, round(v)))


@pytest.mark.parametrize("phase", [0.0, 0.7, 1.9, 3.3, 5.1])
def test_pickup_on_a_loaded_channel_cancels(phase):
    clock = FakeClock()
    chans = [PickupADC(clock, level, phase + k) for k, level in enumerate((20000, 9000, 30000))]
    avg = mains.MainsAverage(*(c.read_u16 for c in chans), clock)
    h = avg.heel()
    assert abs(h - 20000) <= 1 and abs(avg.arch() - 9000) <= 1 and abs(avg.fore() - 30000) <= 1
    # four reads per channel, 5 ms apart, 15 ms in all
    for c in chans:
        assert [clock.ticks_diff(t, c.times[0]) for t in c.times] == [0, 5000, 10000, 15000]


@pytest.mark.parametrize("phase", [0.0, 1.1, 2.5, 4.4])
def test_60_hz_pickup_cancels_with_reads_a_quarter_of_its_period_apart(phase):
    clock = FakeClock()
    chans = [PickupADC(clock, level, phase + k, hz=60.0)
             for k, level in enumerate((20000, 9000, 30000))]
    avg = mains.MainsAverage(*(c.read_u16 for c in chans), clock, 60)
    h = avg.heel()
    # 4166 us apart (16667 / 4, in whole us): what the 0.7 us shortfall leaves is a
    # count or two of the 4000
    assert abs(h - 20000) <= 2 and abs(avg.arch() - 9000) <= 2 and abs(avg.fore() - 30000) <= 2
    for c in chans:
        assert [clock.ticks_diff(t, c.times[0]) for t in c.times] == [0, 4166, 8332, 12498]
    # the 50 Hz spacing leaves much of 60 Hz pickup in
    clock = FakeClock()
    chans = [PickupADC(clock, 20000, phase + k, hz=60.0) for k in range(3)]
    wrong = mains.MainsAverage(*(c.read_u16 for c in chans), clock, 50).heel()
    assert abs(wrong - 20000) > 100 or abs(math.sin(phase)) < 0.2


def test_clipped_pickup_on_an_unloaded_channel_is_steady():
    # an FSR at 0 V: the ADC keeps only the positive half of the pickup; over a whole
    # period it averages to between A/4 and A*sqrt(2)/4 whatever the phase
    got = []
    for i in range(40):
        clock = FakeClock()
        chans = [PickupADC(clock, 0, 2 * math.pi * i / 40) for _ in range(3)]
        got.append(mains.MainsAverage(*(c.read_u16 for c in chans), clock).heel())
    assert PICKUP // 4 - 1 <= min(got) and max(got) <= PICKUP * math.sqrt(2) / 4 + 1


def test_reads_keep_their_spacing_when_a_read_is_slow():
    clock = FakeClock()

    def slow_read():
        clock.work(1200)  # each read takes 1.2 ms: the waits shorten, the grid stays
        return 1000

    times = []

    def timed_read():
        times.append(clock.ticks_us())
        return slow_read()

    mains.MainsAverage(timed_read, slow_read, slow_read, clock).heel()
    assert [clock.ticks_diff(t, times[0]) for t in times] == [0, 5000, 10000, 15000]


def test_the_bench_models_the_same_acquisition():
    src = (FIRMWARE / "mains.py").read_text()

    def const(name):
        return int(re.search(rf"^{name} = const\((\d+)\)", src, re.M).group(1))

    assert faultbench.AVERAGE_READS == const("_READS") == 1 << const("_SHIFT")
    gait_src = (FIRMWARE / "gait.py").read_text()
    per5 = re.search(r"^_READS_UP_TO_PER_5 = const\((\d+)\)", gait_src, re.M).group(1)
    assert faultbench.AVERAGE_UP_TO_PER_5 == int(per5)
    for hz in (50, 60):
        gap_us = const("_PERIOD_US_X_HZ") // (hz * const("_READS"))
        assert faultbench.read_gap_s(hz) == gap_us / 1e6
        assert abs(const("_READS") * gap_us - 1e6 / hz) < 4  # one mains period
        for rate in range(50, 101):
            cfg = {"rate_hz": rate, "mains_hz": hz}
            assert gait.reads_hz(rate, hz) == faultbench.read_hz(rate, hz), cfg
    assert faultbench.average_up_to_hz(50) == 60 and faultbench.average_up_to_hz(60) == 72
    assert faultbench.setting(50.2) == 50 and faultbench.setting(60.2) == 60
    assert faultbench.other_mains(50.2) == 60.2 and faultbench.other_mains(60.2) == 50.2
    assert faultbench.WRONG_MAINS == const("_F_MAINS")
    assert faultbench.NOISY == const("_F_NOISY")


def test_the_reads_follow_the_setting_and_take_60_hz_spacing_up_to_72_hz():
    hz = gait.reads_hz
    assert [hz(r, 50) for r in (50, 60, 61, 72, 73, 100)] == [50, 50, 60, 60, 0, 0]
    assert [hz(r, 60) for r in (50, 60, 72, 73, 100)] == [60, 60, 60, 0, 0]


def _walk_check(rate, set_hz, hum_hz, seconds=60, hum=PICKUP, noise=0, base=20000, seed=1):
    """MainsAverage at `rate` with reads for set_hz over a loaded channel that swings
    (base +- 8000 counts at 1 Hz, a stance-like load that never unloads) with hum_hz
    pickup and Gaussian noise: the check's `wrong` bits at the end."""
    import random

    rnd = random.Random(seed)
    clock = FakeClock()
    t0 = clock.ticks_us()

    class Chan:
        def __init__(self, phase):
            self.phase = phase

        def read_u16(self):
            t = clock.ticks_diff(clock.ticks_us(), t0) / 1e6
            v = (base + 8000 * math.sin(2 * math.pi * t) + noise * rnd.gauss(0, 1)
                 + hum * math.sin(2 * math.pi * hum_hz * t + self.phase))
            return min(65535, max(0, round(v)))

    chans = [Chan(k) for k in range(3)]
    avg = mains.MainsAverage(*(c.read_u16 for c in chans), clock, set_hz, rate)
    period = 1_000_000 // rate
    for k in range(seconds * rate):
        due = clock.ticks_add(t0, k * period)
        left = clock.ticks_diff(due, clock.ticks_us())
        if left > 0:
            clock.sleep_us(left)
        avg.heel()
    return avg.check


@pytest.mark.parametrize("rate,set_hz,hum_hz", [(60, 50, 60.2), (58, 50, 60.0),
                                                 (50, 60, 50.2), (55, 60, 49.9)])
def test_hum_at_the_other_mains_frequency_is_reported(rate, set_hz, hum_hz):
    check = _walk_check(rate, set_hz, hum_hz)
    assert check.wrong == 0b111
    # Status: code 6 on each channel, in place of ok and noisy, not of a hardware fault
    assert check.faults(0x000) == 0x666
    assert check.faults(0x041) == 0x661  # heel dead stays dead, arch noisy says why


@pytest.mark.parametrize("rate,set_hz,hum_hz,noise", [
    (60, 50, 50.2, 0), (50, 50, 49.8, 0), (50, 60, 60.2, 0), (72, 60, 60.1, 0),
    (60, 50, 0.0, 0), (50, 60, 0.0, 0), (60, 50, 0.0, 2000), (50, 60, 50.2, 2000),
])
def test_hum_the_reads_cancel_noise_and_the_load_s_own_slope_are_not(rate, set_hz, hum_hz,
                                                                     noise):
    # the load swings 50 000 counts/s at its steepest (16 counts/ms, 400 in a sample):
    # without the slope taken out each sample's combination would carry 2 x 80 of it
    check = _walk_check(rate, set_hz, hum_hz, hum=PICKUP if hum_hz else 0, noise=noise)
    assert check.wrong == 0
    assert check.faults(0x040) == 0x040


def test_clipped_reads_say_nothing_about_the_hum():
    # an unloaded FSR: every sample has reads clipped at 0, so no sample is judged
    check = _walk_check(60, 50, 60.2, seconds=20, base=-9000)
    assert check.wrong == 0
    assert all(check._v[c * mains._N + mains._ACC] == 0 for c in range(3))


def test_the_report_clears_when_the_hum_goes():
    check = _walk_check(60, 50, 60.2, seconds=30)
    assert check.wrong == 0b111
    v = check._v
    for _ in range(3000):  # clean samples from here: steady 20000, nothing in q
        for c in range(3):
            check.sample(c, 0, 20000, True)
    assert check.wrong == 0
    assert all(abs(v[c * mains._N + mains._ACC]) >> mains._LEAK < mains._FLAG_OFF
               for c in range(3))


_CHECK = """
from mains import MainsCheck
check = MainsCheck(RATE, GAP)
seed = 12345
out = []


def draw():  # ZX81's generator: every value stays a small int on a 31-bit port
    global seed
    seed = (seed * 75 + 74) % 65537
    return seed


for k in range(4000):
    for c in range(3):
        q = ((draw() << 2) & 0x3FFFF) - 0x20000  # +-2**17: a sample's r0 - r1 + r2 - r3
        if k & 256:
            q = (q >> 4) + 3000 * (1 - 2 * ((k >> 5) & 1))  # spells of steady hum
        m = draw() & 0xFFFF
        check.sample(c, q, m, draw() & 3 != 0)
    if k % 97 == 0:
        out.append(check.wrong)
print(" ".join(str(x) for x in out), " ".join(str(x) for x in check._v))
"""


@pytest.mark.parametrize("rate,gap", [(50, 4166), (60, 5000), (72, 4166)])
def test_the_check_gives_the_same_verdicts_under_micropython(rate, gap):
    script = _CHECK.replace("RATE", str(rate)).replace("GAP", str(gap))
    import contextlib
    import io

    mpy = run_micropython(script, path=[str(FIRMWARE)])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(script, "<check>", "exec"), {"__name__": "check"})
    assert mpy.split() == buf.getvalue().split()
    words = [int(x) for x in mpy.split()[:42]]
    assert any(words) and not all(words)  # the spells of hum were seen, and went
    assert all(abs(int(x)) < 2**29 for x in mpy.split())


_HEAP = """
import gc, micropython
import fw_fakes as F
from mains import MainsAverage
clock = F.FakeClock()
adcs = [F.FakeADC([1000 + k] * 400) for k in range(3)]
avg = MainsAverage(adcs[0].read_u16, adcs[1].read_u16, adcs[2].read_u16, clock, MAINS)


def samples(avg, n):
    h = 0
    while n > 0:
        h = avg.heel() + avg.arch() + avg.fore()
        n -= 1
    return h


h = samples(avg, 1)  # every global exists before the lock
gc.collect()
micropython.heap_lock()
try:
    h = samples(avg, 90)
except MemoryError:
    h = -1
micropython.heap_unlock()
print("ok" if h >= 0 else "ALLOCATED", h)
"""


@pytest.mark.parametrize("mains_hz", [50, 60])
def test_reads_allocate_nothing_under_heap_lock(mains_hz):
    script = _HEAP.replace("MAINS)", f"{mains_hz})")
    out = run_micropython(script, path=[str(FIRMWARE), str(ROOT / "tests")])
    assert out.split() == ["ok", str(1000 + 1001 + 1002)]


def _device_at(rate, samples, mains_hz=50):
    import lazy

    from tests import fw_fakes as F

    dev, ble, fs = F.build(samples)
    dev.cfg["rate_hz"] = rate
    dev.cfg["mains_hz"] = mains_hz
    lazy.run("modes", "restart_detector", dev)
    return dev


@pytest.mark.parametrize("rate,mains_hz,gap_us", [(50, 50, 5000), (60, 50, 5000),
                                                 (61, 50, 4166), (72, 50, 4166),
                                                 (72, 60, 4166)])
def test_the_device_reads_four_times_per_sample_up_to_6_5_of_mains(rate, mains_hz, gap_us):
    from array import array

    # read k of channel c returns 1000 c + 10 k: the sample must be their mean
    n = 40
    samples = array("H", [0] * (3 * n))
    for k in range(n):
        for c in range(3):
            samples[3 * k + c] = 1000 * (c + 1) + 10 * k
    dev = _device_at(rate, samples, mains_hz)
    seen = []
    dev.det.feed = lambda h, a, f: seen.append((h, a, f)) or 0
    t0 = dev._clock.ticks_us()
    dev.sample()
    assert dev._clock.ticks_diff(dev._clock.ticks_us(), t0) >= 3 * gap_us
    dev.sample()
    assert seen == [(1015, 2015, 3015), (1055, 2055, 3055)]
    avg = dev._read_h.__self__
    assert type(avg).__name__ == "MainsAverage" and avg._gap == gap_us
    assert dev.det.mains_hz == mains_hz


def test_status_carries_the_hum_check_with_the_detector_s_faults():
    from array import array
    from types import SimpleNamespace

    from host_tools.ble import protocol

    dev = _device_at(60, array("H", [20000, 9000, 30000] * 40), 50)
    assert dev._mains is dev._read_h.__self__.check
    dev.det = SimpleNamespace(faults=0x040, steps=0)  # the detector's word: arch noisy
    dev._update_status()
    assert protocol.decode_status(bytes(dev._status)).faults == 0x040
    dev._mains.wrong = 0b011  # hum at 60 Hz on heel and arch
    dev._update_status()
    status = protocol.decode_status(bytes(dev._status))
    assert status.faults == 0x066
    assert status.faults_text() == "heel wrong-mains, arch wrong-mains"
    assert protocol.fault_hints(["heel wrong-mains"]) == [protocol.WRONG_MAINS_HINT]
    # one read per sample: no check, the detector's word as it is
    dev = _device_at(100, array("H", [20000, 9000, 30000] * 40), 50)
    assert dev._mains is None
    dev.det = SimpleNamespace(faults=0x040, steps=0)
    dev._update_status()
    assert protocol.decode_status(bytes(dev._status)).faults == 0x040


@pytest.mark.parametrize("rate,mains_hz", [(73, 50), (73, 60)])
def test_the_device_reads_once_per_sample_above_6_5_of_mains(rate, mains_hz):
    from array import array

    samples = array("H", [1000, 2000, 3000, 1010, 2010, 3010] * 4)
    dev = _device_at(rate, samples, mains_hz)
    seen = []
    dev.det.feed = lambda h, a, f: seen.append((h, a, f)) or 0
    dev.sample()
    dev.sample()
    assert seen == [(1000, 2000, 3000), (1010, 2010, 3010)]
    assert dev._read_h == dev.adcs[0].read_u16
    assert dev.det.mains_hz == mains_hz


_DEVICE_HEAP = """
import gc, micropython, lazy
from array import array
import fw_fakes as F
samples = array("H", [2000, 2500, 1800] * 12000)
dev, ble, fs = F.build(samples)
dev.cfg["rate_hz"] = 50
lazy.run("modes", "restart_detector", dev)
ble.connect(); ble.pair()
for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_rsc, dev.ble.h_raw):
    ble.subscribe(h)
ble.record = False
dev.run(600)
taken = 0
gc.collect()
micropython.heap_lock()
try:
    taken = dev.loop(1500)
except MemoryError:
    taken = -1
micropython.heap_unlock()
print(taken)
"""


def test_the_50_hz_loop_allocates_nothing_under_heap_lock():
    out = run_micropython(_DEVICE_HEAP, path=[str(FIRMWARE), str(ROOT / "tests")])
    assert out.split() == ["1500"]
