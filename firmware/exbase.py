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
EV_REP = const(1)  # heel raise or toe scrunch completed
EV_PARTIAL = const(2)  # heel raise too shallow to count
EV_CONTACT = const(4)  # balance: this foot became loaded / unloaded
EV_HOLD_START = const(8)  # balance: single-leg stance confirmed
EV_HOLD_END = const(16)  # balance: stance ended (reason in end_reason)
EV_SWAY = const(32)  # balance: one second of sway while the foot is loaded
EV_COACH = const(64)  # slow walk: a coached step

# Control SET_MODE numbers (the same as protocol.MODE_*)
MODE_WALK = const(0)
MODE_HEEL_RAISE = const(1)
MODE_TOE_SCRUNCH = const(2)
MODE_BALANCE = const(3)
MODE_SLOW_WALK = const(4)

# Step Event packet: format, kind, seq u16, then the kind's fields (docs/EXERCISES.md)
EVENT_FORMAT = const(1)
KIND_HEEL_RAISE = const(0x10)
KIND_TOE_SCRUNCH = const(0x11)
KIND_BALANCE = const(0x12)
KIND_COACHED_STEP = const(0x13)
BAL_CONTACT = const(0)  # KIND_BALANCE sub-events (byte 4)
BAL_START = const(1)
BAL_END = const(2)
BAL_SWAY = const(3)
END_OTHER_FOOT = const(1)  # the other foot took weight back
END_COLLAPSE = const(2)  # this foot's load collapsed (stepped off, fell)
END_VOID = const(3)  # no steady single-leg load after all: discard the started hold
PACE_UNKNOWN = const(0)
PACE_SLOW = const(1)
PACE_ON_TARGET = const(2)
PACE_FAST = const(3)
COACH_HEEL_STRIKE = const(4)  # flags bit 2
COACH_PATTERN_OK = const(8)  # flags bit 3
SEQ_MASK = const(0xFFFF)
PKT = const(20)
COUNT_MAX = const(0x1FFFFFFF)  # reps, partials, holds and steps stop here

_SMOOTH_MS = const(20)  # signal smoothing before timing (see Clock)
FULL = const(1024)  # normalised load: 1024 = the sensor's loaded reference level
MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
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
RUNGS = const(8)  # load ladders for timing ramps (rung 0 unused)
_FIT_BLOCKS = const(64)  # RampFit: block means kept (a preallocated history)
_FIT_BLOCK_MS = const(10)  # ... each first averaging about this long
_FIT_M_MAX = const(256)  # ... and at most this many samples (keeps times < 2**29)
TOP_PEAK = const(0)  # Fsr top modes
TOP_MEAN = const(1)
TOP_FROZEN = const(2)


class Clock:
    # Device clock: ms since the first sample, exact for any rate, wraps at 2**29.
    def __init__(self, rate_hz):
        if not 50 <= rate_hz <= 1000:
            raise ValueError("rate_hz must be 50..1000")
        self.rate_hz = rate_hz
        self._q = 1000 // rate_hz
        self._r = 1000 % rate_hz
        # Each counter smooths its signal with an IIR of step 1/2**smooth_k (about
        # _SMOOTH_MS): a straight ramp comes out exactly lag_ms late, which the
        # reported times take back.
        self.smooth_k = shift_for(self.samples(_SMOOTH_MS))
        self.lag_ms = ((1 << self.smooth_k) - 1) * 1000 // rate_hz
        self.reset()

    def reset(self):
        self.now_ms = 0
        self._frac = 0
        self._started = False

    def samples(self, ms):
        n = ms * self.rate_hz // 1000
        return n if n > 0 else 1

    def tick(self):
        if not self._started:
            self._started = True
            return
        self._frac += self._r
        ms = self.now_ms + self._q
        if self._frac >= self.rate_hz:
            self._frac -= self.rate_hz
            ms += 1
        self.now_ms = ms & MS_MASK

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
        return (self.now_ms - (_SUB - frac) * 1000 // (_SUB * self.rate_hz)) & MS_MASK


def since(t0, t1):
    # ms from t0 to t1 on the wrapping clock
    return (t1 - t0) & MS_MASK


def at_zero(t, k_lo, k_hi):
    # Least-squares line through the crossing times t[k] of rungs k_lo..k_hi (rung
    # k is k equal steps above zero), evaluated at rung 0: when the ramp began (or
    # ended). Times relative to t[k_lo], each within _TS_MAX_MS: sums stay < 2**23.
    t0 = t[k_lo]
    n = 0
    sx = 0
    sxx = 0
    sy = 0
    sxy = 0
    for k in range(k_lo, k_hi + 1):
        y = ((t[k] - t0 + _HALF_CLOCK) & MS_MASK) - _HALF_CLOCK
        n += 1
        sx += k
        sxx += k * k
        sy += y
        sxy += k * y
    den = n * sxx - sx * sx
    return (t0 + (sy * sxx - sx * sxy) // den) & MS_MASK


def u16(v):
    if v < 0:
        return 0
    return v if v < _U16 else _U16


class Fsr:
    # One sensor: floor = its unloaded reading, top = its loaded reference (both in
    # counts * 16). The floor starts at 0 (an unloaded FSR divider reads near 0) and
    # averages readings close to it; top follows the load in one of three modes.
    def __init__(self, clock):
        self._floor_k = shift_for(clock.samples(_FLOOR_MS))
        self._mean_k = shift_for(clock.samples(_TOP_MEAN_MS))
        self._decay_k = shift_for(clock.samples(_TOP_DECAY_MS))
        self._win_n = clock.samples(_FLOOR_WIN_MS)
        # the raised-floor check is for walking; a counter whose loads legitimately
        # stop short of the floor (partial heel raises) turns it off
        self.raise_floor = True
        self.reset()

    def reset(self):
        self.floor = 0
        self.top = 0
        self._wmin = 0x1FFFFF  # lowest and highest reading in this window (counts * 16)
        self._wmax = 0
        self._wn = 0
        self._wraised = 0  # windows in a row that suggest a raised floor
        self.load = 0  # counts above the floor
        self.norm = -1  # load as a fraction of top (0..FULL*2), -1 when not live

    def update(self, x, mode):
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
            f += (x16 - f) >> self._floor_k
        # An offset the floor never sees from below (a divider that does not read
        # near 0 unloaded), in walking: when window after window the reading swings
        # over half the span but its lowest point stays clearly above the floor, the
        # floor moves halfway up to that lowest point.
        if x16 < self._wmin:
            self._wmin = x16
        if x16 > self._wmax:
            self._wmax = x16
        self._wn += 1
        if self._wn >= self._win_n:
            m = self._wmin - f
            if (self.raise_floor and (span >> 4) < m < (span >> 1)
                    and self._wmax - self._wmin > (span >> 1)):
                self._wraised += 1
                if self._wraised >= _FLOOR_WINDOWS:
                    f += m >> 1
                    self._wraised = 0
            else:
                self._wraised = 0
            self._wn = 0
            self._wmin = x16
            self._wmax = x16
        if mode == TOP_PEAK:
            if x16 > t:
                t = x16
            else:
                t -= (t - x16) >> self._decay_k
        elif mode == TOP_MEAN:
            # average the standing level, but freeze as soon as the load moves away
            if x16 > t or t - x16 < (span >> 6):
                t += (x16 - t) >> self._mean_k
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
        n = load * FULL // span  # load <= 65535: product < 2**26
        if n > 2 * FULL:
            n = 2 * FULL
        self.norm = n
        return n


class RampFit:
    # Least-squares straight line through the raw samples of one load ramp. The
    # samples are averaged in blocks kept in a preallocated history; when it fills,
    # neighbouring blocks merge (twice as long each). Fitting every sample of the
    # ramp, not a few threshold crossings, is what keeps the timing within a sample
    # or two when the ramp is slow and the signal noisy. Loads within +-2**16 (the
    # bounds below rely on it); times on the device clock.
    def __init__(self, clock):
        self._clock = clock
        self._m0 = clock.samples(_FIT_BLOCK_MS)
        self._y = array("i", [0] * _FIT_BLOCKS)
        self.clear()

    def clear(self):
        self.open = False
        self.n = 0
        self.t0 = 0
        self._m = self._m0
        self._acc = 0
        self._k = 0
        self._xc = 0  # fitted line: centre (1/16 sample from t0), mean load, change
        self._yc = 0  # over n blocks
        self._b = 0
        self._bm = 0

    def add(self, y):
        if not self.open:
            self.clear()
            self.open = True
            self.t0 = self._clock.now_ms
        self._acc += y
        self._k += 1
        if self._k < self._m:
            return
        ya = self._y
        if self.n == _FIT_BLOCKS:
            if self._m * 2 > _FIT_M_MAX:
                self._k -= 1  # long enough: later samples are left out
                self._acc -= y
                return
            h = _FIT_BLOCKS >> 1
            for j in range(h):
                ya[j] = (ya[2 * j] + ya[2 * j + 1]) >> 1
            self.n = h
            self._m *= 2
            if self._k < self._m:
                return  # this block is the first half of a merged one
        ya[self.n] = self._acc // self._k
        self.n += 1
        self._acc = 0
        self._k = 0

    def fit(self, lo, hi, backward=False):
        # Fit the straight part of the ramp: in scan order (from the first block, or
        # from the last when backward) the run from the first block within lo..hi
        # up to the last one before the load passes hi (or falls well below lo).
        # False when there is no usable line.
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
        m = self._m
        self._b = b
        self._bm = n
        self._yc = sy // n
        self._xc = i0 * m * 16 + (n - 1) * 8 * m + (m - 1) * 8
        return True

    def at(self, level):
        # When the fitted line passes `level` (ms on the device clock).
        n = self._bm
        b = self._b
        dx = ((level - self._yc) * n * 32 + b) // (2 * b)  # 1/16 block, rounded
        lim = 4 * n * 16  # extrapolate at most a few fitted lengths
        if dx > lim:
            dx = lim
        elif dx < -lim:
            dx = -lim
        s16 = self._xc + dx * self._m  # 1/16 sample from t0, < 2**21
        r = self._clock.rate_hz
        return (self.t0 + (s16 * 125 + r) // (2 * r)) & MS_MASK  # rounded to the ms
