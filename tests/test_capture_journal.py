"""The capture with an insole that keeps a step journal: it counts in the insole's 29-bit
sequence numbers (GET_JOURNAL), backfills with the 5-byte BACKFILL far beyond what 16-bit
numbers reach, and after a reboot whose numbers carry on it renumbers nothing and does not
wait for the numbers the boot START says were skipped. Driven through an in-memory insole
(tests/fake_insole.py) that follows docs/PROTOCOL.md."""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_insole import FW, FWC, FakeInsole, FakeLink, same_steps  # noqa: E402

from host_tools.ble import protocol as HP  # noqa: E402
from host_tools.ble.capture import Backoff, InsoleSession, SeqTracker, capture  # noqa: E402
from host_tools.ble.steplog import read_meta, read_steplog  # noqa: E402

SKIP_SEQ, SKIP_STEPS = 48, 12  # what firmware/journal.py skips at a boot


def _summaries(n: int, first: int = 1) -> list[tuple]:
    """n detector summaries, steps first.., one a second."""
    out = []
    for i in range(n):
        strike = 2000 + 1100 * i
        out.append((first + i, strike, strike + 650, strike + 450, 650, 450, 1100, 1,
                    30000, 9000, 26000, 400, 130, 470))
    return out


class JournaledInsole(FakeInsole):
    """A FakeInsole whose events all stay held (the journal), numbered from `seq0`, that
    answers GET_JOURNAL and the 5-byte BACKFILL, and whose reboots carry the numbers on."""

    def __init__(self, summaries, seq0: int = 0):
        self.events: dict[int, bytes] = {}
        self.head = seq0
        self.step_base = 0
        super().__init__(summaries)

    def boot(self, lost: int = 0) -> None:
        """Power on. After the first boot: the last `lost` events were still in RAM (gone),
        and the numbers skip past what a lost batch may have held."""
        skip_seq = skip_steps = 0
        if self.events:
            for s in range(self.head - lost, self.head):
                self.events.pop(s, None)
            self.head += SKIP_SEQ
            self.step_base = self.steps + SKIP_STEPS
            skip_seq, skip_steps = SKIP_SEQ, SKIP_STEPS
        self.steps = self.step_base
        self.uptime = 1
        buf = bytearray(20)
        FW.pack_start(buf, self.head, self.steps, self.rate_hz, 0, 0, skip_seq, skip_steps)
        self._emit(bytes(buf))

    def _emit(self, packet: bytes) -> None:
        self.events[self.head] = packet
        self.head += 1
        if self.link is not None and self.link.connected:
            self.link.deliver(HP.UUID_STEP_EVENT, packet)

    def make_step(self, s: tuple) -> None:
        s = (s[0] + self.step_base,) + tuple(s[1:])
        for pack in ("strike", "step", "load"):
            buf = bytearray(20)
            if pack == "strike":
                FW.pack_strike(buf, self.head, s[0], s[1], s[1] + 20)
            elif pack == "step":
                FW.pack_step(buf, self.head, s[0], s[1], s[4], s[5], s[6], s[3])
            else:
                FW.pack_load(buf, self.head, s[0], s[7], s[8], s[9], s[10], s[11], s[12],
                             s[13])
            self._emit(bytes(buf))
        self.steps = s[0]
        self.uptime += 1

    def control(self, data: bytes) -> bytes:
        buf = bytearray(20)
        if data == HP.cmd_get_journal():
            n = FWC.pack_journal_reply(buf, self.head, min(self.events), 0, 0)
            return bytes(buf[:n])
        if data[0] != FW._OP_BACKFILL:
            return bytes([data[0], FW._ERR_UNKNOWN_OP])
        op, err, first = FWC.parse_command(data)
        wide = len(data) == 5
        if not wide:
            first = self.head - ((self.head - first) & 0xFFFF)
        if first > self.head:
            n = FWC.pack_backfill_reply(buf, FW._ERR_NOT_YET, self.head, 0, wide)
            return bytes(buf[:n])
        self.backfills.append(first)
        n = FWC.pack_backfill_reply(buf, FW._ERR_OK, first, self.head - first, wide)
        reply = bytes(buf[:n])
        self.link.deliver(HP.UUID_CONTROL, reply)  # the replay follows its reply
        for s in range(first, self.head):
            if s in self.events:
                self.link.deliver(HP.UUID_STEP_EVENT, self.events[s])
        return b""


class _Link(FakeLink):
    async def write(self, uuid: str, data: bytes) -> None:
        reply = self.insole.control(bytes(data)) if self.connected else None
        if reply is None:
            return await super().write(uuid, data)
        if reply:
            self.deliver(HP.UUID_CONTROL, reply)


def _run(tmp_path, insole, scenario):
    async def main():
        link = _Link(insole)
        session = InsoleSession(link, tmp_path, backoff=Backoff(0.05, 0.1), backfill_wait=0.1)
        await capture([session], asyncio.Event(), until=scenario(link), drain_s=3.0)
        return session

    session = asyncio.run(main())
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == []
    meta, _ = read_meta(tmp_path / "left.json")
    return session, rows, meta


def test_a_long_outage_is_backfilled_in_the_insoles_own_numbers(tmp_path):
    # the insole has made 200,000 events before; 40,000 more while the link is down:
    # far beyond what a 16-bit BACKFILL (32768 back) or the 16-bit unwrapper can tell
    steps = _summaries(13400)
    insole = JournaledInsole(steps, seq0=200000)

    async def scenario(link):
        while not link.subs:
            await asyncio.sleep(0.005)
        for s in steps[:10]:
            insole.make_step(s)
        await asyncio.sleep(0.05)
        link.drop(0.3)
        for s in steps[10:]:
            insole.make_step(s)
        while not link.subs:
            await asyncio.sleep(0.01)

    session, rows, meta = _run(tmp_path, insole, scenario)
    assert same_steps([r.event_values() for r in rows], steps)
    assert meta.lost_seqs == [] and meta.reconnects == 1
    assert session._head is not None and session.packets.highest == insole.head - 1
    wide = [b for b in insole.backfills if b < insole.head - 0x8000]
    assert wide and min(wide) <= 200000 + 31  # asked for numbers 40,000 back


def test_a_reboot_that_carries_the_numbers_on_renumbers_nothing(tmp_path):
    first, second = _summaries(20), _summaries(15)
    insole = JournaledInsole(first, seq0=70000)

    async def scenario(link):
        while not link.subs:
            await asyncio.sleep(0.005)
        for s in first:
            insole.make_step(s)
            await asyncio.sleep(0.002)
        link.drop(0.2)
        insole.boot(lost=0)
        for s in second:
            insole.make_step(s)
        while not link.subs:
            await asyncio.sleep(0.01)

    session, rows, meta = _run(tmp_path, insole, scenario)
    base = 20 + SKIP_STEPS
    want = first + [(s[0] + base,) + tuple(s[1:]) for s in second]
    assert same_steps([r.event_values() for r in rows], want)
    assert [r.seq for r in rows] == list(range(1, 21)) + list(range(base + 1, base + 16))
    # the skipped numbers are known to hold nothing: nothing missing, nothing renumbered
    assert meta.restarts == 1 and meta.lost_seqs == []
    assert session.steps_skipped == SKIP_STEPS
    assert "numbers carried on" in session.summary() and "renumbered" not in session.summary()


def test_seq_tracker_void_and_shift():
    t = SeqTracker()
    for n in (5, 6, 10):
        t.add(n)
    assert t.missing == {7, 8, 9}
    assert t.set_void(8, 12) == 3  # 10 was seen: not void
    assert t.missing == {7} and t.void == {8, 9, 11}
    t.add(14)
    assert t.missing == {7, 12, 13}  # 11 stays void
    assert t.behind(14) is False and t.behind(15) is True
    t.set_void(15, 16)
    assert t.behind(15) is False
    t.shift(65536)
    assert (t.lowest, t.highest) == (65541, 65550) and t.missing == {65543, 65548, 65549}
    assert struct.calcsize("<I") == 4
