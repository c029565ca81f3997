# What each Control command does on the insole (device.py's Insole): the write is
# checked by control_wire.parse_command, carried out here, and answered with the
# reply this returns (packed by control_wire); SET_MODE and SET_RATE go on in
# modes.py. Commands are rare, so this module is imported for each one and dropped
# after with those two (lazy.py): none of it takes RAM between commands. Main loop
# only.
#
# The functions take the device and reach into its state the way its own methods
# would: this is the Control part of Insole, kept out of the resident module.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from array import array

import control_wire
import lazy
import modes
from device import MAX_RATE_HZ
from gait import reads_hz

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_ERR_NOT_YET = const(0x09)  # backfill: the first event asked for has not been made yet
_ERR_OK = const(0x00)
_ERR_PARTIAL = const(0x07)  # backfill: the oldest wanted events are gone
_ERR_STORAGE = const(0x06)
_ERR_TOO_FAST = const(0x0A)  # SET_RATE, SET_MODE, SET_MAINS: the mode cannot hold that rate
_OP_BACKFILL = const(0x08)  # u16 low bits, or u32 (29 bits), of the first event wanted
_OP_GET_CONFIG = const(0x0A)  # reply data: side, rate, stride, mains, name
_OP_GET_JOURNAL = const(0x0B)  # reply data: head, oldest held, days dropped, journal bytes
_OP_RAW_START = const(0x06)
_OP_RAW_STOP = const(0x07)
_OP_SET_MAINS = const(0x0C)  # u8 mains frequency, Hz (50 or 60)
_OP_SET_MODE = const(0x09)  # u8 mode + mode arguments (exercise modes, reserved)
_OP_SET_NAME = const(0x02)  # 1..NAME_MAX ASCII bytes: advertised name prefix
_OP_SET_RATE = const(0x03)  # u16 sample rate, Hz
_OP_SET_SIDE = const(0x01)  # u8 side (0 left, 1 right)
_OP_SET_STRIDE = const(0x04)  # u16 stride length, cm
_OP_ZERO = const(0x05)  # zero-calibrate (insole unloaded)
_SEQ_MASK = const(0xFFFF)  # the packet carries the low 16 bits of the event sequence
_SIDE_LEFT = const(0)
_SIDE_RIGHT = const(1)
_READS_SPAN_PER_MILLE = const(750)  # four reads take 3/4 of a mains period (mains.py)

_RAW_SIZE = const(20)

_SEQ29 = const(0x1FFFFFFF)  # ring.SEQ_MASK: sequence numbers run on 2**29
_RAW_QUEUE = const(16)  # device.py: raw packets waiting for the radio
_RAW_AT = const(1)  # ... Insole._counts: where the next raw sample goes in its packet
_HOLE_SCAN = const(128)  # numbers a BACKFILL looks past for its first event, at most


def command(dev, data):
    """Carry out one Control write of an authenticated link; returns the reply."""
    op, err, value = control_wire.parse_command(data)
    if err != _ERR_OK:
        return bytes((op, err))
    buf = dev._reply_buf
    if op == _OP_BACKFILL:
        return backfill(dev, value, len(data) == 5)
    if op == _OP_GET_JOURNAL:
        j = dev.journal
        dropped = size = 0
        if j is not None:
            dropped = j.dropped
            size = j.size_bytes
        n = control_wire.pack_journal_reply(buf, dev.ring.head, dev._oldest_held(), dropped, size)
        return bytes(buf[:n])
    cfg = dev.cfg
    if op == _OP_GET_CONFIG:
        side = _SIDE_RIGHT if cfg["side"] == "R" else _SIDE_LEFT
        n = control_wire.pack_config_reply(buf, side, cfg["rate_hz"], cfg["stride_cm"],
                                           cfg["mains_hz"], cfg["name"])
        return bytes(buf[:n])
    if op == _OP_SET_SIDE:
        err = change(dev, "side", "R" if value == _SIDE_RIGHT else "L")
    elif op == _OP_SET_NAME:
        err = change(dev, "name", value)
    elif op == _OP_SET_RATE:
        if not holds(dev.mode, value, cfg["mains_hz"]):
            err = _ERR_TOO_FAST
        else:
            err = change(dev, "rate_hz", value)
        if err == _ERR_OK:
            modes.restart_detector(dev)
    elif op == _OP_SET_MAINS:
        # the pre-filter and the four-read average follow the mains period
        if not holds(dev.mode, cfg["rate_hz"], value):
            err = _ERR_TOO_FAST
        else:
            err = change(dev, "mains_hz", value)
        if err == _ERR_OK:
            modes.restart_detector(dev)
    elif op == _OP_SET_STRIDE:
        err = change(dev, "stride_cm", value)
    elif op == _OP_ZERO:
        # kept in the config, so the zero survives a reboot and a re-flash
        dev.det.zero()
        err = change(dev, "zero", list(dev.det.zero_levels()))
    elif op == _OP_RAW_START:
        if not dev._raw:  # kept from here on: a raw stream may come back
            # each packet an array of u16 (RAW_SIZE bytes: the index, then three
            # samples), sent as it is: the protocol's little-endian layout on the
            # ESP32 and the hosts the tests run on
            dev._raw = [array("H", [0] * (_RAW_SIZE // 2)) for _ in range(_RAW_QUEUE)]
        dev.raw_on = True
        dev._raw_link = dev._slot
        dev._counts[_RAW_AT] = 1
        dev._raw_tail = dev._raw_queued = 0
    elif op == _OP_RAW_STOP:
        if dev._raw_link == dev._slot:
            dev.raw_on = False
            dev._raw_link = -1
    elif op == _OP_SET_MODE:
        if not holds(value[0], cfg["rate_hz"], cfg["mains_hz"]):
            err = _ERR_TOO_FAST
        else:
            err = modes.set_mode(dev, value)
    dev._log("cmd", "%d -> %d" % (op, err))
    return bytes((op, err))


def holds(mode, rate, mains):
    """Whether the mode can run at this rate and mains setting: at most its highest
    rate (device.MAX_RATE_HZ, where its loop takes at most half a period), and where a
    sample averages four reads (gait.reads_hz()) what the reads leave of the period is
    at least that half period, the longest the mode's loop may take. (1/1000 s and
    Hz: every product stays far below 2**29.)"""
    top = MAX_RATE_HZ[mode]
    if rate > top:
        return False
    hz = reads_hz(rate, mains)
    # (1/rate - 3/4 / hz) >= 1 / (2 top), times 1000 rate hz
    return not hz or (1000 * hz - _READS_SPAN_PER_MILLE * rate) * 2 * top >= 1000 * rate * hz


def change(dev, key, value):
    """Set one config field, saved first: ERR_STORAGE leaves the config as it was."""
    new = dict(dev.cfg)
    new[key] = value
    if not dev._store.save(new):
        return _ERR_STORAGE
    dev.cfg = new
    if key in ("side", "name"):
        # advertised at once while advertising
        lazy.run("ble_gatt", "set_name", dev.ble, dev.adv_name())
    return _ERR_OK


def backfill(dev, first, wide=False):
    """Replay from the event numbered first: its low 16 bits (see control_wire.backfill_ahead
    for which values lie ahead of the head) or, wide, the whole 29-bit number.
    Returns the reply."""
    ring = dev.ring
    head = ring.head
    buf = dev._reply_buf
    ahead = control_wire.backfill_ahead_29 if wide else control_wire.backfill_ahead
    if ahead(first, head):
        # not made yet (a central that outran a reboot, or a wrong number): replay
        # nothing and tell the central where the insole is
        n = control_wire.pack_backfill_reply(buf, _ERR_NOT_YET, head, 0, wide)
        return bytes(buf[:n])
    if wide:
        back = (head - first) & _SEQ29
    else:
        back = (head - first) & _SEQ_MASK  # 0..32768 events behind the head
    held = ring.behind(dev._oldest_held())
    err = _ERR_OK
    if back > held:
        back = held
        err = _ERR_PARTIAL
    first = (head - back) & _SEQ29
    if dev.journal is not None and back and not ring.held(first):
        start = first
        first = _first_event(dev, first)
        if first != start:
            # the numbers asked for first hold nothing (skipped at a reboot, lost
            # in a power cut, refused by a failing flash): say they are gone
            back = ring.behind(first)
            err = _ERR_PARTIAL
    dev._tx_at[dev._slot] = first  # the asking central's stream
    n = control_wire.pack_backfill_reply(buf, err, first, back, wide)
    return bytes(buf[:n])


def _first_event(dev, seq):
    """seq, or the first number after it that holds an event (looking at most at
    _HOLE_SCAN numbers; the head when none)."""
    ring = dev.ring
    j = dev.journal
    n = 0
    while seq != ring.head and not ring.held(seq) and n < _HOLE_SCAN:
        if ring.behind(seq) <= ring.behind(j.next_seq):
            return ring.oldest()  # past the journal's end: the ring's oldest next
        if j.read(seq, dev._tx) or j.read_error:
            return seq  # an event, or one that could not be read now: not gone
        seq = (seq + 1) & _SEQ29
        n += 1
    return seq
