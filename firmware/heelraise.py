# Heel-raise counter (docs/EXERCISES.md): a rep is the heel unloading by at least
# 80 % while the forefoot stays loaded, then coming back down. Shared parts and the
# rules every mode keeps (integer-only, no allocation per sample): exbase.py.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct

from exbase import (
    EV_PARTIAL,
    EV_REP,
    EVENT_FORMAT,
    FULL,
    KIND_HEEL_RAISE,
    MS_MASK,
    PKT,
    SEQ_MASK,
    TOP_FROZEN,
    TOP_MEAN,
    TOP_PEAK,
    Clock,
    Fsr,
    RampFit,
    since,
    u16,
)

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


class HeelRaiseCounter:
    """A rep: the heel unloads by at least 80 % while the forefoot stays loaded, then
    comes back down. Fields after EV_REP / EV_PARTIAL: count, partials, start_ms,
    rise_ms, hold_ms, lower_ms, depth_pct."""

    def __init__(self, rate_hz=100):
        self._clock = Clock(rate_hz)
        self._heel = Fsr(self._clock)
        self._heel.raise_floor = False  # a raise of 85 % is no sign of a raised floor
        self._fore = Fsr(self._clock)
        self._settle_n = self._clock.samples(_HR_SETTLE_MS)
        self._chunk_n = self._clock.samples(_HR_CHUNK_MS)
        self._rise = RampFit(self._clock)
        self._lower = RampFit(self._clock)
        self.reset()

    def reset(self):
        self._clock.reset()
        self._heel.reset()
        self._fore.reset()
        self._state = _IDLE
        self._settle = 0
        self._prev = 0
        self._min = FULL
        self._t_down80 = 0
        self._t_down20 = 0
        self._t_up20 = 0
        self._fore0 = 0  # forefoot load (counts) when the rise began
        self._hs = FULL << 5  # smoothed heel load, 1/32 units
        self._f0 = 0  # heel floor when the rep began
        self._rise.clear()
        self._lower.clear()
        self._rise_done = False
        self._s_sum = 0  # standing level: current chunk, the two before, their count
        self._s_n = 0
        self._s_a = 0
        self._s_b = 0
        self._s_k = 0
        self._stand = _Y_FULL
        self._stand_ok = False
        self._c_sum = 0  # held-up level: current chunk, accepted chunks, lowest chunk
        self._c_n = 0
        self._h_sum = 0
        self._h_n = 0
        self._h_min = 0
        self.count = 0
        self.partials = 0
        self.start_ms = 0
        self.rise_ms = 0
        self.hold_ms = 0
        self.lower_ms = 0
        self.depth_pct = 0

    def feed(self, heel, arch, fore):
        clock = self._clock
        clock.tick()
        st = self._state
        mode = TOP_FROZEN
        if st == _IDLE:
            mode = TOP_PEAK
        elif st == _READY:
            mode = TOP_MEAN
        nh = self._heel.update(heel, mode)
        nf = self._fore.update(fore, TOP_PEAK)
        if st <= _READY:
            self._f0 = self._heel.floor  # kept through a rep: one scale for its ramps
        y = self._raw(heel) if nh >= 0 else 0
        if nh >= 0:
            hs = self._hs + (((nh << 5) - self._hs) >> clock.smooth_k)
            self._hs = hs
            nh = hs >> 5
        prev = self._prev
        self._prev = nh
        fl = self._fore.load
        if st >= _RISING and fl < self._fore0 - ((self._fore.top - self._fore.floor) >> 7):
            nf = -1
        if nh < 0 or nf < _HR_FORE:
            # forefoot off the floor or losing load (a step: in a raise the forefoot
            # takes the weight the heel gives up), or no usable heel: no rep here
            self._idle()
            return 0
        if nh < self._min:
            self._min = nh
        self._track(st, nh, y)
        if st == _IDLE:
            if nh >= _HR_DOWN:
                self._settle += 1
                if self._settle >= self._settle_n:
                    self._state = _READY
            else:
                self._settle = 0
        elif st == _READY:
            if nh < _HR_DOWN:
                self._state = _RISING
                self._t_down80 = clock.cross(prev, nh, _HR_DOWN)
                self._min = nh
                self._fore0 = fl
                self._rise_done = False
                self._h_n = 0
                self._c_n = 0
                self._c_sum = 0
        elif st == _RISING:
            if nh >= _HR_DOWN:
                self._state = _READY
                if self._min < _HR_TRY:
                    if self.partials < _COUNT_MAX:
                        self.partials += 1
                    self.depth_pct = self._depth()
                    return EV_PARTIAL
            elif nh < _HR_UP:
                self._state = _UP
                self._t_down20 = clock.cross(prev, nh, _HR_UP)
        elif st == _UP:
            if nh >= _HR_UP:
                self._state = _LOWERING
                self._t_up20 = clock.cross(prev, nh, _HR_UP)
        elif nh < _HR_UP:  # _LOWERING, and the heel went up again
            self._state = _UP
        elif nh >= _HR_DOWN:
            self._state = _READY
            return self._rep(clock.cross(prev, nh, _HR_DOWN))
        if st >= _RISING and since(self._t_down80, clock.now_ms) > _HR_MAX_MS:
            self._idle()
        return 0

    def _idle(self):
        self._state = _IDLE
        self._settle = 0
        self._stand_ok = False
        self._rise.open = False  # the next fit starts afresh
        self._lower.open = False

    def _raw(self, heel):
        # The heel's load, unsmoothed and not clipped at the floor (so that noise
        # around an unloaded heel averages to zero), 1/16 units of FULL, above the
        # floor as it was when the rep began (the floor creeps while the heel is up).
        f0 = self._f0
        span = (self._heel.top - f0) >> 4
        if span < 1:
            return 0
        d = heel - (f0 >> 4)
        if d < -span:
            d = -span
        elif d > 2 * span:
            d = 2 * span
        return ((d * FULL // span) << 4) + ((d * FULL % span) << 4) // span  # d*FULL < 2**27

    def _track(self, st, nh, y):
        # Feeds the ramp fits (the rise from the heel's fall under 95 % until it is
        # held up, the lowering from a tenth of the way back down) and the standing
        # and held-up levels the fitted lines are followed to.
        rise = self._rise
        if st == _READY:
            if nh < _HR_FIT_HI:
                rise.add(y)
                self._s_sum = 0
                self._s_n = 0
                self._s_k = 0
            else:
                rise.open = False
                self._standing(y)
            self._lower.open = False
            return
        self._s_sum = 0
        self._s_n = 0
        self._s_k = 0
        if st == _UP and nh > self._min + (FULL >> 4):
            self._rise_done = True  # on the way back down: the rise is over
        if st == _RISING or (st == _UP and not self._rise_done):
            rise.add(y)
        if st < _UP:
            return
        if st == _UP:
            self._c_sum += y
            self._c_n += 1
            if self._c_n >= self._chunk_n:
                self._chunk(self._c_sum // self._c_n)
                self._c_sum = 0
                self._c_n = 0
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
        self._s_sum += y
        self._s_n += 1
        if self._s_n < self._chunk_n:
            return
        c = self._s_sum // self._s_n
        self._s_sum = 0
        self._s_n = 0
        a = self._s_a
        b = self._s_b
        self._s_a = b
        self._s_b = c
        self._s_k += 1
        if self._s_k < 3 or not (-_HR_NEAR <= a - b <= _HR_NEAR
                                 and -_HR_NEAR <= c - b <= _HR_NEAR):
            return
        if self._stand_ok:
            self._stand += (b - self._stand) >> 2
        else:
            self._stand = b
            self._stand_ok = True

    def _chunk(self, c):
        # The held-up level: mean of the chunks near the lowest one (those on the
        # ramps in and out are left out).
        if self._h_n == 0 or c < self._h_min - _HR_NEAR:
            self._h_sum = c
            self._h_n = 1
            self._h_min = c
            return
        if c <= self._h_min + _HR_NEAR:
            if self._h_sum > 0x1000000 or self._h_sum < -0x1000000:
                self._h_sum >>= 1  # keep the sum small on very long holds
                self._h_n >>= 1
            self._h_sum += c
            self._h_n += 1
            if c < self._h_min:
                self._h_min = c
            if self._h_n >= 2:
                self._rise_done = True  # two chunks at the bottom: the rise is over

    def _hold_level(self):
        if self._h_n:
            return self._h_sum // self._h_n
        return self._min << 4

    def _depth(self):
        d = (FULL - self._min) * 100 // FULL
        return 0 if d < 0 else (100 if d > 100 else d)

    def _rep(self, t_up80):
        d = FULL - self._min
        if self.count < _COUNT_MAX:
            self.count += 1
        self.depth_pct = d * 100 // FULL
        # Straight lines through the raw samples of both ramps, followed out to the
        # standing level and the held-up level: where the heel left the floor, got
        # fully up, started down and was back.
        low = self._hold_level()
        high = self._stand if self._stand_ok else _Y_FULL
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
            return EV_REP
        # No line (a ramp of a sample or two): from the threshold crossings. 80 % ->
        # 20 % is 60 % of the load change: a movement of depth d (1/FULL) lasts d/60 %
        # of that interval and began a third of it before the 80 % crossing
        # (likewise the lowering, mirrored).
        rise = since(self._t_down80, self._t_down20)
        lower = since(self._t_up20, t_up80)
        top = since(self._t_down20, self._t_up20)
        rise_full = rise * d * 5 // (3 * FULL)  # rise < 60000: product < 2**29
        lower_full = lower * d * 5 // (3 * FULL)
        hold = top - (rise_full - rise - rise // 3) - (lower_full - lower - lower // 3)
        self.start_ms = (self._t_down80 - rise // 3 - self._clock.lag_ms) & MS_MASK
        self.rise_ms = rise_full
        self.lower_ms = lower_full
        self.hold_ms = hold if hold > 0 else 0
        return EV_REP

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_REP or EV_PARTIAL; returns its length."""
        struct.pack_into("<BBHBBHIHHHH", buf, 0, EVENT_FORMAT, KIND_HEEL_RAISE,
                         seq & SEQ_MASK, 1 if ev & EV_PARTIAL else 0, self.depth_pct,
                         self.count & SEQ_MASK, self.start_ms, u16(self.rise_ms),
                         u16(self.hold_ms), u16(self.lower_ms), u16(self.partials))
        return PKT

