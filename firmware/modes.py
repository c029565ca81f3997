# Exercise modes and sample-rate changes on the insole (device.py's Insole): the
# counter module a mode needs is imported when SET_MODE selects the mode and dropped
# from sys.modules when the mode ends, so its code and tables leave the heap with it.
#
# This code runs only for SET_MODE and SET_RATE (control.py imports it) and once at
# boot (intern_counter_names): it is imported for that and dropped after (lazy.py),
# so none of it takes RAM while the insole walks or counts. Main loop only.
#
# The functions take the device and reach into its state the way its own methods
# would: this is the mode part of Insole, kept out of the resident module.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import gc
import sys

import lazy

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_ERR_NO_MEMORY = const(0x0B)  # no room for a mode's counter (walk runs) or a command's code
_ERR_OK = const(0x00)
_MODE_SLOW_WALK = const(4)
_MODE_WALK = const(0)
_MAINS_UP_TO_HZ = const(60)  # mains.py: rates whose samples average four reads


# SET_MODE mode -> (module, class) of its counter; walk mode has none
_COUNTERS = const((("", ""), ("heelraise", "HeelRaiseCounter"),
                   ("toescrunch", "ToeScrunchCounter"), ("balance", "BalanceTimer"),
                   ("slowwalk", "SlowWalkCoach")))


def set_mode(dev, args):
    """SET_MODE with its parsed arguments; returns the error code of the reply."""
    dev.mode = args[0]
    dev._mode_args = args
    err = _ERR_OK
    try:
        new_exercise(dev)
    except MemoryError:
        # a heap too full or too fragmented for the counter: walk on
        unload_counter(dev)
        dev.mode = _MODE_WALK
        dev._mode_args = (_MODE_WALK, 0, 0, 0)
        err = _ERR_NO_MEMORY
    dev._emit_start()
    return err


def new_exercise(dev):
    """The counter of dev's mode, new (its module loaded when the mode changed)."""
    mode, target, tol, pattern = dev._mode_args
    dev.ex = None
    if mode != dev._counter_mode:
        unload_counter(dev)
        if mode != _MODE_WALK:
            load_counter(dev, mode)
    if mode == _MODE_WALK:
        return
    name, cls_name = _COUNTERS[mode]
    counter = getattr(sys.modules[name], cls_name)
    rate = dev.cfg["rate_hz"]
    if mode == _MODE_SLOW_WALK:
        dev.ex = counter(rate, target, tol, pattern)
    else:
        dev.ex = counter(rate)


def intern_counter_names(dev):
    """Import each exercise counter once and drop it again (boot).

    What stays is the names the modules intern: MicroPython never frees them,
    and when a table of names is full the next one is twice its size (py/qstr.c
    qstr_add). A table the counters' names needed, made at the first SET_MODE,
    would be the largest block after boot (once a 14 KB one on the virtual
    board) and would stay when the mode ended; interned at boot, they find room
    in the tables boot makes, so no mode adds one (`insole bench`, name_tables)."""
    try:
        for mode in range(1, len(_COUNTERS)):
            load_counter(dev, mode)
            for name in dev._counter_modules:
                sys.modules.pop(name, None)
            dev._counter_modules = []
    except MemoryError:
        pass  # a heap this small fails at SET_MODE instead (ERR_NO_MEMORY)
    finally:
        unload_counter(dev)
        gc.collect()


def load_counter(dev, mode):
    before = set(sys.modules)
    try:
        __import__(_COUNTERS[mode][0])
        dev._counter_mode = mode
    finally:
        # kept even when the import failed half way: the unload drops them
        dev._counter_modules = [m for m in sys.modules if m not in before]


def unload_counter(dev):
    """Forget the exercise counter and the modules its import added."""
    dev.ex = None
    dev._counter_mode = _MODE_WALK
    dropped = dev._counter_modules
    dev._counter_modules = []
    for name in dropped:
        sys.modules.pop(name, None)
    if dropped:
        gc.collect()  # return their memory now, before anything else settles there


def restart_detector(dev):
    """A new detector (and exercise counter) at dev.cfg's rate: SET_RATE."""
    dev._step_base = dev.steps  # saturates with the total
    rate = dev.cfg["rate_hz"]
    dev.det = dev._new_detector()
    new_exercise(dev)  # an exercise counter follows the new rate too
    dev.sampler.set_rate(rate)
    bind_reads(dev)
    dev.gesture.set_rate(dev._gesture_rate(rate))
    dev._moving = False
    dev._emit_start()


def bind_reads(dev):
    """The sample's ADC reads at dev.cfg's rate: one read per channel, or at 60 Hz and
    below the mean of four over one mains period (mains.py), whose module is dropped
    from sys.modules at once (its code stays only while the reads use it)."""
    adcs = dev.adcs
    if dev.cfg["rate_hz"] > _MAINS_UP_TO_HZ:
        dev._read_h = adcs[0].read_u16
        dev._read_a = adcs[1].read_u16
        dev._read_f = adcs[2].read_u16
        return
    mod, added = lazy.load("mains")
    try:
        avg = mod.MainsAverage(adcs[0].read_u16, adcs[1].read_u16, adcs[2].read_u16, dev._clock)
    finally:
        mod = None
        lazy.drop(added)
    dev._read_h = avg.heel
    dev._read_a = avg.arch
    dev._read_f = avg.fore
