# The insole's BLE wire format: every payload the firmware sends or accepts.
#
# docs/PROTOCOL.md is the prose version of this file, and tests/vectors/protocol.json
# holds byte-exact examples that both this module and host_tools/ble/protocol.py must
# reproduce. All multi-byte fields are little-endian. Packers write into a
# caller-owned, preallocated buffer with struct.pack_into and allocate nothing.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import struct

VERSION = "0.1.0"  # also in Device Information > Firmware Revision (0x2A26)

# Every constant is a private const(), which takes no RAM and interns no name on the
# insole; a module that needs one keeps its own private copy (a const() imported from
# here would be a global there: a name and a lookup per use), and
# tests/test_firmware_units.py checks each copy against this file and this file
# against the host side (host_tools/ble/protocol.py). Names only one module uses live
# there alone: the start-up banner in device.py, the service and characteristic UUIDs
# and the RSC feature and location values in ble_gatt.py, the Status flags in
# device.py.

# ---- Step Event characteristic: every packet is exactly EVENT_SIZE bytes ----
_EVENT_SIZE = const(20)
_EVENT_FORMAT = const(1)  # byte 0 of every packet
_SEQ_MASK = const(0xFFFF)  # the packet carries the low 16 bits of the event sequence

_KIND_STRIKE = const(0x01)  # heel strike (contact) confirmed
_KIND_STEP = const(0x02)  # step summary, timing half
_KIND_LOAD = const(0x03)  # step summary, load half (always follows its KIND_STEP)
# LOAD byte 7: strike pattern in bits 0-1; bit 7: strike moved past a spike to the contact
_LOAD_STRIKE_CORRECTED = const(0x80)
_KIND_START = const(0x04)  # detector (re)started: times restart at 0 from here
# 0x10..0x1F: exercise-mode events (payloads defined with each mode)
_KIND_EXERCISE_FIRST = const(0x10)
_KIND_HEEL_RAISE = const(0x10)
_KIND_TOE_SCRUNCH = const(0x11)
_KIND_BALANCE = const(0x12)
_KIND_COACHED_STEP = const(0x13)
_KIND_EXERCISE_LAST = const(0x1F)

# Each packer's struct format is written where it is used (a module-level string
# would be a global, one more interned name): "<BBH" format, kind, seq, then
# STRIKE: step, contact_ms, detect_ms; STEP: step, strike_ms, stance, swing, stride,
# heel_off - strike; LOAD: step (u24), pattern, peaks h/a/f, shares h/a/f; START:
# total steps, rate_hz, side, mode, numbers skipped at boot


def pack_strike(buf, seq, step, contact_ms, detect_ms):
    struct.pack_into("<BBHIII", buf, 0, _EVENT_FORMAT, _KIND_STRIKE, seq & _SEQ_MASK, step,
                     contact_ms, detect_ms)
    for i in range(16, _EVENT_SIZE):
        buf[i] = 0


def pack_step(buf, seq, step, strike_ms, stance_ms, swing_ms, stride_ms, heel_off_ms):
    # heel-off travels as an offset from the strike (both on the 2**29 ms clock)
    dt = (heel_off_ms - strike_ms) & 0x1FFFFFFF
    if dt > 0xFFFF:
        dt = 0xFFFF
    struct.pack_into("<BBHIIHHHH", buf, 0, _EVENT_FORMAT, _KIND_STEP, seq & _SEQ_MASK, step,
                     strike_ms, stance_ms, swing_ms, stride_ms, dt)


def pack_load(buf, seq, step, pattern, peak_heel, peak_arch, peak_fore, share_heel,
              share_arch, share_fore, strike_corrected=False):
    # the step number travels as 24 bits here (its STEP packet has all 32); the pattern
    # byte keeps the pattern in bits 0-1 and flags above it
    if strike_corrected:
        pattern |= _LOAD_STRIKE_CORRECTED
    struct.pack_into("<BBHHBBHHHHHH", buf, 0, _EVENT_FORMAT, _KIND_LOAD, seq & _SEQ_MASK,
                     step & 0xFFFF, (step >> 16) & 0xFF, pattern, peak_heel, peak_arch,
                     peak_fore, share_heel, share_arch, share_fore)


def pack_start(buf, seq, steps, rate_hz, side, mode, skipped_seq=0, skipped_steps=0):
    # skipped_*: sequence and step numbers a reboot left unused just before this START
    # (the journal skips past what a lost batch could have held); 0 otherwise
    struct.pack_into("<BBHIHBBHH", buf, 0, _EVENT_FORMAT, _KIND_START, seq & _SEQ_MASK, steps,
                     rate_hz, side, mode, min(skipped_seq, 0xFFFF), min(skipped_steps, 0xFFFF))
    for i in range(16, _EVENT_SIZE):
        buf[i] = 0


# ---- Status characteristic (read + notify, 20 bytes: fits one notification at MTU 23) ----
_STATUS_SIZE = const(20)
_STATUS_FORMAT = const(2)
_SIDE_LEFT = const(0)
_SIDE_RIGHT = const(1)
# flags (device.py sets them): bit 0 right insole, bit 1 raw streaming on, bit 2 the
# link is encrypted, bit 3 the journal dropped days (GET_JOURNAL), bits 4..7 the mode
_STATUS_BATTERY_UNIT_MV = const(20)  # battery byte: nearest 20 mV, 255 = 5.1 V or more


def pack_status(buf, flags, rate_hz, steps, uptime_s, overruns, lost, faults, battery_mv,
                buffered):
    # counters saturate at their field's largest value rather than wrap
    battery = (battery_mv + _STATUS_BATTERY_UNIT_MV // 2) // _STATUS_BATTERY_UNIT_MV
    struct.pack_into("<BBHIIHHHBB", buf, 0, _STATUS_FORMAT, flags, rate_hz, steps, uptime_s,
                     min(overruns, 0xFFFF), min(lost, 0xFFFF), faults & 0xFFFF,
                     max(0, min(battery, 0xFF)), min(buffered, 0xFF))


# ---- Raw Stream characteristic: sample index + RAW_PER_PACKET samples ----
_RAW_PER_PACKET = const(3)
_RAW_SIZE = const(20)
# device.py fills each packet as an array of u16 (little-endian on the ESP32) and
# sends it as it is: no packer here


# ---- Running Speed and Cadence measurement (0x2A53) ----
_RSC_SIZE = const(10)
_RSC_STRIDE_PRESENT = const(0x01)
_RSC_DISTANCE_PRESENT = const(0x02)
_RSC_RUNNING = const(0x04)


def pack_rsc(buf, running, speed_256, cadence, stride_cm, distance_dm):
    flags = _RSC_STRIDE_PRESENT | _RSC_DISTANCE_PRESENT
    if running:
        flags |= _RSC_RUNNING
    struct.pack_into("<BHBHI", buf, 0, flags, speed_256, cadence, stride_cm, distance_dm)


# ---- Control characteristic: opcode byte + arguments; reply: opcode, error, data ----
_OP_SET_SIDE = const(0x01)  # u8 side (0 left, 1 right)
_OP_SET_NAME = const(0x02)  # 1..NAME_MAX ASCII bytes: advertised name prefix
_OP_SET_RATE = const(0x03)  # u16 sample rate, Hz
_OP_SET_STRIDE = const(0x04)  # u16 stride length, cm
_OP_ZERO = const(0x05)  # zero-calibrate (insole unloaded)
_OP_RAW_START = const(0x06)
_OP_RAW_STOP = const(0x07)
_OP_BACKFILL = const(0x08)  # u16 low bits, or u32 (29 bits), of the first event wanted
_OP_SET_MODE = const(0x09)  # u8 mode + mode arguments (exercise modes, reserved)
_OP_GET_CONFIG = const(0x0A)  # reply data: side, rate, stride, mains, name
_OP_GET_JOURNAL = const(0x0B)  # reply data: head, oldest held, days dropped, journal bytes
_OP_SET_MAINS = const(0x0C)  # u8 mains frequency, Hz (50 or 60)

_ERR_OK = const(0x00)
_ERR_UNKNOWN_OP = const(0x01)
_ERR_BAD_LENGTH = const(0x02)
_ERR_OUT_OF_RANGE = const(0x03)
_ERR_NOT_ENCRYPTED = const(0x04)
_ERR_UNSUPPORTED = const(0x05)
_ERR_STORAGE = const(0x06)
_ERR_PARTIAL = const(0x07)  # backfill: the oldest wanted events are gone
_ERR_BUSY = const(0x08)
_ERR_NOT_YET = const(0x09)  # backfill: the first event asked for has not been made yet
_ERR_TOO_FAST = const(0x0A)  # SET_RATE, SET_MODE: the mode cannot hold that sample rate
_ERR_NO_MEMORY = const(0x0B)  # no room for a mode's counter (walk runs) or a command's code

_RATE_MIN = const(50)
_RATE_MAX = const(400)
_STRIDE_MIN = const(30)
_STRIDE_MAX = const(300)
_NAME_MAX = const(12)
_MAINS_EU = const(50)  # the two mains frequencies SET_MAINS takes
_MAINS_US = const(60)

_MODE_WALK = const(0)
_MODE_HEEL_RAISE = const(1)
_MODE_TOE_SCRUNCH = const(2)
_MODE_BALANCE = const(3)
_MODE_SLOW_WALK = const(4)
_MODE_LAST = const(4)

_REPLY_MAX = const(20)

# Checking a command and packing its reply: control_wire.py (loaded with each
# command, so it takes no RAM between commands).
