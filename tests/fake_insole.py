"""An in-memory insole behind a capture Link, following docs/PROTOCOL.md delivery rules.

Events (packed with the firmware's own firmware/protocol.py) go into a ring first; a
connected central gets what is made after it connected; BACKFILL replays from a sequence
number. Tests use it to drive InsoleSession without a radio; the virtual-board tests do
the same over bumble.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

from host_tools.ble.capture import FIRMWARE_REVISION_UUID, Link, LinkError
from host_tools.ble.protocol import UUID_CONTROL, UUID_STATUS, UUID_STEP_EVENT
from host_tools.gait import engine
from host_tools.gait.tracefile import PATTERN_NAMES

FW = engine.load_firmware_module("protocol")
# the Control checks and reply packers (firmware/control_wire.py, which imports
# protocol by name as on the insole)
if str(engine.FIRMWARE) not in sys.path:
    sys.path.insert(0, str(engine.FIRMWARE))
import control_wire as FWC  # noqa: E402


def as_rows(summaries):
    """Detector summaries as capture-log event values (pattern by name)."""
    return [tuple(s[:7]) + (PATTERN_NAMES[s[7]],) + tuple(s[8:]) for s in summaries]


def same_steps(captured, detected) -> bool:
    """Captured rows (event values) equal the detector's summaries, column for column."""
    return list(captured) == as_rows(detected)


class FakeInsole:
    def __init__(self, summaries, side="left", ring=1024, rate_hz=100):
        self.side = side
        self.rate_hz = rate_hz
        self.ring_size = ring
        self.ring: list[bytes] = []  # all events; index = seq
        self.summaries = list(summaries)
        self.steps = 0
        self.uptime = 1
        self.link: FakeLink | None = None
        self.backfills: list[int] = []
        self.corrected: set[int] = set()  # steps whose LOAD says the strike was corrected
        self.boot()

    def boot(self) -> None:
        """Power on: an empty ring, sequence and step numbers from 0, a START event."""
        self.ring = []
        self.steps = 0
        self.uptime = 1
        buf = bytearray(20)
        FW.pack_start(buf, 0, 0, self.rate_hz, 0 if self.side == "left" else 1, 0)
        self._emit(bytes(buf))

    def _emit(self, packet: bytes) -> None:
        self.ring.append(packet)
        if self.link is not None and self.link.connected:
            self.link.deliver(UUID_STEP_EVENT, packet)

    def make_step(self, s: tuple) -> None:
        """One detector summary -> STRIKE, STEP, LOAD packets."""
        buf = bytearray(20)
        FW.pack_strike(buf, len(self.ring), s[0], s[1], s[1] + 20)
        self._emit(bytes(buf))
        FW.pack_step(buf, len(self.ring), s[0], s[1], s[4], s[5], s[6], s[3])
        self._emit(bytes(buf))
        FW.pack_load(buf, len(self.ring), s[0], s[7], s[8], s[9], s[10], s[11], s[12], s[13],
                     strike_corrected=s[0] in self.corrected)
        self._emit(bytes(buf))
        self.steps = s[0]
        self.uptime += 1

    def status(self) -> bytes:
        buf = bytearray(20)
        flags = (1 if self.side == "right" else 0) | 4
        FW.pack_status(buf, flags, self.rate_hz, self.steps, self.uptime, 0, 0, 0, 0, 0)
        return bytes(buf)

    def control(self, data: bytes) -> bytes:
        if data[0] != FW._OP_BACKFILL or len(data) != 3:
            return bytes([data[0], FW._ERR_UNSUPPORTED])
        first16 = struct.unpack_from("<H", data, 1)[0]
        head = len(self.ring)
        if FWC.backfill_ahead(first16, head):
            return struct.pack("<BBHH", FW._OP_BACKFILL, FW._ERR_NOT_YET, head & 0xFFFF, 0)
        first = head - ((head - first16) & 0xFFFF)
        oldest = max(0, len(self.ring) - self.ring_size)
        err = FW._ERR_OK
        if first < oldest:
            first, err = oldest, FW._ERR_PARTIAL
        self.backfills.append(first)
        count = max(0, len(self.ring) - first)
        if self.link is not None:
            for p in self.ring[first:]:
                self.link.deliver(UUID_STEP_EVENT, p)
        return struct.pack("<BBHH", FW._OP_BACKFILL, err, first & 0xFFFF, count)

    async def walk(self, pace_s: float = 0.0, drop_at: set[int] | None = None,
                   drop_for_s: float = 0.3) -> None:
        """Make every step; at the steps in drop_at, the link drops for drop_for_s."""
        while self.link is None or not self.link.subs:  # start once the capture listens
            await asyncio.sleep(0.005)
        for s in self.summaries:
            if drop_at and s[0] in drop_at and self.link is not None:
                self.link.drop(drop_for_s)
            self.make_step(s)
            await asyncio.sleep(pace_s)


class FakeLink(Link):
    transport = "fake"

    def __init__(self, insole: FakeInsole, secure_ok: bool = True):
        super().__init__()
        self.insole = insole
        self.name = f"Insole-{insole.side[0].upper()}-0001"
        self.address = f"00:00:00:00:00:0{1 if insole.side == 'left' else 2}"
        self.connected = False
        self.secure_ok = secure_ok
        self.subs: dict[str, object] = {}
        self.unavailable_until = 0.0
        self.connects = 0
        insole.link = self

    def deliver(self, uuid: str, data: bytes) -> None:
        cb = self.subs.get(uuid)
        if self.connected and cb is not None:
            cb(data, time.time())

    def drop(self, seconds: float) -> None:
        """The radio link is lost; the insole is unreachable for a while."""
        self.connected = False
        self.subs.clear()
        self.unavailable_until = time.monotonic() + seconds
        asyncio.get_running_loop().call_soon(self._disconnected)

    async def connect(self) -> None:
        await asyncio.sleep(0)
        if time.monotonic() < self.unavailable_until:
            raise LinkError("no answer")
        self.connected = True
        self.connects += 1

    async def secure(self) -> None:
        if not self.secure_ok:
            raise LinkError("pairing refused")

    async def read(self, uuid: str) -> bytes:
        if not self.connected:
            raise LinkError("not connected")
        if uuid == FIRMWARE_REVISION_UUID:
            return FW.VERSION.encode()
        if uuid != UUID_STATUS:
            raise LinkError(f"no characteristic {uuid}")
        return self.insole.status()

    async def write(self, uuid: str, data: bytes) -> None:
        if not self.connected:
            raise LinkError("not connected")
        assert uuid == UUID_CONTROL
        if not self.secure_ok:
            raise LinkError("insufficient encryption")
        reply = self.insole.control(bytes(data))
        self.deliver(UUID_CONTROL, reply)

    async def subscribe(self, uuid: str, callback) -> None:
        if not self.connected:
            raise LinkError("not connected")
        self.subs[uuid] = callback

    async def disconnect(self) -> None:
        was = self.connected
        self.connected = False
        self.subs.clear()
        if was:
            self._disconnected()
