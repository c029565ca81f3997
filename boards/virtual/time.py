# `time` for the virtual board: the ticks/sleep API of MicroPython on an ESP32
# (extmod/modtime.c, ports/esp32/mphalport.c), driven by the virtual clock in
# _vboard. ticks_ms/ticks_us wrap at 2**30 as on an ESP32 (31-bit small ints), and
# by default the first wrap comes 10 s after boot, so code that keeps raw ticks
# instead of ticks_diff() fails early. Arguments are checked as the device checks
# them, and where the device would compute garbage from a bad one (a ticks value
# that is not a small int) the shim raises. Every clock call is also a point where
# an IRQ may come in (_vboard irq_point). Wall-clock functions pass through.
import machine
from _vboard import TICKS_MASK, mp_int, vboard
from utime import gmtime, localtime, mktime, time, time_ns  # noqa: F401

_HALF = (TICKS_MASK + 1) >> 1
_SMALL_MIN = -(TICKS_MASK + 1)  # small ints of a 31-bit port: -2**30 .. 2**30-1


def _ticks(t):
    # time_ticks_diff/ticks_add read their ticks with MP_OBJ_SMALL_INT_VALUE, which
    # on anything but a small int gives a meaningless number
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError("ticks must be an int, not %s" % type(t).__name__)
    if not _SMALL_MIN <= t <= TICKS_MASK:
        raise OverflowError("ticks value %d is not a small int on the ESP32" % t)
    return t


def ticks_us():
    vboard.irq_point()
    return vboard.ticks_us()


def ticks_ms():
    vboard.irq_point()
    return vboard.ticks_ms()


def ticks_cpu():
    # mphalport.h mp_hal_ticks_cpu: the CPU's cycle counter, at machine.freq()
    vboard.irq_point()
    return (vboard.ticks_us() * machine._cpu_mhz()) & TICKS_MASK


def ticks_add(ticks, delta):
    # modtime.c time_ticks_add: only deltas that ticks_diff can give back
    vboard.irq_point()
    ticks = _ticks(ticks)
    delta = mp_int(delta)
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & TICKS_MASK


def ticks_diff(ticks1, ticks2):
    vboard.irq_point()
    return ((_ticks(ticks1) - _ticks(ticks2) + _HALF) & TICKS_MASK) - _HALF


def sleep_us(us):
    # time_sleep_us: nothing for us <= 0; mp_hal_delay_us spins with the GIL held
    # (no IRQ during it; soft timers do run)
    us = mp_int(us)
    if us > 0:
        vboard.sleep_us(us)


def sleep_ms(ms):
    # time_sleep_ms: nothing for ms < 0; mp_hal_delay_ms gives the GIL up, even for 0
    ms = mp_int(ms)
    if ms >= 0:
        vboard.sleep_us(ms * 1000, True)


def sleep(seconds):
    # time_sleep: mp_hal_delay_ms((mp_uint_t)(1000 * seconds)); a negative or huge
    # value has no defined meaning there, so it is refused here
    if isinstance(seconds, (int, float)):
        ms = int(1000 * seconds)
    else:
        raise TypeError("can't convert %s to float" % type(seconds).__name__)
    if not 0 <= ms <= 0xFFFFFFFF:
        raise ValueError("sleep(%r): no defined meaning on the ESP32" % (seconds,))
    vboard.sleep_us(ms * 1000, True)
