# ESP32-S3 DevKitC-1: the one file that names this board's pins.
#
# The FSRs and the battery divider sit on ADC1 (GPIO1-10) because ADC2 cannot
# convert while the radio is on. GPIO3 is a strapping pin and is left free.
# 11 dB attenuation gives the widest input (about 0-3100 mV on the S3), so the
# dividers sized for the ESP32's 2450 mV in docs/HARDWARE.md fit with headroom.
from esp32_common import Battery, RgbLed, adc
from micropython import const

NAME = "ESP32-S3 DevKitC-1"
WDT_TIMEOUT_MS = const(8000)
HAS_BLE = True

_PIN_HEEL = const(1)  # ADC1_CH0
_PIN_ARCH = const(2)  # ADC1_CH1
_PIN_FORE = const(4)  # ADC1_CH3
_PIN_BATT = const(5)  # ADC1_CH4, cell through a 100k/100k divider
_PIN_LED = const(48)  # on-board WS2812 (board revision v1.1 moved it to GPIO38)

_battery = Battery(_PIN_BATT)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs; read_u16() gives 0..65535 counts."""
    return (adc(_PIN_HEEL), adc(_PIN_ARCH), adc(_PIN_FORE))


def battery_mv():
    """Cell voltage in mV, or 0 when no cell is wired to the sense divider."""
    return _battery.mv()


def status_led():
    return RgbLed(_PIN_LED)
