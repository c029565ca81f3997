# The virtual board: the MicroPython unix port with the machine/bluetooth/time shims
# of this directory, replaying a recorded trace (host_tools/vboard/ starts it).
#
# Wired like the ESP32 DevKitC board file: the FSRs on ADC1 GPIO36/39/34 read the
# trace's heel, arch and forefoot columns, the cell sits behind a 100k/100k divider
# on GPIO35 (VBOARD_BATTERY_MV), the LED on GPIO2. The watchdog runs on the virtual
# clock, so a paused clock never trips it, but a firmware that stops feeding it
# while time passes is reset, as on the device.
# finished() turns true once the last trace row has been read; the firmware then
# stops sampling and serves BLE for LINGER_MS (the host bridge decides how much
# virtual time actually passes; standalone runs end with the trace).
import os

from _vboard import vboard
from machine import ADC, Pin

NAME = "Virtual board (MicroPython unix port)"
WDT_TIMEOUT_MS = 8000
HAS_BLE = True
# 2**28 ms (3 days) when a host serves the radio; it stops the process itself.
LINGER_MS = int(os.getenv("VBOARD_LINGER_MS") or (1 << 28 if vboard.sock is not None else 0))

_PIN_HEEL = 36
_PIN_ARCH = 39
_PIN_FORE = 34
_PIN_BATT = 35
_PIN_LED = 2
_BATT_SCALE = 2  # the divider halves the cell voltage
_BATT_MIN_UV = 500000  # below this at the pin no cell is fitted

_battery = []


def _adc(pin):
    return ADC(Pin(pin, Pin.IN), atten=ADC.ATTN_11DB)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs reading the trace; read_u16() gives 0..65535."""
    return (_adc(_PIN_HEEL), _adc(_PIN_ARCH), _adc(_PIN_FORE))


def battery_mv():
    """Cell voltage in mV through read_uv(), as on the ESP32 boards (0: no cell).
    Raises OSError when the chip has no ADC calibration (VBOARD_ADC_EFUSE=0)."""
    if not _battery:
        _battery.append(_adc(_PIN_BATT))
    uv = _battery[0].read_uv()
    if uv < _BATT_MIN_UV:
        return 0
    return uv * _BATT_SCALE // 1000


def status_led():
    return Pin(_PIN_LED, Pin.OUT, value=0)


def finished():
    """True once the whole trace has been sampled."""
    return vboard.finished()
