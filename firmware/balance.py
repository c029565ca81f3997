# Single-leg stance timer (docs/EXERCISES.md): contact changes, one-second sway
# windows and this insole's own estimate of single-leg holds. Shared parts and the
# rules every mode keeps (integer-only, no allocation per sample): exbase.py.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct
from array import array

from exbase import (
    BAL_CONTACT,
    BAL_END,
    BAL_START,
    BAL_SWAY,
    END_COLLAPSE,
    END_OTHER_FOOT,
    END_VOID,
    EV_CONTACT,
    EV_HOLD_END,
    EV_HOLD_START,
    EV_SWAY,
    EVENT_FORMAT,
    KIND_BALANCE,
    MS_MASK,
    PKT,
    RUNGS,
    SEQ_MASK,
    TOP_PEAK,
    Clock,
    Fsr,
    shift_for,
    since,
    u16,
)

_COUNT_MAX = const(0x1FFFFFFF)  # exbase.COUNT_MAX

# Single-leg stance (total load in counts/4 above the floors)
_BL_MIN_TOTAL = const(1500)  # total below this is no contact at all
_BL_QUIET_MS = const(1000)  # loaded this long (standing) before a hold may start
_BL_CONFIRM_MS = const(2000)  # single-leg load held this long starts a hold
_BL_END_MS = const(300)  # window after the load drop that decides the reason
_BL_DOWN_MS = const(250)  # two-feet level follows drops with this time constant
_BL_UPLVL_MS = const(4000)  # ... and rises with this one
_BL_PEAK_MS = const(30000)  # contact reference decay
_BL_COP_MS = const(40)  # centre-of-load smoothing
_BL_WINDOW_MS = const(1000)  # sway report period
_BL_MAX_RAMP_MS = const(4000)  # cap on weight-transfer ramps used for extrapolation
_PATH_CAP = const(0x400000)  # hold sway path cap (per-mille * 16): * 1000 stays < 2**29
# sensor positions along the foot, per-mille of foot length (as in gait.py)
_POS_HEEL = const(120)
_POS_ARCH = const(480)
_POS_FORE = const(730)
_IDLE = const(0)
_QUIET = const(1)
_HOLD = const(2)
_END = const(3)


class BalanceTimer:
    """Single-leg stance on this foot, from this insole alone: standing on both
    feet sets a level; a rise of 25 % above it held for two seconds is the other foot
    lifted; falling back below 12.5 % above it ends the hold (the other foot touched
    down, or the load collapsed if it then falls under half). Also reports contact
    changes and one-second sway windows so a host can combine two insoles."""

    def __init__(self, rate_hz=100):
        c = self._clock = Clock(rate_hz)
        self._fsr = (Fsr(c), Fsr(c), Fsr(c))
        self._quiet_n = c.samples(_BL_QUIET_MS)
        self._end_n = c.samples(_BL_END_MS)
        self._window_n = c.samples(_BL_WINDOW_MS)
        self._down_k = shift_for(c.samples(_BL_DOWN_MS))
        self._uplvl_k = shift_for(c.samples(_BL_UPLVL_MS))
        self._peak_k = shift_for(c.samples(_BL_PEAK_MS))
        self._cop_k = shift_for(c.samples(_BL_COP_MS))
        # crossing times of the rungs two-feet level * (1 + k/8), rising and falling
        self._t_up = array("i", [0] * RUNGS)
        self._t_dn = array("i", [0] * RUNGS)
        self.reset()

    def reset(self):
        self._clock.reset()
        for s in self._fsr:
            s.reset()
        self._state = _IDLE
        self._run = 0  # samples of the current condition
        self._steady = 0  # samples standing still near the two-feet level
        self._ts = 0  # smoothed total load, counts/4 * 16
        self._prev = 0
        self._ref = 0  # contact reference (peak total), counts/4
        self._two = 0  # two-feet level, counts/4 * 16
        for k in range(RUNGS):
            self._t_up[k] = 0
            self._t_dn[k] = 0
        self._min = 0
        self._sum = 0  # hold load sum and samples; a dip's samples wait in _pend
        self._sum_n = 0
        self._pend = 0
        self._pend_n = 0
        self._cop = -1  # smoothed centre of load, per-mille * 16
        self._w_n = 0  # sway window: samples, path, min, max, cop sum
        self._w_path = 0
        self._w_min = 0
        self._w_max = 0
        self._w_sum = 0
        self._h_path = 0  # whole hold: path (per-mille), min, max
        self._h_min = 0
        self._h_max = 0
        self.contact = False
        self.contact_ms = 0
        self.total = 0  # counts/4 above the floors
        self.holds = 0
        self.start_ms = 0
        self.duration_ms = 0
        self.level = 0
        self.end_reason = 0
        self.sway_path = 0  # per-mille of foot length per second
        self.sway_range = 0  # per-mille of foot length
        self.cop = 0  # window mean centre of load, per-mille of foot length
        self.window_ms = 0
        self.elapsed_ms = 0
        self.in_hold = False

    def feed(self, heel, arch, fore):
        clock = self._clock
        clock.tick()
        f = self._fsr
        f[0].update(heel, TOP_PEAK)
        f[1].update(arch, TOP_PEAK)
        f[2].update(fore, TOP_PEAK)
        lh = f[0].load >> 2
        la = f[1].load >> 2
        lf = f[2].load >> 2
        ts = self._ts + ((((lh + la + lf) << 4) - self._ts) >> clock.smooth_k)
        self._ts = ts
        tot = ts >> 4  # < 2**16
        self.total = tot
        prev = self._prev
        self._prev = tot
        ref = self._ref
        if tot > ref:
            ref = tot
        else:
            ref -= ref >> self._peak_k
        self._ref = ref
        ev = self._contact(prev, tot, ref)
        if not self.contact:
            self._cop = -1
            if self._state == _HOLD:
                for k in range(RUNGS):
                    self._t_dn[k] = self.contact_ms
            if self._state == _HOLD or self._state == _END:
                return ev | self._end(END_COLLAPSE)
            self._state = _IDLE
            self._run = 0
            return ev
        ev |= self._sway(lh, la, lf, tot)
        st = self._state
        if st == _IDLE:
            self._two = tot << 4
            self._state = _QUIET
            self._run = 0
            return ev
        if st == _QUIET:
            return ev | self._quiet(prev, tot)
        if st == _HOLD:
            self._hold(prev, tot)
            return ev
        # _END: watch the drop for a while to tell why the hold ended
        if tot >= self.level + 2 * (self.level >> 3):
            self._state = _HOLD
            return ev
        if tot < self._min:
            self._min = tot
        self._run += 1
        if self._run >= self._end_n:
            reason = END_OTHER_FOOT
            if self._min < (self._two >> 5):  # under half the two-feet level
                reason = END_COLLAPSE
            ev |= self._end(reason)
        return ev

    def _contact(self, prev, tot, ref):
        on = ref >> 3
        if on < _BL_MIN_TOTAL:
            on = _BL_MIN_TOTAL
        off = on >> 1
        if not self.contact and tot >= on:
            self.contact = True
            self.contact_ms = (self._clock.cross(prev, tot, on) - self._clock.lag_ms) & MS_MASK
            return EV_CONTACT
        if self.contact and tot < off:
            self.contact = False
            self.contact_ms = (self._clock.cross(prev, tot, off) - self._clock.lag_ms) & MS_MASK
            return EV_CONTACT
        return 0

    def _quiet(self, prev, tot):
        # Standing on both feet: learn that level, then watch for a lasting rise.
        clock = self._clock
        two = self._two
        t16 = tot << 4
        if self._run < self._quiet_n:
            # settling after contact: follow the load both ways, no hold yet
            self._run += 1
            self._steady = 0
            self._two = two + ((t16 - two) >> self._down_k)
            for k in range(RUNGS):
                self._t_up[k] = clock.now_ms
            return 0
        lvl = two >> 4
        step = lvl >> 3
        if prev < tot:
            for k in range(1, RUNGS):
                rung = lvl + k * step
                if prev < rung <= tot:
                    self._t_up[k] = clock.cross(prev, tot, rung)
        if tot < lvl - step:
            self._steady = 0  # not standing still: walking, shifting about
        elif tot < lvl + step and self._steady < self._quiet_n:
            self._steady += 1
        if tot >= lvl + 2 * step:
            if (since(self._t_up[2], clock.now_ms) >= _BL_CONFIRM_MS
                    and self._steady >= self._quiet_n):
                self._begin(lvl)
                return EV_HOLD_START
            return 0
        if t16 < two:
            k = self._down_k
        elif tot < lvl + step:
            k = self._uplvl_k
        else:
            k = self._uplvl_k + 2  # part-way up: barely move, a rise may be starting
        self._two = two + ((t16 - two) >> k)
        return 0

    def _hold(self, prev, tot):
        lvl = self.level
        if self._sum > 0x4000000:  # keep the sums below 2**27
            self._sum >>= 1
            self._sum_n >>= 1
            self._pend >>= 1
            self._pend_n >>= 1
        # the hold level: mean load, leaving out a dip until it recovers (so the
        # final drop does not pull it down)
        h = self._sum // self._sum_n if self._sum_n else tot
        if tot < h - ((h - lvl) >> 3):
            self._pend += tot
            self._pend_n += 1
        else:
            self._sum += self._pend + tot
            self._sum_n += self._pend_n + 1
            self._pend = 0
            self._pend_n = 0
        step = lvl >> 3
        if prev > tot:
            for k in range(1, RUNGS):
                rung = lvl + k * step
                if prev >= rung > tot:
                    self._t_dn[k] = self._clock.cross(prev, tot, rung)
        if tot < lvl + step:
            self._state = _END
            self._run = 0
            self._min = tot

    def _begin(self, lvl):
        self._state = _HOLD
        self._sum = 0
        self._sum_n = 0
        self._pend = 0
        self._pend_n = 0
        self._h_path = 0
        self._h_min = 0x7FFF
        self._h_max = 0
        if self.holds < _COUNT_MAX:
            self.holds += 1
        self.level = lvl
        self.start_ms = self._t_up[2]
        self.in_hold = True

    def _end(self, reason):
        self._state = _QUIET
        self._run = 0
        self.in_hold = False
        self.end_reason = reason
        lvl = self.level
        step = lvl >> 3
        if step < 1:
            step = 1
        h = self._sum // self._sum_n if self._sum_n else lvl + 2 * step
        # the two rungs nearest 20 % and 80 % of the way from the two-feet level
        # to the hold level; extrapolate the ramps through them out to h
        k_lo = ((h - lvl) // 5 + step - 1) // step
        k_hi = (h - lvl - (h - lvl) // 5) // step
        if k_lo < 1:
            k_lo = 1
        if k_hi >= RUNGS:
            k_hi = RUNGS - 1
        if k_hi <= k_lo:
            k_lo = 1
            k_hi = 2
        r_lo = lvl + k_lo * step
        r_hi = lvl + k_hi * step
        up = since(self._t_up[k_lo], self._t_up[k_hi])
        if up > _BL_MAX_RAMP_MS:
            up = _BL_MAX_RAMP_MS
        dn = since(self._t_dn[k_hi], self._t_dn[k_lo])
        if dn > _BL_MAX_RAMP_MS:
            dn = _BL_MAX_RAMP_MS
        rise = r_hi - r_lo
        lag = self._clock.lag_ms
        start = (self._t_up[k_lo] + up * (h - r_lo) // rise - lag) & MS_MASK  # < 4000 * 2**16
        end = (self._t_dn[k_hi] - dn * (h - r_hi) // rise - lag) & MS_MASK
        dur = since(start, end)
        if dur > since(start, self._clock.now_ms) or since(start, self._clock.now_ms) > (
                MS_MASK >> 1):
            dur = 0  # the ramps overlap: no steady hold at all
        if dur == 0:
            self.end_reason = END_VOID  # the start was a false alarm: not a hold
        self.start_ms = start
        self.duration_ms = dur
        self._two = lvl << 4
        self.sway_range = self._h_max - self._h_min if self._h_max >= self._h_min else 0
        self.sway_path = (self._h_path >> 4) * 1000 // dur if dur > 0 else 0
        return EV_HOLD_END

    def _sway(self, lh, la, lf, tot):
        # centre of load along the foot; path and range of its smoothed position
        cop = (_POS_HEEL * lh + _POS_ARCH * la + _POS_FORE * lf) // tot  # < 2**27 / tot
        c16 = cop << 4
        prev = self._cop
        if prev < 0:
            prev = c16
        c = prev + ((c16 - prev) >> self._cop_k)
        self._cop = c
        step = c - prev
        if step < 0:
            step = -step
        pos = c >> 4
        if self._w_n == 0:
            self._w_min = pos
            self._w_max = pos
            self._w_path = 0
            self._w_sum = 0
        self._w_n += 1
        self._w_path += step
        self._w_sum += pos
        if pos < self._w_min:
            self._w_min = pos
        if pos > self._w_max:
            self._w_max = pos
        if self._state == _HOLD and self._h_path < _PATH_CAP:
            self._h_path += step
            if pos < self._h_min:
                self._h_min = pos
            if pos > self._h_max:
                self._h_max = pos
        if self._w_n < self._window_n:
            return 0
        n = self._w_n
        self._w_n = 0
        self.window_ms = self._clock.now_ms
        self.sway_path = (self._w_path >> 4) * self._clock.rate_hz // n
        self.sway_range = self._w_max - self._w_min
        self.cop = self._w_sum // n
        self.in_hold = self._state == _HOLD or self._state == _END
        self.elapsed_ms = since(self.start_ms, self.window_ms) if self.in_hold else 0
        return EV_SWAY

    def pack(self, ev, buf, seq):
        """One Step Event packet for one of EV_CONTACT, EV_HOLD_START, EV_HOLD_END,
        EV_SWAY (pass a single bit); returns its length."""
        s = seq & SEQ_MASK
        k = KIND_BALANCE
        if ev & EV_CONTACT:
            struct.pack_into("<BBHBBIHHHHH", buf, 0, EVENT_FORMAT, k, s, BAL_CONTACT,
                             1 if self.contact else 0, self.contact_ms, u16(self.total),
                             0, 0, 0, 0)
        elif ev & EV_HOLD_START:
            struct.pack_into("<BBHBBHIHHHH", buf, 0, EVENT_FORMAT, k, s, BAL_START, 0,
                             self.holds & SEQ_MASK, self.start_ms, u16(self.level), 0, 0, 0)
        elif ev & EV_HOLD_END:
            struct.pack_into("<BBHBBHIIHH", buf, 0, EVENT_FORMAT, k, s, BAL_END,
                             self.end_reason, self.holds & SEQ_MASK, self.start_ms,
                             self.duration_ms, u16(self.sway_path), u16(self.sway_range))
        else:
            struct.pack_into("<BBHBBIIHHH", buf, 0, EVENT_FORMAT, k, s, BAL_SWAY,
                             1 if self.in_hold else 0, self.window_ms, self.elapsed_ms,
                             u16(self.sway_path), u16(self.sway_range), u16(self.cop))
        return PKT

