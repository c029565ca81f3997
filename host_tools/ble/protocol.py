"""Host side of the insole's BLE wire format: decode every payload, encode commands.

The layouts are described in docs/PROTOCOL.md; firmware/protocol.py packs them on the
device. Both are checked against the same byte vectors in tests/vectors/protocol.json.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

UUID_SERVICE = "f1fe0001-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_STEP_EVENT = "f1fe0002-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_STATUS = "f1fe0003-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_CONTROL = "f1fe0004-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_RAW = "f1fe0005-e1fa-4b38-8a41-0e11dc80f5eb"
UUID_RSC_SERVICE = 0x1814
UUID_RSC_MEASUREMENT = 0x2A53
UUID_RSC_FEATURE = 0x2A54
UUID_SENSOR_LOCATION = 0x2A5D
UUID_DEVICE_INFO = 0x180A
UUID_BATTERY = 0x180F
UUID_BATTERY_LEVEL = 0x2A19

# Start-up line on the serial console; group 'name' is the advertised name.
BANNER_RE = (
    r"^insole (?P<version>\S+) board=(?P<board>.+) side=(?P<side>[LR]) "
    r"rate=(?P<rate>\d+) name=(?P<name>\S+)$"
)

EVENT_SIZE = 20
EVENT_FORMAT = 1
STATUS_FORMAT = 2  # what the firmware sends; decode_status also reads format 1
STATUS_BATTERY_UNIT_MV = 20  # format 2 battery byte
STATUS_JOURNAL_DROPPED = 0x08  # format 2 flags bit 3

KIND_STRIKE = 0x01
KIND_STEP = 0x02
KIND_LOAD = 0x03
LOAD_PATTERN_MASK = 0x03  # LOAD byte 7: strike pattern in bits 0-1
LOAD_STRIKE_CORRECTED = 0x80  # LOAD byte 7 bit 7: the strike moved past a spike
KIND_START = 0x04
KIND_HEEL_RAISE = 0x10
KIND_TOE_SCRUNCH = 0x11
KIND_BALANCE = 0x12
KIND_COACHED_STEP = 0x13
EXERCISE_KINDS = range(0x10, 0x20)
KIND_NAMES = {
    KIND_STRIKE: "strike",
    KIND_STEP: "step",
    KIND_LOAD: "load",
    KIND_START: "start",
    KIND_HEEL_RAISE: "heel_raise",
    KIND_TOE_SCRUNCH: "toe_scrunch",
    KIND_BALANCE: "balance",
    KIND_COACHED_STEP: "coached_step",
}
PATTERN_NAMES = ("unknown", "rear", "mid", "fore")
SIDES = ("L", "R")

OP_SET_SIDE = 0x01
OP_SET_NAME = 0x02
OP_SET_RATE = 0x03
OP_SET_STRIDE = 0x04
OP_ZERO = 0x05
OP_RAW_START = 0x06
OP_RAW_STOP = 0x07
OP_BACKFILL = 0x08
OP_SET_MODE = 0x09
OP_GET_CONFIG = 0x0A
OP_GET_JOURNAL = 0x0B
OP_SET_MAINS = 0x0C
OP_NAMES = {
    OP_SET_SIDE: "set_side",
    OP_SET_NAME: "set_name",
    OP_SET_RATE: "set_rate",
    OP_SET_STRIDE: "set_stride",
    OP_ZERO: "zero",
    OP_RAW_START: "raw_start",
    OP_RAW_STOP: "raw_stop",
    OP_BACKFILL: "backfill",
    OP_SET_MODE: "set_mode",
    OP_GET_CONFIG: "get_config",
    OP_GET_JOURNAL: "get_journal",
    OP_SET_MAINS: "set_mains",
}

ERR_OK = 0x00
ERR_UNKNOWN_OP = 0x01
ERR_BAD_LENGTH = 0x02
ERR_OUT_OF_RANGE = 0x03
ERR_NOT_ENCRYPTED = 0x04
ERR_UNSUPPORTED = 0x05
ERR_STORAGE = 0x06
ERR_PARTIAL = 0x07
ERR_BUSY = 0x08
ERR_NOT_YET = 0x09
ERR_TOO_FAST = 0x0A
ERR_NO_MEMORY = 0x0B
ERROR_NAMES = {
    ERR_OK: "ok",
    ERR_UNKNOWN_OP: "unknown opcode",
    ERR_BAD_LENGTH: "bad length",
    ERR_OUT_OF_RANGE: "value out of range",
    ERR_NOT_ENCRYPTED: "link not encrypted",
    ERR_UNSUPPORTED: "not supported",
    ERR_STORAGE: "config could not be saved",
    ERR_PARTIAL: "backfill partial: oldest events gone",
    ERR_BUSY: "busy: command queue full",
    ERR_NOT_YET: "backfill from an event the insole has not made yet",
    ERR_TOO_FAST: "the mode cannot hold that sample rate at this mains setting",
    ERR_NO_MEMORY: "no memory for the mode (the insole walks on)",
}

MODE_WALK = 0
MODE_HEEL_RAISE = 1
MODE_TOE_SCRUNCH = 2
MODE_BALANCE = 3
MODE_SLOW_WALK = 4
MODE_NAMES = ("walk", "heel_raise", "toe_scrunch", "balance", "slow_walk")

RATE_RANGE = (50, 400)
MAINS_HZ = (50, 60)  # what SET_MAINS takes: the local mains frequency
STRIDE_RANGE = (30, 300)
NAME_MAX = 12
_MS_MASK = 0x1FFFFFFF  # device ms clock wraps at 2**29
STEP24 = 0xFFFFFF  # LOAD carries the step number's low 24 bits


class ProtocolError(ValueError):
    """A payload that does not follow the documented layout."""


@dataclass(frozen=True)
class Strike:
    seq: int
    step: int  # the step number the coming step summary will carry
    contact_ms: int  # back-dated contact onset, device ms clock
    detect_ms: int  # device ms clock when the contact was confirmed
    kind: str = "strike"


@dataclass(frozen=True)
class Step:
    seq: int
    step: int
    strike_ms: int
    stance_ms: int
    swing_ms: int
    stride_ms: int
    heel_off_ms: int  # -1 when the device saturated the offset (unknown)
    toe_off_ms: int
    kind: str = "step"


@dataclass(frozen=True)
class Load:
    seq: int
    step: int  # low 24 bits of the step number
    pattern: int
    peak_heel: int
    peak_arch: int
    peak_fore: int
    share_heel: int
    share_arch: int
    share_fore: int
    kind: str = "load"
    # the step's strike is a later contact than its STRIKE event reported (that one
    # collapsed at once: a spike); the STEP's strike time is the corrected one
    strike_corrected: bool = False


@dataclass(frozen=True)
class Start:
    seq: int
    steps: int
    rate_hz: int
    side: int
    mode: int
    # numbers a reboot left unused just before this START: sequence numbers
    # seq - skipped_seq .. seq - 1 and step numbers steps - skipped_steps + 1 .. steps
    # hold no event (the journal skips past what a power cut may have lost)
    skipped_seq: int = 0
    skipped_steps: int = 0
    kind: str = "start"


@dataclass(frozen=True)
class OtherEvent:
    """An exercise-mode event (kinds 0x10..0x1F) or a kind this decoder does not know."""

    seq: int
    kind_code: int
    payload: bytes
    kind: str = "other"


# Status `faults`: one 4-bit code per channel (heel bits 0-3, arch 4-7, forefoot 8-11)
CHANNELS = ("heel", "arch", "fore")
FAULT_NAMES = ("ok", "dead", "saturated", "stuck", "noisy", "jumps", "wrong-mains")


# what a "noisy" channel may mean, for the capture summary and the report
NOISY_HINT = ("A noisy channel picks up interference: mains hum on the leads (where mains "
              "is 60 Hz, set the insole to it: insole config --mains 60) or a loose "
              "connection (docs/HARDWARE.md, \"Sample rate and mains pickup\").")


# what "wrong-mains" means (firmware/mains.py), for the same places
WRONG_MAINS_HINT = ("Wrong mains: the leads pick up hum at the mains frequency the insole "
                    "is not set to, which costs steps at this sample rate. Set it to the "
                    "local one: insole config --mains 60 (or 50).")


def fault_hints(faults: Iterable[str]) -> list[str]:
    """What the reported faults ('heel dead', 'arch noisy', ...) may mean: NOISY_HINT
    when a channel was noisy, WRONG_MAINS_HINT when one said wrong mains."""
    faults = list(faults)
    hints = []
    if any(f.endswith(" noisy") for f in faults):
        hints.append(NOISY_HINT)
    if any(f.endswith(" wrong-mains") for f in faults):
        hints.append(WRONG_MAINS_HINT)
    return hints


def fault_name(code: int) -> str:
    return FAULT_NAMES[code] if code < len(FAULT_NAMES) else f"fault {code}"


@dataclass(frozen=True)
class Status:
    side: str
    raw_streaming: bool
    encrypted: bool
    mode: int
    rate_hz: int
    steps: int
    uptime_s: int
    overruns: int
    battery_mv: int  # 0 = not fitted; format 2 carries it to the nearest 20 mV
    buffered: int  # format 2 saturates at 255 (the BACKFILL reply gives the exact count)
    lost: int | None = None  # events lost to ring overflow (format 2; saturates at 65535)
    faults: int | None = None  # channel-fault word (format 2)
    fw_major: int | None = None  # format 1 only: format 2 leaves it to Device Information
    fw_minor: int | None = None
    format: int = STATUS_FORMAT
    journal_dropped: bool = False  # flags bit 3: the journal dropped days (GET_JOURNAL)

    def channel_faults(self) -> dict[str, str]:
        """Fault name per channel ({} for format 1, which has no fault word)."""
        if self.faults is None:
            return {}
        return {ch: fault_name((self.faults >> (4 * i)) & 0xF) for i, ch in enumerate(CHANNELS)}

    def faults_text(self) -> str:
        """'heel dead, fore noisy'; 'ok' when every channel is fine."""
        if self.faults is None:
            return "not reported"
        bad = [f"{ch} {name}" for ch, name in self.channel_faults().items() if name != "ok"]
        return ", ".join(bad) or "ok"


@dataclass(frozen=True)
class RawPacket:
    index: int  # low 16 bits of the device sample counter of samples[0]
    samples: tuple  # ((heel, arch, fore), ...)


@dataclass(frozen=True)
class Rsc:
    speed_256: int  # 1/256 m/s
    cadence: int  # steps/min
    running: bool
    stride_cm: int | None
    distance_dm: int | None

    @property
    def speed_mps(self) -> float:
        return self.speed_256 / 256.0


@dataclass(frozen=True)
class Reply:
    op: int
    error: int
    data: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error == ERR_OK

    @property
    def message(self) -> str:
        return ERROR_NAMES.get(self.error, f"error 0x{self.error:02x}")


def _need(data: bytes, n: int, what: str, exact: bool = True) -> None:
    if (len(data) != n) if exact else (len(data) < n):
        raise ProtocolError(f"{what}: {len(data)} bytes, expected {'' if exact else '>= '}{n}")


def decode_event(data: bytes):
    """Decode one Step Event notification (20 bytes)."""
    data = bytes(data)
    _need(data, EVENT_SIZE, "step event")
    fmt, kind, seq = struct.unpack_from("<BBH", data)
    if fmt != EVENT_FORMAT:
        raise ProtocolError(f"step event: format {fmt}, this decoder reads {EVENT_FORMAT}")
    if kind == KIND_STRIKE:
        step, contact, detect = struct.unpack_from("<III", data, 4)
        return Strike(seq, step, contact, detect)
    if kind == KIND_STEP:
        step, strike, stance, swing, stride, dt = struct.unpack_from("<IIHHHH", data, 4)
        heel_off = -1 if dt == 0xFFFF else (strike + dt) & _MS_MASK
        toe_off = (strike + stance) & _MS_MASK
        return Step(seq, step, strike, stance, swing, stride, heel_off, toe_off)
    if kind == KIND_LOAD:
        lo, hi, pattern, ph, pa, pf, sh, sa, sf = struct.unpack_from("<HBBHHHHHH", data, 4)
        return Load(seq, lo | hi << 16, pattern & LOAD_PATTERN_MASK, ph, pa, pf, sh, sa, sf,
                    strike_corrected=bool(pattern & LOAD_STRIKE_CORRECTED))
    if kind == KIND_START:
        steps, rate, side, mode, skip_seq, skip_steps = struct.unpack_from("<IHBBHH", data, 4)
        return Start(seq, steps, rate, side, mode, skip_seq, skip_steps)
    return OtherEvent(seq, kind, data[4:])


def _status_flags(flags: int) -> tuple:
    return SIDES[flags & 1], bool(flags & 2), bool(flags & 4), flags >> 4


def decode_status(data: bytes) -> Status:
    """Decode a Status value, format 2 (this firmware) or 1 (firmware before it)."""
    data = bytes(data)
    _need(data, 20, "status")
    fmt = data[0]
    if fmt == 2:
        _, flags, rate, steps, up, over, lost, faults, batt, buf = struct.unpack(
            "<BBHIIHHHBB", data)
        return Status(*_status_flags(flags), rate, steps, up, over,
                      batt * STATUS_BATTERY_UNIT_MV, buf, lost=lost, faults=faults, format=2,
                      journal_dropped=bool(flags & STATUS_JOURNAL_DROPPED))
    if fmt == 1:
        _, major, minor, flags, rate, steps, up, over, batt, buf = struct.unpack(
            "<BBBBHIIHHH", data)
        return Status(*_status_flags(flags), rate, steps, up, over, batt, buf,
                      fw_major=major, fw_minor=minor, format=1)
    raise ProtocolError(f"status: format {fmt}, this decoder reads 1 and 2")


def decode_raw(data: bytes) -> RawPacket:
    data = bytes(data)
    _need(data, 20, "raw stream")
    index = struct.unpack_from("<H", data)[0]
    vals = struct.unpack_from("<9H", data, 2)
    return RawPacket(index, tuple(tuple(vals[i : i + 3]) for i in range(0, 9, 3)))


def decode_rsc(data: bytes) -> Rsc:
    """Decode an RSC Measurement as any RSC collector would (optional fields by flags)."""
    data = bytes(data)
    _need(data, 4, "rsc measurement", exact=False)
    flags, speed, cadence = struct.unpack_from("<BHB", data)
    pos, stride, dist = 4, None, None
    if flags & 1:
        _need(data, pos + 2, "rsc measurement", exact=False)
        stride = struct.unpack_from("<H", data, pos)[0]
        pos += 2
    if flags & 2:
        _need(data, pos + 4, "rsc measurement", exact=False)
        dist = struct.unpack_from("<I", data, pos)[0]
    return Rsc(speed, cadence, bool(flags & 4), stride, dist)


def decode_reply(data: bytes) -> Reply:
    """Decode a Control result notification."""
    data = bytes(data)
    _need(data, 2, "control reply", exact=False)
    op, err = data[0], data[1]
    extra: dict = {}
    if op == OP_BACKFILL and len(data) >= 10:
        # the reply to a 5-byte BACKFILL: whole 29-bit numbers
        first, count = struct.unpack_from("<II", data, 2)
        extra = {"first_seq": first, "count": count, "wide": True}
    elif op == OP_BACKFILL and len(data) >= 6:
        first, count = struct.unpack_from("<HH", data, 2)
        extra = {"first_seq": first, "count": count}
    elif op == OP_GET_JOURNAL and err == ERR_OK and len(data) >= 16:
        head, oldest, dropped, size = struct.unpack_from("<IIHI", data, 2)
        extra = {"head": head, "oldest_seq": oldest, "dropped_days": dropped,
                 "journal_bytes": size}
    elif op == OP_GET_CONFIG and err == ERR_OK and len(data) >= 8:
        side, rate, stride, mains = struct.unpack_from("<BHHB", data, 2)
        extra = {"side": SIDES[side & 1], "rate_hz": rate, "stride_cm": stride,
                 "mains_hz": mains, "name": data[8:].decode("ascii", "replace")}
    return Reply(op, err, extra)


# ---- command encoders (the host checks ranges too, so a typo fails before the radio) ----


def _range(value: int, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer in {lo}..{hi}, not {value!r}")
    return value


def cmd_set_side(side: str | int) -> bytes:
    if isinstance(side, str):
        s = side.strip().upper()[:1]
        if s not in SIDES:
            raise ValueError(f"side must be left/right (L/R), not {side!r}")
        side = SIDES.index(s)
    return bytes([OP_SET_SIDE, _range(side, 0, 1, "side")])


def cmd_set_name(name: str) -> bytes:
    if not 1 <= len(name) <= NAME_MAX or not all(c.isascii() and (c.isalnum() or c in " _.")
                                                 for c in name):
        raise ValueError(f"name must be 1..{NAME_MAX} ASCII letters, digits, space, _ or .")
    return bytes([OP_SET_NAME]) + name.encode("ascii")


def cmd_set_rate(rate_hz: int) -> bytes:
    return struct.pack("<BH", OP_SET_RATE, _range(rate_hz, *RATE_RANGE, "rate_hz"))


def cmd_set_stride(stride_cm: int) -> bytes:
    return struct.pack("<BH", OP_SET_STRIDE, _range(stride_cm, *STRIDE_RANGE, "stride_cm"))


def cmd_zero() -> bytes:
    return bytes([OP_ZERO])


def cmd_raw_start() -> bytes:
    return bytes([OP_RAW_START])


def cmd_raw_stop() -> bytes:
    return bytes([OP_RAW_STOP])


def cmd_backfill(first_seq: int) -> bytes:
    return struct.pack("<BH", OP_BACKFILL, first_seq & 0xFFFF)


SEQ29_MASK = 0x1FFFFFFF  # the insole's sequence numbers run on 2**29


def cmd_backfill_wide(first_seq: int) -> bytes:
    """BACKFILL naming the whole 29-bit sequence number (reaches the whole journal);
    the reply gives u32 first and count (decode_reply: data["wide"])."""
    return struct.pack("<BI", OP_BACKFILL, first_seq & SEQ29_MASK)


def cmd_get_journal() -> bytes:
    return bytes([OP_GET_JOURNAL])


def cmd_set_mode(mode: int | str, args: bytes = b"") -> bytes:
    if isinstance(mode, str):
        if mode not in MODE_NAMES:
            raise ValueError(f"mode must be one of {', '.join(MODE_NAMES)}")
        mode = MODE_NAMES.index(mode)
    return bytes([OP_SET_MODE, _range(mode, 0, 255, "mode")]) + bytes(args)


def cmd_get_config() -> bytes:
    return bytes([OP_GET_CONFIG])


def cmd_set_mains(mains_hz: int) -> bytes:
    """SET_MAINS: the local mains frequency (50 or 60 Hz), whose hum the insole's
    pre-filter and four-read average cancel."""
    if type(mains_hz) is not int or mains_hz not in MAINS_HZ:
        raise ValueError(f"mains_hz must be 50 or 60, not {mains_hz!r}")
    return bytes([OP_SET_MAINS, mains_hz])


# ---- helpers for a stream of notifications ----


class SeqUnwrapper:
    """Turn 16-bit packet sequence numbers into a monotonic count.

    A jump backwards of less than half the range is a replay (backfill), not a wrap.
    """

    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, seq16: int) -> int:
        if self.last is None:
            self.last = seq16
            return seq16
        delta = (seq16 - self.last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        full = self.last + delta
        if delta > 0:
            self.last = full
        return full


def event_row(step: Step, load: Load) -> tuple:
    """One events-CSV row (detector summary order) from a step's two halves."""
    if step.step & STEP24 != load.step:
        raise ProtocolError(f"step {step.step} timing joined with step {load.step} load")
    heel_off = step.heel_off_ms if step.heel_off_ms >= 0 else step.toe_off_ms
    return (step.step, step.strike_ms, step.toe_off_ms, heel_off, step.stance_ms, step.swing_ms,
            step.stride_ms, load.pattern, load.peak_heel, load.peak_arch, load.peak_fore,
            load.share_heel, load.share_arch, load.share_fore)


class StepJoiner:
    """Feed decoded events in any order (live and backfilled, duplicates allowed);
    ``rows()`` gives one events-CSV row per complete step, ordered by step number."""

    def __init__(self) -> None:
        self._steps: dict[int, Step] = {}
        self._loads: dict[int, Load] = {}

    def add(self, ev) -> None:
        if isinstance(ev, Step):
            self._steps[ev.step] = ev
        elif isinstance(ev, Load):
            self._loads[ev.step] = ev  # keyed by the 24-bit step number

    def rows(self) -> list[tuple]:
        return [event_row(self._steps[n], self._loads[n & STEP24])
                for n in sorted(self._steps) if n & STEP24 in self._loads]
