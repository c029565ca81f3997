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
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from gait import shift_for

WINDOW_MS = const(120000)  # two minutes
MAX_FAILURES = const(3)

GESTURE_NONE = const(0)
GESTURE_PAIR = const(1)  # open the pairing window
GESTURE_FORGET = const(2)  # forget every bond (and open the window)

PAIR_TAPS = const(6)
FORGET_TAPS = const(12)
TAP_MIN_MS = const(40)  # a shorter heel load is a bounce of the sensor
TAP_MAX_MS = const(350)  # a longer one is standing on the heel, a step or a lowering
GAP_MIN_MS = const(80)
GAP_MAX_MS = const(700)
LEAD_MS = const(300)  # heel up, forefoot loaded, before the first tap
HOLD_MS = const(1000)  # ... and after the last one: the gesture is over
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


class _Level:
    # A sensor's unloaded floor and loaded reference, both counts * 16, and its load
    # as a fraction of the span (0.._FULL, -1 while the span is too small).
    def __init__(self, decay_k, rise_k):
        self._decay_k = decay_k
        self._rise_k = rise_k
        self.reset()

    def reset(self):
        self.floor = -1
        self.top = 0

    def update(self, x):
        x16 = x << 4
        f = self.floor
        t = self.top
        if f < 0:
            f = x16
            t = x16
        if x16 < f:
            f = x16  # dips pull the floor down at once
        else:
            f += (x16 - f) >> self._rise_k
        if x16 > t:
            t = x16  # rises lift the reference at once
        else:
            t -= (t - x16) >> self._decay_k
        if t < f:
            t = f
        self.floor = f
        self.top = t
        span = (t - f) >> 4
        if span < _MIN_SPAN:
            return -1
        return ((x16 - f) >> 4) * _FULL // span  # load <= 65535: product < 2**26


class TapGesture:
    """feed(heel, arch, fore) once per sample; returns GESTURE_PAIR or
    GESTURE_FORGET on the sample that completes one, else GESTURE_NONE."""

    def __init__(self, rate_hz=100):
        self.set_rate(rate_hz)

    def set_rate(self, rate_hz):
        self.rate_hz = rate_hz
        self._tap_min = self._samples(TAP_MIN_MS)
        self._tap_max = self._samples(TAP_MAX_MS)
        self._gap_min = self._samples(GAP_MIN_MS)
        self._gap_max = self._samples(GAP_MAX_MS)
        self._lead = self._samples(LEAD_MS)
        self._hold = self._samples(HOLD_MS)
        decay_k = shift_for(self._samples(_PEAK_DECAY_MS))
        rise_k = shift_for(self._samples(_FLOOR_RISE_MS))
        self._heel = _Level(decay_k, rise_k)
        self._fore = _Level(decay_k, rise_k)
        self.reset()

    def _samples(self, ms):
        n = ms * self.rate_hz // 1000
        return n if n > 0 else 1

    def reset(self):
        self._heel.reset()
        self._fore.reset()
        self._restart()
        self.gestures = 0  # completed gestures (saturates)

    def _restart(self):
        self._state = _IDLE
        self._taps = 0
        self._n = 0  # samples in the current state

    def feed(self, heel, arch, fore):
        nh = self._heel.update(heel)
        nf = self._fore.update(fore)
        if nh < 0 or nf < 0 or nf < _LOADED:
            # a sensor not live yet, or the forefoot unloaded: no gesture in progress
            self._restart()
            return GESTURE_NONE
        n = self._n
        if n < _HUGE:
            n += 1
        self._n = n
        st = self._state
        heel_up = nh < _UNLOADED
        heel_down = nh >= _LOADED
        if st == _IDLE:
            if heel_up:
                self._state = _LEAD
                self._n = 1
            return GESTURE_NONE
        if st == _LEAD:
            if heel_down:
                if n > self._lead:
                    self._state = _TAP
                    self._n = 1
                else:
                    self._restart()
            return GESTURE_NONE
        if st == _TAP:
            if n > self._tap_max:
                self._restart()  # the heel stays down: standing, not tapping
            elif heel_up:
                if n < self._tap_min:
                    self._restart()
                else:
                    self._taps += 1
                    self._state = _GAP
                    self._n = 1
            return GESTURE_NONE
        # _GAP: heel up after a tap
        if heel_down:
            if n < self._gap_min or n > self._gap_max or self._taps >= FORGET_TAPS:
                self._restart()
            else:
                self._state = _TAP
                self._n = 1
            return GESTURE_NONE
        if n < self._hold:
            return GESTURE_NONE
        taps = self._taps
        self._restart()
        self._state = _LEAD  # still heel up: a new gesture may follow at once
        self._n = n
        if taps == PAIR_TAPS or taps == FORGET_TAPS:
            if self.gestures < _HUGE:
                self.gestures += 1
            return GESTURE_PAIR if taps == PAIR_TAPS else GESTURE_FORGET
        return GESTURE_NONE


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
        self._until = c.ticks_add(c.ticks_ms(), WINDOW_MS)
        self.failures = 0
        self.open = True
        if self.opened < _HUGE:
            self.opened += 1
        self._log("pair", "window open %d s (%s)" % (WINDOW_MS // 1000, why))

    def close(self, why):
        if self.open:
            self.open = False
            self._log("pair", "window closed (%s)" % why)

    def failed(self):
        """A pairing failed while the window was open (main loop)."""
        if not self.open:
            return
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.close("%d failed pairings" % self.failures)

    def update(self):
        """Close the window once its time is up (main loop, often: ticks_diff
        only tells the time apart within 2**29 ms)."""
        if self.open:
            c = self._clock
            if c.ticks_diff(self._until, c.ticks_ms()) <= 0:
                self.close("time up")
