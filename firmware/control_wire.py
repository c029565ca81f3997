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

from protocol import (
    ERR_BAD_LENGTH,
    ERR_OK,
    ERR_OUT_OF_RANGE,
    ERR_UNKNOWN_OP,
    MODE_LAST,
    MODE_SLOW_WALK,
    NAME_MAX,
    OP_BACKFILL,
    OP_GET_CONFIG,
    OP_GET_JOURNAL,
    OP_RAW_START,
    OP_RAW_STOP,
    OP_SET_MODE,
    OP_SET_NAME,
    OP_SET_RATE,
    OP_SET_SIDE,
    OP_SET_STRIDE,
    OP_ZERO,
    RATE_MAX,
    RATE_MIN,
    SEQ_MASK,
    SIDE_RIGHT,
    STRIDE_MAX,
    STRIDE_MIN,
)

# opcode -> exact length of the write, or 0 for the variable-length ones
_LENGTHS = {
    OP_SET_SIDE: 2,
    OP_SET_RATE: 3,
    OP_SET_STRIDE: 3,
    OP_ZERO: 1,
    OP_RAW_START: 1,
    OP_RAW_STOP: 1,
    OP_BACKFILL: 0,
    OP_GET_CONFIG: 1,
    OP_GET_JOURNAL: 1,
    OP_SET_NAME: 0,
    OP_SET_MODE: 0,
}


def name_ok(name):
    if not 1 <= len(name) <= NAME_MAX:
        return False
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in " _."):
            return False
    return True


def parse_command(data):
    """Check one Control write. Returns (op, error, value).

    value is the decoded argument (int, str, or None); error is ERR_OK when the
    command may be carried out. Validation is complete here: the caller never
    sees an out-of-range value.
    """
    n = len(data)
    if n == 0:
        return 0, ERR_BAD_LENGTH, None
    op = data[0]
    if op not in _LENGTHS:
        return op, ERR_UNKNOWN_OP, None
    want = _LENGTHS[op]
    if want and n != want:
        return op, ERR_BAD_LENGTH, None
    if op == OP_SET_SIDE:
        side = data[1]
        if side > SIDE_RIGHT:
            return op, ERR_OUT_OF_RANGE, None
        return op, ERR_OK, side
    if op == OP_BACKFILL:
        if n == 5:
            # the whole 29-bit number; the top three bits of the u32 must be 0
            if data[4] > 0x1F:
                return op, ERR_OUT_OF_RANGE, None
            return op, ERR_OK, data[1] | (data[2] << 8) | (data[3] << 16) | (data[4] << 24)
        if n != 3:
            return op, ERR_BAD_LENGTH, None
    if op in (OP_SET_RATE, OP_SET_STRIDE, OP_BACKFILL):
        value = data[1] | (data[2] << 8)
        if op == OP_SET_RATE and not RATE_MIN <= value <= RATE_MAX:
            return op, ERR_OUT_OF_RANGE, None
        if op == OP_SET_STRIDE and not STRIDE_MIN <= value <= STRIDE_MAX:
            return op, ERR_OUT_OF_RANGE, None
        return op, ERR_OK, value
    if op == OP_SET_NAME:
        if not 2 <= n <= 1 + NAME_MAX:
            return op, ERR_BAD_LENGTH, None
        for b in data[1:]:
            if b < 0x20 or b > 0x7E:
                return op, ERR_OUT_OF_RANGE, None
        name = bytes(data[1:]).decode()
        if not name_ok(name):
            return op, ERR_OUT_OF_RANGE, None
        return op, ERR_OK, name
    if op == OP_SET_MODE:
        if n < 2:
            return op, ERR_BAD_LENGTH, None
        mode = data[1]
        if mode > MODE_LAST:
            return op, ERR_OUT_OF_RANGE, None
        if mode == MODE_SLOW_WALK:
            # u16 target cadence (steps/min * 10), u8 tolerance %, u8 strike pattern
            if n != 6:
                return op, ERR_BAD_LENGTH, None
            target = data[2] | (data[3] << 8)
            if not (200 <= target <= 1600 and 1 <= data[4] <= 50 and data[5] <= 3):
                return op, ERR_OUT_OF_RANGE, None
            return op, ERR_OK, (mode, target, data[4], data[5])
        if n != 2:
            return op, ERR_BAD_LENGTH, None
        return op, ERR_OK, (mode, 900, 5, 1)
    return op, ERR_OK, None


def pack_reply(buf, op, err):
    """Reply header; returns its length. Data, if any, follows at offset 2."""
    buf[0] = op
    buf[1] = err
    return 2


# BACKFILL names its first event by the low 16 bits of its sequence number. Read
# against the ring's head (the number the next event gets), the 2**16 values split
# in half: (first - head) mod 2**16 in 1..BACKFILL_AHEAD_MAX lies ahead of the head
# (not made yet); every other value lies 0..32768 events behind it.
BACKFILL_AHEAD_MAX = const(0x7FFF)


def backfill_ahead(first16, head):
    """How far first16 lies ahead of head (0 when it is at or behind the head)."""
    ahead = (first16 - head) & SEQ_MASK
    return ahead if ahead <= BACKFILL_AHEAD_MAX else 0


# The 5-byte BACKFILL names its first event by the whole 29-bit number: the same split
# on the 2**29 clock, (first - head) mod 2**29 in 1..BACKFILL_AHEAD_MAX_29 ahead.
SEQ29_MASK = const(0x1FFFFFFF)
BACKFILL_AHEAD_MAX_29 = const(0x0FFFFFFF)


def backfill_ahead_29(first, head):
    """How far the 29-bit first lies ahead of head (0 when at or behind it)."""
    ahead = (first - head) & SEQ29_MASK
    return ahead if ahead <= BACKFILL_AHEAD_MAX_29 else 0


def pack_backfill_reply(buf, err, first_seq, count, wide=False):
    """The reply to a 3-byte BACKFILL (u16 first, u16 count: 6 bytes) or, wide, to a
    5-byte one (u32 first, the whole 29-bit number, u32 count: 10 bytes)."""
    if wide:
        struct.pack_into("<BBII", buf, 0, OP_BACKFILL, err, first_seq, count)
        return 10
    struct.pack_into("<BBHH", buf, 0, OP_BACKFILL, err, first_seq & SEQ_MASK, count)
    return 6


def pack_journal_reply(buf, head, oldest, dropped, journal_bytes):
    """GET_JOURNAL: the next sequence number, the oldest one held (RAM ring or journal),
    journal days dropped (saturates at 0xFFFF), bytes of journal on flash."""
    struct.pack_into("<BBIIHI", buf, 0, OP_GET_JOURNAL, ERR_OK, head, oldest,
                     min(dropped, 0xFFFF), journal_bytes)
    return 16


def pack_config_reply(buf, side, rate_hz, stride_cm, name):
    struct.pack_into("<BBBHH", buf, 0, OP_GET_CONFIG, ERR_OK, side, rate_hz, stride_cm)
    raw = name.encode()
    for i in range(len(raw)):
        buf[7 + i] = raw[i]
    return 7 + len(raw)
