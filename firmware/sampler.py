# Fixed-rate sample timing by absolute deadlines.
#
# Each deadline is the previous one plus the period (with the remainder of
# 1e6/rate carried, so the average rate is exact), never "now + period": a late
# sample does not shift the ones after it. A sample taken a whole period or more
# after its deadline counts as an overrun; beyond _RESYNC periods behind, the
# schedule restarts from now instead of racing to catch up.
#
# The sample counter is the device clock (count, ms, uptime_s): raw ticks_us
# values wrap every ~17.9 min and never leave this module. Every counter stays
# below 2**29 (an ESP32 small int): count, ms and uptime_s wrap there (uptime
# after 17 years), overruns saturates.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from array import array

_MASK = const(0x1FFFFFFF)
_RESYNC = const(8)  # periods behind before the schedule restarts
_SLEEP_MS_FROM = const(2000)  # us left: sleep_ms yields to the RTOS (BLE), sleep_us spins


# Sampler's integer state: one array (self._v) in place of 7 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_V_Q = const(0)
_V_R = const(1)
_V_FRAC = const(2)
_V_MS_Q = const(3)
_V_MS_R = const(4)
_V_MS_FRAC = const(5)
_V_STARTED = const(6)
_V_N = const(7)


class Sampler:
    def __init__(self, rate_hz, clock):
        self._v = array("i", [0] * _V_N)
        self._clock = clock  # the time module, or a test double with the same calls
        self.count = 0  # samples taken (wraps at 2**29)
        self.ms = 0  # device clock, ms since the first sample (wraps at 2**29)
        self.uptime_s = 0  # whole seconds of samples (wraps at 2**29: a change is a tick)
        self.overruns = 0  # late samples (saturates at 2**29 - 1)
        self._ms_in_s = 0
        self.set_rate(rate_hz)

    def set_rate(self, rate_hz):
        v = self._v
        self.rate_hz = rate_hz
        v[_V_Q] = 1000000 // rate_hz
        v[_V_R] = 1000000 % rate_hz
        v[_V_FRAC] = 0
        v[_V_MS_Q] = 1000 // rate_hz
        v[_V_MS_R] = 1000 % rate_hz
        v[_V_MS_FRAC] = 0
        v[_V_STARTED] = False

    def wait(self):
        """Return when the next sample is due (call right before sampling)."""
        v = self._v
        c = self._clock
        if not v[_V_STARTED]:
            v[_V_STARTED] = True
            self._deadline = c.ticks_us()
        else:
            d = c.ticks_add(self._deadline, v[_V_Q])
            v[_V_FRAC] += v[_V_R]
            if v[_V_FRAC] >= self.rate_hz:
                v[_V_FRAC] -= self.rate_hz
                d = c.ticks_add(d, 1)
            self._deadline = d
            while True:
                left = c.ticks_diff(d, c.ticks_us())
                if left <= 0:
                    break
                if left >= _SLEEP_MS_FROM:
                    c.sleep_ms(left // 1000 - 1)
                else:
                    c.sleep_us(left)
                    break
            if -left >= v[_V_Q]:
                if self.overruns < _MASK:
                    self.overruns += 1
                if -left >= v[_V_Q] * _RESYNC:
                    self._deadline = c.ticks_us()
                    v[_V_FRAC] = 0
        # the device clock moves on by one sample
        self.count = (self.count + 1) & _MASK
        step = v[_V_MS_Q]
        v[_V_MS_FRAC] += v[_V_MS_R]
        if v[_V_MS_FRAC] >= self.rate_hz:
            v[_V_MS_FRAC] -= self.rate_hz
            step += 1
        self.ms = (self.ms + step) & _MASK
        self._ms_in_s += step
        if self._ms_in_s >= 1000:
            self._ms_in_s -= 1000
            self.uptime_s = (self.uptime_s + 1) & _MASK
