# Heel-raise counter (docs/EXERCISES.md): a rep is the heel unloading by at least
# 80 % while the forefoot stays loaded, then coming back down. Shared parts and the
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
    RampFit,
    since,
    u16,
)

# exbase.py's constants, private here: a const() another module imports is a
# global (an interned name and a dictionary lookup per use); exercise.py has the
# public copies (tests/test_budget.py checks that they agree)
_EV_PARTIAL = const(2)  # heel raise too shallow to count
_EV_REP = const(1)  # heel raise or toe scrunch completed
_EVENT_FORMAT = const(1)
_FULL = const(1024)  # normalised load: 1024 = the sensor's loaded reference level
_KIND_HEEL_RAISE = const(0x10)
_MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
_PKT = const(20)
_SEQ_MASK = const(0xFFFF)
_TOP_FROZEN = const(2)
_TOP_MEAN = const(1)
_TOP_PEAK = const(0)  # Fsr top modes

# Heel raises (levels are fractions of the heel's standing load)
_HR_DOWN = const(819)  # >= 80 %: heel down
_HR_UP = const(205)  # < 20 %: heel up, i.e. at least 80 % unloaded (the rep depth)
_HR_TRY = const(614)  # < 60 % but never < 20 %: a partial raise
_HR_FORE = const(256)  # forefoot below 25 % of its reference: the foot left the floor
_HR_SETTLE_MS = const(400)  # heel and forefoot down this long before the first rep
_HR_MAX_MS = const(60000)  # a rep still open after a minute is abandoned
_HR_FIT_HI = const(973)  # the rise is fitted from where the heel falls under 95 %
_HR_CHUNK_MS = const(50)  # held-up level: means over chunks this long ...
_HR_NEAR = const(192)  # ... that lie within 12/1024 (1/16 units) of the lowest
_Y_FULL = const(16384)  # FULL in the 1/16 units of the ramp fits
_COUNT_MAX = const(0x1FFFFFFF)  # exbase.COUNT_MAX
_IDLE = const(0)
_READY = const(1)
_RISING = const(2)
_UP = const(3)
_LOWERING = const(4)


# HeelRaiseCounter's integer state: one array (self._v) in place of 25 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_V_C_N = const(0)
_V_C_SUM = const(1)
_V_CHUNK_N = const(2)
_V_F0 = const(3)
_V_FORE0 = const(4)
_V_H_MIN = const(5)
_V_H_N = const(6)
_V_H_SUM = const(7)
_V_HS = const(8)
_V_MIN = const(9)
_V_PREV = const(10)
_V_RISE_DONE = const(11)
_V_S_A = const(12)
_V_S_B = const(13)
_V_S_K = const(14)
_V_S_N = const(15)
_V_S_SUM = const(16)
_V_SETTLE = const(17)
_V_SETTLE_N = const(18)
_V_STAND = const(19)
_V_STAND_OK = const(20)
_V_STATE = const(21)
_V_T_DOWN20 = const(22)
_V_T_DOWN80 = const(23)
_V_T_UP20 = const(24)
_V_N = const(25)


class HeelRaiseCounter:
    """A rep: the heel unloads by at least 80 % while the forefoot stays loaded, then
    comes back down. Fields after EV_REP / EV_PARTIAL: count, partials, start_ms,
    rise_ms, hold_ms, lower_ms, depth_pct."""

    def __init__(self, rate_hz=100):
        self._v = v = array("i", [0] * _V_N)
        self._clock = Clock(rate_hz)
        self._heel = Fsr(self._clock)
        self._heel.raise_floor = False  # a raise of 85 % is no sign of a raised floor
        self._fore = Fsr(self._clock)
        v[_V_SETTLE_N] = self._clock.samples(_HR_SETTLE_MS)
        v[_V_CHUNK_N] = self._clock.samples(_HR_CHUNK_MS)
        self._rise = RampFit(self._clock)
        self._lower = RampFit(self._clock)
        self.reset()

    def reset(self):
        v = self._v
        self._clock.reset()
        self._heel.reset()
        self._fore.reset()
        v[_V_STATE] = _IDLE
        v[_V_SETTLE] = 0
        v[_V_PREV] = 0
        v[_V_MIN] = _FULL
        v[_V_T_DOWN80] = 0
        v[_V_T_DOWN20] = 0
        v[_V_T_UP20] = 0
        v[_V_FORE0] = 0  # forefoot load (counts) when the rise began
        v[_V_HS] = _FULL << 5  # smoothed heel load, 1/32 units
        v[_V_F0] = 0  # heel floor when the rep began
        self._rise.clear()
        self._lower.clear()
        v[_V_RISE_DONE] = False
        v[_V_S_SUM] = 0  # standing level: current chunk, the two before, their count
        v[_V_S_N] = 0
        v[_V_S_A] = 0
        v[_V_S_B] = 0
        v[_V_S_K] = 0
        v[_V_STAND] = _Y_FULL
        v[_V_STAND_OK] = False
        v[_V_C_SUM] = 0  # held-up level: current chunk, accepted chunks, lowest chunk
        v[_V_C_N] = 0
        v[_V_H_SUM] = 0
        v[_V_H_N] = 0
        v[_V_H_MIN] = 0
        self.count = 0
        self.partials = 0
        self.start_ms = 0
        self.rise_ms = 0
        self.hold_ms = 0
        self.lower_ms = 0
        self.depth_pct = 0

    def feed(self, heel, arch, fore):
        v = self._v
        clock = self._clock
        clock.tick()
        st = v[_V_STATE]
        mode = _TOP_FROZEN
        if st == _IDLE:
            mode = _TOP_PEAK
        elif st == _READY:
            mode = _TOP_MEAN
        nh = self._heel.update(heel, mode)
        nf = self._fore.update(fore, _TOP_PEAK)
        if st <= _READY:
            v[_V_F0] = self._heel.floor  # kept through a rep: one scale for its ramps
        y = self._raw(heel) if nh >= 0 else 0
        if nh >= 0:
            hs = v[_V_HS] + (((nh << 5) - v[_V_HS]) >> clock.smooth_k)
            v[_V_HS] = hs
            nh = hs >> 5
        prev = v[_V_PREV]
        v[_V_PREV] = nh
        fl = self._fore.load
        if st >= _RISING and fl < v[_V_FORE0] - ((self._fore.top - self._fore.floor) >> 7):
            nf = -1
        if nh < 0 or nf < _HR_FORE:
            # forefoot off the floor or losing load (a step: in a raise the forefoot
            # takes the weight the heel gives up), or no usable heel: no rep here
            self._idle()
            return 0
        if nh < v[_V_MIN]:
            v[_V_MIN] = nh
        self._track(st, nh, y)
        if st == _IDLE:
            if nh >= _HR_DOWN:
                v[_V_SETTLE] += 1
                if v[_V_SETTLE] >= v[_V_SETTLE_N]:
                    v[_V_STATE] = _READY
            else:
                v[_V_SETTLE] = 0
        elif st == _READY:
            if nh < _HR_DOWN:
                v[_V_STATE] = _RISING
                v[_V_T_DOWN80] = clock.cross(prev, nh, _HR_DOWN)
                v[_V_MIN] = nh
                v[_V_FORE0] = fl
                v[_V_RISE_DONE] = False
                v[_V_H_N] = 0
                v[_V_C_N] = 0
                v[_V_C_SUM] = 0
        elif st == _RISING:
            if nh >= _HR_DOWN:
                v[_V_STATE] = _READY
                if v[_V_MIN] < _HR_TRY:
                    if self.partials < _COUNT_MAX:
                        self.partials += 1
                    self.depth_pct = self._depth()
                    return _EV_PARTIAL
            elif nh < _HR_UP:
                v[_V_STATE] = _UP
                v[_V_T_DOWN20] = clock.cross(prev, nh, _HR_UP)
        elif st == _UP:
            if nh >= _HR_UP:
                v[_V_STATE] = _LOWERING
                v[_V_T_UP20] = clock.cross(prev, nh, _HR_UP)
        elif nh < _HR_UP:  # _LOWERING, and the heel went up again
            v[_V_STATE] = _UP
        elif nh >= _HR_DOWN:
            v[_V_STATE] = _READY
            return self._rep(clock.cross(prev, nh, _HR_DOWN))
        if st >= _RISING and since(v[_V_T_DOWN80], clock.now_ms) > _HR_MAX_MS:
            self._idle()
        return 0

    def _idle(self):
        v = self._v
        v[_V_STATE] = _IDLE
        v[_V_SETTLE] = 0
        v[_V_STAND_OK] = False
        self._rise.open = False  # the next fit starts afresh
        self._lower.open = False

    def _raw(self, heel):
        # The heel's load, unsmoothed and not clipped at the floor (so that noise
        # around an unloaded heel averages to zero), 1/16 units of FULL, above the
        # floor as it was when the rep began (the floor creeps while the heel is up).
        v = self._v
        f0 = v[_V_F0]
        span = (self._heel.top - f0) >> 4
        if span < 1:
            return 0
        d = heel - (f0 >> 4)
        if d < -span:
            d = -span
        elif d > 2 * span:
            d = 2 * span
        return ((d * _FULL // span) << 4) + ((d * _FULL % span) << 4) // span  # d*FULL < 2**27

    def _track(self, st, nh, y):
        # Feeds the ramp fits (the rise from the heel's fall under 95 % until it is
        # held up, the lowering from a tenth of the way back down) and the standing
        # and held-up levels the fitted lines are followed to.
        v = self._v
        rise = self._rise
        if st == _READY:
            if nh < _HR_FIT_HI:
                rise.add(y)
                v[_V_S_SUM] = 0
                v[_V_S_N] = 0
                v[_V_S_K] = 0
            else:
                rise.open = False
                self._standing(y)
            self._lower.open = False
            return
        v[_V_S_SUM] = 0
        v[_V_S_N] = 0
        v[_V_S_K] = 0
        if st == _UP and nh > v[_V_MIN] + (_FULL >> 4):
            v[_V_RISE_DONE] = True  # on the way back down: the rise is over
        if st == _RISING or (st == _UP and not v[_V_RISE_DONE]):
            rise.add(y)
        if st < _UP:
            return
        if st == _UP:
            v[_V_C_SUM] += y
            v[_V_C_N] += 1
            if v[_V_C_N] >= v[_V_CHUNK_N]:
                self._chunk(v[_V_C_SUM] // v[_V_C_N])
                v[_V_C_SUM] = 0
                v[_V_C_N] = 0
        low = self._hold_level()
        gap = (_Y_FULL - low) // 10
        n16 = nh << 4
        if n16 >= low + gap or (self._lower.open and n16 >= low + (gap >> 1)):
            self._lower.add(y)  # blocks stay contiguous: no gaps in an open fit
        else:
            self._lower.open = False

    def _standing(self, y):
        # The standing level (1/16 units), from chunk means that differ little from
        # both neighbours: chunks on the ramps before and after a rep are left out.
        v = self._v
        v[_V_S_SUM] += y
        v[_V_S_N] += 1
        if v[_V_S_N] < v[_V_CHUNK_N]:
            return
        c = v[_V_S_SUM] // v[_V_S_N]
        v[_V_S_SUM] = 0
        v[_V_S_N] = 0
        a = v[_V_S_A]
        b = v[_V_S_B]
        v[_V_S_A] = b
        v[_V_S_B] = c
        v[_V_S_K] += 1
        if v[_V_S_K] < 3 or not (-_HR_NEAR <= a - b <= _HR_NEAR
                                 and -_HR_NEAR <= c - b <= _HR_NEAR):
            return
        if v[_V_STAND_OK]:
            v[_V_STAND] += (b - v[_V_STAND]) >> 2
        else:
            v[_V_STAND] = b
            v[_V_STAND_OK] = True

    def _chunk(self, c):
        # The held-up level: mean of the chunks near the lowest one (those on the
        # ramps in and out are left out).
        v = self._v
        if v[_V_H_N] == 0 or c < v[_V_H_MIN] - _HR_NEAR:
            v[_V_H_SUM] = c
            v[_V_H_N] = 1
            v[_V_H_MIN] = c
            return
        if c <= v[_V_H_MIN] + _HR_NEAR:
            if v[_V_H_SUM] > 0x1000000 or v[_V_H_SUM] < -0x1000000:
                v[_V_H_SUM] >>= 1  # keep the sum small on very long holds
                v[_V_H_N] >>= 1
            v[_V_H_SUM] += c
            v[_V_H_N] += 1
            if c < v[_V_H_MIN]:
                v[_V_H_MIN] = c
            if v[_V_H_N] >= 2:
                v[_V_RISE_DONE] = True  # two chunks at the bottom: the rise is over

    def _hold_level(self):
        v = self._v
        if v[_V_H_N]:
            return v[_V_H_SUM] // v[_V_H_N]
        return v[_V_MIN] << 4

    def _depth(self):
        v = self._v
        d = (_FULL - v[_V_MIN]) * 100 // _FULL
        return 0 if d < 0 else (100 if d > 100 else d)

    def _rep(self, t_up80):
        v = self._v
        d = _FULL - v[_V_MIN]
        if self.count < _COUNT_MAX:
            self.count += 1
        self.depth_pct = d * 100 // _FULL
        # Straight lines through the raw samples of both ramps, followed out to the
        # standing level and the held-up level: where the heel left the floor, got
        # fully up, started down and was back.
        low = self._hold_level()
        high = v[_V_STAND] if v[_V_STAND_OK] else _Y_FULL
        gap = (high - low) // 10
        if (gap > 0 and self._rise.fit(low + (gap >> 1), high - (gap >> 1), True)
                and self._lower.fit(low + gap, high - gap)):
            start = self._rise.at(high)
            up = self._rise.at(low)
            down = self._lower.at(low)
            hold = since(up, down)
            self.start_ms = start
            self.rise_ms = since(start, up)
            self.lower_ms = since(down, self._lower.at(high))
            self.hold_ms = hold if hold < _HR_MAX_MS else 0  # else the ramps overlap
            return _EV_REP
        # No line (a ramp of a sample or two): from the threshold crossings. 80 % ->
        # 20 % is 60 % of the load change: a movement of depth d (1/FULL) lasts d/60 %
        # of that interval and began a third of it before the 80 % crossing
        # (likewise the lowering, mirrored).
        rise = since(v[_V_T_DOWN80], v[_V_T_DOWN20])
        lower = since(v[_V_T_UP20], t_up80)
        top = since(v[_V_T_DOWN20], v[_V_T_UP20])
        rise_full = rise * d * 5 // (3 * _FULL)  # rise < 60000: product < 2**29
        lower_full = lower * d * 5 // (3 * _FULL)
        hold = top - (rise_full - rise - rise // 3) - (lower_full - lower - lower // 3)
        self.start_ms = (v[_V_T_DOWN80] - rise // 3 - self._clock.lag_ms) & _MS_MASK
        self.rise_ms = rise_full
        self.lower_ms = lower_full
        self.hold_ms = hold if hold > 0 else 0
        return _EV_REP

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_REP or EV_PARTIAL; returns its length."""
        struct.pack_into("<BBHBBHIHHHH", buf, 0, _EVENT_FORMAT, _KIND_HEEL_RAISE,
                         seq & _SEQ_MASK, 1 if ev & _EV_PARTIAL else 0, self.depth_pct,
                         self.count & _SEQ_MASK, self.start_ms, u16(self.rise_ms),
                         u16(self.hold_ms), u16(self.lower_ms), u16(self.partials))
        return _PKT

