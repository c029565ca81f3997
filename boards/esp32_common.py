# What the ESP32 board modules share: how an FSR or the battery divider is read
# and the on-board RGB LED. No pins here: each board module passes its own.
from machine import ADC, Pin
from micropython import const

_BATT_SCALE = const(2)  # the 100k/100k divider halves the cell voltage
_BATT_MIN_UV = const(500000)  # below this at the pin no cell is fitted (divider reads 0)
_LED_LEVEL = const(16)  # of 255: bright enough to see, easy on the battery


def adc(pin):
    # 11 dB attenuation: the widest input range, which the dividers are sized for
    return ADC(Pin(pin, Pin.IN), atten=ADC.ATTN_11DB)


class Battery:
    """Cell voltage through the sense divider on one ADC1 pin."""

    def __init__(self, pin):
        self._pin = pin
        self._adc = None

    def mv(self):
        """Cell voltage in mV, or 0 when no cell is wired to the divider."""
        if self._adc is None:
            self._adc = adc(self._pin)
        # read_uv() applies the eFuse calibration: slow, fine for a status reading
        uv = self._adc.read_uv()
        if uv < _BATT_MIN_UV:
            return 0
        return uv * _BATT_SCALE // 1000


class RgbLed:
    """An on-board WS2812 behind the on()/off()/value() face of a Pin."""

    def __init__(self, pin):
        from neopixel import NeoPixel

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
