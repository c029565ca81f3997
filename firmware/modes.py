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
import gc
import sys

import protocol as P

# SET_MODE mode -> (module, class) of its counter; walk mode has none
_COUNTERS = (("", ""), ("heelraise", "HeelRaiseCounter"), ("toescrunch", "ToeScrunchCounter"),
             ("balance", "BalanceTimer"), ("slowwalk", "SlowWalkCoach"))


def set_mode(dev, args):
    """SET_MODE with its parsed arguments; returns the error code of the reply."""
    dev.mode = args[0]
    dev._mode_args = args
    err = P.ERR_OK
    try:
        new_exercise(dev)
    except MemoryError:
        # a heap too full or too fragmented for the counter: walk on
        unload_counter(dev)
        dev.mode = P.MODE_WALK
        dev._mode_args = (P.MODE_WALK, 0, 0, 0)
        err = P.ERR_NO_MEMORY
    dev._emit_start()
    return err


def new_exercise(dev):
    """The counter of dev's mode, new (its module loaded when the mode changed)."""
    mode, target, tol, pattern = dev._mode_args
    dev.ex = None
    if mode != dev._counter_mode:
        unload_counter(dev)
        if mode != P.MODE_WALK:
            load_counter(dev, mode)
    if mode == P.MODE_WALK:
        return
    name, cls_name = _COUNTERS[mode]
    counter = getattr(sys.modules[name], cls_name)
    rate = dev.cfg["rate_hz"]
    if mode == P.MODE_SLOW_WALK:
        dev.ex = counter(rate, target, tol, pattern)
    else:
        dev.ex = counter(rate)


def intern_counter_names(dev):
    """Import each exercise counter once and drop it again (boot).

    What stays is the names the modules intern: MicroPython never frees them,
    and when a table of names is full the next one is twice its size (py/qstr.c
    qstr_add). On the virtual board, whose shims intern 500 names first, the
    counters' names need a 1280-entry table, one 14 KB block; made at the first
    SET_MODE it was the largest block after boot and stayed when the mode ended.
    An ESP32 without those names has room for them in the table boot makes
    (`insole bench`, name_tables); either way no mode adds a table after boot."""
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
    dev._counter_mode = P.MODE_WALK
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
    dev.gesture.set_rate(dev._gesture_rate(rate))
    dev._moving = False
    dev._emit_start()
