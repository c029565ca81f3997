# The Control characteristic's wire format: checking a command write and packing the
# replies (docs/PROTOCOL.md, "Control"). protocol.py holds the opcodes, error codes and
# limits; tests/vectors/protocol.json the byte-exact examples this module and
# host_tools/ble/protocol.py reproduce.
#
# On the insole only control.py (a command) and config.py (the name rule) use it, and
# both are imported for their use and dropped after (lazy.py), this module with them:
# none of it takes RAM between commands.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_ERR_BAD_LENGTH = const(0x02)
_ERR_OK = const(0x00)
_ERR_OUT_OF_RANGE = const(0x03)
_ERR_UNKNOWN_OP = const(0x01)
_MODE_LAST = const(4)
_MODE_SLOW_WALK = const(4)
_MAINS_EU = const(50)
_MAINS_US = const(60)
_NAME_MAX = const(12)
_OP_BACKFILL = const(0x08)  # u16 low bits, or u32 (29 bits), of the first event wanted
_OP_GET_CONFIG = const(0x0A)  # reply data: side, rate, stride, mains, name
_OP_GET_JOURNAL = const(0x0B)  # reply data: head, oldest held, days dropped, journal bytes
_OP_RAW_START = const(0x06)
_OP_RAW_STOP = const(0x07)
_OP_SET_MODE = const(0x09)  # u8 mode + mode arguments (exercise modes, reserved)
_OP_SET_MAINS = const(0x0C)  # u8 mains frequency, Hz (50 or 60)
_OP_SET_NAME = const(0x02)  # 1..NAME_MAX ASCII bytes: advertised name prefix
_OP_SET_RATE = const(0x03)  # u16 sample rate, Hz
_OP_SET_SIDE = const(0x01)  # u8 side (0 left, 1 right)
_OP_SET_STRIDE = const(0x04)  # u16 stride length, cm
_OP_ZERO = const(0x05)  # zero-calibrate (insole unloaded)
_RATE_MAX = const(400)
_RATE_MIN = const(50)
_SEQ_MASK = const(0xFFFF)  # the packet carries the low 16 bits of the event sequence
_SIDE_RIGHT = const(1)
_STRIDE_MAX = const(300)
_STRIDE_MIN = const(30)


# opcode -> exact length of the write, or 0 for the variable-length ones
_LENGTHS = {
    _OP_SET_SIDE: 2,
    _OP_SET_RATE: 3,
    _OP_SET_STRIDE: 3,
    _OP_ZERO: 1,
    _OP_RAW_START: 1,
    _OP_RAW_STOP: 1,
    _OP_BACKFILL: 0,
    _OP_GET_CONFIG: 1,
    _OP_GET_JOURNAL: 1,
    _OP_SET_NAME: 0,
    _OP_SET_MODE: 0,
    _OP_SET_MAINS: 2,
}


def name_ok(name):
    if not 1 <= len(name) <= _NAME_MAX:
        return False
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in " _."):
            return False
    return True


def parse_command(data):
    """Check one Control write. Returns (op, error, value).

    value is the decoded argument (int, str, or None); error is _ERR_OK when the
    command may be carried out. Validation is complete here: the caller never
    sees an out-of-range value.
    """
    n = len(data)
    if n == 0:
        return 0, _ERR_BAD_LENGTH, None
    op = data[0]
    if op not in _LENGTHS:
        return op, _ERR_UNKNOWN_OP, None
    want = _LENGTHS[op]
    if want and n != want:
        return op, _ERR_BAD_LENGTH, None
    if op == _OP_SET_SIDE:
        side = data[1]
        if side > _SIDE_RIGHT:
            return op, _ERR_OUT_OF_RANGE, None
        return op, _ERR_OK, side
    if op == _OP_SET_MAINS:
        hz = data[1]
        if hz != _MAINS_EU and hz != _MAINS_US:
            return op, _ERR_OUT_OF_RANGE, None
        return op, _ERR_OK, hz
    if op == _OP_BACKFILL:
        if n == 5:
            # the whole 29-bit number; the top three bits of the u32 must be 0
            if data[4] > 0x1F:
                return op, _ERR_OUT_OF_RANGE, None
            return op, _ERR_OK, data[1] | (data[2] << 8) | (data[3] << 16) | (data[4] << 24)
        if n != 3:
            return op, _ERR_BAD_LENGTH, None
    if op in (_OP_SET_RATE, _OP_SET_STRIDE, _OP_BACKFILL):
        value = data[1] | (data[2] << 8)
        if op == _OP_SET_RATE and not _RATE_MIN <= value <= _RATE_MAX:
            return op, _ERR_OUT_OF_RANGE, None
        if op == _OP_SET_STRIDE and not _STRIDE_MIN <= value <= _STRIDE_MAX:
            return op, _ERR_OUT_OF_RANGE, None
        return op, _ERR_OK, value
    if op == _OP_SET_NAME:
        if not 2 <= n <= 1 + _NAME_MAX:
            return op, _ERR_BAD_LENGTH, None
        for b in data[1:]:
            if b < 0x20 or b > 0x7E:
                return op, _ERR_OUT_OF_RANGE, None
        name = bytes(data[1:]).decode()
        if not name_ok(name):
            return op, _ERR_OUT_OF_RANGE, None
        return op, _ERR_OK, name
    if op == _OP_SET_MODE:
        if n < 2:
            return op, _ERR_BAD_LENGTH, None
        mode = data[1]
        if mode > _MODE_LAST:
            return op, _ERR_OUT_OF_RANGE, None
        if mode == _MODE_SLOW_WALK:
            # u16 target cadence (steps/min * 10), u8 tolerance %, u8 strike pattern
            if n != 6:
                return op, _ERR_BAD_LENGTH, None
            target = data[2] | (data[3] << 8)
            if not (200 <= target <= 1600 and 1 <= data[4] <= 50 and data[5] <= 3):
                return op, _ERR_OUT_OF_RANGE, None
            return op, _ERR_OK, (mode, target, data[4], data[5])
        if n != 2:
            return op, _ERR_BAD_LENGTH, None
        return op, _ERR_OK, (mode, 900, 5, 1)
    return op, _ERR_OK, None


def pack_reply(buf, op, err):
    """Reply header; returns its length. Data, if any, follows at offset 2."""
    buf[0] = op
    buf[1] = err
    return 2


# BACKFILL names its first event by the low 16 bits of its sequence number. Read
# against the ring's head (the number the next event gets), the 2**16 values split
# in half: (first - head) mod 2**16 in 1..BACKFILL_AHEAD_MAX lies ahead of the head
# (not made yet); every other value lies 0..32768 events behind it.
_BACKFILL_AHEAD_MAX = const(0x7FFF)


def backfill_ahead(first, head):
    """How far first lies ahead of head (0 when it is at or behind the head)."""
    ahead = (first - head) & _SEQ_MASK
    return ahead if ahead <= _BACKFILL_AHEAD_MAX else 0


# The 5-byte BACKFILL names its first event by the whole 29-bit number: the same split
# on the 2**29 clock, (first - head) mod 2**29 in 1..BACKFILL_AHEAD_MAX_29 ahead.
_SEQ29_MASK = const(0x1FFFFFFF)
_BACKFILL_AHEAD_MAX_29 = const(0x0FFFFFFF)


def backfill_ahead_29(first, head):
    """How far the 29-bit first lies ahead of head (0 when at or behind it)."""
    ahead = (first - head) & _SEQ29_MASK
    return ahead if ahead <= _BACKFILL_AHEAD_MAX_29 else 0


def pack_backfill_reply(buf, err, first, count, wide=False):
    """The reply to a 3-byte BACKFILL (u16 first, u16 count: 6 bytes) or, wide, to a
    5-byte one (u32 first, the whole 29-bit number, u32 count: 10 bytes)."""
    if wide:
        struct.pack_into("<BBII", buf, 0, _OP_BACKFILL, err, first, count)
        return 10
    struct.pack_into("<BBHH", buf, 0, _OP_BACKFILL, err, first & _SEQ_MASK, count)
    return 6


def pack_journal_reply(buf, head, oldest, dropped, size):
    """GET_JOURNAL: the next sequence number, the oldest one held (RAM ring or journal),
    journal days dropped (saturates at 0xFFFF), bytes of journal on flash."""
    struct.pack_into("<BBIIHI", buf, 0, _OP_GET_JOURNAL, _ERR_OK, head, oldest,
                     min(dropped, 0xFFFF), size)
    return 16


def pack_config_reply(buf, side, rate_hz, stride_cm, mains_hz, name):
    struct.pack_into("<BBBHHB", buf, 0, _OP_GET_CONFIG, _ERR_OK, side, rate_hz, stride_cm,
                     mains_hz)
    raw = name.encode()
    for i in range(len(raw)):
        buf[8 + i] = raw[i]
    return 8 + len(raw)
