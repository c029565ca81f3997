# ESP32 DevKitC (ESP32-WROOM-32): the one file that names this board's pins.
#
# The FSRs and the battery divider sit on ADC1 (GPIO32-39) because ADC2 cannot
# convert while the radio is on. GPIO34-39 are input-only with no internal pulls,
# so nothing on the chip loads the dividers. 11 dB attenuation gives the widest
# linear input, about 150-2450 mV; docs/HARDWARE.md sizes the dividers for it.
from esp32_common import Battery, adc
from machine import Pin
from micropython import const

NAME = "ESP32 DevKitC (WROOM-32)"
WDT_TIMEOUT_MS = const(8000)
HAS_BLE = True

_PIN_HEEL = const(36)  # SENSOR_VP, ADC1_CH0
_PIN_ARCH = const(39)  # SENSOR_VN, ADC1_CH3
_PIN_FORE = const(34)  # ADC1_CH6
_PIN_BATT = const(35)  # ADC1_CH7, cell through a 100k/100k divider
_PIN_LED = const(2)  # the DevKitC has no user LED: fit one (and 330R) to GND

_battery = Battery(_PIN_BATT)


def fsr_adcs():
    """(heel, arch, forefoot) ADCs; read_u16() gives 0..65535 counts."""
    return (adc(_PIN_HEEL), adc(_PIN_ARCH), adc(_PIN_FORE))


def battery_mv():
    """Cell voltage in mV, or 0 when no cell is wired to the sense divider."""
    return _battery.mv()


def status_led():
    return Pin(_PIN_LED, Pin.OUT, value=0)
