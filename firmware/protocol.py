# The insole's BLE wire format: every payload the firmware sends or accepts.
#
# docs/PROTOCOL.md is the prose version of this file, and tests/vectors/protocol.json
# holds byte-exact examples that both this module and host_tools/protocol.py must
# reproduce. All multi-byte fields are little-endian. Packers write into a
# caller-owned, preallocated buffer with struct.pack_into and allocate nothing.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct

VERSION = "0.1.0"  # also in Device Information > Firmware Revision (0x2A26)

# Serial line printed once at start-up; tools wait for it (see docs/PROTOCOL.md).
BANNER = "insole {} board={} side={} rate={} name={}"

# Custom 128-bit UUIDs: base f1fe0000-e1fa-4b38-8a41-0e11dc80f5eb, 16 bits varied.
UUID_SERVICE = "f1fe0001-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_STEP_EVENT = "f1fe0002-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_STATUS = "f1fe0003-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_CONTROL = "f1fe0004-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_RAW = "f1fe0005-e1fa-4b38-8a41-0e11dc80f5eb"

# ---- Step Event characteristic: every packet is exactly EVENT_SIZE bytes ----
EVENT_SIZE = const(20)
EVENT_FORMAT = const(1)  # byte 0 of every packet
SEQ_MASK = const(0xFFFF)  # the packet carries the low 16 bits of the event sequence

KIND_STRIKE = const(0x01)  # heel strike (contact) confirmed
KIND_STEP = const(0x02)  # step summary, timing half
KIND_LOAD = const(0x03)  # step summary, load half (always follows its KIND_STEP)
KIND_START = const(0x04)  # detector (re)started: times restart at 0 from here
# 0x10..0x1F: exercise-mode events (payloads defined with each mode)
KIND_EXERCISE_FIRST = const(0x10)
KIND_HEEL_RAISE = const(0x10)
KIND_TOE_SCRUNCH = const(0x11)
KIND_BALANCE = const(0x12)
KIND_COACHED_STEP = const(0x13)
KIND_EXERCISE_LAST = const(0x1F)

_HDR = "<BBH"  # format, kind, seq
_STRIKE = "<BBHIII"  # + step, contact_ms, detect_ms
_STEP = "<BBHIIHHHH"  # + step, strike_ms, stance, swing, stride, heel_off - strike
_LOAD = "<BBHHBBHHHHHH"  # + step (u24), pattern, peaks h/a/f, shares h/a/f
_START = "<BBHIHBBHH"  # + total steps, rate_hz, side, mode, numbers skipped at boot


def _clear(buf, start):
    for i in range(start, EVENT_SIZE):
        buf[i] = 0


def pack_strike(buf, seq, step, contact_ms, detect_ms):
    struct.pack_into(_STRIKE, buf, 0, EVENT_FORMAT, KIND_STRIKE, seq & SEQ_MASK, step,
                     contact_ms, detect_ms)
    _clear(buf, 16)


def pack_step(buf, seq, step, strike_ms, stance_ms, swing_ms, stride_ms, heel_off_ms):
    # heel-off travels as an offset from the strike (both on the 2**29 ms clock)
    dt = (heel_off_ms - strike_ms) & 0x1FFFFFFF
    if dt > 0xFFFF:
        dt = 0xFFFF
    struct.pack_into(_STEP, buf, 0, EVENT_FORMAT, KIND_STEP, seq & SEQ_MASK, step,
                     strike_ms, stance_ms, swing_ms, stride_ms, dt)


def pack_load(buf, seq, step, pattern, peak_heel, peak_arch, peak_fore, share_heel,
              share_arch, share_fore):
    # the step number travels as 24 bits here (its STEP packet has all 32)
    struct.pack_into(_LOAD, buf, 0, EVENT_FORMAT, KIND_LOAD, seq & SEQ_MASK, step & 0xFFFF,
                     (step >> 16) & 0xFF, pattern, peak_heel, peak_arch, peak_fore, share_heel,
                     share_arch, share_fore)


def pack_start(buf, seq, steps, rate_hz, side, mode, skipped_seq=0, skipped_steps=0):
    # skipped_*: sequence and step numbers a reboot left unused just before this START
    # (the journal skips past what a lost batch could have held); 0 otherwise
    struct.pack_into(_START, buf, 0, EVENT_FORMAT, KIND_START, seq & SEQ_MASK, steps,
                     rate_hz, side, mode, min(skipped_seq, 0xFFFF), min(skipped_steps, 0xFFFF))
    _clear(buf, 16)


def event_seq16(buf):
    return buf[2] | (buf[3] << 8)


# ---- Status characteristic (read + notify, 20 bytes: fits one notification at MTU 23) ----
STATUS_SIZE = const(20)
STATUS_FORMAT = const(2)
SIDE_LEFT = const(0)
SIDE_RIGHT = const(1)
STATUS_RIGHT = const(0x01)  # flags bit 0: right insole
STATUS_RAW = const(0x02)  # flags bit 1: raw streaming on
STATUS_ENCRYPTED = const(0x04)  # flags bit 2: current link is encrypted
STATUS_JOURNAL_DROPPED = const(0x08)  # flags bit 3: the journal dropped days (GET_JOURNAL)
STATUS_MODE_SHIFT = const(4)  # flags bits 4..7: mode
STATUS_BATTERY_UNIT_MV = const(20)  # battery byte: nearest 20 mV, 255 = 5.1 V or more
_STATUS = "<BBHIIHHHBB"


def pack_status(buf, flags, rate_hz, steps, uptime_s, overruns, lost, faults, battery_mv,
                buffered):
    # counters saturate at their field's largest value rather than wrap
    battery = (battery_mv + STATUS_BATTERY_UNIT_MV // 2) // STATUS_BATTERY_UNIT_MV
    struct.pack_into(_STATUS, buf, 0, STATUS_FORMAT, flags, rate_hz, steps, uptime_s,
                     min(overruns, 0xFFFF), min(lost, 0xFFFF), faults & 0xFFFF,
                     max(0, min(battery, 0xFF)), min(buffered, 0xFF))


# ---- Raw Stream characteristic: sample index + RAW_PER_PACKET samples ----
RAW_PER_PACKET = const(3)
RAW_SIZE = const(20)


def pack_raw_index(buf, index):
    struct.pack_into("<H", buf, 0, index & 0xFFFF)


def pack_raw_sample(buf, slot, heel, arch, fore):
    struct.pack_into("<HHH", buf, 2 + 6 * slot, heel, arch, fore)


# ---- Running Speed and Cadence measurement (0x2A53) ----
RSC_SIZE = const(10)
RSC_STRIDE_PRESENT = const(0x01)
RSC_DISTANCE_PRESENT = const(0x02)
RSC_RUNNING = const(0x04)
RSC_FEATURES = const(0x0007)  # stride length, total distance, walking/running status
RSC_LOCATION_IN_SHOE = const(2)
_RSC = "<BHBHI"


def pack_rsc(buf, running, speed_256, cadence, stride_cm, distance_dm):
    flags = RSC_STRIDE_PRESENT | RSC_DISTANCE_PRESENT
    if running:
        flags |= RSC_RUNNING
    struct.pack_into(_RSC, buf, 0, flags, speed_256, cadence, stride_cm, distance_dm)


# ---- Control characteristic: opcode byte + arguments; reply: opcode, error, data ----
OP_SET_SIDE = const(0x01)  # u8 side (0 left, 1 right)
OP_SET_NAME = const(0x02)  # 1..NAME_MAX ASCII bytes: advertised name prefix
OP_SET_RATE = const(0x03)  # u16 sample rate, Hz
OP_SET_STRIDE = const(0x04)  # u16 stride length, cm
OP_ZERO = const(0x05)  # zero-calibrate (insole unloaded)
OP_RAW_START = const(0x06)
OP_RAW_STOP = const(0x07)
OP_BACKFILL = const(0x08)  # u16 low bits, or u32 (29 bits), of the first event wanted
OP_SET_MODE = const(0x09)  # u8 mode + mode arguments (exercise modes, reserved)
OP_GET_CONFIG = const(0x0A)  # reply data: side, rate, stride, name
OP_GET_JOURNAL = const(0x0B)  # reply data: head, oldest held, days dropped, journal bytes

ERR_OK = const(0x00)
ERR_UNKNOWN_OP = const(0x01)
ERR_BAD_LENGTH = const(0x02)
ERR_OUT_OF_RANGE = const(0x03)
ERR_NOT_ENCRYPTED = const(0x04)
ERR_UNSUPPORTED = const(0x05)
ERR_STORAGE = const(0x06)
ERR_PARTIAL = const(0x07)  # backfill: the oldest wanted events are gone
ERR_BUSY = const(0x08)
ERR_NOT_YET = const(0x09)  # backfill: the first event asked for has not been made yet
ERR_TOO_FAST = const(0x0A)  # SET_RATE, SET_MODE: the mode cannot hold that sample rate
ERR_NO_MEMORY = const(0x0B)  # SET_MODE: no room for the mode's counter (walk mode runs)

RATE_MIN = const(50)
RATE_MAX = const(400)
STRIDE_MIN = const(30)
STRIDE_MAX = const(300)
NAME_MAX = const(12)

MODE_WALK = const(0)
MODE_HEEL_RAISE = const(1)
MODE_TOE_SCRUNCH = const(2)
MODE_BALANCE = const(3)
MODE_SLOW_WALK = const(4)
MODE_LAST = const(4)

REPLY_MAX = const(20)

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
