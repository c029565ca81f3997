# `machine` for the virtual board (MicroPython unix port). It replaces the port's
# builtin module, so it offers what the firmware uses on an ESP32: ADC (reading the
# recorded trace), Pin, WDT, Timer, unique_id, freq, reset, idle, lightsleep.
# Virtual pin numbers 0, 1, 2 are the trace's heel, arch and forefoot columns.
from _vboard import vboard

_freq = [240000000]


def unique_id():
    return vboard.uid


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz


def reset():
    vboard.reset()


def soft_reset():
    vboard.reset()


def idle():
    # Wait for the next "interrupt": the next millisecond tick.
    vboard.sleep_us(1000)


def lightsleep(ms=None):
    vboard.sleep_us(1000 * (ms if ms is not None else 1000))


def deepsleep(ms=None):
    lightsleep(ms)
    vboard.reset()


def reset_cause():
    return PWRON_RESET


PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._value = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self.mode = mode
        if value is not None:
            self._value = 1 if value else 0

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0

    def on(self):
        self._value = 1

    def off(self):
        self._value = 0

    def __call__(self, v=None):
        return self.value(v)

    def irq(self, handler=None, trigger=3):
        return None

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3

    def __init__(self, pin, atten=3):
        ch = pin.id if isinstance(pin, Pin) else pin
        if ch not in (0, 1, 2):
            raise ValueError("virtual ADC channels are 0 (heel), 1 (arch), 2 (forefoot)")
        self._ch = ch
        self._atten = atten

    def init(self, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, atten):
        self._atten = atten

    def width(self, bits):
        pass

    def read_u16(self):
        return vboard.adc(self._ch)

    def read(self):
        return vboard.adc(self._ch) >> 4

    def read_uv(self):
        # 11 dB range: about 0..3.1 V over the 16-bit scale
        return vboard.adc(self._ch) * 3100000 // 65535


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout must be at least 1 ms")
        vboard.wdt_timeout = timeout
        vboard.wdt_fed = vboard.now

    def feed(self):
        vboard.wdt_fed = vboard.now


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, mode=1, period=-1, callback=None, freq=None):
        self.due = -1
        self._period_us = 0
        self._mode = mode
        self._cb = None
        if callback is not None:
            self.init(mode=mode, period=period, callback=callback, freq=freq)

    def init(self, mode=1, period=-1, callback=None, freq=None):
        if freq is not None:
            self._period_us = 1000000 // freq
        else:
            self._period_us = period * 1000
        if self._period_us <= 0:
            raise ValueError("period must be positive")
        self._mode = mode
        self._cb = callback
        self.due = vboard.now + self._period_us
        if self not in vboard.timers:
            vboard.timers.append(self)

    def deinit(self):
        self.due = -1
        if self in vboard.timers:
            vboard.timers.remove(self)

    def fire(self):
        # Soft timer: runs from the sleep that passes its due time.
        if self._mode == Timer.PERIODIC:
            self.due += self._period_us
        else:
            self.deinit()
        if self._cb is not None:
            self._cb(self)
