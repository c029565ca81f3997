# `machine` for the virtual board (MicroPython unix port). It replaces the port's
# builtin module with what the firmware may use on an ESP32 (the original chip,
# MicroPython v1.29): ADC, Pin, WDT, Timer, unique_id, freq, reset, reset_cause,
# idle, lightsleep. Each class takes and refuses the arguments the ESP32 port does;
# the comments name the MicroPython source followed.
#
# Wiring of this virtual board (its board.py names the same pins):
#   GPIO36, 39, 34 (ADC1)  the trace's heel, arch and forefoot columns
#   GPIO35 (ADC1)          the cell through a 100k/100k divider (VBOARD_BATTERY_MV)
#   other ADC pins         read 0
import sys

from _vboard import mp_int, vboard

# ports/esp32/machine_pin.h (CONFIG_IDF_TARGET_ESP32, no SPIRAM): the GPIOs there are
_GPIOS = tuple(range(24)) + (25, 26, 27) + tuple(range(32, 40))
_FIRST_INPUT_ONLY = 34  # machine_pin.c GPIO_FIRST_NON_OUTPUT
# ports/esp32/machine_adc.c madc_obj: GPIO -> ADC block (1 or 2)
_ADC_BLOCK = {36: 1, 37: 1, 38: 1, 39: 1, 32: 1, 33: 1, 34: 1, 35: 1,
              4: 2, 0: 2, 2: 2, 15: 2, 13: 2, 12: 2, 14: 2, 27: 2, 25: 2, 26: 2}
_TRACE_PIN = {36: 0, 39: 1, 34: 2}
_BATTERY_PIN = 35
_ATTEN_MAX = 3  # ports/esp32/adc.h ADC_ATTEN_MAX (ADC_ATTEN_DB_11)
_WIDTH_MIN = 9  # adc.h ADC_WIDTH_MIN/MAX on the ESP32
_WIDTH_MAX = 12
# full scale of the calibrated reading by attenuation (mV at count 4095): a linear
# stand-in for the eFuse calibration curve
_FULL_SCALE_MV = (1100, 1500, 2200, 3100)
_EOPNOTSUPP = 95  # mphalport.c check_esp_err: ESP_ERR_NOT_SUPPORTED
_FREQS_MHZ = (20, 40, 80, 160, 240)  # modmachine.c mp_machine_set_freq (ESP32)
_HW_TIMERS = 4  # SOC_TIMER_GROUP_TOTAL_TIMERS on the ESP32
_HW_TIMER_HZ = 10000000  # machine_timer.c: 80 MHz APB / TIMER_DIVIDER 8
_VIRTUAL_TIMER_HZ = 1000000  # esp_timer: microseconds

PWRON_RESET = 1  # ports/esp32/modmachine.c reset_reason_t
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_freq_mhz = [240]


def unique_id():
    return vboard.uid


def freq(*hz):
    # extmod/modmachine.c machine_freq: 0 or 1 argument; the ESP32 takes whole MHz
    if len(hz) > 1:
        raise TypeError("function expected at most 1 arguments, got %d" % len(hz))
    if not hz:
        return _freq_mhz[0] * 1000000
    mhz = mp_int(hz[0]) // 1000000
    if mhz not in _FREQS_MHZ:
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq_mhz[0] = mhz


def _cpu_mhz():
    return _freq_mhz[0]


def reset():
    vboard.reset()


def soft_reset():
    # extmod/modmachine.c: soft_reset is sys.exit
    raise SystemExit


def reset_cause():
    # the host starts each boot and says why (VBOARD_RESET_CAUSE)
    return vboard.reset_cause


def idle():
    # ports/esp32/modmachine.c mp_machine_idle: gives the GIL up (IRQs run) and
    # yields. The virtual clock has no CPU time, so idle() lets 1 ms pass.
    vboard.sleep_us(1000, True)


def lightsleep(*ms):
    # modmachine.c machine_sleep_helper: the CPU stops; NimBLE's task with it, so
    # IRQs wait for the next point that gives the GIL up
    if len(ms) > 1:
        raise TypeError("function expected at most 1 arguments, got %d" % len(ms))
    if not ms:
        raise ValueError("the virtual board has no wake sources: give lightsleep() a time")
    vboard.sleep_us(1000 * mp_int(ms[0]))


sleep = lightsleep


def deepsleep(*ms):
    lightsleep(*ms)
    vboard.reset()


class Pin:
    # ports/esp32/machine_pin.c locals: GPIO_MODE_* and the pull bits
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    _table = {}

    def __new__(cls, id, *args, **kwargs):
        # machine_pin_find: a Pin, or a GPIO number of this chip (no named pins on
        # a generic ESP32); one object per GPIO
        if isinstance(id, Pin):
            pin = id
        else:
            if isinstance(id, bool) or not isinstance(id, int) or id not in _GPIOS:
                raise ValueError("invalid pin")
            pin = Pin._table.get(id)
            if pin is None:
                pin = object.__new__(cls)
                pin._id = id
                pin._value = 0
                Pin._table[id] = pin
        return pin

    def __init__(self, id, *args, **kwargs):
        # mp_pin_make_new: configure only when more than the id is given
        if args or kwargs:
            self.init(*args, **kwargs)

    def init(self, mode=None, pull=-1, *, value=None, drive=None, hold=None):
        # machine_pin_obj_init_helper: value, drive and hold are keyword-only
        if value is not None:
            self._value = 1 if value else 0
        if mode is not None:
            m = mp_int(mode)
            if self._id >= _FIRST_INPUT_ONLY and m & 2:  # GPIO_MODE_DEF_OUTPUT
                raise ValueError("pin can only be input")

    def value(self, *v):
        if len(v) > 1:
            raise TypeError("function expected at most 2 arguments, got %d" % (len(v) + 1))
        if not v:
            return self._value
        self._value = 1 if v[0] else 0

    def on(self):
        self._value = 1

    def off(self):
        self._value = 0

    def __call__(self, *v):
        return self.value(*v)

    def irq(self, handler=None, trigger=3, wake=None):
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


class _AdcBlock:
    def __init__(self):
        self.width = _WIDTH_MAX


_blocks = {1: _AdcBlock(), 2: _AdcBlock()}


class ADC:
    # ports/esp32/machine_adc.c MICROPY_PY_MACHINE_ADC_CLASS_CONSTANTS
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    _table = {}

    def __new__(cls, pin, *args, **kwargs):
        # mp_machine_adc_make_new: machine_pin_get_id, then one static object per
        # ADC pin ("invalid pin" for a GPIO without an ADC channel)
        gpio = Pin(pin)._id
        if gpio not in _ADC_BLOCK:
            raise ValueError("invalid pin")
        adc = ADC._table.get(gpio)
        if adc is None:
            adc = object.__new__(cls)
            adc._gpio = gpio
            adc._block = _blocks[_ADC_BLOCK[gpio]]
            adc._atten = _ATTEN_MAX
            ADC._table[gpio] = adc
        return adc

    def __init__(self, pin, *, atten=-1):
        self.init(atten=atten)

    def init(self, *, atten=-1):
        # madc_init_helper: atten keyword-only, -1 = the widest; and the block's
        # width goes back to 12 bits
        self._set_atten(_ATTEN_MAX if mp_int(atten) == -1 else atten)
        self._block.width = _WIDTH_MAX

    def _set_atten(self, atten):
        atten = mp_int(atten)
        if not 0 <= atten <= _ATTEN_MAX:  # mp_machine_adc_atten_set_helper
            raise ValueError("invalid attenuation")
        self._atten = atten

    def atten(self, atten):
        self._set_atten(atten)

    def width(self, bits):
        bits = mp_int(bits)
        if not _WIDTH_MIN <= bits <= _WIDTH_MAX:  # mp_machine_adc_block_width_set_helper
            raise ValueError("invalid bit-width")
        self._block.width = bits

    def _counts(self):
        # 16-bit counts at the pin now. The trace holds read_u16() values; they are
        # returned as they are at 12 bits, and cut to a narrower width.
        vboard.irq_point()
        gpio = self._gpio
        if gpio == _BATTERY_PIN:  # not a trace column: it does not start trace time
            mv = vboard.battery_mv // 2
            fs = _FULL_SCALE_MV[self._atten]
            return 65535 if mv >= fs else mv * 65535 // fs
        return vboard.adc(_TRACE_PIN.get(gpio, -1))

    def read(self):
        return self._counts() >> (16 - self._block.width)

    def read_u16(self):
        bits = self._block.width
        if bits == _WIDTH_MAX:
            return self._counts()
        raw = self._counts() >> (16 - bits)  # mp_machine_adc_read_u16's scaling
        return (raw << (16 - bits)) | (raw >> (2 * bits - 16))

    def read_uv(self):
        # ports/esp32/adc.c madcblock_read_uv_helper: calibrated mV, times 1000; the
        # calibration scheme needs eFuse values (ESP_ERR_NOT_SUPPORTED otherwise)
        raw12 = self._counts() >> 4
        if not vboard.adc_efuse:
            raise OSError(_EOPNOTSUPP)
        return raw12 * _FULL_SCALE_MV[self._atten] // 4095 * 1000

    def __repr__(self):
        return "ADC(Pin(%d), atten=%d)" % (self._gpio, self._atten)


class WDT:
    # ports/esp32/machine_wdt.c: one task watchdog; WDT() again reconfigures it;
    # it cannot be stopped (no deinit); a missed feed resets with WDT_RESET
    _one = None

    def __new__(cls, id=0, timeout=5000):
        # extmod/machine_wdt.c: id (object) and timeout (int), positional or keyword
        if isinstance(id, bool) or id != 0 or not isinstance(id, int):
            raise ValueError()
        timeout = mp_int(timeout)
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        if WDT._one is None:
            WDT._one = object.__new__(cls)
        vboard.wdt_timeout = timeout
        vboard.wdt_fed = vboard.now
        return WDT._one

    def __init__(self, id=0, timeout=5000):
        pass

    def feed(self):
        vboard.wdt_fed = vboard.now


class Timer:
    # ports/esp32/machine_timer.c: ids 0..3 are the hardware timers (one object
    # each), negative ids are esp_timer ones; callbacks are scheduled (soft), and
    # run from the sleep that passes their due time
    ONE_SHOT = 0
    PERIODIC = 1

    _hardware = {}

    def __new__(cls, id=-1, **kwargs):
        id = mp_int(id)
        if id >= _HW_TIMERS:
            raise ValueError("Timer(%d) doesn't exist, there are only %d hardware timers"
                             % (id, _HW_TIMERS))
        t = Timer._hardware.get(id) if id >= 0 else None
        if t is None:
            t = object.__new__(cls)
            t._id = id
            t.due = -1
            t._period_us = 0
            t._repeat = False
            t._cb = None
            if id >= 0:
                Timer._hardware[id] = t
        return t

    def __init__(self, id=-1, **kwargs):
        if kwargs:
            self.init(**kwargs)

    def init(self, *, mode=1, callback=None, period=None, tick_hz=1000, freq=None,
             hard=False):
        # machine_timer_init_helper: every argument keyword-only
        if self._cb is not None:
            self.deinit()
        if hard:
            raise ValueError("hard Timers are not implemented")
        hz = _HW_TIMER_HZ if self._id >= 0 else _VIRTUAL_TIMER_HZ
        if freq is not None:
            ticks = int(hz / freq)
        else:
            # period: 0xffffffff ticks unless given; a negative one wraps as a uint64
            p = 0xFFFFFFFF if period is None else mp_int(period) & 0xFFFFFFFFFFFFFFFF
            ticks = p * hz // mp_int(tick_hz)
        if ticks == 0:  # machine_timer_configure
            raise ValueError("Timer period is too short for this timer")
        self._period_us = max(1, ticks * 1000000 // hz)
        self._repeat = bool(mp_int(mode))
        self._cb = callback
        self.due = vboard.now + self._period_us
        if self not in vboard.timers:
            vboard.timers.append(self)

    def deinit(self):
        self.due = -1
        self._cb = None
        if self in vboard.timers:
            vboard.timers.remove(self)

    def fire(self):
        cb = self._cb
        if self._repeat:
            self.due += self._period_us
        else:
            self.deinit()
        try:
            cb(self)
        except Exception as e:  # py/scheduler.c: mp_call_function_1_protected
            sys.print_exception(e)
