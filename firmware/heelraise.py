# Heel-raise counter (docs/EXERCISES.md): a rep is the heel unloading by at least
# 80 % while the forefoot stays loaded, then coming back down. Shared parts and the
# rules every mode keeps (integer-only, no allocation per sample): exbase.py.
try:
    import micropython
    from micropython import const
except ImportError:  # CPython

    class micropython:  # type: ignore[no-redef]  # noqa: N801  (stands in for the module)
        @staticmethod
        def native(f):
            return f

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
        self._fore = Fsr(self._clock)
        self._settle_n = self._clock.samples(_HR_SETTLE_MS)
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
        self.count = 0
        self.partials = 0
        self.start_ms = 0
        self.rise_ms = 0
        self.hold_ms = 0
        self.lower_ms = 0
        self.depth_pct = 0

    @property
    def now_ms(self):
        return self._clock.now_ms

    @micropython.native
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
            self._state = _IDLE
            self._settle = 0
            return 0
        if nh < self._min:
            self._min = nh
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
        elif st == _RISING:
            if nh >= _HR_DOWN:
                self._state = _READY
                if self._min < _HR_TRY:
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
            self._state = _IDLE
            self._settle = 0
        return 0

    def _depth(self):
        d = (FULL - self._min) * 100 // FULL
        return 0 if d < 0 else (100 if d > 100 else d)

    def _rep(self, t_up80):
        # 80 % -> 20 % is 60 % of the load change: a movement of depth d (1/FULL)
        # lasts d/60 % of that interval and began a third of it before the 80 %
        # crossing (likewise the lowering, mirrored).
        rise = since(self._t_down80, self._t_down20)
        lower = since(self._t_up20, t_up80)
        top = since(self._t_down20, self._t_up20)
        d = FULL - self._min
        rise_full = rise * d * 5 // (3 * FULL)  # rise < 60000: product < 2**29
        lower_full = lower * d * 5 // (3 * FULL)
        hold = top - (rise_full - rise - rise // 3) - (lower_full - lower - lower // 3)
        self.count += 1
        self.start_ms = (self._t_down80 - rise // 3 - self._clock.lag_ms) & MS_MASK
        self.rise_ms = rise_full
        self.lower_ms = lower_full
        self.hold_ms = hold if hold > 0 else 0
        self.depth_pct = d * 100 // FULL
        return EV_REP

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_REP or EV_PARTIAL; returns its length."""
        struct.pack_into("<BBHBBHIHHHH", buf, 0, EVENT_FORMAT, KIND_HEEL_RAISE,
                         seq & SEQ_MASK, 1 if ev & EV_PARTIAL else 0, self.depth_pct,
                         self.count & SEQ_MASK, self.start_ms, u16(self.rise_ms),
                         u16(self.hold_ms), u16(self.lower_ms), u16(self.partials))
        return PKT

