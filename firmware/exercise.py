# Exercise modes for a three-FSR insole (docs/EXERCISES.md): heel raises, toe
# scrunches, single-leg stance and the slow-walk coach, all in one namespace for the
# host tools and the tests; create() builds the one a Control SET_MODE selects.
#
# Every counter has feed(heel, arch, fore) -> 0 or a bitmask of EV_* bits (fields in
# attributes) and pack(ev_bit, buf, seq), which writes one 20-byte Step Event packet.
# Shared parts and the rules every mode keeps: exbase.py. The device does not import
# this module: it loads only the running mode's own module (device.py, _COUNTERS).
from balance import BalanceTimer
from exbase import u16  # noqa: F401  (re-exported)
from gait import PATTERN_REAR
from heelraise import HeelRaiseCounter
from slowwalk import SlowWalkCoach
from toescrunch import ToeScrunchCounter

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


# The modes' public names. The device never loads this module, and the mode modules
# keep private const() copies of what they use (no name, no lookup on the insole);
# tests/test_budget.py checks every copy against these.
EV_REP = const(1)  # heel raise or toe scrunch completed
EV_PARTIAL = const(2)  # heel raise too shallow to count
EV_CONTACT = const(4)  # balance: this foot became loaded / unloaded
EV_HOLD_START = const(8)  # balance: single-leg stance confirmed
EV_HOLD_END = const(16)  # balance: stance ended (reason in end_reason)
EV_SWAY = const(32)  # balance: one second of sway while the foot is loaded
EV_COACH = const(64)  # slow walk: a coached step
MODE_WALK = const(0)
MODE_HEEL_RAISE = const(1)
MODE_TOE_SCRUNCH = const(2)
MODE_BALANCE = const(3)
MODE_SLOW_WALK = const(4)
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
FULL = const(1024)  # normalised load: 1024 = the sensor's loaded reference level
MS_MASK = const(0x1FFFFFFF)  # ms clock wraps at 2**29 like gait.py
RUNGS = const(8)  # load ladders for timing ramps (rung 0 unused)
TOP_PEAK = const(0)  # Fsr top modes
TOP_MEAN = const(1)
TOP_FROZEN = const(2)


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
