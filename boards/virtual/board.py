# The virtual board: the MicroPython unix port with the machine/bluetooth/time shims
# of this directory, replaying a recorded trace (host_tools/vboard.py starts it).
#
# Virtual ADC "pins" 0, 1, 2 are the trace's heel, arch and forefoot columns.
# finished() turns true once the last trace row has been read; the firmware then
# stops sampling and serves BLE for LINGER_MS (the host bridge decides how much
# virtual time actually passes; standalone runs end with the trace).
import os

from _vboard import vboard
from machine import ADC, Pin

NAME = "Virtual board (MicroPython unix port)"
WDT_TIMEOUT_MS = 0  # no watchdog: a paused virtual clock is not a hung firmware
HAS_BLE = True
# 2**28 ms (3 days) when a host serves the radio; it stops the process itself.
LINGER_MS = int(os.getenv("VBOARD_LINGER_MS") or (1 << 28 if vboard.sock is not None else 0))

_PIN_HEEL = 0
_PIN_ARCH = 1
_PIN_FORE = 2
_BATTERY_MV = int(os.getenv("VBOARD_BATTERY_MV") or 3900)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs reading the trace; read_u16() gives 0..65535."""
    return (ADC(Pin(_PIN_HEEL)), ADC(Pin(_PIN_ARCH)), ADC(Pin(_PIN_FORE)))


def battery_mv():
    """A steady cell voltage (VBOARD_BATTERY_MV, default 3900 mV; 0 = no cell)."""
    return _BATTERY_MV


def status_led():
    return Pin("led", Pin.OUT, value=0)


def finished():
    """True once the whole trace has been sampled."""
    return vboard.finished()
