# Shared parts of the exercise modes (firmware/exercise.py and the four mode
# modules): event bits, packet kinds, the device clock and the per-sensor levels.
#
# Same rules as gait.py: hardware-free, integer-only, identical on CPython and
# MicroPython, nothing allocated per sample, every stored value within +-2**29;
# event counts saturate at COUNT_MAX.
#
# Plain bytecode, no @micropython.native: the device imports a mode's modules when
# the mode starts and drops them when it ends, and on an ESP32 every import of
# native code takes fresh executable memory that only a soft reset gives back
# (ports/esp32/main.c, esp_native_code_commit). Native code made these counters only
# about 1.25x faster on the unix port (docs/HARDWARE.md, "Memory and CPU budget").
# No @property on a class whose feed() runs per sample: with one, every attribute
# store on its instances looks the name up in the class first (MicroPython's
# py/objtype.c, mp_obj_instance_store_attr), and feed() stores dozens per sample.
#
# No calibration: each sensor learns its unloaded floor and its loaded level while
# the exercise runs. Movement times come from straight lines through the load ramps,
# followed out to the levels before and after the movement, so they do not depend on
# where the thresholds sit: least-squares lines through the raw samples (RampFit), or
# through the times where the lightly smoothed load crosses a ladder of levels.
from array import array

from gait import shift_for  # noqa: F401  (the modes import it from here)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


# feed() result bits (unique across the modes so one dispatcher can pack them all)
_EV_REP = const(1)  # heel raise or toe scrunch completed
_EV_PARTIAL = const(2)  # heel raise too shallow to count
_EV_CONTACT = const(4)  # balance: this foot became loaded / unloaded
_EV_HOLD_START = const(8)  # balance: single-leg stance confirmed
_EV_HOLD_END = const(16)  # balance: stance ended (reason in end_reason)
_EV_SWAY = const(32)  # balance: one second of sway while the foot is loaded
_EV_COACH = const(64)  # slow walk: a coached step

# Control SET_MODE numbers (the same as protocol.MODE_*)
_MODE_WALK = const(0)
_MODE_HEEL_RAISE = const(1)
_MODE_TOE_SCRUNCH = const(2)
_MODE_BALANCE = const(3)
_MODE_SLOW_WALK = const(4)

# Step Event packet: format, kind, seq u16, then the kind's fields (docs/EXERCISES.md)
_EVENT_FORMAT = const(1)
_KIND_HEEL_RAISE = const(0x10)
_KIND_TOE_SCRUNCH = const(0x11)
_KIND_BALANCE = const(0x12)
_KIND_COACHED_STEP = const(0x13)
_BAL_CONTACT = const(0)  # KIND_BALANCE sub-events (byte 4)
_BAL_START = const(1)
_BAL_END = const(2)
_BAL_SWAY = const(3)
_END_OTHER_FOOT = const(1)  # the other foot took weight back
_END_COLLAPSE = const(2)  # this foot's load collapsed (stepped off, fell)
_END_VOID = const(3)  # no steady single-leg load after all: discard the started hold
_PACE_UNKNOWN = const(0)
_PACE_SLOW = const(1)
_PACE_ON_TARGET = const(2)
_PACE_FAST = const(3)
_COACH_HEEL_STRIKE = const(4)  # flags bit 2
_COACH_PATTERN_OK = const(8)  # flags bit 3
_SEQ_MASK = const(0xFFFF)
_PKT = const(20)
_COUNT_MAX = const(0x1FFFFFFF)  # reps, partials, holds and steps stop here

_SMOOTH_MS = const(20)  # signal smoothing before timing (see Clock)
_FULL = const(1024)  # normalised load: 1024 = the sensor's loaded reference level
_MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
_HALF_CLOCK = const(0x10000000)  # signed differences on the 2**29 ms clock
_SUB = const(16)  # sub-sample resolution of crossing times
_U16 = const(0xFFFF)

# Sensor level tracking
_FLOOR_MS = const(200)  # floor averages readings near it over this time
_FLOOR_WIN_MS = const(2000)  # window of the raised-floor check
_FLOOR_WINDOWS = const(4)  # windows in a row before the floor moves up
_MIN_SPAN = const(2500)  # counts: a smaller loaded-minus-floor is not a live sensor
_TOP_MEAN_MS = const(1000)  # loaded reference averaging while standing still
_TOP_DECAY_MS = const(8000)  # peak reference decay otherwise
_RUNGS = const(8)  # load ladders for timing ramps (rung 0 unused)
_FIT_BLOCKS = const(64)  # RampFit: block means kept (a preallocated history)
_FIT_BLOCK_MS = const(10)  # ... each first averaging about this long
_FIT_M_MAX = const(256)  # ... and at most this many samples (keeps times < 2**29)
_TOP_PEAK = const(0)  # Fsr top modes
_TOP_MEAN = const(1)
_TOP_FROZEN = const(2)


# Clock's integer state: one array (self._v) in place of 4 attributes, whose
# names MicroPython would intern for good; the methods bind it to v
_CLOCK_FRAC = const(0)
_CLOCK_Q = const(1)
_CLOCK_R = const(2)
_CLOCK_STARTED = const(3)
_CLOCK_N = const(4)


class Clock:
    # Device clock: ms since the first sample, exact for any rate, wraps at 2**29.
    def __init__(self, rate_hz):
        self._v = v = array("i", [0] * _CLOCK_N)
        if not 50 <= rate_hz <= 1000:
            raise ValueError("rate_hz must be 50..1000")
        self.rate_hz = rate_hz
        v[_CLOCK_Q] = 1000 // rate_hz
        v[_CLOCK_R] = 1000 % rate_hz
        # Each counter smooths its signal with an IIR of step 1/2**smooth_k (about
        # _SMOOTH_MS): a straight ramp comes out exactly lag_ms late, which the
        # reported times take back.
        self.smooth_k = shift_for(self.samples(_SMOOTH_MS))
        self.lag_ms = ((1 << self.smooth_k) - 1) * 1000 // rate_hz
        self.reset()

    def reset(self):
        v = self._v
        self.now_ms = 0
        v[_CLOCK_FRAC] = 0
        v[_CLOCK_STARTED] = False

    def samples(self, ms):
        n = ms * self.rate_hz // 1000
        return n if n > 0 else 1

    def tick(self):
        v = self._v
        if not v[_CLOCK_STARTED]:
            v[_CLOCK_STARTED] = True
            return
        v[_CLOCK_FRAC] += v[_CLOCK_R]
        ms = self.now_ms + v[_CLOCK_Q]
        if v[_CLOCK_FRAC] >= self.rate_hz:
            v[_CLOCK_FRAC] -= self.rate_hz
            ms += 1
        self.now_ms = ms & _MS_MASK

    def cross(self, a, b, level):
        # When the signal passed `level` between the previous sample (a) and this
        # one (b), interpolated to 1/_SUB sample.
        frac = _SUB
        if a != b:
            frac = (a - level) * _SUB // (a - b)
            if frac < 0:
                frac = 0
            elif frac > _SUB:
                frac = _SUB
        return (self.now_ms - (_SUB - frac) * 1000 // (_SUB * self.rate_hz)) & _MS_MASK


def since(t0, now):
    # ms from t0 to now on the wrapping clock
    return (now - t0) & _MS_MASK


def at_zero(t, lo, hi):
    # Least-squares line through the crossing times t[k] of rungs lo..hi (rung
    # k is k equal steps above zero), evaluated at rung 0: when the ramp began (or
    # ended). Times relative to t[lo], each within _TS_MAX_MS: sums stay < 2**23.
    t0 = t[lo]
    n = 0
    sx = 0
    sxx = 0
    sy = 0
    sxy = 0
    for k in range(lo, hi + 1):
        y = ((t[k] - t0 + _HALF_CLOCK) & _MS_MASK) - _HALF_CLOCK
        n += 1
        sx += k
        sxx += k * k
        sy += y
        sxy += k * y
    den = n * sxx - sx * sx
    return (t0 + (sy * sxx - sx * sxy) // den) & _MS_MASK


def u16(v):
    if v < 0:
        return 0
    return v if v < _U16 else _U16


# Fsr's integer state: one array (self._v) in place of 8 attributes, whose
# names MicroPython would intern for good; the methods bind it to v
_FSR_DECAY_K = const(0)
_FSR_FLOOR_K = const(1)
_FSR_MEAN_K = const(2)
_FSR_WIN_N = const(3)
_FSR_WMAX = const(4)
_FSR_WMIN = const(5)
_FSR_WN = const(6)
_FSR_WRAISED = const(7)
_FSR_N = const(8)


class Fsr:
    # One sensor: floor = its unloaded reading, top = its loaded reference (both in
    # counts * 16). The floor starts at 0 (an unloaded FSR divider reads near 0) and
    # averages readings close to it; top follows the load in one of three modes.
    def __init__(self, clock):
        self._v = v = array("i", [0] * _FSR_N)
        v[_FSR_FLOOR_K] = shift_for(clock.samples(_FLOOR_MS))
        v[_FSR_MEAN_K] = shift_for(clock.samples(_TOP_MEAN_MS))
        v[_FSR_DECAY_K] = shift_for(clock.samples(_TOP_DECAY_MS))
        v[_FSR_WIN_N] = clock.samples(_FLOOR_WIN_MS)
        # the raised-floor check is for walking; a counter whose loads legitimately
        # stop short of the floor (partial heel raises) turns it off
        self.raise_floor = True
        self.reset()

    def reset(self):
        v = self._v
        self.floor = 0
        self.top = 0
        v[_FSR_WMIN] = 0x1FFFFF  # lowest and highest reading in this window (counts * 16)
        v[_FSR_WMAX] = 0
        v[_FSR_WN] = 0
        v[_FSR_WRAISED] = 0  # windows in a row that suggest a raised floor
        self.load = 0  # counts above the floor
        self.norm = -1  # load as a fraction of top (0..FULL*2), -1 when not live

    def update(self, x, mode):
        v = self._v
        x16 = x << 4
        f = self.floor
        t = self.top
        span = t - f
        band = span >> 6  # readings this close above the floor are "unloaded"; a
        # narrow band keeps the ends of loading ramps out of the average
        if span < (_MIN_SPAN << 4):
            # nothing loaded yet: absorb a small offset (averaged: with no span to
            # compare with, a noisy low reading is no sign of a floor set too high)
            band = _MIN_SPAN << 2
        if span >= (_MIN_SPAN << 4) and x16 < f - (span >> 4):
            f = x16  # well below the floor: the floor was too high
        elif x16 - f < band:
            f += (x16 - f) >> v[_FSR_FLOOR_K]
        # An offset the floor never sees from below (a divider that does not read
        # near 0 unloaded), in walking: when window after window the reading swings
        # over half the span but its lowest point stays clearly above the floor, the
        # floor moves halfway up to that lowest point.
        if x16 < v[_FSR_WMIN]:
            v[_FSR_WMIN] = x16
        if x16 > v[_FSR_WMAX]:
            v[_FSR_WMAX] = x16
        v[_FSR_WN] += 1
        if v[_FSR_WN] >= v[_FSR_WIN_N]:
            m = v[_FSR_WMIN] - f
            if (self.raise_floor and (span >> 4) < m < (span >> 1)
                    and v[_FSR_WMAX] - v[_FSR_WMIN] > (span >> 1)):
                v[_FSR_WRAISED] += 1
                if v[_FSR_WRAISED] >= _FLOOR_WINDOWS:
                    f += m >> 1
                    v[_FSR_WRAISED] = 0
            else:
                v[_FSR_WRAISED] = 0
            v[_FSR_WN] = 0
            v[_FSR_WMIN] = x16
            v[_FSR_WMAX] = x16
        if mode == _TOP_PEAK:
            if x16 > t:
                t = x16
            else:
                t -= (t - x16) >> v[_FSR_DECAY_K]
        elif mode == _TOP_MEAN:
            # average the standing level, but freeze as soon as the load moves away
            if x16 > t or t - x16 < (span >> 6):
                t += (x16 - t) >> v[_FSR_MEAN_K]
        if t < f:
            t = f
        self.floor = f
        self.top = t
        load = (x16 - f) >> 4
        if load < 0:
            load = 0
        self.load = load
        span = (t - f) >> 4
        if span < _MIN_SPAN:
            self.norm = -1
            return -1
        n = load * _FULL // span  # load <= 65535: product < 2**26
        if n > 2 * _FULL:
            n = 2 * _FULL
        self.norm = n
        return n


# RampFit's integer state: one array (self._v) in place of 8 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_FIT_ACC = const(0)
_FIT_B = const(1)
_FIT_BM = const(2)
_FIT_K = const(3)
_FIT_M = const(4)
_FIT_M0 = const(5)
_FIT_XC = const(6)
_FIT_YC = const(7)
_FIT_N = const(8)


class RampFit:
    # Least-squares straight line through the raw samples of one load ramp. The
    # samples are averaged in blocks kept in a preallocated history; when it fills,
    # neighbouring blocks merge (twice as long each). Fitting every sample of the
    # ramp, not a few threshold crossings, is what keeps the timing within a sample
    # or two when the ramp is slow and the signal noisy. Loads within +-2**16 (the
    # bounds below rely on it); times on the device clock.
    def __init__(self, clock):
        self._v = v = array("i", [0] * _FIT_N)
        self._clock = clock
        v[_FIT_M0] = clock.samples(_FIT_BLOCK_MS)
        self._y = array("i", [0] * _FIT_BLOCKS)
        self.clear()

    def clear(self):
        v = self._v
        self.open = False
        self.n = 0
        self.t0 = 0
        v[_FIT_M] = v[_FIT_M0]
        v[_FIT_ACC] = 0
        v[_FIT_K] = 0
        v[_FIT_XC] = 0  # fitted line: centre (1/16 sample from t0), mean load, change
        v[_FIT_YC] = 0  # over n blocks
        v[_FIT_B] = 0
        v[_FIT_BM] = 0

    def add(self, y):
        v = self._v
        if not self.open:
            self.clear()
            self.open = True
            self.t0 = self._clock.now_ms
        v[_FIT_ACC] += y
        v[_FIT_K] += 1
        if v[_FIT_K] < v[_FIT_M]:
            return
        ya = self._y
        if self.n == _FIT_BLOCKS:
            if v[_FIT_M] * 2 > _FIT_M_MAX:
                v[_FIT_K] -= 1  # long enough: later samples are left out
                v[_FIT_ACC] -= y
                return
            h = _FIT_BLOCKS >> 1
            for j in range(h):
                ya[j] = (ya[2 * j] + ya[2 * j + 1]) >> 1
            self.n = h
            v[_FIT_M] *= 2
            if v[_FIT_K] < v[_FIT_M]:
                return  # this block is the first half of a merged one
        ya[self.n] = v[_FIT_ACC] // v[_FIT_K]
        self.n += 1
        v[_FIT_ACC] = 0
        v[_FIT_K] = 0

    def fit(self, lo, hi, backward=False):
        # Fit the straight part of the ramp: in scan order (from the first block, or
        # from the last when backward) the run from the first block within lo..hi
        # up to the last one before the load passes hi (or falls well below lo).
        # False when there is no usable line.
        vs = self._v
        ya = self._y
        n = self.n
        j = n - 1 if backward else 0
        step = -1 if backward else 1
        i0 = -1
        i1 = -1
        out = lo - ((hi - lo) >> 3)  # clearly below the ramp: past its far end
        while 0 <= j < n:
            v = ya[j]
            if i0 < 0:
                if lo <= v <= hi:
                    i0 = j
                    i1 = j
            elif v > hi or v < out:
                break
            else:
                i1 = j
            j += step
        if i1 < i0:
            j = i0
            i0 = i1
            i1 = j
        n = i1 - i0 + 1
        if i0 < 0 or n < 3:
            return False
        sy = 0
        sxy = 0
        for j in range(i0, i1 + 1):
            sy += ya[j]
            sxy += (j - i0) * ya[j]  # < 64 * 64 * 2**16
        c = 2 * sxy - (n - 1) * sy  # 2 * sum (x - mean x) * y
        r = n * n - 1
        b = 6 * (c // r) + 6 * (c % r) // r  # load change over n blocks
        if b == 0:
            return False
        m = vs[_FIT_M]
        vs[_FIT_B] = b
        vs[_FIT_BM] = n
        vs[_FIT_YC] = sy // n
        vs[_FIT_XC] = i0 * m * 16 + (n - 1) * 8 * m + (m - 1) * 8
        return True

    def at(self, level):
        # When the fitted line passes `level` (ms on the device clock).
        v = self._v
        n = v[_FIT_BM]
        b = v[_FIT_B]
        dx = ((level - v[_FIT_YC]) * n * 32 + b) // (2 * b)  # 1/16 block, rounded
        lim = 4 * n * 16  # extrapolate at most a few fitted lengths
        if dx > lim:
            dx = lim
        elif dx < -lim:
            dx = -lim
        s16 = v[_FIT_XC] + dx * v[_FIT_M]  # 1/16 sample from t0, < 2**21
        r = self._clock.rate_hz
        return (self.t0 + (s16 * 125 + r) // (2 * r)) & _MS_MASK  # rounded to the ms
