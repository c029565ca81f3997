"""The test fakes' clock (tests/fw_fakes.py FakeClock) runs under MicroPython next to
the firmware, so it must not compute what the device's time module never would: on a
31-bit port (the ESP32) an int outside -2**30..2**30-1 is a heap object. Every
arithmetic result and stored value of the fake is checked against that range while
the firmware's sampler and idle loop run it across both tick wraps; the fake also
answers as extmod/modtime.c does (OverflowError from ticks_add, ticks_diff's sign)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT / "firmware"), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from sampler import Sampler  # noqa: E402

from tests.boundcheck import SMALL_INT_31, Bound, load  # noqa: E402

SMALL_MIN, SMALL_MAX = SMALL_INT_31
PERIOD, HALF = 1 << 30, 1 << 29


def checked(source: str) -> types.ModuleType:
    return load(source, "fakes_checked", (SMALL_MIN, SMALL_MAX))


def checked_fakes() -> types.ModuleType:
    return checked((ROOT / "tests" / "fw_fakes.py").read_text())


def _reference_diff(a, b):
    return ((a - b + HALF) % PERIOD) - HALF  # modtime.c time_ticks_diff


def test_the_checker_catches_a_sum_past_the_small_ints():
    # the arithmetic the fake clock had: a ticks value plus a delta, masked afterwards
    old = checked(
        "class Clock:\n"
        "    MASK = 0x3FFFFFFF\n"
        "    def ticks_add(self, t, delta):\n"
        "        return (t + delta) & self.MASK\n"
    )
    with pytest.raises(Bound):
        old.Clock().ticks_add((1 << 30) - 10, 20)


def test_fake_clock_stays_within_small_ints_across_the_wraps():
    F = checked_fakes()
    for rate in (50, 100, 333, 400):
        clock = F.FakeClock()
        s = Sampler(rate, clock)
        us0, ms0 = clock.us, clock.ms
        for i in range(rate * 12):  # 12 s: both counters wrap (5 s after the start)
            s.wait()
            if i % 7 == 0:
                clock.work(1234)  # a slow sample
        assert clock.us < us0 and clock.ms < ms0  # both wrapped
        assert clock.ticks_diff(clock.ticks_ms(), ms0) == pytest.approx(12000, abs=20)
    # long sleeps and the extremes of ticks_add / ticks_diff
    clock = F.FakeClock()
    clock.sleep_ms(3 * 24 * 3600 * 1000)  # three days in one call
    clock.work(HALF + 12345)
    for t in (0, 1, HALF - 1, HALF, PERIOD - 2, PERIOD - 1):
        for d in (HALF - 1, 1 - HALF, 1, -1, 0):
            r = clock.ticks_add(t, d)
            assert 0 <= r < PERIOD and r == (t + d) % PERIOD
            assert clock.ticks_diff(r, t) == d
        for u in (0, HALF - 1, HALF, HALF + 1, PERIOD - 1):
            assert clock.ticks_diff(t, u) == _reference_diff(t, u)


def test_fake_clock_ms_and_us_agree_and_ticks_add_refuses_half_a_period():
    from fw_fakes import FakeClock

    clock = FakeClock()
    us0, ms0 = clock.ticks_us(), clock.ticks_ms()
    for step in (999, 1, 2500, 7, 1_000_000, 3, 490):
        clock.work(step)
    gone_us = clock.ticks_diff(clock.ticks_us(), us0)
    assert gone_us == 1_004_000
    assert clock.ticks_diff(clock.ticks_ms(), ms0) == gone_us // 1000
    for bad in (HALF, -HALF, 1 << 30):
        with pytest.raises(OverflowError):
            clock.ticks_add(0, bad)
