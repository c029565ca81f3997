# The insole's setup (device.py's Insole) at boot, and its exercise modes and
# sample-rate changes: the counter module a mode needs is imported when SET_MODE
# selects the mode and dropped from sys.modules when the mode ends, so its code and
# tables leave the heap with it.
#
# This code runs only at boot (setup: the device's state, the first START event,
# intern_counter_names) and for SET_MODE and SET_RATE (control.py imports it): it is
# imported for that and dropped after (lazy.py), so none of it takes RAM while the
# insole walks or counts. Main loop only.
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
from array import array

import lazy
import protocol as P
from gait import GaitDetector, reads_hz
from pairing import TapGesture
from ring import EventRing
from sampler import Sampler

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_ERR_NO_MEMORY = const(0x0B)  # no room for a mode's counter (walk runs) or a command's code
_ERR_OK = const(0x00)
_MODE_SLOW_WALK = const(4)
_MODE_WALK = const(0)
_EVENT_SIZE = const(20)
_REPLY_MAX = const(20)
_RSC_SIZE = const(10)
_SIDE_LEFT = const(0)
_SIDE_RIGHT = const(1)
_STATUS_SIZE = const(20)
# device.py's constants (tests/test_firmware_units.py checks these copies too)
_MAX_LINKS = const(4)  # ble_insole.py: link slots
_GESTURE_N = const(0)  # Insole._counts: samples since the gesture was last fed
_GESTURE_STEP = const(7)  # ... the gesture is fed every this many samples
_J_OLDEST = const(10)  # ... journal.oldest_seq, read after each write (it loops)
_LOST_LOG_EVERY_S = const(10)  # "ring lost" line at most this often
_BATTERY_LOG_EVERY_S = const(60)  # "battery failed" line at most this often
_RING_CAPACITY = const(1024)  # events held in RAM for delivery and BACKFILL, no journal
# With a journal on flash the ring only bridges the radio: events waiting for NimBLE
# buffers and a reconnect's recent past without a flash read. 128 events are about 40 s
# of walking (three events a step), past a supervision timeout and the reconnect after
# it, in one 2.5 KB block; anything older comes from the journal.
_RING_CAPACITY_JOURNAL = const(128)


def setup(dev, adcs, ble, store, cfg, log, clock, uid_suffix, board_name, battery_mv, led,
          wdt, finished, ring_capacity, journal):
    """Insole.__init__ (boot): the device's state, its first Start event and status,
    advertising on."""
    # the device's integer state (_GESTURE_N ...), one array: a store to an
    # attribute of a class with properties looks the name up in the class first
    # (MicroPython's py/objtype.c mp_obj_instance_store_attr), an array store does
    # not, and each attribute name is interned for good. The attribute table grows
    # only when full (py/map.c mp_map_lookup, sizes 47, 59, 73): a full one makes
    # every method call on dev scan all of it, so the count stays well below one
    # of those sizes (tests/test_budget.py checks it)
    dev._counts = array("i", [0, 1, 0, 0, 1, -1, -1, 1, 0, 0, 0])
    dev.adcs = adcs  # heel, arch, forefoot
    # bound once: a method looked up at every read costs the loop a third more
    dev._read_h = adcs[0].read_u16
    dev._read_a = adcs[1].read_u16
    dev._read_f = adcs[2].read_u16
    dev._mains = None  # the reads' hum check (mains.py) where they average
    dev.ble = ble
    dev._store = store
    dev.cfg = cfg
    dev._log = log
    dev._clock = clock
    dev._suffix = uid_suffix
    dev._battery_fn = battery_mv
    dev._led = led
    dev._led_onoff = led is not None and hasattr(led, "on")
    dev.board_name = board_name
    dev.wdt = wdt
    dev._finished = finished
    dev.sampler = Sampler(cfg["rate_hz"], clock)
    if reads_hz(cfg["rate_hz"], cfg["mains_hz"]):
        bind_reads(dev)  # four reads over a mains period
    log.clock = dev.sampler
    dev.det = _new_detector(dev)
    dev.mode = _MODE_WALK
    dev._mode_args = (_MODE_WALK, 0, 0, 0)  # SET_MODE's parsed arguments
    dev.ex = None  # the exercise counter while an exercise mode is on
    dev._counter_mode = _MODE_WALK  # mode whose counter module is loaded
    dev._counter_modules = []  # what importing it added to sys.modules
    dev._step_base = 0  # steps of earlier detectors (rate changes)
    if ring_capacity is None:
        # a journal that could not open keeps nothing: the ring is the store again
        with_journal = journal is not None and journal.usable
        ring_capacity = _RING_CAPACITY_JOURNAL if with_journal else _RING_CAPACITY
    ring = dev.ring = EventRing(ring_capacity)
    # the journal (journal.py, optional) keeps every event on flash: numbers carry
    # on from it, and an event the ring has dropped is read back from it
    dev.journal = journal
    dev._jbits = bytearray(ring_capacity // 8)  # per ring slot: journaled
    if journal is not None:
        ring.head = journal.next_seq
        dev._step_base = journal.last_step
        dev._counts[_J_OLDEST] = journal.oldest_seq
    dev._pkt = bytearray(_EVENT_SIZE)  # event being built
    dev._tx = bytearray(_EVENT_SIZE)  # event being notified
    # per link slot: next event sequence number to notify (2**29 clock), and the
    # ble.link_gen it was set for (a new authenticated central: a new stream)
    dev._tx_at = array("i", [ring.head] * _MAX_LINKS)
    dev._gen = array("i", [0] * _MAX_LINKS)
    dev._slot = 0  # the slot whose command is being answered
    # sequence number after the newest delivered event, never older than the oldest
    # held one (ring or journal): the events from here to the head are undelivered
    dev._delivered = ring.head
    dev.lost = 0  # undelivered events no longer held anywhere (saturates)
    # what the loss and battery lines last told, and when (uptime_s), in one
    # array: fewer attribute names (each one interned for good)
    dev._logged = array("i", [0, 0, -_LOST_LOG_EVERY_S, -_BATTERY_LOG_EVERY_S])
    dev._replies = [None] * _MAX_LINKS  # per slot: a Control reply still to be sent
    dev._reply_buf = bytearray(_REPLY_MAX)
    # the wearer's pairing gesture, counted on every _GESTURE_STEP-th sample
    # (about 50 Hz: taps last tens of ms, and this runs in the hot path)
    dev.gesture = TapGesture(_gesture_rate(dev, cfg["rate_hz"]))
    # sample() calls service() only when something may be waiting for it: _DUE
    # (set by whatever leaves work behind: an event, a raw packet, a reply the
    # stack refused), a second gone, or ble.changes moved (the IRQ handler)
    dev.raw_on = False
    dev._raw_link = -1  # the slot that started the raw stream
    dev._raw = []  # the packet queue, made by the first RAW_START (control.py)
    dev._raw_tail = 0  # queue slot of the oldest unsent packet, 0.._RAW_QUEUE-1
    dev._raw_queued = 0  # complete packets waiting, 0.._RAW_QUEUE-1
    dev._raw_fill = array("H")  # that packet (one of the queue's, from sample())
    dev.raw_lost = 0  # saturates at 0xFFFF
    dev._status = bytearray(_STATUS_SIZE)
    dev._battery_mv = 0  # the last good reading
    dev._battery = bytearray(1)
    dev.battery_errors = 0  # failed battery reads (saturates)
    dev._rsc = bytearray(_RSC_SIZE)
    dev._moving = False
    lazy.run("ble_gatt", "set_name", dev.ble, dev.adv_name())
    if journal is not None:
        _emit_start(dev, journal.skipped_seq, journal.skipped_steps)
    else:
        _emit_start(dev)
    dev._update_status()
    intern_counter_names(dev)  # the exercise counters' names, interned now
    dev.ble.advertise()


def _gesture_rate(dev, rate):
    # feed the gesture about 50 times a second, whatever the sample rate
    step = rate // 50
    dev._counts[_GESTURE_STEP] = step if step > 0 else 1
    dev._counts[_GESTURE_N] = 0
    return rate // dev._counts[_GESTURE_STEP]


def _emit_start(dev, skipped_seq=0, skipped_steps=0):
    side = _SIDE_RIGHT if dev.cfg["side"] == "R" else _SIDE_LEFT
    P.pack_start(dev._pkt, dev.ring.head, dev.steps, dev.cfg["rate_hz"], side,
                 dev.mode, skipped_seq, skipped_steps)
    dev._put(dev._pkt)


def _new_detector(dev):
    det = GaitDetector(dev.cfg["rate_hz"], dev.cfg["mains_hz"])
    zero = dev.cfg.get("zero")
    if zero:
        det.set_zero(zero[0], zero[1], zero[2])
    return det


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
    _emit_start(dev)
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
        dev.ex = counter(rate, target, tol, pattern, dev.cfg["mains_hz"])
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
    dev.det = _new_detector(dev)
    new_exercise(dev)  # an exercise counter follows the new rate too
    dev.sampler.set_rate(rate)
    bind_reads(dev)
    dev.gesture.set_rate(_gesture_rate(dev, rate))
    dev._moving = False
    _emit_start(dev)


def bind_reads(dev):
    """The sample's ADC reads at dev.cfg's rate and mains: one read per channel, or
    where gait.reads_hz() says so the mean of four over one mains period (mains.py), whose
    module is dropped from sys.modules at once (its code stays only while the reads
    use it)."""
    adcs = dev.adcs
    hz = reads_hz(dev.cfg["rate_hz"], dev.cfg["mains_hz"])
    dev._mains = None
    if not hz:
        dev._read_h = adcs[0].read_u16
        dev._read_a = adcs[1].read_u16
        dev._read_f = adcs[2].read_u16
        return
    mod, added = lazy.load("mains")
    try:
        avg = mod.MainsAverage(adcs[0].read_u16, adcs[1].read_u16, adcs[2].read_u16,
                               dev._clock, hz, dev.cfg["rate_hz"])
    finally:
        mod = None
        lazy.drop(added)
    dev._mains = avg.check  # its hum check, for Status (device._update_status)
    dev._read_h = avg.heel
    dev._read_a = avg.arch
    dev._read_f = avg.fore
