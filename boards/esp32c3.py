# ESP32-C3 DevKitM-1: the one file that names this board's pins.
#
# The FSRs and the battery divider sit on ADC1 (GPIO0-4); the C3's only ADC2
# pin (GPIO5) is unusable while the radio is on. GPIO2 is a strapping pin and
# is left free. 11 dB attenuation gives the widest input (about 0-2500 mV on the
# C3), close to the ESP32's range the dividers in docs/HARDWARE.md are sized for.
from esp32_common import Battery, RgbLed, adc
from micropython import const

NAME = "ESP32-C3 DevKitM-1"
WDT_TIMEOUT_MS = const(8000)
HAS_BLE = True

_PIN_HEEL = const(0)  # ADC1_CH0
_PIN_ARCH = const(1)  # ADC1_CH1
_PIN_FORE = const(3)  # ADC1_CH3
_PIN_BATT = const(4)  # ADC1_CH4, cell through a 100k/100k divider
_PIN_LED = const(8)  # on-board WS2812

_battery = Battery(_PIN_BATT)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs; read_u16() gives 0..65535 counts."""
    return (adc(_PIN_HEEL), adc(_PIN_ARCH), adc(_PIN_FORE))


def battery_mv():
    """Cell voltage in mV, or 0 when no cell is wired to the sense divider."""
    return _battery.mv()


def status_led():
    return RgbLed(_PIN_LED)
