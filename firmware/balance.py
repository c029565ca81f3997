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
    Clock,
    Fsr,
    shift_for,
    since,
    u16,
)

# exbase.py's constants, private here: a const() another module imports is a
# global (an interned name and a dictionary lookup per use); exercise.py has the
# public copies (tests/test_budget.py checks that they agree)
_BAL_CONTACT = const(0)  # KIND_BALANCE sub-events (byte 4)
_BAL_END = const(2)
_BAL_START = const(1)
_BAL_SWAY = const(3)
_END_COLLAPSE = const(2)  # this foot's load collapsed (stepped off, fell)
_END_OTHER_FOOT = const(1)  # the other foot took weight back
_END_VOID = const(3)  # no steady single-leg load after all: discard the started hold
_EV_CONTACT = const(4)  # balance: this foot became loaded / unloaded
_EV_HOLD_END = const(16)  # balance: stance ended (reason in end_reason)
_EV_HOLD_START = const(8)  # balance: single-leg stance confirmed
_EV_SWAY = const(32)  # balance: one second of sway while the foot is loaded
_EVENT_FORMAT = const(1)
_KIND_BALANCE = const(0x12)
_MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
_PKT = const(20)
_RUNGS = const(8)  # load ladders for timing ramps (rung 0 unused)
_SEQ_MASK = const(0xFFFF)
_TOP_PEAK = const(0)  # Fsr top modes

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


# BalanceTimer's integer state: one array (self._v) in place of 28 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_V_COP = const(0)
_V_COP_K = const(1)
_V_DOWN_K = const(2)
_V_END_N = const(3)
_V_H_MAX = const(4)
_V_H_MIN = const(5)
_V_H_PATH = const(6)
_V_MIN = const(7)
_V_PEAK_K = const(8)
_V_PEND = const(9)
_V_PEND_N = const(10)
_V_PREV = const(11)
_V_QUIET_N = const(12)
_V_REF = const(13)
_V_RUN = const(14)
_V_STATE = const(15)
_V_STEADY = const(16)
_V_SUM = const(17)
_V_SUM_N = const(18)
_V_TS = const(19)
_V_TWO = const(20)
_V_UPLVL_K = const(21)
_V_W_MAX = const(22)
_V_W_MIN = const(23)
_V_W_N = const(24)
_V_W_PATH = const(25)
_V_W_SUM = const(26)
_V_WINDOW_N = const(27)
_V_N = const(28)


class BalanceTimer:
    """Single-leg stance on this foot, from this insole alone: standing on both
    feet sets a level; a rise of 25 % above it held for two seconds is the other foot
    lifted; falling back below 12.5 % above it ends the hold (the other foot touched
    down, or the load collapsed if it then falls under half). Also reports contact
    changes and one-second sway windows so a host can combine two insoles."""

    def __init__(self, rate_hz=100):
        self._v = v = array("i", [0] * _V_N)
        c = self._clock = Clock(rate_hz)
        self._fsr = (Fsr(c), Fsr(c), Fsr(c))
        v[_V_QUIET_N] = c.samples(_BL_QUIET_MS)
        v[_V_END_N] = c.samples(_BL_END_MS)
        v[_V_WINDOW_N] = c.samples(_BL_WINDOW_MS)
        v[_V_DOWN_K] = shift_for(c.samples(_BL_DOWN_MS))
        v[_V_UPLVL_K] = shift_for(c.samples(_BL_UPLVL_MS))
        v[_V_PEAK_K] = shift_for(c.samples(_BL_PEAK_MS))
        v[_V_COP_K] = shift_for(c.samples(_BL_COP_MS))
        # crossing times of the rungs two-feet level * (1 + k/8), rising and falling
        self._t_up = array("i", [0] * _RUNGS)
        self._t_dn = array("i", [0] * _RUNGS)
        self.reset()

    def reset(self):
        v = self._v
        self._clock.reset()
        for s in self._fsr:
            s.reset()
        v[_V_STATE] = _IDLE
        v[_V_RUN] = 0  # samples of the current condition
        v[_V_STEADY] = 0  # samples standing still near the two-feet level
        v[_V_TS] = 0  # smoothed total load, counts/4 * 16
        v[_V_PREV] = 0
        v[_V_REF] = 0  # contact reference (peak total), counts/4
        v[_V_TWO] = 0  # two-feet level, counts/4 * 16
        for k in range(_RUNGS):
            self._t_up[k] = 0
            self._t_dn[k] = 0
        v[_V_MIN] = 0
        v[_V_SUM] = 0  # hold load sum and samples; a dip's samples wait in _pend
        v[_V_SUM_N] = 0
        v[_V_PEND] = 0
        v[_V_PEND_N] = 0
        v[_V_COP] = -1  # smoothed centre of load, per-mille * 16
        v[_V_W_N] = 0  # sway window: samples, path, min, max, cop sum
        v[_V_W_PATH] = 0
        v[_V_W_MIN] = 0
        v[_V_W_MAX] = 0
        v[_V_W_SUM] = 0
        v[_V_H_PATH] = 0  # whole hold: path (per-mille), min, max
        v[_V_H_MIN] = 0
        v[_V_H_MAX] = 0
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
        v = self._v
        clock = self._clock
        clock.tick()
        f = self._fsr
        f[0].update(heel, _TOP_PEAK)
        f[1].update(arch, _TOP_PEAK)
        f[2].update(fore, _TOP_PEAK)
        lh = f[0].load >> 2
        la = f[1].load >> 2
        lf = f[2].load >> 2
        ts = v[_V_TS] + ((((lh + la + lf) << 4) - v[_V_TS]) >> clock.smooth_k)
        v[_V_TS] = ts
        tot = ts >> 4  # < 2**16
        self.total = tot
        prev = v[_V_PREV]
        v[_V_PREV] = tot
        ref = v[_V_REF]
        if tot > ref:
            ref = tot
        else:
            ref -= ref >> v[_V_PEAK_K]
        v[_V_REF] = ref
        ev = self._contact(prev, tot, ref)
        if not self.contact:
            v[_V_COP] = -1
            if v[_V_STATE] == _HOLD:
                for k in range(_RUNGS):
                    self._t_dn[k] = self.contact_ms
            if v[_V_STATE] == _HOLD or v[_V_STATE] == _END:
                return ev | self._end(_END_COLLAPSE)
            v[_V_STATE] = _IDLE
            v[_V_RUN] = 0
            return ev
        ev |= self._sway(lh, la, lf, tot)
        st = v[_V_STATE]
        if st == _IDLE:
            v[_V_TWO] = tot << 4
            v[_V_STATE] = _QUIET
            v[_V_RUN] = 0
            return ev
        if st == _QUIET:
            return ev | self._quiet(prev, tot)
        if st == _HOLD:
            self._hold(prev, tot)
            return ev
        # _END: watch the drop for a while to tell why the hold ended
        if tot >= self.level + 2 * (self.level >> 3):
            v[_V_STATE] = _HOLD
            return ev
        if tot < v[_V_MIN]:
            v[_V_MIN] = tot
        v[_V_RUN] += 1
        if v[_V_RUN] >= v[_V_END_N]:
            reason = _END_OTHER_FOOT
            if v[_V_MIN] < (v[_V_TWO] >> 5):  # under half the two-feet level
                reason = _END_COLLAPSE
            ev |= self._end(reason)
        return ev

    def _contact(self, prev, total, ref):
        on = ref >> 3
        if on < _BL_MIN_TOTAL:
            on = _BL_MIN_TOTAL
        off = on >> 1
        if not self.contact and total >= on:
            self.contact = True
            self.contact_ms = (self._clock.cross(prev, total, on) - self._clock.lag_ms) & _MS_MASK
            return _EV_CONTACT
        if self.contact and total < off:
            self.contact = False
            self.contact_ms = (self._clock.cross(prev, total, off) - self._clock.lag_ms) & _MS_MASK
            return _EV_CONTACT
        return 0

    def _quiet(self, prev, total):
        # Standing on both feet: learn that level, then watch for a lasting rise.
        v = self._v
        clock = self._clock
        two = v[_V_TWO]
        t16 = total << 4
        if v[_V_RUN] < v[_V_QUIET_N]:
            # settling after contact: follow the load both ways, no hold yet
            v[_V_RUN] += 1
            v[_V_STEADY] = 0
            v[_V_TWO] = two + ((t16 - two) >> v[_V_DOWN_K])
            for k in range(_RUNGS):
                self._t_up[k] = clock.now_ms
            return 0
        lvl = two >> 4
        step = lvl >> 3
        if prev < total:
            for k in range(1, _RUNGS):
                rung = lvl + k * step
                if prev < rung <= total:
                    self._t_up[k] = clock.cross(prev, total, rung)
        if total < lvl - step:
            v[_V_STEADY] = 0  # not standing still: walking, shifting about
        elif total < lvl + step and v[_V_STEADY] < v[_V_QUIET_N]:
            v[_V_STEADY] += 1
        if total >= lvl + 2 * step:
            if (since(self._t_up[2], clock.now_ms) >= _BL_CONFIRM_MS
                    and v[_V_STEADY] >= v[_V_QUIET_N]):
                self._begin(lvl)
                return _EV_HOLD_START
            return 0
        if t16 < two:
            k = v[_V_DOWN_K]
        elif total < lvl + step:
            k = v[_V_UPLVL_K]
        else:
            k = v[_V_UPLVL_K] + 2  # part-way up: barely move, a rise may be starting
        v[_V_TWO] = two + ((t16 - two) >> k)
        return 0

    def _hold(self, prev, total):
        v = self._v
        lvl = self.level
        if v[_V_SUM] > 0x4000000:  # keep the sums below 2**27
            v[_V_SUM] >>= 1
            v[_V_SUM_N] >>= 1
            v[_V_PEND] >>= 1
            v[_V_PEND_N] >>= 1
        # the hold level: mean load, leaving out a dip until it recovers (so the
        # final drop does not pull it down)
        h = v[_V_SUM] // v[_V_SUM_N] if v[_V_SUM_N] else total
        if total < h - ((h - lvl) >> 3):
            v[_V_PEND] += total
            v[_V_PEND_N] += 1
        else:
            v[_V_SUM] += v[_V_PEND] + total
            v[_V_SUM_N] += v[_V_PEND_N] + 1
            v[_V_PEND] = 0
            v[_V_PEND_N] = 0
        step = lvl >> 3
        if prev > total:
            for k in range(1, _RUNGS):
                rung = lvl + k * step
                if prev >= rung > total:
                    self._t_dn[k] = self._clock.cross(prev, total, rung)
        if total < lvl + step:
            v[_V_STATE] = _END
            v[_V_RUN] = 0
            v[_V_MIN] = total

    def _begin(self, level):
        v = self._v
        v[_V_STATE] = _HOLD
        v[_V_SUM] = 0
        v[_V_SUM_N] = 0
        v[_V_PEND] = 0
        v[_V_PEND_N] = 0
        v[_V_H_PATH] = 0
        v[_V_H_MIN] = 0x7FFF
        v[_V_H_MAX] = 0
        if self.holds < _COUNT_MAX:
            self.holds += 1
        self.level = level
        self.start_ms = self._t_up[2]
        self.in_hold = True

    def _end(self, reason):
        v = self._v
        v[_V_STATE] = _QUIET
        v[_V_RUN] = 0
        self.in_hold = False
        self.end_reason = reason
        lvl = self.level
        step = lvl >> 3
        if step < 1:
            step = 1
        h = v[_V_SUM] // v[_V_SUM_N] if v[_V_SUM_N] else lvl + 2 * step
        # the two rungs nearest 20 % and 80 % of the way from the two-feet level
        # to the hold level; extrapolate the ramps through them out to h
        k_lo = ((h - lvl) // 5 + step - 1) // step
        k_hi = (h - lvl - (h - lvl) // 5) // step
        if k_lo < 1:
            k_lo = 1
        if k_hi >= _RUNGS:
            k_hi = _RUNGS - 1
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
        start = (self._t_up[k_lo] + up * (h - r_lo) // rise - lag) & _MS_MASK  # < 4000 * 2**16
        end = (self._t_dn[k_hi] - dn * (h - r_hi) // rise - lag) & _MS_MASK
        dur = since(start, end)
        if dur > since(start, self._clock.now_ms) or since(start, self._clock.now_ms) > (
                _MS_MASK >> 1):
            dur = 0  # the ramps overlap: no steady hold at all
        if dur == 0:
            self.end_reason = _END_VOID  # the start was a false alarm: not a hold
        self.start_ms = start
        self.duration_ms = dur
        v[_V_TWO] = lvl << 4
        self.sway_range = v[_V_H_MAX] - v[_V_H_MIN] if v[_V_H_MAX] >= v[_V_H_MIN] else 0
        self.sway_path = (v[_V_H_PATH] >> 4) * 1000 // dur if dur > 0 else 0
        return _EV_HOLD_END

    def _sway(self, heel, arch, fore, total):
        # centre of load along the foot; path and range of its smoothed position
        v = self._v
        cop = (_POS_HEEL * heel + _POS_ARCH * arch + _POS_FORE * fore) // total  # < 2**27 / total
        c16 = cop << 4
        prev = v[_V_COP]
        if prev < 0:
            prev = c16
        c = prev + ((c16 - prev) >> v[_V_COP_K])
        v[_V_COP] = c
        step = c - prev
        if step < 0:
            step = -step
        pos = c >> 4
        if v[_V_W_N] == 0:
            v[_V_W_MIN] = pos
            v[_V_W_MAX] = pos
            v[_V_W_PATH] = 0
            v[_V_W_SUM] = 0
        v[_V_W_N] += 1
        v[_V_W_PATH] += step
        v[_V_W_SUM] += pos
        if pos < v[_V_W_MIN]:
            v[_V_W_MIN] = pos
        if pos > v[_V_W_MAX]:
            v[_V_W_MAX] = pos
        if v[_V_STATE] == _HOLD and v[_V_H_PATH] < _PATH_CAP:
            v[_V_H_PATH] += step
            if pos < v[_V_H_MIN]:
                v[_V_H_MIN] = pos
            if pos > v[_V_H_MAX]:
                v[_V_H_MAX] = pos
        if v[_V_W_N] < v[_V_WINDOW_N]:
            return 0
        n = v[_V_W_N]
        v[_V_W_N] = 0
        self.window_ms = self._clock.now_ms
        self.sway_path = (v[_V_W_PATH] >> 4) * self._clock.rate_hz // n
        self.sway_range = v[_V_W_MAX] - v[_V_W_MIN]
        self.cop = v[_V_W_SUM] // n
        self.in_hold = v[_V_STATE] == _HOLD or v[_V_STATE] == _END
        self.elapsed_ms = since(self.start_ms, self.window_ms) if self.in_hold else 0
        return _EV_SWAY

    def pack(self, ev, buf, seq):
        """One Step Event packet for one of EV_CONTACT, EV_HOLD_START, EV_HOLD_END,
        EV_SWAY (pass a single bit); returns its length."""
        s = seq & _SEQ_MASK
        k = _KIND_BALANCE
        if ev & _EV_CONTACT:
            struct.pack_into("<BBHBBIHHHHH", buf, 0, _EVENT_FORMAT, k, s, _BAL_CONTACT,
                             1 if self.contact else 0, self.contact_ms, u16(self.total),
                             0, 0, 0, 0)
        elif ev & _EV_HOLD_START:
            struct.pack_into("<BBHBBHIHHHH", buf, 0, _EVENT_FORMAT, k, s, _BAL_START, 0,
                             self.holds & _SEQ_MASK, self.start_ms, u16(self.level), 0, 0, 0)
        elif ev & _EV_HOLD_END:
            struct.pack_into("<BBHBBHIIHH", buf, 0, _EVENT_FORMAT, k, s, _BAL_END,
                             self.end_reason, self.holds & _SEQ_MASK, self.start_ms,
                             self.duration_ms, u16(self.sway_path), u16(self.sway_range))
        else:
            struct.pack_into("<BBHBBIIHHH", buf, 0, _EVENT_FORMAT, k, s, _BAL_SWAY,
                             1 if self.in_hold else 0, self.window_ms, self.elapsed_ms,
                             u16(self.sway_path), u16(self.sway_range), u16(self.cop))
        return _PKT

