# Toe-scrunch counter (docs/EXERCISES.md): a scrunch is a burst of forefoot load
# change while the heel stays loaded and still. Shared parts and the rules every mode
# keeps (integer-only, no allocation per sample): exbase.py.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct
from array import array

from exbase import (
    Clock,
    Fsr,
    RampFit,
    at_zero,
    shift_for,
    since,
    u16,
)

# exbase.py's constants, private here: a const() another module imports is a
# global (an interned name and a dictionary lookup per use); exercise.py has the
# public copies (tests/test_budget.py checks that they agree)
_EV_REP = const(1)  # heel raise or toe scrunch completed
_EVENT_FORMAT = const(1)
_KIND_TOE_SCRUNCH = const(0x11)
_MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
_PKT = const(20)
_RUNGS = const(8)  # load ladders for timing ramps (rung 0 unused)
_SEQ_MASK = const(0xFFFF)
_TOP_PEAK = const(0)  # Fsr top modes

# Toe scrunches
_COUNT_MAX = const(0x1FFFFFFF)  # exbase.COUNT_MAX
_TS_HEEL = const(512)  # heel must stay above 50 % of its reference
_TS_SETTLE_MS = const(600)  # ... and have done so this long before a scrunch starts
_TS_MIN = const(1500)  # counts: smallest forefoot change that counts
_TS_GAP_MS = const(120)  # a quiet spell this long ends a scrunch
_TS_MIN_MS = const(100)  # shorter bursts are twitches
_TS_MAX_MS = const(4000)  # longer changes are a new posture, not a scrunch
_TS_REST_MS = const(1000)  # resting forefoot level averaging
_TS_ENV_MS = const(20000)  # scrunch-size envelope decay
_IDLE = const(0)
_QUIET = const(1)
_BURST = const(2)
_ENDING = const(3)


# ToeScrunchCounter's integer state: one array (self._v) in place of 21 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_V_AWAY = const(0)
_V_ENV = const(1)
_V_ENV_K = const(2)
_V_FELL = const(3)
_V_GAP = const(4)
_V_GAP_N = const(5)
_V_HALF = const(6)
_V_HEEL_HI = const(7)
_V_HEEL_LO = const(8)
_V_MAX_N = const(9)
_V_PEAK = const(10)
_V_PREV = const(11)
_V_QUIET_MS = const(12)
_V_REST = const(13)
_V_REST_K = const(14)
_V_SETTLE = const(15)
_V_SETTLE_N = const(16)
_V_SIGN = const(17)
_V_SMOOTH = const(18)
_V_STATE = const(19)
_V_WSIGN = const(20)
_V_N = const(21)


class ToeScrunchCounter:
    """A scrunch: a burst of forefoot load change (either way) of at least _TS_MIN
    counts and a third of the recent scrunch size, while the heel stays loaded.
    Fields after EV_REP: count, start_ms, duration_ms, interval_ms, peak (counts,
    signed: negative when the forefoot unloaded)."""

    def __init__(self, rate_hz=100):
        self._v = v = array("i", [0] * _V_N)
        c = self._clock = Clock(rate_hz)
        self._heel = Fsr(c)
        v[_V_SETTLE_N] = c.samples(_TS_SETTLE_MS)
        v[_V_GAP_N] = c.samples(_TS_GAP_MS)
        v[_V_REST_K] = shift_for(c.samples(_TS_REST_MS))
        v[_V_MAX_N] = c.samples(_TS_MAX_MS)
        v[_V_ENV_K] = shift_for(c.samples(_TS_ENV_MS))
        # crossing times of the rungs k * threshold / 2, rising and falling
        self._t_up = array("i", [0] * _RUNGS)
        self._t_dn = array("i", [0] * _RUNGS)
        self._fit = RampFit(c)  # raw change through the burst: both ramps fitted
        self.reset()

    def reset(self):
        v = self._v
        self._clock.reset()
        self._heel.reset()
        v[_V_STATE] = _IDLE
        v[_V_SETTLE] = 0
        v[_V_REST] = -1  # resting forefoot reading, counts * 16
        self._fs = 0  # smoothed forefoot reading, counts * 16
        v[_V_AWAY] = 0  # samples the forefoot has been away from rest, not in a burst
        v[_V_ENV] = 0  # recent scrunch size, counts * 16
        v[_V_PREV] = 0  # previous change from rest, counts * 16
        v[_V_SMOOTH] = 0  # change smoothed over ~4 samples, for the size
        v[_V_HALF] = _TS_MIN << 3  # rung spacing: half the threshold
        v[_V_GAP] = 0
        v[_V_PEAK] = 0
        v[_V_SIGN] = 1
        v[_V_FELL] = 0  # bit k: rung k was passed on the way down in this burst
        v[_V_QUIET_MS] = 0  # when the current quiet spell began
        v[_V_HEEL_LO] = 0  # heel reading range during the burst, counts
        v[_V_HEEL_HI] = 0
        self._fit.clear()
        v[_V_WSIGN] = 1  # sign of the change when the fit window opened
        for k in range(_RUNGS):
            self._t_up[k] = 0
            self._t_dn[k] = 0
        self.count = 0
        self.start_ms = 0
        self.duration_ms = 0
        self.interval_ms = 0
        self.peak = 0

    def feed(self, heel, arch, fore):
        v = self._v
        clock = self._clock
        clock.tick()
        nh = self._heel.update(heel, _TOP_PEAK)
        if v[_V_REST] < 0:
            self._fs = fore << 4
            v[_V_REST] = self._fs
        f16 = self._fs + (((fore << 4) - self._fs) >> clock.smooth_k)
        self._fs = f16
        e = f16 - v[_V_REST]
        sign = 1
        if e < 0:
            e = -e
            sign = -1
        prev = v[_V_PREV]
        v[_V_PREV] = e
        sm = v[_V_SMOOTH] + ((e - v[_V_SMOOTH]) >> 2)
        v[_V_SMOOTH] = sm
        v[_V_ENV] -= v[_V_ENV] >> v[_V_ENV_K]
        st = v[_V_STATE]
        if nh < _TS_HEEL:
            # heel not (or not yet usably) loaded: walking, standing up, a heel raise
            v[_V_STATE] = _IDLE
            v[_V_SETTLE] = 0
            v[_V_REST] = f16
            return 0
        if st == _IDLE:
            self._fit.open = False
            v[_V_REST] = f16  # settling: the resting level is whatever it reads
            v[_V_SETTLE] += 1
            if v[_V_SETTLE] >= v[_V_SETTLE_N]:
                v[_V_STATE] = _QUIET
                v[_V_QUIET_MS] = clock.now_ms
            return 0
        if st == _QUIET and e < (v[_V_HALF] >> 1):
            thr = v[_V_ENV] // 3
            if thr < (_TS_MIN << 4):
                thr = _TS_MIN << 4
            # the ladder follows the threshold at rest, and holds still on a ramp
            # (a rung moving under the signal would go untimed)
            v[_V_HALF] = thr >> 1
        half = v[_V_HALF]
        if prev < e:
            for k in range(1, _RUNGS):
                # a rung already passed on the way down is not re-timed by noise
                if prev < k * half <= e and not (v[_V_FELL] >> k) & 1:
                    self._t_up[k] = clock.cross(prev, e, k * half)
        if st == _QUIET:
            if e < (half >> 1):
                if e < (half >> 3):
                    # only near rest: the ends of the ramps would pull the level
                    v[_V_REST] += (f16 - v[_V_REST]) >> v[_V_REST_K]
                v[_V_AWAY] = 0
                self._fit.open = False
            else:
                # moving away from rest: hold the level still (a scrunch may be
                # starting) unless it stays away, which is a new resting posture
                if not self._fit.open:
                    v[_V_WSIGN] = sign
                self._fit.add(self._raw(fore))
                v[_V_AWAY] += 1
                if v[_V_AWAY] > v[_V_MAX_N]:
                    v[_V_REST] = f16
                    v[_V_AWAY] = 0
                    self._fit.open = False
            if e >= 2 * half:
                # rungs this step passed but left untimed (the ladder moves with the
                # decaying threshold) keep no time from an earlier burst
                span = since(v[_V_QUIET_MS], clock.now_ms)
                for k in range(1, 3):
                    if since(v[_V_QUIET_MS], self._t_up[k]) > span:
                        self._t_up[k] = clock.cross(prev, e, k * half)
                v[_V_STATE] = _BURST
                v[_V_PEAK] = sm
                v[_V_SIGN] = sign
                v[_V_HEEL_LO] = heel
                v[_V_HEEL_HI] = heel
            return 0
        if heel < v[_V_HEEL_LO]:
            v[_V_HEEL_LO] = heel
        if heel > v[_V_HEEL_HI]:
            v[_V_HEEL_HI] = heel
        if since(self._t_up[2], clock.now_ms) > _TS_MAX_MS:
            # a lasting change: a new resting posture, not a scrunch
            v[_V_STATE] = _QUIET
            v[_V_QUIET_MS] = clock.now_ms
            v[_V_FELL] = 0
            v[_V_REST] = f16
            self._fit.open = False
            return 0
        self._fit.add(self._raw(fore))
        if sm > v[_V_PEAK]:
            v[_V_PEAK] = sm
            v[_V_SIGN] = sign
        if prev > e:
            for k in range(1, _RUNGS):
                if prev >= k * half > e:
                    self._t_dn[k] = clock.cross(prev, e, k * half)
                    v[_V_FELL] |= 1 << k
        if st == _BURST:
            if e < half:
                v[_V_STATE] = _ENDING
                v[_V_GAP] = 0
            return 0
        # _ENDING: below half the threshold; a long enough quiet spell ends it
        if e >= 2 * half:
            v[_V_STATE] = _BURST
            return 0
        v[_V_GAP] += 1
        if v[_V_GAP] < v[_V_GAP_N]:
            return 0
        v[_V_STATE] = _QUIET
        v[_V_FELL] = 0
        ev = self._finish()
        self._fit.open = False
        v[_V_QUIET_MS] = clock.now_ms
        return ev

    def _raw(self, fore):
        # unsmoothed change from rest, counts, positive in the burst's direction
        v = self._v
        d = (fore - (v[_V_REST] >> 4)) * v[_V_WSIGN]
        if d < -0xFFFF:
            return -0xFFFF
        return d if d < 0xFFFF else 0xFFFF

    def _finish(self):
        # rungs nearest 20 % and 80 % of the peak; extrapolate both ramps to zero
        v = self._v
        half = v[_V_HALF]
        peak = v[_V_PEAK]
        k_lo = (peak // 5 + half - 1) // half
        k_hi = (peak - peak // 5) // half
        if k_lo < 1:
            k_lo = 1
        if k_hi >= _RUNGS:
            k_hi = _RUNGS - 1
        # only rungs crossed after the last quiet spell began belong to this burst
        span = since(v[_V_QUIET_MS], self._clock.now_ms)
        while k_hi > 2 and since(v[_V_QUIET_MS], self._t_up[k_hi]) > span:
            k_hi -= 1
        if k_hi <= k_lo:
            k_lo = 1
            k_hi = 2
        up = since(self._t_up[k_lo], self._t_up[k_hi])
        down = since(self._t_dn[k_hi], self._t_dn[k_lo])
        if up > _TS_MAX_MS or down > _TS_MAX_MS:
            return 0
        lag = self._clock.lag_ms
        start = (at_zero(self._t_up, k_lo, k_hi) - lag) & _MS_MASK
        end = (at_zero(self._t_dn, k_lo, k_hi) - lag) & _MS_MASK
        # Better, unless a ramp is too short for a line: straight lines through the
        # raw samples between 20 % and 80 % of the peak on both ramps, followed out
        # to zero change.
        f = self._fit
        p = peak >> 4
        if f.open and f.fit(p // 5, p - p // 5):
            s = f.at(0)
            if f.fit(p // 5, p - p // 5, True):
                start = s
                end = f.at(0)
        dur = since(start, end)
        if dur < _TS_MIN_MS or dur > _TS_MAX_MS:
            return 0
        if (v[_V_HEEL_HI] - v[_V_HEEL_LO]) << 5 > peak:
            return 0  # the heel moved more than half as much: a step, not the toes
        if peak > v[_V_ENV]:
            v[_V_ENV] = peak
        self.interval_ms = since(self.start_ms, start) if self.count else 0
        if self.count < _COUNT_MAX:
            self.count += 1
        self.start_ms = start
        self.duration_ms = dur
        self.peak = v[_V_SIGN] * (peak >> 4)
        return _EV_REP

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_REP; returns its length."""
        p = self.peak
        struct.pack_into("<BBHBBHIHHHH", buf, 0, _EVENT_FORMAT, _KIND_TOE_SCRUNCH,
                         seq & _SEQ_MASK, 1 if p < 0 else 0, 0, self.count & _SEQ_MASK,
                         self.start_ms, u16(self.duration_ms), u16(p if p >= 0 else -p),
                         u16(self.interval_ms), 0)
        return _PKT

