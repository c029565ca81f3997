# `time` for the virtual board: the ticks/sleep API of MicroPython on an ESP32,
# driven by the virtual clock in _vboard. ticks_ms/ticks_us wrap at 2**30 as on an
# ESP32, and by default the first wrap comes 10 s after boot, so code that keeps raw
# ticks instead of ticks_diff() fails early. Wall-clock functions pass through.
from _vboard import TICKS_MASK, vboard
from utime import gmtime, localtime, mktime, time, time_ns  # noqa: F401

_HALF = (TICKS_MASK + 1) >> 1


def ticks_us():
    return vboard.ticks_us()


def ticks_ms():
    return vboard.ticks_ms()


def ticks_cpu():
    return vboard.ticks_us()


def ticks_add(ticks, delta):
    return (ticks + delta) & TICKS_MASK


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & TICKS_MASK) - _HALF


def sleep_us(us):
    vboard.sleep_us(us)


def sleep_ms(ms):
    vboard.sleep_us(ms * 1000)


def sleep(seconds):
    vboard.sleep_us(int(seconds * 1000000))
