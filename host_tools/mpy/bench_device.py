# Memory and CPU budget of the whole firmware under the micropython binary (run by
# `insole bench`, host_tools/cli/bench.py, which parses what this prints).
#
#   bench_device.py memory TRACEDIR   the .mpy build on the virtual board: cwd is a
#       scratch flash directory, MICROPYPATH the build, VBOARD_TRACE a walk trace.
#       Prints JSON lines, and heap block maps between "@@MAP name" and "@@END".
#   bench_device.py cpu TRACEDIR      the .mpy firmware on tests/fw_fakes.py (fake
#       ADCs and radio, a connected and subscribed central). Prints JSON lines.
# Interned-name tables are printed between "@@QSTR name" and the qstr_info line.
#
# TRACEDIR holds walk.bin and mode1.bin..mode4.bin: little-endian uint16 triples.
import gc
import json
import sys
import time
from array import array

import micropython

_MODES = (1, 2, 3, 4)
_SET_MODE = 0x09
_REPEATS = 3
_ROUNDS = 3


def set_mode(mode):
    # slow walk takes a target (90.0 steps/min), a tolerance (5 %) and a pattern (rear)
    return bytes((_SET_MODE, mode)) + (b"\x84\x03\x05\x01" if mode == 4 else b"")


def emit(**kw):
    print(json.dumps(kw))


def load(path):
    with open(path, "rb") as f:
        return array("H", f.read())


def heap():
    gc.collect()
    return gc.mem_alloc()


def block_map(name):
    print("@@MAP", name)
    micropython.mem_info(1)
    print("@@END")


def names(name):
    # MicroPython never frees an interned name; its tables (py/qstr.c qstr_add) are
    # heap blocks that double in size each time the last one fills
    print("@@QSTR", name)
    micropython.qstr_info()


def _swap_ring(dev, capacity):
    # in a function of its own: the caller's frame keeps no stale pointer to the old
    # ring, which the collector would take for a live one. Returns the old capacity.
    import ring

    old = dev.ring.capacity if dev.ring is not None else 0
    dev.ring = ring.EventRing(capacity) if capacity else None
    return old


# ---- memory: app.build() on the virtual board ----
def memory(tracedir):
    names("start")
    import _vboard  # noqa: F401  (the shims: imported first, so they are not counted)
    import bluetooth  # noqa: F401
    import board  # noqa: F401
    import machine  # noqa: F401

    base = heap()
    block_map("shims")
    names("shims")
    import app

    dev = app.build()
    boot = heap() - base
    names("boot")
    cap = _swap_ring(dev, 0)
    no_ring = heap() - base
    _swap_ring(dev, 64)
    boot64 = heap() - base
    _swap_ring(dev, cap)
    ring_bytes = boot - no_ring
    emit(section="memory", firmware_heap_boot_bytes=boot, ring_capacity=cap,
         ring_bytes=ring_bytes, firmware_heap_boot_ring64_bytes=boot64,
         modules=sorted(k for k in sys.modules if k not in _SHIMS))
    block_map("boot")
    # everything allocated from here on stays on the map until a collection
    gc.disable()
    dev.loop(2000)
    for cmd in (b"\x0a", b"\x04\x8c\x00", b"\x08\x00\x00", b"\x06", b"\x07", b"\x05"):
        dev._command(cmd, True)
        dev.service()
    dev.loop(500)
    block_map("walk")
    walk = heap() - base
    gc.disable()
    per_mode = {}
    mode_modules = {}
    for mode in _MODES:
        dev._command(set_mode(mode), True)
        dev.loop(500)
        block_map("mode%d" % mode)
        names("mode%d" % mode)
        per_mode[str(mode)] = heap() - base
        mode_modules[str(mode)] = sorted(k for k in sys.modules if k not in _SHIMS)
        gc.disable()
    dev._command(set_mode(0), True)
    after = heap() - base
    names("after")
    gc.enable()
    emit(section="memory_modes", walk_after_commands_bytes=walk, mode_heap_bytes=per_mode,
         walk_after_modes_bytes=after, mode=dev.mode, mode_modules=mode_modules)


_SHIMS = ("_vboard", "machine", "bluetooth", "time", "board")


# ---- cpu: the per-sample loop on fakes ----
def _best(fn, *args):
    best = 0
    for _ in range(_REPEATS):
        t0 = time.ticks_us()
        n = fn(*args)
        dt = time.ticks_diff(time.ticks_us(), t0)
        us = dt / n
        if best == 0 or us < best:
            best = us
    return best


def _rewind(adcs):
    for a in adcs:
        a.i = 0


def _bare(adcs):
    _rewind(adcs)
    h, a, f = adcs
    n = len(h.values)
    for _ in range(n):
        h.read_u16()
        a.read_u16()
        f.read_u16()
    return n


def _whole(dev, adcs):
    _rewind(adcs)
    sample = dev.sample
    n = len(adcs[0].values)
    for _ in range(n):
        sample()
    return n


_fill_data = array("l", 200 * [0])


def _fill_bytecode():
    for i in range(200):
        _fill_data[i] = i


@micropython.viper
def _fill_viper():
    for i in range(200):
        _fill_data[i] = i


def _fill(fn):
    for _ in range(50):
        fn()
    return 50 * 200


def cpu(tracedir):
    import fw_fakes as F

    for mode in (0,) + _MODES:
        samples = load(tracedir + ("/walk.bin" if mode == 0 else "/mode%d.bin" % mode))
        dev, ble, _fs = F.build(samples)
        adcs = dev.adcs
        ble.record = False
        ble.connect()
        ble.pair()
        for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_raw, dev.ble.h_rsc,
                  dev.ble.h_battery, dev.ble.h_control):
            ble.subscribe(h)
        dev.service()
        if mode:
            dev._command(set_mode(mode), True)
            if dev.mode != mode:
                emit(section="cpu", mode=mode, error="SET_MODE refused")
                continue
        # rounds of every timing in turn, the fastest of each kept: a computer busy
        # with something else slows all of them alike or, for a while, some of them
        t = [0, 0, 0, 0, 0]
        for _ in range(_ROUNDS):
            dev.raw_on = False
            row = (_best(_fill, _fill_bytecode), _best(_fill, _fill_viper), _best(_bare, adcs),
                   _best(_whole, dev, adcs), 0)
            dev._command(b"\x06", True)  # RAW_START
            row = row[:4] + (_best(_whole, dev, adcs),)
            t = [v if t[i] == 0 or v < t[i] else t[i] for i, v in enumerate(row)]
        emit(section="cpu", mode=mode, samples=len(adcs[0].values),
             fill_bytecode_us_per_iter=t[0], fill_viper_us_per_iter=t[1], bare_adc_us=t[2],
             idle_us=t[3], streaming_us=t[4], idle_ratio=t[3] / t[2],
             streaming_ratio=t[4] / t[2])


if sys.argv[1] == "memory":
    memory(sys.argv[2])
else:
    cpu(sys.argv[2])
