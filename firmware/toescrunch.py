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
    EV_REP,
    EVENT_FORMAT,
    KIND_TOE_SCRUNCH,
    MS_MASK,
    PKT,
    RUNGS,
    SEQ_MASK,
    TOP_PEAK,
    Clock,
    Fsr,
    RampFit,
    at_zero,
    shift_for,
    since,
    u16,
)

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


class ToeScrunchCounter:
    """A scrunch: a burst of forefoot load change (either way) of at least _TS_MIN
    counts and a third of the recent scrunch size, while the heel stays loaded.
    Fields after EV_REP: count, start_ms, duration_ms, interval_ms, peak (counts,
    signed: negative when the forefoot unloaded)."""

    def __init__(self, rate_hz=100):
        c = self._clock = Clock(rate_hz)
        self._heel = Fsr(c)
        self._settle_n = c.samples(_TS_SETTLE_MS)
        self._gap_n = c.samples(_TS_GAP_MS)
        self._rest_k = shift_for(c.samples(_TS_REST_MS))
        self._max_n = c.samples(_TS_MAX_MS)
        self._env_k = shift_for(c.samples(_TS_ENV_MS))
        # crossing times of the rungs k * threshold / 2, rising and falling
        self._t_up = array("i", [0] * RUNGS)
        self._t_dn = array("i", [0] * RUNGS)
        self._fit = RampFit(c)  # raw change through the burst: both ramps fitted
        self.reset()

    def reset(self):
        self._clock.reset()
        self._heel.reset()
        self._state = _IDLE
        self._settle = 0
        self._rest = -1  # resting forefoot reading, counts * 16
        self._fs = 0  # smoothed forefoot reading, counts * 16
        self._away = 0  # samples the forefoot has been away from rest, not in a burst
        self._env = 0  # recent scrunch size, counts * 16
        self._prev = 0  # previous change from rest, counts * 16
        self._smooth = 0  # change smoothed over ~4 samples, for the size
        self._half = _TS_MIN << 3  # rung spacing: half the threshold
        self._gap = 0
        self._peak = 0
        self._sign = 1
        self._fell = 0  # bit k: rung k was passed on the way down in this burst
        self._quiet_ms = 0  # when the current quiet spell began
        self._heel_lo = 0  # heel reading range during the burst, counts
        self._heel_hi = 0
        self._fit.clear()
        self._wsign = 1  # sign of the change when the fit window opened
        for k in range(RUNGS):
            self._t_up[k] = 0
            self._t_dn[k] = 0
        self.count = 0
        self.start_ms = 0
        self.duration_ms = 0
        self.interval_ms = 0
        self.peak = 0

    def feed(self, heel, arch, fore):
        clock = self._clock
        clock.tick()
        nh = self._heel.update(heel, TOP_PEAK)
        if self._rest < 0:
            self._fs = fore << 4
            self._rest = self._fs
        f16 = self._fs + (((fore << 4) - self._fs) >> clock.smooth_k)
        self._fs = f16
        e = f16 - self._rest
        sign = 1
        if e < 0:
            e = -e
            sign = -1
        prev = self._prev
        self._prev = e
        sm = self._smooth + ((e - self._smooth) >> 2)
        self._smooth = sm
        self._env -= self._env >> self._env_k
        st = self._state
        if nh < _TS_HEEL:
            # heel not (or not yet usably) loaded: walking, standing up, a heel raise
            self._state = _IDLE
            self._settle = 0
            self._rest = f16
            return 0
        if st == _IDLE:
            self._fit.open = False
            self._rest = f16  # settling: the resting level is whatever it reads
            self._settle += 1
            if self._settle >= self._settle_n:
                self._state = _QUIET
                self._quiet_ms = clock.now_ms
            return 0
        if st == _QUIET and e < (self._half >> 1):
            thr = self._env // 3
            if thr < (_TS_MIN << 4):
                thr = _TS_MIN << 4
            # the ladder follows the threshold at rest, and holds still on a ramp
            # (a rung moving under the signal would go untimed)
            self._half = thr >> 1
        half = self._half
        if prev < e:
            for k in range(1, RUNGS):
                # a rung already passed on the way down is not re-timed by noise
                if prev < k * half <= e and not (self._fell >> k) & 1:
                    self._t_up[k] = clock.cross(prev, e, k * half)
        if st == _QUIET:
            if e < (half >> 1):
                if e < (half >> 3):
                    # only near rest: the ends of the ramps would pull the level
                    self._rest += (f16 - self._rest) >> self._rest_k
                self._away = 0
                self._fit.open = False
            else:
                # moving away from rest: hold the level still (a scrunch may be
                # starting) unless it stays away, which is a new resting posture
                if not self._fit.open:
                    self._wsign = sign
                self._fit.add(self._raw(fore))
                self._away += 1
                if self._away > self._max_n:
                    self._rest = f16
                    self._away = 0
                    self._fit.open = False
            if e >= 2 * half:
                # rungs this step passed but left untimed (the ladder moves with the
                # decaying threshold) keep no time from an earlier burst
                span = since(self._quiet_ms, clock.now_ms)
                for k in range(1, 3):
                    if since(self._quiet_ms, self._t_up[k]) > span:
                        self._t_up[k] = clock.cross(prev, e, k * half)
                self._state = _BURST
                self._peak = sm
                self._sign = sign
                self._heel_lo = heel
                self._heel_hi = heel
            return 0
        if heel < self._heel_lo:
            self._heel_lo = heel
        if heel > self._heel_hi:
            self._heel_hi = heel
        if since(self._t_up[2], clock.now_ms) > _TS_MAX_MS:
            # a lasting change: a new resting posture, not a scrunch
            self._state = _QUIET
            self._quiet_ms = clock.now_ms
            self._fell = 0
            self._rest = f16
            self._fit.open = False
            return 0
        self._fit.add(self._raw(fore))
        if sm > self._peak:
            self._peak = sm
            self._sign = sign
        if prev > e:
            for k in range(1, RUNGS):
                if prev >= k * half > e:
                    self._t_dn[k] = clock.cross(prev, e, k * half)
                    self._fell |= 1 << k
        if st == _BURST:
            if e < half:
                self._state = _ENDING
                self._gap = 0
            return 0
        # _ENDING: below half the threshold; a long enough quiet spell ends it
        if e >= 2 * half:
            self._state = _BURST
            return 0
        self._gap += 1
        if self._gap < self._gap_n:
            return 0
        self._state = _QUIET
        self._fell = 0
        ev = self._finish()
        self._fit.open = False
        self._quiet_ms = clock.now_ms
        return ev

    def _raw(self, fore):
        # unsmoothed change from rest, counts, positive in the burst's direction
        d = (fore - (self._rest >> 4)) * self._wsign
        if d < -0xFFFF:
            return -0xFFFF
        return d if d < 0xFFFF else 0xFFFF

    def _finish(self):
        # rungs nearest 20 % and 80 % of the peak; extrapolate both ramps to zero
        half = self._half
        peak = self._peak
        k_lo = (peak // 5 + half - 1) // half
        k_hi = (peak - peak // 5) // half
        if k_lo < 1:
            k_lo = 1
        if k_hi >= RUNGS:
            k_hi = RUNGS - 1
        # only rungs crossed after the last quiet spell began belong to this burst
        span = since(self._quiet_ms, self._clock.now_ms)
        while k_hi > 2 and since(self._quiet_ms, self._t_up[k_hi]) > span:
            k_hi -= 1
        if k_hi <= k_lo:
            k_lo = 1
            k_hi = 2
        up = since(self._t_up[k_lo], self._t_up[k_hi])
        down = since(self._t_dn[k_hi], self._t_dn[k_lo])
        if up > _TS_MAX_MS or down > _TS_MAX_MS:
            return 0
        lag = self._clock.lag_ms
        start = (at_zero(self._t_up, k_lo, k_hi) - lag) & MS_MASK
        end = (at_zero(self._t_dn, k_lo, k_hi) - lag) & MS_MASK
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
        if (self._heel_hi - self._heel_lo) << 5 > peak:
            return 0  # the heel moved more than half as much: a step, not the toes
        if peak > self._env:
            self._env = peak
        self.interval_ms = since(self.start_ms, start) if self.count else 0
        if self.count < _COUNT_MAX:
            self.count += 1
        self.start_ms = start
        self.duration_ms = dur
        self.peak = self._sign * (peak >> 4)
        return EV_REP

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_REP; returns its length."""
        p = self.peak
        struct.pack_into("<BBHBBHIHHHH", buf, 0, EVENT_FORMAT, KIND_TOE_SCRUNCH,
                         seq & SEQ_MASK, 1 if p < 0 else 0, 0, self.count & SEQ_MASK,
                         self.start_ms, u16(self.duration_ms), u16(p if p >= 0 else -p),
                         u16(self.interval_ms), 0)
        return PKT

