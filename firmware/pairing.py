# Who may bond with the insole, and when: the pairing window and the foot gesture
# that opens it (docs/SECURITY.md).
#
# PairingWindow: new bonds are taken only while it is open, for WINDOW_MS after
# power-on or after the pairing gesture; MAX_FAILURES failed pairings close it early
# (each failed passkey attempt can tell an attacker one bit of the fixed passkey).
# It runs on the clock module's ms ticks, so it also closes while the insole serves
# BLE without sampling. open/failures are read by the BLE IRQ handler; only the main
# loop changes them.
#
# TapGesture: the wearer stands on the ball of the foot (forefoot loaded, heel up)
# and taps the heel on the floor quickly, then holds the heel up for a second.
# PAIR_TAPS taps open the pairing window, FORGET_TAPS taps forget every bond. A tap
# is the heel loaded for TAP_MIN_MS..TAP_MAX_MS; the heel-up gaps between taps last
# GAP_MIN_MS..GAP_MAX_MS; the forefoot stays loaded from the heel-up lead-in to the
# end of the hold. Walking unloads the forefoot in every swing, standing and the
# exercises keep the heel down far longer than a tap (or move the toes, not the
# heel), so none of them makes a count (tests/test_pairing_gesture.py runs every
# recording of ../shared/data and the exercise generators through it).
#
# Same rules as gait.py: hardware-free, integer-only, identical on CPython and
# MicroPython, nothing allocated per sample, every value within +-2**29.
try:
    import micropython
    from micropython import const
except ImportError:  # CPython: the same code, interpreted

    class micropython:  # type: ignore[no-redef]  # noqa: N801  (stands in for the module)
        @staticmethod
        def viper(f):
            return f

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x

    def ptr32(buf):  # viper's pointer cast; an array indexes the same way
        return buf


from array import array

from gait import shift_for

_WINDOW_MS = const(120000)  # two minutes
_MAX_FAILURES = const(3)

_GESTURE_NONE = const(0)
_GESTURE_PAIR = const(1)  # open the pairing window
_GESTURE_FORGET = const(2)  # forget every bond (and open the window)

_PAIR_TAPS = const(6)
_FORGET_TAPS = const(12)
_TAP_MIN_MS = const(40)  # a shorter heel load is a bounce of the sensor
_TAP_MAX_MS = const(350)  # a longer one is standing on the heel, a step or a lowering
_GAP_MIN_MS = const(80)
_GAP_MAX_MS = const(700)
_LEAD_MS = const(300)  # heel up, forefoot loaded, before the first tap
_HOLD_MS = const(1000)  # ... and after the last one: the gesture is over
_MIN_SPAN = const(2500)  # counts: a smaller loaded-minus-floor is not a live sensor
_LOADED = const(512)  # of _FULL: above half the span is loaded
_UNLOADED = const(256)  # below a quarter is unloaded (hysteresis)
_FULL = const(1024)
_PEAK_DECAY_MS = const(8000)  # the loaded reference sinks towards the floor
_FLOOR_RISE_MS = const(8000)  # the floor creeps up towards the reading
_HUGE = const(0x1FFFFFFF)

# states
_IDLE = const(0)  # waiting for heel up with the forefoot loaded
_LEAD = const(1)  # heel up, forefoot loaded: counting the lead-in
_GAP = const(2)  # heel up between taps (or after the last one)
_TAP = const(3)  # heel down in a tap


# TapGesture's state: one int32 array, every entry non-negative (viper loads ptr32
# words unsigned on 64-bit ports and signed on 32-bit ones: they agree on 0..2**31-1)
_HF = const(0)  # heel floor, counts * 16
_HT = const(1)  # heel loaded reference, counts * 16
_FF = const(2)  # forefoot floor
_FT = const(3)  # forefoot loaded reference
_LIVE = const(4)  # 1 once the levels hold a reading
_STATE = const(5)
_TAPS = const(6)
_N = const(7)  # samples in the current state
_RISE_K = const(8)  # the floor's creep, as a shift
_DECAY_K = const(9)  # the reference's decay, as a shift
_TAP_MIN = const(10)  # the timing limits, in samples
_TAP_MAX = const(11)
_GAP_MIN = const(12)
_GAP_MAX = const(13)
_LEAD_N = const(14)
_HOLD_N = const(15)
_COUNT = const(16)  # completed gestures (saturates)
_NSTATE = const(17)


class TapGesture:
    """feed(heel, arch, fore) once per sample; returns GESTURE_PAIR or
    GESTURE_FORGET on the sample that completes one, else GESTURE_NONE.

    feed() is viper over an int32 state array: it runs in the sampling loop, where
    as bytecode it cost more than the step detector (0.5 against 0.3 us a call on
    the unix port). pairing.py is imported once at boot, so its native code takes
    executable memory once (docs/HARDWARE.md, "Memory and CPU budget")."""

    def __init__(self, rate_hz=100):
        self._st = array("i", [0] * _NSTATE)
        self.set_rate(rate_hz)

    @property
    def gestures(self):
        return self._st[_COUNT]

    @property
    def taps(self):
        """Taps of the gesture in progress."""
        return self._st[_TAPS]

    def set_rate(self, rate_hz):
        self.rate_hz = rate_hz
        st = self._st
        st[_TAP_MIN] = self._samples(_TAP_MIN_MS)
        st[_TAP_MAX] = self._samples(_TAP_MAX_MS)
        st[_GAP_MIN] = self._samples(_GAP_MIN_MS)
        st[_GAP_MAX] = self._samples(_GAP_MAX_MS)
        st[_LEAD_N] = self._samples(_LEAD_MS)
        st[_HOLD_N] = self._samples(_HOLD_MS)
        st[_DECAY_K] = shift_for(self._samples(_PEAK_DECAY_MS))
        st[_RISE_K] = shift_for(self._samples(_FLOOR_RISE_MS))
        self.reset()

    def _samples(self, ms):
        n = ms * self.rate_hz // 1000
        return n if n > 0 else 1

    def reset(self):
        st = self._st
        for i in (_HF, _HT, _FF, _FT, _LIVE, _STATE, _TAPS, _N, _COUNT):
            st[i] = 0

    @micropython.viper
    def feed(self, heel: int, arch: int, fore: int) -> int:
        s = ptr32(self._st)
        # Each sensor's floor averages up slowly and drops to a dip at once; its
        # loaded reference rises to a peak at once and decays slowly; the load is
        # the reading's place in the span between them (0.._FULL, -1 while the span
        # is too small to be a live sensor). Values stay below 2**21 (counts * 16).
        rise_k = s[_RISE_K]
        decay_k = s[_DECAY_K]
        xh = heel << 4
        xf = fore << 4
        if s[_LIVE] == 0:
            s[_LIVE] = 1
            s[_HF] = xh
            s[_HT] = xh
            s[_FF] = xf
            s[_FT] = xf
        f = s[_HF]
        t = s[_HT]
        if xh < f:
            f = xh
        else:
            f += (xh - f) >> rise_k
        if xh > t:
            t = xh
        else:
            t -= (t - xh) >> decay_k
        if t < f:
            t = f
        s[_HF] = f
        s[_HT] = t
        span = (t - f) >> 4
        nh = -1
        if span >= _MIN_SPAN:
            nh = ((xh - f) >> 4) * _FULL // span  # load <= 65535: product < 2**26
        f = s[_FF]
        t = s[_FT]
        if xf < f:
            f = xf
        else:
            f += (xf - f) >> rise_k
        if xf > t:
            t = xf
        else:
            t -= (t - xf) >> decay_k
        if t < f:
            t = f
        s[_FF] = f
        s[_FT] = t
        span = (t - f) >> 4
        nf = -1
        if span >= _MIN_SPAN:
            nf = ((xf - f) >> 4) * _FULL // span
        if nf < _LOADED or nh < 0:
            # a sensor not live yet, or the forefoot unloaded: no gesture in progress
            s[_STATE] = _IDLE
            s[_TAPS] = 0
            s[_N] = 0
            return _GESTURE_NONE
        n = s[_N]
        if n < _HUGE:
            n += 1
        s[_N] = n
        st = s[_STATE]
        heel_up = nh < _UNLOADED
        heel_down = nh >= _LOADED
        if st == _IDLE:
            if heel_up:
                s[_STATE] = _LEAD
                s[_N] = 1
            return _GESTURE_NONE
        if st == _LEAD:
            if heel_down:
                if n > s[_LEAD_N]:
                    s[_STATE] = _TAP
                    s[_N] = 1
                else:
                    s[_STATE] = _IDLE
                    s[_TAPS] = 0
                    s[_N] = 0
            return _GESTURE_NONE
        if st == _TAP:
            if n > s[_TAP_MAX]:
                # the heel stays down: standing, not tapping
                s[_STATE] = _IDLE
                s[_TAPS] = 0
                s[_N] = 0
            elif heel_up:
                if n < s[_TAP_MIN]:
                    s[_STATE] = _IDLE
                    s[_TAPS] = 0
                    s[_N] = 0
                else:
                    s[_TAPS] = s[_TAPS] + 1
                    s[_STATE] = _GAP
                    s[_N] = 1
            return _GESTURE_NONE
        # _GAP: heel up after a tap
        taps = s[_TAPS]
        if heel_down:
            if n < s[_GAP_MIN] or n > s[_GAP_MAX] or taps >= _FORGET_TAPS:
                s[_STATE] = _IDLE
                s[_TAPS] = 0
                s[_N] = 0
            else:
                s[_STATE] = _TAP
                s[_N] = 1
            return _GESTURE_NONE
        if n < s[_HOLD_N]:
            return _GESTURE_NONE
        s[_STATE] = _LEAD  # still heel up: a new gesture may follow at once
        s[_TAPS] = 0
        s[_N] = n
        if taps == _PAIR_TAPS or taps == _FORGET_TAPS:
            if s[_COUNT] < _HUGE:
                s[_COUNT] = s[_COUNT] + 1
            if taps == _PAIR_TAPS:
                return _GESTURE_PAIR
            return _GESTURE_FORGET
        return _GESTURE_NONE


class PairingWindow:
    """Whether a new bond may be made now. clock: the time module (ticks_ms,
    ticks_add, ticks_diff)."""

    def __init__(self, clock, log):
        self._clock = clock
        self._log = log
        self.open = False
        self.failures = 0  # failed pairings while this window was open
        self._until = 0
        self.opened = 0  # times it opened (saturates)

    def start(self, why):
        """Open the window for WINDOW_MS from now (main loop)."""
        c = self._clock
        self._until = c.ticks_add(c.ticks_ms(), _WINDOW_MS)
        self.failures = 0
        self.open = True
        if self.opened < _HUGE:
            self.opened += 1
        self._log("pair", "window open %d s (%s)" % (_WINDOW_MS // 1000, why))

    def close(self, why):
        if self.open:
            self.open = False
            self._log("pair", "window closed (%s)" % why)

    def failed(self):
        """A pairing failed while the window was open (main loop)."""
        if not self.open:
            return
        self.failures += 1
        if self.failures >= _MAX_FAILURES:
            self.close("%d failed pairings" % self.failures)

    def update(self):
        """Close the window once its time is up (main loop, often: ticks_diff
        only tells the time apart within 2**29 ms)."""
        if self.open:
            c = self._clock
            if c.ticks_diff(self._until, c.ticks_ms()) <= 0:
                self.close("time up")
