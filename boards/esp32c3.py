# ESP32-C3 DevKitM-1: the one file that names this board's pins.
#
# The FSRs and the battery divider sit on ADC1 (GPIO0-4); the C3's only ADC2
# pin (GPIO5) is unusable while the radio is on. GPIO2 is a strapping pin and
# is left free. 11 dB attenuation gives the widest input (about 0-2500 mV on the
# C3), close to the ESP32's range the dividers in docs/HARDWARE.md are sized for.
from machine import ADC, Pin
from micropython import const
from neopixel import NeoPixel

NAME = "ESP32-C3 DevKitM-1"
WDT_TIMEOUT_MS = const(8000)
HAS_BLE = True

_PIN_HEEL = const(0)  # ADC1_CH0
_PIN_ARCH = const(1)  # ADC1_CH1
_PIN_FORE = const(3)  # ADC1_CH3
_PIN_BATT = const(4)  # ADC1_CH4, cell through a 100k/100k divider
_PIN_LED = const(8)  # on-board WS2812
_LED_LEVEL = const(16)  # of 255: bright enough to see, easy on the battery
_BATT_SCALE = const(2)  # the divider halves the cell voltage
_BATT_MIN_UV = const(500000)  # below this at the pin no cell is fitted (divider reads 0)

_batt = None


class _RgbLed:
    # The on-board RGB LED behind the on()/off()/value() face of a Pin.
    def __init__(self, pin):
        self._np = NeoPixel(Pin(pin, Pin.OUT), 1)
        self._on = False
        self.off()

    def value(self, v=None):
        if v is None:
            return 1 if self._on else 0
        self._on = bool(v)
        self._np[0] = (0, _LED_LEVEL, 0) if self._on else (0, 0, 0)
        self._np.write()
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


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
    return _RgbLed(_PIN_LED)
