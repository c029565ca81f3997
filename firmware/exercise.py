# Exercise modes for a three-FSR insole (docs/EXERCISES.md): heel raises, toe
# scrunches, single-leg stance and the slow-walk coach, all in one namespace for the
# host tools and the tests; create() builds the one a Control SET_MODE selects.
#
# Every counter has feed(heel, arch, fore) -> 0 or a bitmask of EV_* bits (fields in
# attributes) and pack(ev_bit, buf, seq), which writes one 20-byte Step Event packet.
# Shared parts and the rules every mode keeps: exbase.py. The device does not import
# this module: it loads only the running mode's own module (device.py, _COUNTERS).
from balance import BalanceTimer
from exbase import (  # noqa: F401  (re-exported: the modes' public names live here)
    BAL_CONTACT,
    BAL_END,
    BAL_START,
    BAL_SWAY,
    COACH_HEEL_STRIKE,
    COACH_PATTERN_OK,
    END_COLLAPSE,
    END_OTHER_FOOT,
    END_VOID,
    EV_COACH,
    EV_CONTACT,
    EV_HOLD_END,
    EV_HOLD_START,
    EV_PARTIAL,
    EV_REP,
    EV_SWAY,
    EVENT_FORMAT,
    KIND_BALANCE,
    KIND_COACHED_STEP,
    KIND_HEEL_RAISE,
    KIND_TOE_SCRUNCH,
    MODE_BALANCE,
    MODE_HEEL_RAISE,
    MODE_SLOW_WALK,
    MODE_TOE_SCRUNCH,
    MODE_WALK,
    PACE_FAST,
    PACE_ON_TARGET,
    PACE_SLOW,
    PACE_UNKNOWN,
    PKT,
    SEQ_MASK,
    u16,
)
from gait import PATTERN_REAR
from heelraise import HeelRaiseCounter
from slowwalk import SlowWalkCoach
from toescrunch import ToeScrunchCounter


def create(mode, rate_hz, target_x10=900, tol_pct=5, pattern=PATTERN_REAR):
    """The counter for a SET_MODE mode (allocates: call on a mode change only)."""
    if mode == MODE_HEEL_RAISE:
        return HeelRaiseCounter(rate_hz)
    if mode == MODE_TOE_SCRUNCH:
        return ToeScrunchCounter(rate_hz)
    if mode == MODE_BALANCE:
        return BalanceTimer(rate_hz)
    if mode == MODE_SLOW_WALK:
        return SlowWalkCoach(rate_hz, target_x10, tol_pct, pattern)
    raise ValueError("not an exercise mode")
