# ESP32 DevKitC (ESP32-WROOM-32): the one file that names this board's pins.
#
# The FSRs and the battery divider sit on ADC1 (GPIO32-39) because ADC2 cannot
# convert while the radio is on. GPIO34-39 are input-only with no internal pulls,
# so nothing on the chip loads the dividers. 11 dB attenuation gives the widest
# linear input, about 150-2450 mV; docs/HARDWARE.md sizes the dividers for it.
from machine import ADC, Pin
from micropython import const

NAME = "ESP32 DevKitC (WROOM-32)"
WDT_TIMEOUT_MS = const(8000)
HAS_BLE = True

_PIN_HEEL = const(36)  # SENSOR_VP, ADC1_CH0
_PIN_ARCH = const(39)  # SENSOR_VN, ADC1_CH3
_PIN_FORE = const(34)  # ADC1_CH6
_PIN_BATT = const(35)  # ADC1_CH7, cell through a 100k/100k divider
_PIN_LED = const(2)  # the DevKitC has no user LED: fit one (and 330R) to GND
_BATT_SCALE = const(2)  # the divider halves the cell voltage
_BATT_MIN_UV = const(500000)  # below this at the pin no cell is fitted (divider reads 0)

_batt = None


def _adc(pin):
    return ADC(Pin(pin, Pin.IN), atten=ADC.ATTN_11DB)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs; read_u16() gives 0..65535 counts."""
    return (_adc(_PIN_HEEL), _adc(_PIN_ARCH), _adc(_PIN_FORE))


def battery_mv():
    """Cell voltage in mV, or 0 when no cell is wired to the sense divider."""
    global _batt
    if _batt is None:
        _batt = _adc(_PIN_BATT)
    # read_uv() applies the eFuse calibration: slow, fine for a status reading.
    uv = _batt.read_uv()
    if uv < _BATT_MIN_UV:
        return 0
    return uv * _BATT_SCALE // 1000


def status_led():
    return Pin(_PIN_LED, Pin.OUT, value=0)
