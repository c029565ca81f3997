# Slow-walk coach (docs/EXERCISES.md): every step the detector finds is compared
# with a target cadence and strike pattern. Shared parts and the rules every mode
# keeps (integer-only, no allocation per sample): exbase.py.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct

from exbase import (
    u16,
)
from gait import EV_STEP, PATTERN_REAR, GaitDetector

# exbase.py's constants, private here: a const() another module imports is a
# global (an interned name and a dictionary lookup per use); exercise.py has the
# public copies (tests/test_budget.py checks that they agree)
_COACH_HEEL_STRIKE = const(4)  # flags bit 2
_COACH_PATTERN_OK = const(8)  # flags bit 3
_EV_COACH = const(64)  # slow walk: a coached step
_EVENT_FORMAT = const(1)
_KIND_COACHED_STEP = const(0x13)
_PACE_FAST = const(3)
_PACE_ON_TARGET = const(2)
_PACE_SLOW = const(1)
_PACE_UNKNOWN = const(0)
_PKT = const(20)
_SEQ_MASK = const(0xFFFF)

_COUNT_MAX = const(0x1FFFFFFF)  # exbase.COUNT_MAX


class SlowWalkCoach:
    """Wraps gait.GaitDetector: every step is compared with a target cadence
    (steps/min * 10, within +-tol_pct) and strike pattern (0 = any); mains_hz is
    the local mains frequency, whose hum the detector's pre-filter cancels."""

    def __init__(self, rate_hz=100, target_x10=900, tol_pct=5, pattern=PATTERN_REAR,
                 mains_hz=50):
        self.detector = GaitDetector(rate_hz, mains_hz)
        self.set_target(target_x10, tol_pct, pattern)
        self.reset()

    def set_target(self, target_x10, tol_pct, pattern):
        if not 200 <= target_x10 <= 1600 or not 1 <= tol_pct <= 50 or not 0 <= pattern <= 3:
            raise ValueError("target 200..1600, tolerance 1..50 %, pattern 0..3")
        self.target_x10 = target_x10
        self.tol_pct = tol_pct
        self.want_pattern = pattern
        self._lo = target_x10 * (100 - tol_pct) // 100
        self._hi = target_x10 * (100 + tol_pct) // 100

    def reset(self):
        self.detector.reset()
        self.steps = 0
        self.cadence_x10 = 0
        self.flags = 0

    def feed(self, heel, arch, fore):
        d = self.detector
        if not d.feed(heel, arch, fore) & EV_STEP:
            return 0
        if self.steps < _COUNT_MAX:
            self.steps += 1
        # one insole sees every other step: cadence = 2 steps per stride
        cad = 1200000 // d.stride_ms if d.stride_ms else 0
        self.cadence_x10 = cad
        if cad == 0:
            flags = _PACE_UNKNOWN
        elif cad < self._lo:
            flags = _PACE_SLOW
        elif cad > self._hi:
            flags = _PACE_FAST
        else:
            flags = _PACE_ON_TARGET
        if d.pattern == PATTERN_REAR:
            flags |= _COACH_HEEL_STRIKE
        if self.want_pattern == 0 or d.pattern == self.want_pattern:
            flags |= _COACH_PATTERN_OK
        self.flags = flags
        return _EV_COACH

    def pack(self, ev, buf, seq):
        """One Step Event packet for EV_COACH; returns its length."""
        d = self.detector
        struct.pack_into("<BBHBBHIHHHH", buf, 0, _EVENT_FORMAT, _KIND_COACHED_STEP,
                         seq & _SEQ_MASK, self.flags, d.pattern, d.seq & _SEQ_MASK,
                         d.strike_ms, u16(d.stride_ms), u16(self.cadence_x10),
                         u16(d.stance_ms), u16(d.share_arch))
        return _PKT
